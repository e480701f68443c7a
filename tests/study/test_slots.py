"""search/slots.py on a SQLite study in tmp_path, in this process: reserving, claiming, re-queueing, recovering."""

from __future__ import annotations

import os
import time

import optuna
import pytest
from optuna.trial import TrialState

from stabsearch.study import optuna_internals
from stabsearch.study.slots import (
    HEARTBEAT_KEY, OWNER_KEY, abandon, budget_state, claim, counts_toward_budget, end_timed_out, machine_id,
    recover_lost, reserve,
)
from stabsearch.study.storage import open_storage


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(f"sqlite:///{tmp_path}/slots.db", create=True)
    return optuna.create_study(study_name="slots", storage=store.storage)


def _drawn(trial: optuna.Trial) -> None:
    """The trial draws its configuration, as a search trial does."""
    trial.suggest_float("lr", 1e-4, 1.0, log=True)
    trial.set_user_attr("config", {"lr": trial.params["lr"]})


def test_reserve_tops_up_to_the_target_and_no_further(study):
    assert reserve(study, 3, at_most=2) == 2
    assert reserve(study, 3) == 1
    assert reserve(study, 3) == 0
    assert budget_state(study) == (0, 0, 3)
    assert all(t.state == TrialState.WAITING and t.user_attrs == {"kind": "search"} for t in study.trials)


def test_claim_takes_a_slot_once_and_records_its_owner(study):
    reserve(study, 2)
    first, second = claim(study, interval=2.0), claim(study, interval=2.0)
    assert {first.number, second.number} == {0, 1}
    assert claim(study) is None  # none left: the worker stops
    stored = optuna_internals.stored_trial(first)
    assert stored.state == TrialState.RUNNING and stored.system_attrs[OWNER_KEY]["pid"] == os.getpid()
    assert stored.system_attrs[OWNER_KEY]["interval"] == 2.0 and time.time() - stored.system_attrs[HEARTBEAT_KEY] < 60
    assert budget_state(study) == (0, 2, 0)


def test_claim_takes_only_what_accept_takes(study):
    study.enqueue_trial({}, user_attrs={"kind": "confirm"})
    assert claim(study) is None  # the default takes search slots only
    taken = claim(study, accept=lambda t: t.user_attrs.get("kind") == "confirm")
    assert taken is not None and optuna_internals.stored_trial(taken).state == TrialState.RUNNING


def test_an_abandoned_trial_is_queued_again_with_its_configuration_and_not_counted(study):
    reserve(study, 1)
    trial = claim(study)
    _drawn(trial)
    assert abandon(study, trial, "interrupted")
    lost, again = study.trials
    assert lost.state == TrialState.FAIL and lost.user_attrs["failure"] == "interrupted" and not counts_toward_budget(lost)
    assert again.state == TrialState.WAITING and again.user_attrs["requeued_from"] == lost.number
    assert again.system_attrs["fixed_params"] == lost.params
    assert budget_state(study) == (0, 0, 1)
    rerun = claim(study)
    rerun.suggest_float("lr", 1e-4, 1.0, log=True)
    assert rerun.params == lost.params  # the re-run trains the same configuration


def test_abandoning_a_trial_that_was_already_told_changes_nothing(study):
    reserve(study, 1)
    trial = claim(study)
    study.tell(trial, 0.5)
    assert not abandon(study, trial, "interrupted")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_a_lost_trial_is_failed_and_retried_once(study):
    if machine_id() is None:
        pytest.skip("owners are checked by pid on Linux only")
    reserve(study, 1)
    trial = claim(study)
    _drawn(trial)
    gone = {**optuna_internals.stored_trial(trial).system_attrs[OWNER_KEY], "start": "not-its-start"}
    optuna_internals.set_trial_system_attr(study, trial, OWNER_KEY, gone)  # its process exited
    assert recover_lost(study, 10.0) == [trial.number]
    lost, retry = study.trials
    assert lost.state == TrialState.FAIL and lost.user_attrs["failure"] == "worker lost"
    assert "is gone" in lost.user_attrs["error"] and retry.user_attrs["retry"] == 1
    again = claim(study)
    _drawn(again)
    optuna_internals.set_trial_system_attr(study, again, OWNER_KEY, gone)
    assert recover_lost(study, 10.0) == [again.number]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]  # the retry is not queued again
    assert recover_lost(study, 10.0) == []


def test_a_silent_trial_is_recovered_after_six_of_its_beats(study):
    reserve(study, 1)
    trial = claim(study, interval=1.0)
    assert recover_lost(study, 1.0, now=time.time() + 5) == []
    assert recover_lost(study, 1.0, now=time.time() + 30) == [trial.number]
    assert "no heartbeat" in study.trials[0].user_attrs["error"]


def test_a_timed_out_trial_counts_and_is_not_rerun(study):
    reserve(study, 1)
    trial = claim(study)
    assert end_timed_out(study, optuna_internals.stored_trial(trial), 5.0)
    (ended,) = study.trials
    assert ended.state == TrialState.FAIL and ended.user_attrs["failure"] == "timed out" and counts_toward_budget(ended)
    assert "--trial-timeout" in ended.user_attrs["error"]
    assert not end_timed_out(study, ended, 5.0)  # no longer RUNNING
