"""The trial-attribute layout: a result written in one transaction reads back whole; failures; search trials."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from stabsearch.analysis.early_warning import EarlyWarning
from stabsearch.analysis.verdict import analyze
from stabsearch.config import OptimConfig
from stabsearch.study import optuna_internals
from stabsearch.study.storage import open_storage
from stabsearch.study.trial_attrs import (
    CONSTRAINTS, is_search, mark_failed, run_attrs, study_records, trial_record, write_result,
)
from stabsearch.training.trainer import TrainResult


@pytest.fixture(params=["sqlite", "memory"])
def study(request, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if request.param == "memory":
        return optuna.create_study()
    store = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    return optuna.create_study(study_name="attrs", storage=store.storage)


def _run(spike_at: int | None = None) -> tuple[TrainResult, object]:
    losses = np.exp(-np.linspace(0.0, 3.0, 200))
    if spike_at is not None:
        losses[spike_at] *= 40.0
    result = TrainResult(losses=losses, diverged_at=None, seconds=1.23456, sharpness=float("nan"),
                         checks={"sharpness": "ran"}, telemetry=[{"step": 0, "grad_norm": 1.0}])
    return result, analyze(losses)


def test_a_written_result_reads_back_as_the_record(study):
    trial = study.ask()
    config = OptimConfig(lr=3e-3, eps=1e-7)
    optuna_internals.set_trial_attrs(trial, run_attrs("search", config, seed=4, steps=200, device="cpu"))
    result, analysis = _run(spike_at=150)
    warning = EarlyWarning(True, 2.5, "eps-dominated at the peak learning rate")
    write_result(trial, result, analysis, warning, score=analysis.score + 1.0, penalty=1.0,
                 telemetry={"samples": 1}, curve_artifact="abc-123")
    assert trial.user_attrs["verdict"] == analysis.verdict  # the live trial sees what it wrote
    study.tell(trial, analysis.score + 1.0)

    (record,) = study_records(study)
    assert (record.kind, record.seed, record.steps, record.params) == ("search", 4, 200, config.to_dict())
    assert record.verdict == analysis.verdict and record.final_loss == pytest.approx(analysis.final_loss)
    assert record.spikes == len(analysis.spikes) >= 1 and record.late_spikes == analysis.late_spikes
    assert record.warning == warning.reason and record.warning_penalty == 1.0 and record.predicted_unstable
    assert record.checks == {"sharpness": "ran"} and record.curve_artifact == "abc-123" and record.unreadable == ()
    stored = study.trials[0]
    assert stored.user_attrs["sharpness"] is None and stored.user_attrs["seconds"] == 1.235  # non-finite: None
    assert stored.system_attrs[CONSTRAINTS] == [float(analysis.late_spikes), 1.0]


def test_a_result_on_a_sql_storage_is_one_commit(tmp_path):
    store = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    study = optuna.create_study(study_name="one", storage=store.storage)
    trial = study.ask()
    commits = []
    sqlalchemy.event.listen(store.storage.engine, "commit", lambda conn: commits.append(1))
    result, analysis = _run()
    write_result(trial, result, analysis, EarlyWarning(False, 1.0, "ok"), score=analysis.score, penalty=0.0,
                 telemetry={}, curve_artifact=None)
    assert len(commits) == 1
    assert len(study.trials[0].user_attrs) >= 20


def test_drawn_parameters_and_reports_go_with_the_attributes_in_one_commit_and_read_back_as_optuna_writes_them(tmp_path):
    store = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    study = optuna.create_study(study_name="params", storage=store.storage)
    first = study.ask()
    first.suggest_float("lr", 1e-4, 1e-1, log=True)  # Optuna's own write: the study's first "lr"
    trial = study.ask()
    with optuna_internals.params_kept(trial) as params:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        schedule = trial.suggest_categorical("schedule", ["constant", "cosine"])
    assert trial.params == {"lr": lr, "schedule": schedule} and study.trials[1].params == {}  # drawn, not yet written
    commits = []
    sqlalchemy.event.listen(store.storage.engine, "commit", lambda conn: commits.append(1))
    reports = {50: -0.5, 100: float("inf"), 150: float("-inf"), 200: float("nan")}
    optuna_internals.set_trial_attrs(trial, {"kind": "search"}, {"stabsearch:note": 1}, reports, params)
    assert len(commits) == 1
    optuna_internals.set_trial_attrs(trial, {}, reports={100: -1.0})  # a step written again is replaced
    stored = study.trials[1]
    assert stored.params == {"lr": lr, "schedule": schedule} and stored.user_attrs == {"kind": "search"}
    assert stored.system_attrs["stabsearch:note"] == 1
    values = stored.intermediate_values
    assert values[50] == -0.5 and values[100] == -1.0 and values[150] == float("-inf") and np.isnan(values[200])
    # a parameter whose distribution contradicts the study's earlier one is refused, as Optuna refuses it
    third = study.ask()
    with optuna_internals.params_kept(third) as params:
        third.suggest_float("lr", 1e-4, 1e-1)  # linear where the study's lr is log
    with pytest.raises(ValueError, match="Cannot set different log configuration to the same parameter name"):
        optuna_internals.set_trial_attrs(third, {}, params=params)


def test_mark_failed_records_the_reason_and_the_error_line(study):
    trial = study.ask()
    try:
        raise ValueError("shapes (3, 4) and (5,) differ\nsecond line")
    except ValueError as exc:
        mark_failed(trial, "user-code error", exc, hint="check the model")
    stored = study.trials[0]
    assert stored.state == TrialState.FAIL
    assert stored.user_attrs["failure"] == "user-code error" and stored.user_attrs["hint"] == "check the model"
    assert stored.user_attrs["error"] == "ValueError: shapes (3, 4) and (5,) differ"
    assert "raise ValueError" in stored.user_attrs["traceback"]
    record = trial_record(stored)
    assert (record.verdict, record.failure, record.error) == ("failed", "user-code error", "ValueError: shapes (3, 4) and (5,) differ")


def test_a_failed_trial_keeps_the_reports_it_had_not_written(study):
    trial = study.ask()
    mark_failed(trial, "timed out", reports={50: -0.25, 100: -0.5})
    stored = study.trials[0]
    assert stored.state == TrialState.FAIL and stored.intermediate_values == {50: -0.25, 100: -0.5}


def test_mark_failed_without_traceback_or_exception(study):
    first, second = study.ask(), study.ask()
    mark_failed(first, "timed out", TimeoutError("trial time limit of 5s reached"), with_traceback=False)
    mark_failed(second, "interrupted")
    a, b = study.trials
    assert a.user_attrs == {"verdict": "failed", "failure": "timed out", "error": "TimeoutError: trial time limit of 5s reached"}
    assert b.user_attrs == {"verdict": "failed", "failure": "interrupted"} and b.state == TrialState.FAIL


def test_is_search():
    plain = optuna.trial.create_trial(value=1.0)
    confirm = optuna.trial.create_trial(value=1.0, user_attrs={"kind": "confirm"})
    search = optuna.trial.create_trial(value=1.0, user_attrs={"kind": "search"})
    assert is_search(plain) and is_search(search) and not is_search(confirm)
