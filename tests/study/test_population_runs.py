"""Populations inside a search and a confirmation: the median rule per member, refills asked from a sampler that
has seen every trial told so far, and confirmation runs that end as they end alone."""

from __future__ import annotations

import dataclasses
import sqlite3

import optuna
import pytest
import torch

from stabsearch import SearchSpace, load_model_module
from stabsearch.study.confirm import ConfirmSettings, run_confirmation
from stabsearch.study.runner import SearchSettings, open_context, run_population, run_search, run_trial
from stabsearch.study.slots import claim
from stabsearch.study.recommend import recommend
from stabsearch.study.storage import open_storage
from stabsearch.study.trial_attrs import study_records
from tests.support import module_path

CPU = torch.device("cpu")
TINY = load_model_module(module_path("tiny"))


def base_study(tmp_path, space, settings, name="base"):
    """A finished sequential search of ``tiny``, to copy."""
    store = open_storage(f"sqlite:///{tmp_path}/{name}.db", create=True)
    assert run_search(TINY, space, store, "s", dataclasses.replace(settings, population=1)).finished == settings.trials
    return tmp_path / f"{name}.db"


def copy_of(base, path):
    with sqlite3.connect(base) as source, sqlite3.connect(path) as copy:
        source.backup(copy)  # WAL: the file alone may not hold the trials yet
    return open_storage(f"sqlite:///{path}")


def test_a_slow_member_is_stopped_by_the_sequential_median_rule_on_the_same_reports(tmp_path):
    space = SearchSpace().override({"lr": {"low": 3e-3, "high": 3e-2, "log": True}, "warmup": 0.0}, source="test")
    settings = SearchSettings(trials=6, steps=200, seed=0, progress=False, device=CPU, early_warning=False)
    base = base_study(tmp_path, space, settings)
    finished = optuna.load_study(study_name="s", storage=f"sqlite:///{base}").trials
    slow = {**finished[0].params, "lr": 3e-3}  # the smallest lr of the space: behind the median at every report
    fast = {**finished[0].params, "lr": 3e-2}
    outcome = {}
    for mode in ("sequential", "population"):
        store = copy_of(base, tmp_path / f"{mode}.db")
        context = open_context(TINY, space, store, "s", dataclasses.replace(settings, trials=8))
        for params in (slow, fast):
            context.study.enqueue_trial(params, user_attrs={"kind": "search"})
        held = [claim(context.study), claim(context.study)]
        if mode == "sequential":
            verdicts = [run_trial(context, t) for t in held]
        else:
            verdicts = run_population(context, held)
            verdicts = [verdicts[0], verdicts[1]] if verdicts[0] == "slow" else verdicts[::-1]  # the slow one leaves first
        trials = [context.study._storage.get_trial(t._trial_id) for t in held]
        outcome[mode] = (verdicts, trials)
    (seq_verdicts, seq), (pop_verdicts, pop) = outcome["sequential"], outcome["population"]
    assert seq_verdicts[0] == pop_verdicts[0] == "slow"
    assert seq[0].state == pop[0].state == optuna.trial.TrialState.PRUNED
    assert seq[0].user_attrs["stopped_slow_at"] == pop[0].user_attrs["stopped_slow_at"]
    assert seq[0].user_attrs["steps_run"] == pop[0].user_attrs["steps_run"] < 200
    assert sorted(seq[0].intermediate_values) == sorted(pop[0].intermediate_values)
    for step, value in seq[0].intermediate_values.items():
        assert pop[0].intermediate_values[step] == pytest.approx(value, abs=1e-4)  # decades
    assert pop[0].user_attrs["score"] == pytest.approx(seq[0].user_attrs["score"], abs=1e-4)
    assert seq_verdicts[1] == pop_verdicts[1] != "slow"  # the fast one was not stopped, in either
    assert pop[0].user_attrs["population"] == 2


def test_a_population_asks_the_sampler_for_a_member_only_when_its_slot_frees_up(tmp_path):
    # 10 trials in slots of 4: each refill is claimed, and its configuration drawn, after the trial whose slot it
    # took was told, so the sampler had seen every trial told by then.
    store = open_storage(f"sqlite:///{tmp_path}/refill.db", create=True)
    settings = SearchSettings(trials=10, steps=100, seed=0, progress=False, population=4, device=CPU, early_warning=False)
    space = SearchSpace().override({"lr": {"low": 1e-3, "high": 30.0, "log": True}}, source="test")
    assert run_search(TINY, space, store, "s", settings).finished == 10
    trials = optuna.load_study(study_name="s", storage=store.storage).trials
    later = trials[4:]
    assert len(trials) == 10 and all(t.user_attrs["population"] == 4 for t in trials)
    for trial in later:  # claimed (datetime_start), then sampled
        told_before = [t for t in trials if t.number < trial.number and t.datetime_complete <= trial.datetime_start]
        # at least as many told as slots freed so far: trial 4 after the first one told, trial 9 after six
        assert len(told_before) >= trial.number - 3, (trial.number, len(told_before))
    # ... and not in rounds of 4: refills join while members that started before them still train
    assert any(t.datetime_complete > trial.datetime_start for trial in later for t in trials[:4]), "no refill joined a running population"


# Learning rates up to 5e-3 (edge probes up to 1.5e-2): at 5e-2 the curves of tiny are chaotic, and one ulp
# in the initial weights alone moves train_trial's final loss by 47% and can turn a verdict.
CALM_SPACE = SearchSpace().override({"lr": {"low": 1e-3, "high": 5e-3, "log": True}, "warmup": 0.0}, source="test")
CALM = SearchSettings(trials=8, steps=120, seed=0, progress=False, device=CPU)


def confirmed(base, path, population: int):
    """Confirm a copy (at ``path``) of the searched study ``base`` with ``--population``; its storage, the
    summary and the confirmation trials."""
    store = copy_of(base, path)
    summary = run_confirmation(TINY, CALM_SPACE, store, "s", dataclasses.replace(CALM, population=population), ConfirmSettings())
    trials = [t for t in optuna.load_study(study_name="s", storage=store.storage).trials if t.user_attrs.get("kind") == "confirm"]
    return store, summary, trials


def run_key(trial) -> tuple[str, int]:
    """A confirmation run by what it trains: its configuration and seed."""
    return str(trial.user_attrs["config"]), trial.user_attrs["seed"]


def test_a_population_confirmation_gives_each_run_the_verdict_it_gets_alone(tmp_path):
    # Confirmation runs differ in seed (weights and batches) and in config; trained as one population each must
    # end as it ends trained alone, and a second call redoes nothing (the stage's resume semantics). A population
    # of 4 has no room for the probes of every candidate: the same runs as one at a time.
    base = base_study(tmp_path, CALM_SPACE, CALM)
    runs = {}
    for mode, size in (("sequential", 1), ("population", 4)):
        store, summary, trials = confirmed(base, tmp_path / f"{mode}.db", size)
        assert summary.runs >= 9 and not summary.interrupted
        again = run_confirmation(TINY, CALM_SPACE, store, "s", dataclasses.replace(CALM, population=size), ConfirmSettings())
        assert again.runs == 0 and again.skipped >= 9
        runs[mode] = {run_key(t): t for t in trials}
        # a stage of 3 runs (an edge probe, the back-off) trains as a population of 3
        assert {t.user_attrs.get("population") for t in trials} == ({3, 4} if size > 1 else {None})
    seq, pop = runs["sequential"], runs["population"]
    assert sorted(seq) == sorted(pop)
    assert len({seed for _, seed in seq}) == 3
    for key, alone in seq.items():
        member = pop[key]
        assert member.user_attrs["verdict"] == alone.user_attrs["verdict"], key
        assert member.state == alone.state and member.user_attrs["steps_run"] == alone.user_attrs["steps_run"]
        assert sorted(member.intermediate_values) == sorted(alone.intermediate_values)
        if alone.value is not None:
            assert member.value == pytest.approx(alone.value, abs=1e-2)  # decades: float rounding, amplified by training


def test_a_population_with_room_probes_every_candidate_beside_its_runs_and_recommends_as_one_at_a_time(tmp_path):
    # 3 candidates x 3 seeds, and their 3x and sqrt(3)x probes (18 more): 27 runs fit a population of 32, so the
    # first stage trains them all at once and the probe stages find the chosen candidate's probes done.
    base = base_study(tmp_path, CALM_SPACE, CALM)
    studies = {}
    for mode, size in (("sequential", 1), ("population", 32)):
        store, summary, trials = confirmed(base, tmp_path / f"{mode}.db", size)
        # the probe stage finds the probes trained ahead done, but nothing was done before this call
        assert not summary.interrupted and summary.skipped == 0 and summary.runs == len(trials)
        studies[mode] = (trials, study_records(optuna.load_study(study_name="s", storage=store.storage)))
    (seq, seq_records), (pop, pop_records) = studies["sequential"], studies["population"]
    first = [t for t in pop if t.user_attrs.get("population") == 27]
    assert len(first) == 27 and sum(t.user_attrs["probe"] for t in first) == 18
    assert len({t.user_attrs["of"] for t in first if t.user_attrs["probe"]}) == 3  # every candidate probed
    # every run of the sequential stages ran in the population too, with the same verdict
    by_key = {run_key(t): t for t in pop}
    assert {run_key(t) for t in seq} <= set(by_key)
    for t in seq:
        assert by_key[run_key(t)].user_attrs["verdict"] == t.user_attrs["verdict"], run_key(t)
    assert all(t.user_attrs["probe"] for t in pop if run_key(t) not in {run_key(s) for s in seq})  # the extra runs are probes
    # Here every probe passes, so the probes beyond the sequential ones change nothing recommended.
    a, b = recommend(seq_records, "s"), recommend(pop_records, "s")
    assert set(b.evidence["edge_probes"].values()) == {"passed"} and len(b.evidence["edge_probes"]) == 2
    assert a.config == b.config and a.evidence["trial"] == b.evidence["trial"]
    again = confirmed(tmp_path / "population.db", tmp_path / "again.db", 32)[1]
    assert again.runs == 0 and again.skipped == len(pop)  # each run once, though a probe is a job of two stages
