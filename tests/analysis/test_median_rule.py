"""Stopping slow search trials: the median rule, and what a stopped trial looks like in the study."""

import doctest

import numpy as np
import optuna
from optuna.trial import TrialState

from tests.support import module_path
from stabsearch import OptimConfig, SearchSpace, TrainResult, analyze, load_model_module
from stabsearch.analysis import median_rule
from stabsearch.study.trial_attrs import study_records
from stabsearch.reporting.curves import read_curve
from stabsearch.study.runner import SearchSettings, finish_trial, run_search
from stabsearch.study.context import SearchContext
from stabsearch.analysis.median_rule import is_slow, median_by_step
from stabsearch.study.storage import open_storage

# Only the learning rate varies: the trials below are enqueued with it.
SPACE = SearchSpace().override(
    {"lr": {"low": 1e-5, "high": 10.0, "log": True}, "optimizer": "adam", "eps": 1e-8, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "schedule": "constant", "warmup": 0.0},
    source="test",
)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(median_rule)
    assert tried > 0 and failures == 0


def test_the_rule_waits_for_five_reports_at_a_step_and_compares_the_best_value_so_far():
    four = [{50: 0.0, 100: -1.0}] * 4
    assert median_by_step(four) == {}
    medians = median_by_step([*four, {50: 1.0, 100: 0.0, 150: -2.0}, {}])  # {}: a population member
    assert medians == {50: 0.0, 100: -1.0}  # one trial reported at 150: no median there
    assert is_slow(0.5, 50, medians)
    assert not is_slow(-1.0, 100, medians)  # at the median: not worse
    assert not is_slow(0.5, 75, medians) and not is_slow(0.5, 150, medians)


def search(tmp_path, lrs, stop_slow=True, name="s", warmups=None):
    """A study on tests/modules/tiny.py whose trials run the given learning rates (and warmups) in order."""
    module = load_model_module(module_path("tiny"))
    store = open_storage(f"sqlite:///{tmp_path}/{name}.db", create=True)
    study = optuna.create_study(study_name=name, storage=store.storage)
    for i, lr in enumerate(lrs):
        params = {"lr": lr} if warmups is None else {"lr": lr, "warmup": warmups[i]}
        study.enqueue_trial(params, user_attrs={"kind": "search"})
    space = SPACE if warmups is None else SPACE.override({"warmup": {"low": 0.0, "high": 0.5}}, source="test")
    settings = SearchSettings(trials=len(lrs), steps=200, seed=0, progress=False, stop_slow=stop_slow)
    summary = run_search(module, space, store, name, settings)
    study = optuna.load_study(study_name=name, storage=store.storage)
    return summary, study, store


def test_a_trial_slower_than_the_median_is_stopped_and_told_pruned(tmp_path):
    lrs = [1e-2, 1.2e-2, 1.4e-2, 1.6e-2, 1.8e-2, 1e-5]  # five that train, then one that crawls
    summary, study, store = search(tmp_path, lrs)
    records = study_records(study)
    assert [r.verdict for r in records] == ["stable"] * 5 + ["slow"]
    assert summary.verdicts == {"stable": 5, "slow": 1}
    crawler = study.trials[5]
    assert crawler.state == TrialState.PRUNED
    # reports every 50 steps of 200: stopped at the first, at the end of the 16-step block that holds it;
    # its curve (what it ran) is stored like any trial's
    assert crawler.user_attrs["stopped_slow_at"] == 50 and records[5].steps_run == 64
    assert max(crawler.intermediate_values) == 50
    assert crawler.user_attrs["score"] == crawler.value == crawler.intermediate_values[50]  # one score, its last report
    steps, losses = read_curve(crawler, store.artifacts_dir)
    assert len(losses) == 64
    assert all(r.steps_run == 200 for r in records[:5])  # the finished trials ran to the horizon


def test_stop_slow_off_runs_every_trial_to_the_horizon(tmp_path):
    lrs = [1e-2, 1.2e-2, 1.4e-2, 1.6e-2, 1.8e-2, 1e-5]
    _, study, _ = search(tmp_path, lrs, stop_slow=False)
    records = study_records(study)
    # The crawler (lr 1e-5: 0.426 -> 0.420 in 200 steps, still falling) runs to the end and its own curve
    # calls it slow: an honest bad score, so it ends COMPLETE like the others, not PRUNED.
    assert [r.verdict for r in records] == ["stable"] * 5 + ["slow"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    assert all(r.steps_run == 200 for r in records) and "stopped_slow_at" not in study.trials[5].user_attrs


def test_a_stopped_trial_whose_curve_already_diverged_is_called_diverged(tmp_path):
    # The rule reads its report before the block's divergence check: a block can hold both. The curve decides.
    module = load_model_module(module_path("tiny"))
    store = open_storage(f"sqlite:///{tmp_path}/d.db", create=True)
    study = optuna.create_study(study_name="d", storage=store.storage)
    trial = study.ask()
    losses = np.r_[np.linspace(1.0, 0.8, 48), np.full(16, 50.0)]  # 64 steps, the last block far above the start
    result = TrainResult(losses=losses, diverged_at=None, seconds=0.1)
    settings = SearchSettings(trials=1, steps=200, progress=False)
    context = SearchContext(study, module, SearchSpace(), store, settings)
    verdict = finish_trial(context, trial, OptimConfig(lr=0.5), 200, result, stopped_slow=50)
    frozen = study.trials[0]
    assert verdict == "diverged" and frozen.user_attrs["verdict"] == "diverged"
    assert frozen.state == TrialState.PRUNED and "stopped_slow_at" not in frozen.user_attrs


def test_a_trial_is_not_judged_before_its_warmup_ends(tmp_path):
    # warmup 0.3 of 200 steps: the report at 50 is not judged, the one at 100 is
    _, study, _ = search(tmp_path, [1e-2, 1.2e-2, 1.4e-2, 1.6e-2, 1.8e-2, 1e-5], warmups=[0.0] * 5 + [0.3])
    crawler = study.trials[5]
    assert crawler.user_attrs["verdict"] == "slow" and crawler.user_attrs["stopped_slow_at"] == 100


def test_a_cut_curve_that_looks_spiky_is_slow_not_spiky(tmp_path):
    # A spike near the end of 64 steps is "late" on the cut curve; on the whole run it would be early.
    losses = np.geomspace(1.0, 0.1, 64)
    losses[52:55] = 20.0
    assert analyze(losses).verdict == "spiky"
    module = load_model_module(module_path("tiny"))
    store = open_storage(f"sqlite:///{tmp_path}/c.db", create=True)
    study = optuna.create_study(study_name="c", storage=store.storage)
    result = TrainResult(losses=losses, diverged_at=None, seconds=0.1)
    settings = SearchSettings(trials=1, steps=1000, progress=False)
    context = SearchContext(study, module, SearchSpace(), store, settings)
    verdict = finish_trial(context, study.ask(), OptimConfig(lr=1e-3), 1000, result, stopped_slow=50)
    assert verdict == "slow" and study.trials[0].state == TrialState.PRUNED


def test_under_five_finished_trials_nothing_is_stopped(tmp_path):
    _, study, _ = search(tmp_path, [1e-2] * 4 + [1e-5])
    records = study_records(study)
    assert [r.verdict for r in records] == ["stable"] * 4 + ["slow"]  # the crawler's own curve: slow, not stopped
    assert all(r.steps_run == 200 and "stopped_slow_at" not in t.user_attrs for r, t in zip(records, study.trials))
