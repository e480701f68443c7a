"""study/confirm.py in this process, on SQLite studies in tmp_path: which runs it makes, how they are
stored, and how it resumes.

The candidate and resume tests confirm a real search of tests/modules/tiny.py (5 trials of 30 steps,
run once per module and copied into each test). The stage tests (rescue, edge probes, back-off) start
from one hand-made search trial instead: no short search of tiny.py reliably yields a COMPLETE
search trial whose configuration then fails on every seed, and learning rates of 100 or 10 diverge on
any machine while 1e-3 and 1e-2 train.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState, create_trial

from stabsearch.config import OptimConfig
from stabsearch.study.confirm import ConfirmSettings, ConfirmSummary, confirmation_seeds, run_confirmation
from stabsearch.study.recommend import major_spikes, recommend
from stabsearch.study.runner import SearchSettings, open_search_study, run_search
from stabsearch.study.slots import budget_state
from stabsearch.study.space import SearchSpace
from stabsearch.study.storage import Storage, open_storage
from stabsearch.study.trial_attrs import (
    BACKOFF, CONFIG, CONFIRM, FAILURE, KIND, OF, PROBE, RESCUE, SEARCH, SEED, STEPS, VERDICT, is_search, trial_record,
)
from stabsearch.training.loader import ModelModule, load_model_module
from tests.support import module_path

TINY = load_model_module(module_path("tiny"))
SPACE = SearchSpace()
NAME = "confirm"
STEPS_SEARCHED = 30
SETTINGS = SearchSettings(trials=5, steps=STEPS_SEARCHED, seed=0, progress=False, device=torch.device("cpu"))
HORIZON = 2 * STEPS_SEARCHED  # the default stress, 2
SEEDS = confirmation_seeds(SETTINGS.seed, 2)


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A SQLite file holding a finished search of tiny.py, confirmation off; tests confirm copies of it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = tmp_path_factory.mktemp("searched") / "search.db"
    summary = run_search(TINY, SPACE, open_storage(f"sqlite:///{db}", create=True), NAME, SETTINGS)
    assert summary.finished == SETTINGS.trials and not summary.interrupted
    return db


def copy_of(db: Path, where: Path) -> Storage:
    """The study in ``db`` copied to ``where`` (through SQLite's backup, which also reads the WAL), opened."""
    target = where / "study.db"
    with sqlite3.connect(db) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return open_storage(f"sqlite:///{target}")


@pytest.fixture
def store(searched, tmp_path) -> Storage:
    return copy_of(searched, tmp_path)


def study_of(store: Storage) -> optuna.Study:
    return optuna.load_study(study_name=NAME, storage=store.storage)


def confirm(store: Storage, module: ModelModule = TINY, **settings) -> ConfirmSummary:
    return run_confirmation(module, SPACE, store, NAME, SETTINGS, ConfirmSettings(**settings))


def confirms(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials() if t.user_attrs.get(KIND) == CONFIRM]


def counted(study: optuna.Study) -> list[FrozenTrial]:
    """The finished confirmation runs (an interrupted one is not a result)."""
    return [t for t in confirms(study)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and t.user_attrs.get(FAILURE) != "interrupted"]


def run_key(t: FrozenTrial) -> tuple:
    """What a confirmation run ran and why: source trial, learning rate, seed, horizon and stage tags."""
    a = t.user_attrs
    return a[OF], a[CONFIG]["lr"], a[SEED], a[STEPS], a[BACKOFF], a[PROBE], a[RESCUE]


def is_candidate_run(t: FrozenTrial) -> bool:
    return not (t.user_attrs[BACKOFF] or t.user_attrs[PROBE] or t.user_attrs[RESCUE])


def add_search_trial(study: optuna.Study, config: OptimConfig, value: float, *, state: TrialState = TrialState.COMPLETE,
                     verdict: str = "stable", **attrs) -> int:
    """A finished search trial written by hand, as the runner stores one (a fixed space: no Optuna params)."""
    user_attrs = {KIND: SEARCH, CONFIG: config.to_dict(), SEED: SETTINGS.seed, STEPS: STEPS_SEARCHED,
                  VERDICT: verdict, "score": value, **attrs}
    # A pruned trial is told its last report as its value, as the runner tells an unstable one.
    reports = {STEPS_SEARCHED: value} if state == TrialState.PRUNED else {}
    study.add_trial(create_trial(state=state, value=value, user_attrs=user_attrs, intermediate_values=reports))
    return study.get_trials()[-1].number


def hand_made(tmp_path: Path, lr: float) -> tuple[Storage, int]:
    """A study whose one search trial looked best at 30 steps with ``lr`` (constant schedule, Adam's defaults)."""
    store = open_storage(f"sqlite:///{tmp_path}/hand.db", create=True)
    study = open_search_study(store, NAME, TINY, SPACE, SETTINGS)
    return store, add_search_trial(study, OptimConfig(lr=lr), -1.0)


# --- seeds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [0, 7, 123456])
def test_confirmation_seeds_are_new_distinct_and_repeatable(base):
    seeds = confirmation_seeds(base, 5)
    assert len(seeds) == len(set(seeds)) == 5
    assert base not in seeds  # every search trial trained on the base seed
    assert confirmation_seeds(base, 5) == seeds
    # Asking for more seeds later keeps the first ones, so the runs already made still count.
    assert confirmation_seeds(base, 3) == seeds[:3]


# --- what a confirmation runs and stores ------------------------------------------------------------


def test_each_candidate_runs_on_each_new_seed_at_the_stressed_horizon_outside_the_search_budget(store):
    before = study_of(store).get_trials()
    summary = confirm(store, candidates=2, seeds=2)
    study = study_of(store)
    runs = confirms(study)
    assert not summary.interrupted and summary.skipped == 0
    assert summary.runs == len(runs) and all(t.state != TrialState.RUNNING for t in study.get_trials())
    by_number = {t.number: t for t in before}
    first_stage = [t for t in runs if is_candidate_run(t)]
    assert {(t.user_attrs[OF], t.user_attrs[SEED]) for t in first_stage} == {
        (of, s) for of in {t.user_attrs[OF] for t in first_stage} for s in SEEDS
    }
    assert len(first_stage) == 2 * len(SEEDS)
    for t in runs:
        assert t.user_attrs[STEPS] == HORIZON and t.user_attrs[SEED] in SEEDS
        assert is_search(by_number[t.user_attrs[OF]])
    for t in first_stage:  # the candidate's own configuration, unchanged
        assert t.user_attrs[CONFIG] == by_number[t.user_attrs[OF]].user_attrs[CONFIG]
    # The search trials are untouched, and the search still counts only them: resuming it runs nothing.
    assert [(t.number, t.state, t.value) for t in study.get_trials() if is_search(t)] == [
        (t.number, t.state, t.value) for t in before
    ]
    assert budget_state(study) == (SETTINGS.trials, 0, 0)
    assert run_search(TINY, SPACE, store, NAME, SETTINGS).new_trials == 0


def test_the_horizon_is_the_stress_times_the_search_steps(store):
    confirm(store, candidates=1, seeds=1, stress=1.5)
    assert {t.user_attrs[STEPS] for t in confirms(study_of(store))} == {round(1.5 * STEPS_SEARCHED)}


def test_no_candidates_means_no_runs(store):
    summary = confirm(store, candidates=0)
    assert (summary.runs, summary.skipped) == (0, 0) and confirms(study_of(store)) == []


def test_candidates_are_the_best_completed_search_trials_slow_and_jumping_ones_last(store):
    study = study_of(store)
    search = [t for t in study.get_trials() if is_search(t)]
    good = [t for t in search if t.state == TrialState.COMPLETE and t.user_attrs[VERDICT] != "slow"]
    assert good, "the search of tiny.py should leave a stable trial"
    base = OptimConfig.from_dict(good[0].user_attrs[CONFIG])
    # Better scores than any real trial, each with a reason to rank after the good ones or not at all:
    unstable = add_search_trial(study, dataclasses.replace(base, lr=base.lr * 0.5), -1000.0,
                                state=TrialState.PRUNED, verdict="spiky")
    jumped = add_search_trial(study, dataclasses.replace(base, lr=base.lr * 0.6), -100.0, n_spikes=1,
                              spikes=[{"step": 20, "size": 2.0, "recovered": True}])
    slow = add_search_trial(study, dataclasses.replace(base, lr=base.lr * 0.7), -90.0, verdict="slow")
    assert major_spikes(trial_record(study.get_trials()[jumped])) == 1

    def chosen() -> set[int]:
        return {t.user_attrs[OF] for t in confirms(study_of(store)) if is_candidate_run(t)}

    # Every good trial first, however poor its score next to the others'.
    confirm(store, candidates=len(good), seeds=1)
    assert chosen() == {t.number for t in good}
    # One more: the one that jumped tenfold, before the slow one; never a search trial that ended unstable.
    confirm(store, candidates=len(good) + 1, seeds=1)
    assert chosen() == {t.number for t in good} | {jumped}
    assert unstable not in chosen() and slow not in chosen()


def test_fewer_candidates_take_the_best_scores(store):
    study = study_of(store)
    ranked = sorted((t for t in study.get_trials() if is_search(t) and t.state == TrialState.COMPLETE),
                    key=lambda t: (t.user_attrs[VERDICT] == "slow", t.value))
    confirm(store, candidates=1, seeds=1)
    assert {t.user_attrs[OF] for t in confirms(study_of(store)) if is_candidate_run(t)} == {ranked[0].number}


# --- resuming ---------------------------------------------------------------------------------------


def test_a_finished_confirmation_runs_nothing_new_when_called_again(store):
    first = confirm(store, candidates=2, seeds=2)
    done = confirms(study_of(store))
    again = confirm(store, candidates=2, seeds=2)
    assert again.runs == 0 and again.skipped == first.runs == len(done)
    assert [t.number for t in confirms(study_of(store))] == [t.number for t in done]


def test_more_seeds_later_add_only_the_new_seeds(store):
    confirm(store, candidates=1, seeds=1)
    once = {t.user_attrs[OF] for t in confirms(study_of(store)) if is_candidate_run(t)}
    confirm(store, candidates=1, seeds=2)
    runs = [t for t in confirms(study_of(store)) if is_candidate_run(t)]
    assert Counter((t.user_attrs[OF], t.user_attrs[SEED]) for t in runs) == Counter((of, s) for of in once for s in SEEDS)


def interrupting(after_models: int, after_steps: int = 10):
    """tiny.py, but Ctrl-C arrives ``after_steps`` losses into the ``after_models``-th model it builds."""
    built = {"models": 0, "losses": 0, "fired": False}

    def model():
        built["models"] += 1
        built["losses"] = 0
        return TINY.model()

    def loss(m, batch):
        built["losses"] += 1
        if built["models"] == after_models and built["losses"] == after_steps and not built["fired"]:
            built["fired"] = True
            raise KeyboardInterrupt
        return TINY.loss(m, batch)

    return dataclasses.replace(TINY, model=model, loss=loss), built


def test_an_interrupted_run_is_run_again_on_resume_and_nothing_else(searched, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    reference = copy_of(searched, tmp_path / "a")
    confirm(reference, candidates=2, seeds=2)
    expected = Counter(run_key(t) for t in counted(study_of(reference)))

    store = copy_of(searched, tmp_path / "b")
    module, built = interrupting(after_models=3)
    stopped = confirm(store, module, candidates=2, seeds=2)
    assert built["fired"] and stopped.interrupted
    study = study_of(store)
    left = [t for t in confirms(study) if t.user_attrs.get(FAILURE) == "interrupted"]
    assert len(left) == 1 and left[0].state == TrialState.FAIL
    before = {t.number for t in counted(study)}
    assert 0 < len(before) < sum(expected.values())
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]  # the stage's other slots stay queued

    resumed = confirm(store, candidates=2, seeds=2)
    assert not resumed.interrupted
    assert resumed.skipped == len(before) and resumed.runs == sum(expected.values()) - len(before)
    study = study_of(store)
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert {t.number for t in counted(study)} >= before  # the runs made before the interrupt were kept, not redone
    again = [t for t in counted(study) if run_key(t) == run_key(left[0])]
    assert len(again) == 1 and again[0].number > left[0].number
    # In the end the study holds each run of an uninterrupted confirmation exactly once.
    assert Counter(run_key(t) for t in counted(study)) == expected


# --- the later stages: rescue, edge probes, back-off ------------------------------------------------


def stages(store: Storage) -> dict[str, list[FrozenTrial]]:
    runs = confirms(study_of(store))
    return {
        "candidate": [t for t in runs if is_candidate_run(t)],
        "rescue": [t for t in runs if t.user_attrs[RESCUE]],
        "probe": [t for t in runs if t.user_attrs[PROBE]],
        "backoff": [t for t in runs if t.user_attrs[BACKOFF]],
    }


def lrs(runs: list[FrozenTrial]) -> list[float]:
    return sorted({t.user_attrs[CONFIG]["lr"] for t in runs})


def seeds_of(runs: list[FrozenTrial]) -> list[int]:
    return sorted(t.user_attrs[SEED] for t in runs)


def test_a_passing_probe_ends_the_probing_and_nothing_unstable_means_no_back_off(tmp_path):
    store, source = hand_made(tmp_path, 1e-3)
    summary = confirm(store, candidates=1, seeds=2, safety=3.0)
    found = stages(store)
    assert seeds_of(found["candidate"]) == SEEDS and lrs(found["candidate"]) == [1e-3]
    assert seeds_of(found["probe"]) == SEEDS and lrs(found["probe"]) == [pytest.approx(3e-3)]  # passed: no sqrt(3)x probe
    assert found["rescue"] == [] and found["backoff"] == []
    assert summary.runs == 4 and {t.user_attrs[OF] for t in confirms(study_of(store))} == {source}


def test_a_rescue_that_survives_is_probed_and_backed_off_like_a_candidate(tmp_path):
    safety = 1000.0
    store, source = hand_made(tmp_path, 10.0)  # diverges on every seed
    summary = confirm(store, candidates=1, seeds=2, safety=safety)
    found = stages(store)
    assert seeds_of(found["candidate"]) == SEEDS and lrs(found["candidate"]) == [10.0]
    assert all(t.state == TrialState.PRUNED for t in found["candidate"])
    # Every candidate failed: the best is confirmed again at 1/safety of its learning rate.
    assert seeds_of(found["rescue"]) == SEEDS and lrs(found["rescue"]) == [pytest.approx(0.01)]
    # Probes: x1000 would land on lr 10, known to fail, so only the sqrt(1000)x probe runs.
    assert seeds_of(found["probe"]) == SEEDS and lrs(found["probe"]) == [pytest.approx(0.01 * math.sqrt(safety))]
    # The back-off is the configuration `recommend` picks, confirmed on the same seeds.
    chosen = recommend([trial_record(t) for t in study_of(store).get_trials()], NAME, safety=safety)
    assert seeds_of(found["backoff"]) == SEEDS and lrs(found["backoff"]) == [pytest.approx(chosen.config.lr)]
    assert chosen.config.lr < 0.01 and chosen.evidence["backoff_check"]["seeds"] == SEEDS
    assert summary.runs == 8 == len(confirms(study_of(store)))
    assert {t.user_attrs[OF] for t in confirms(study_of(store))} == {source}
    assert confirm(store, candidates=1, seeds=2, safety=safety).runs == 0  # every stage resumes as done


@pytest.fixture(scope="module")
def all_diverge(tmp_path_factory) -> Storage:
    """A hand-made candidate at lr 100, confirmed: it and its rescues diverge on every seed."""
    store, _ = hand_made(tmp_path_factory.mktemp("diverge"), 100.0)
    confirm(store, candidates=1, seeds=2, safety=3.0)
    return store


def test_when_the_rescue_fails_too_nothing_is_probed_or_backed_off(all_diverge):
    found = stages(all_diverge)
    assert lrs(found["candidate"]) == [100.0] and seeds_of(found["candidate"]) == SEEDS
    assert pytest.approx(100.0 / 3) in lrs(found["rescue"]) and all(t.state == TrialState.PRUNED for t in found["rescue"])
    assert found["probe"] == [] and found["backoff"] == []


def test_a_failed_rescue_is_tried_again_at_a_ninth(all_diverge):
    # diverged runs tie on score: the second round must back the first rescue off, not propose its third again
    assert pytest.approx(100.0 / 9) in lrs(stages(all_diverge)["rescue"])
