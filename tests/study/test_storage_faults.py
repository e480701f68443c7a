"""Storage faults end the run with one line and leave the trial recoverable; user code cannot move or lose the study."""

from __future__ import annotations

import errno

import optuna
import sqlalchemy.exc
import sqlalchemy.orm

from stabsearch.study import runner
from tests.support import module_path


def _trials(workdir):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/studies/stabsearch.db").get_trials()


def test_user_code_that_changes_directory_moves_nothing(workdir, cli, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.setenv("STABSEARCH_TEST_ELSEWHERE", str(elsewhere))
    r = cli("run", module_path("wanders"), "--trials", 2, "--confirm", 0, "--no-progress")
    assert r.code == 0, r.err
    assert "2/2 trials finished" in r.err and "failed" not in r.err
    study = optuna.load_study(study_name="wanders", storage=f"sqlite:///{workdir}/studies/stabsearch.db")
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    artifacts = list((workdir / "studies" / "artifacts").iterdir())
    assert len(artifacts) == 2 and (workdir / "studies" / "wanders.html").exists()
    assert list(elsewhere.iterdir()) == []  # nothing was written where the user code went


def test_a_database_deleted_during_the_run_ends_it_with_one_line(workdir, cli):
    r = cli("run", module_path("deletes_db"), "--trials", 3, "--confirm", 0, "--no-progress")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert lines[-1].startswith("stabsearch: error: storage sqlite:///studies/stabsearch.db: ")
    assert lines[-1].endswith("stabsearch.db was deleted during the run") and "finished" not in r.err


def test_a_full_disk_ends_the_run_with_one_line_and_leaves_the_trial_recoverable(workdir, cli, monkeypatch):
    def full(**_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(optuna.artifacts, "upload_artifact", full)
    r = cli("run", module_path("tiny"), "--trials", 2, "--confirm", 0, "--no-progress")
    assert r.code == 2 and "Traceback" not in r.err
    assert r.err.strip().splitlines()[-1] == (
        "stabsearch: error: storage sqlite:///studies/stabsearch.db: OSError: [Errno 28] No space left on device"
    )
    (trial,) = _trials(workdir)
    assert trial.state.name == "RUNNING" and "error" not in trial.user_attrs  # not a user-code error; recoverable


def test_a_database_write_that_fails_mid_trial_is_no_user_code_error(workdir, cli, monkeypatch):
    execute = sqlalchemy.orm.Session.execute

    def refused(self, statement, *args, **kwargs):
        if "trial_intermediate_values" in str(getattr(statement, "table", "")):  # a write of the reports
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))
        return execute(self, statement, *args, **kwargs)

    # Reports are written every REPORT_WRITE_SECONDS while a trial trains: at every report here, the first refused.
    monkeypatch.setattr(runner, "REPORT_WRITE_SECONDS", 0.0)
    monkeypatch.setattr(sqlalchemy.orm.Session, "execute", refused)
    r = cli("run", module_path("tiny"), "--trials", 2, "--steps", 200, "--confirm", 0, "--no-progress")
    assert r.code == 2
    assert r.err.strip().splitlines()[-1] == (
        "stabsearch: error: storage sqlite:///studies/stabsearch.db: Exception: attempt to write a readonly database"
    )
    (trial,) = _trials(workdir)
    assert trial.state.name == "RUNNING" and "failure" not in trial.user_attrs
