"""Several workers on one study, PostgreSQL, crash recovery, and a soak on SQLite.

The PostgreSQL tests need a server: .ci/run starts one and sets
STABSEARCH_TEST_POSTGRES to its URL (with a password, so that its absence from
every output can be checked).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import optuna
import pytest

from tests.support import CLI_ENV, module_path, stabsearch

PG = os.environ.get("STABSEARCH_TEST_POSTGRES")
needs_pg = pytest.mark.skipif(not PG, reason="STABSEARCH_TEST_POSTGRES is not set (.ci/run sets it)")
ENV = CLI_ENV


def study_trials(storage, name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def assert_exactly(trials, n):
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(n)), numbers  # exactly n, no duplicates, no gaps
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), [t.state.name for t in trials]


@needs_pg
@pytest.mark.slow
def test_four_workers_on_postgres_reach_exactly_the_requested_trials(tmp_path):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    r = stabsearch("run", module_path("tiny"), "--storage", PG, "--study", name, "--trials", 16,
                   "--workers", 4, "--steps", 60, "--confirm", 0, "--no-progress", cwd=tmp_path)
    assert "lock" not in r.stderr.lower() and "Traceback" not in r.stderr
    assert_exactly(study_trials(PG, name), 16)


@pytest.mark.slow
def test_two_workers_on_sqlite_reach_exactly_the_requested_trials(tmp_path):
    r = stabsearch("run", module_path("tiny"), "--trials", 10, "--workers", 2, "--steps", 60, "--confirm", 0,
                   "--no-progress", cwd=tmp_path)
    assert "lock" not in r.stderr.lower()
    assert_exactly(study_trials(f"sqlite:///{tmp_path}/studies/stabsearch.db", "tiny"), 10)


def wait_for(what: str, check, timeout: float = 300.0, every: float = 0.05):  # noqa: ANN001, ANN201
    """Poll ``check()`` until it returns something true, and return that; a generous deadline, never a guess."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception:  # the storage may not exist yet, or be busy for a moment
            found = None
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not seen within {timeout:.0f}s")


@pytest.mark.slow
def test_sigkill_mid_trial_is_recovered_and_rerun_once(tmp_path):
    db = f"sqlite:///{tmp_path}/studies/stabsearch.db"
    args = ("run", module_path("slow"), "--trials", 3, "--heartbeat", 0.2, "--confirm", 0, "--no-progress")
    hold = tmp_path / "hold"
    hold.mkdir()
    # The second trial holds (tests/modules/slow.py) until the kill, so the kill lands while it runs, under any load.
    proc = subprocess.Popen([sys.executable, "-m", "stabsearch", *map(str, args)], cwd=tmp_path,
                            env={**ENV, "STABSEARCH_TEST_HOLD": str(hold)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killed = wait_for("trial 1 RUNNING and held", lambda: (hold / "holding").exists() and next(
            (t for t in study_trials(db, "slow") if t.state.name == "RUNNING" and t.number == 1), None))
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert study_trials(db, "slow")[1].state.name == "RUNNING"  # the crash left it behind

    from stabsearch.study.slots import GRACE_BEATS, HEARTBEAT_KEY

    def stale() -> bool:  # its last stored heartbeat is older than the grace period, as the resume will judge it
        t = study_trials(db, "slow")[1]
        last = t.system_attrs.get(HEARTBEAT_KEY, t.datetime_start.timestamp())
        return time.time() - float(last) > GRACE_BEATS * 0.2

    wait_for("trial 1's heartbeat going stale", stale, timeout=60)
    stabsearch(*args, cwd=tmp_path)
    trials = study_trials(db, "slow")
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    lost = trials[1]
    assert lost.state.name == "FAIL" and lost.user_attrs["failure"] == "worker lost"
    reruns = [t for t in trials if t.user_attrs.get("requeued_from") == 1]
    assert len(reruns) == 1 and reruns[0].params == killed.params and reruns[0].state.name == "COMPLETE"
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3
    out = json.loads(stabsearch("trials", "--format", "json", cwd=tmp_path).stdout)
    assert out[1]["failure"] == "worker lost"


@pytest.mark.slow
def test_soak_hundreds_of_trials_across_workers(tmp_path):
    stabsearch("run", module_path("tiny"), "--trials", 240, "--workers", 2, "--steps", 8, "--confirm", 0,
               "--no-progress", cwd=tmp_path, timeout=900)
    path = tmp_path / "studies" / "stabsearch.db"
    trials = study_trials(f"sqlite:///{path}", "tiny")
    assert_exactly(trials, 240)
    assert all("verdict" in t.user_attrs and "curve_artifact" in t.user_attrs for t in trials)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@needs_pg
def test_wrong_password_is_one_line_and_never_shows_the_password(tmp_path):
    bad = PG.replace(":stabsearch-secret@", ":not-the-password@")
    assert bad != PG
    r = stabsearch("trials", "--storage", bad, cwd=tmp_path, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "not-the-password" not in r.stderr and "***" in r.stderr


@needs_pg
@pytest.mark.slow
def test_the_password_appears_in_no_output(tmp_path):
    name = f"pw-{uuid.uuid4().hex[:8]}"
    password = PG.split(":")[2].split("@")[0]
    outputs = []
    for args in (
        ("run", module_path("tiny"), "--storage", PG, "--study", name, "--trials", 3, "--steps", 40, "--confirm", 1, "--seeds", 1),
        ("trials", "--storage", PG, "--study", name),
        ("trials", "--storage", PG, "--study", name, "--format", "json"),
        ("recommend", "--storage", PG, "--study", name, "--format", "python"),
        ("studies", "--storage", PG),
        ("trials", "--storage", PG, "--study", "no-such-study"),
    ):
        r = stabsearch(*args, cwd=tmp_path, check=False)
        outputs.append(r.stdout + r.stderr)
    assert all(password not in o for o in outputs)
    assert "***" in outputs[0]
