"""Workers, signals and recovery against real processes, on SQLite and on PostgreSQL.

Every process test waits on the study's state (polling the storage up to a
generous deadline), never on a fixed sleep. The PostgreSQL variants need a
server: .ci/run starts one and sets STABSEARCH_TEST_POSTGRES.
"""

from __future__ import annotations

import _thread
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest

from tests.support import CLI_ENV, module_path, stabsearch

PG = os.environ.get("STABSEARCH_TEST_POSTGRES")
ENV = CLI_ENV
DEADLINE = 120.0


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """(storage URL, CLI arguments naming it and a fresh study, study name)."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    if request.param == "postgres":
        if not PG:
            pytest.skip("STABSEARCH_TEST_POSTGRES is not set (.ci/run sets it)")
        return PG, ["--storage", PG, "--study", name], name
    (tmp_path / "studies").mkdir()
    return f"sqlite:///{tmp_path}/studies/stabsearch.db", ["--study", name], name


def start(*args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "stabsearch", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def trials_of(url, name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except Exception:  # not created yet
        return []


def wait_for(what, check, deadline=DEADLINE):
    """Poll ``check()`` until it returns something truthy; fail after ``deadline`` seconds."""
    end = time.time() + deadline
    while time.time() < end:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    pytest.fail(f"waited {deadline:.0f}s for {what}")


def running(url, name, n=1):
    """A check for ``wait_for``: the running trials once at least ``n`` have started training."""
    def check():
        now = [t for t in trials_of(url, name) if t.state.name == "RUNNING" and "config" in t.user_attrs]
        return now if len(now) >= n else None
    return check


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def children(pid):
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(d.name))
    return out


def assert_accounted(trials):
    """Nothing RUNNING or WAITING; every FAIL has a kind of failure; an interrupted or lost trial was re-run.

    A trial stopped before its configuration was drawn (no ``config``) has no configuration to re-run.
    """
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")], [(t.number, t.state.name) for t in trials]
    assert all(t.user_attrs.get("failure") for t in trials if t.state.name == "FAIL")
    for t in trials:
        if t.state.name == "FAIL" and t.user_attrs["failure"] in ("interrupted", "worker lost") and t.user_attrs.get("kind", "search") == "search" \
                and "config" in t.user_attrs and not (t.user_attrs["failure"] == "worker lost" and t.user_attrs.get("retry")):
            again = [r for r in trials if r.user_attrs.get("requeued_from") == t.number]
            assert len(again) == 1 and again[0].system_attrs["fixed_params"] == t.params, t.number


def configurations(trials):
    return [json.dumps(t.params, sort_keys=True) for t in trials if t.user_attrs.get("kind", "search") == "search"]


# --- item 1: distinct configurations, one claim per slot -------------------------------------------


def test_workers_draw_distinct_configurations_and_each_trial_holds_one_curve(store, tmp_path):
    url, args, name = store
    r = stabsearch("run", module_path("tiny"), *args, "--trials", 8, "--steps", 40, "--workers", 2, "--confirm", 0,
                   "--no-progress", cwd=tmp_path)
    assert "Traceback" not in r.stderr and "error" not in r.stderr.lower(), r.stderr
    trials = trials_of(url, name)
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len(set(configurations(trials))) == 8  # 2 workers x 4 trials, none drawn twice
    for t in trials:
        curves = [k for k in t.system_attrs if k.startswith("artifacts:")]
        assert len(curves) == 1 and t.user_attrs["curve_artifact"] in curves[0], (t.number, curves)


def test_workers_on_a_journal_file_draw_distinct_configurations(tmp_path):
    r = stabsearch("run", module_path("tiny"), "--storage", "journal:studies/j.log", "--trials", 6, "--steps", 8,
                   "--workers", 2, "--confirm", 0, "--no-progress", cwd=tmp_path, timeout=300)
    assert "Traceback" not in r.stderr and "lock" not in r.stderr, r.stderr  # the slots' lock is not Optuna's journal lock
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "studies" / "j.log")))
    trials = trials_of(storage, "tiny")
    assert len(trials) == 6 and len(set(configurations(trials))) == 6
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)


def test_a_slot_is_claimed_by_exactly_one_of_many_contending_claimers(store):
    from stabsearch.study.slots import claim

    url, _, name = store
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url)
    for _ in range(60):
        study.enqueue_trial({}, user_attrs={"kind": "search"})
    won: list[int] = []
    go = threading.Barrier(6)

    def claimer():
        own = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}))
        go.wait()
        while (trial := claim(own)) is not None:
            won.append(trial.number)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == list(range(60))  # every slot once: none taken twice, none missed


def test_a_trial_stopped_before_its_configuration_was_drawn_gets_a_fresh_slot(store):
    from stabsearch.study.slots import claim, requeue

    url, _, name = store
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url)
    reserve_two = [study.enqueue_trial({}, user_attrs={"kind": "search"}) for _ in range(2)]
    assert len(reserve_two) == 2
    partial, whole = claim(study), claim(study)
    partial.suggest_float("lr", 1e-4, 1.0, log=True)  # interrupted in the middle of drawing its configuration
    for p in ("lr", "eps"):
        whole.suggest_float(p, 1e-8, 1.0, log=True)
    whole.set_user_attr("config", {"drawn": True})
    for t in (partial, whole):
        assert requeue(study, study._storage.get_trial(t._trial_id), {"verdict": "failed", "failure": "interrupted"})
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert [w.user_attrs.get("requeued_from") for w in waiting] == [None, whole.number]
    assert waiting[0].system_attrs.get("fixed_params") is None
    drawn = study._storage.get_trial(whole._trial_id).params
    assert waiting[1].system_attrs["fixed_params"] == drawn
    rerun = claim(study, accept=lambda t: t.user_attrs.get("requeued_from") == whole.number)
    assert requeue(study, study._storage.get_trial(rerun._trial_id), {"verdict": "failed", "failure": "interrupted"})
    again = [w for w in study.get_trials(deepcopy=False) if w.user_attrs.get("requeued_from") == rerun.number]
    assert len(again) == 1 and again[0].system_attrs["fixed_params"] == drawn  # interrupted before it drew: still that one


# --- item 3: signals -----------------------------------------------------------------------------


def test_a_terminal_ctrl_c_to_workers_leaves_nothing_running(store, tmp_path):
    url, args, name = store
    # Its own process group, as a shell gives a foreground job: the terminal's Ctrl-C goes to the whole group.
    proc = start("run", module_path("slow"), *args, "--trials", 20, "--steps", 200, "--workers", 2, "--confirm", 0,
                 "--no-progress", cwd=tmp_path, start_new_session=True)
    wait_for("both workers to run a trial", running(url, name, 2))
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGINT)  # a second Ctrl-C right behind the first
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    trials = trials_of(url, name)
    interrupted = [t.number for t in trials if t.user_attrs.get("failure") == "interrupted"]
    assert len(interrupted) == 2 and not [t for t in trials if t.state.name == "RUNNING"]
    waiting = [t.user_attrs.get("requeued_from") for t in trials if t.state.name == "WAITING"]
    assert sorted(waiting) == sorted(interrupted)  # the two re-queued, nothing else left queued


def test_sigints_a_millisecond_apart_leave_nothing_running(store, tmp_path):
    url, args, name = store
    proc = start("run", module_path("slow"), *args, "--trials", 3, "--steps", 200, "--confirm", 0, "--no-progress", cwd=tmp_path)
    wait_for("a trial to run", running(url, name))
    for _ in range(300):  # Ctrl-C held down: the later ones land inside the cleanup of the first
        proc.send_signal(signal.SIGINT)
        time.sleep(0.001)
    _, err = proc.communicate(timeout=DEADLINE)
    # 130, or killed by one of the last SIGINTs once the interpreter is shutting down, the trial already re-queued
    # 130 is the clean exit; a SIGINT that lands during interpreter shutdown, after the trial was re-queued,
    # kills the process there (-2), and Python may print that shutdown's traceback: the stored state below is what counts.
    assert proc.returncode == -signal.SIGINT or (proc.returncode == 130 and "Traceback" not in err), err
    assert "re-queued" in err, err
    trials = trials_of(url, name)
    assert [t.user_attrs.get("failure") for t in trials if t.state.name == "FAIL"] == ["interrupted"]
    assert not [t for t in trials if t.state.name == "RUNNING"]


def test_sigterm_is_handled_like_ctrl_c_and_the_resume_reruns_the_trial(store, tmp_path):
    url, args, name = store
    proc = start("run", module_path("slow"), *args, "--trials", 2, "--confirm", 0, "--no-progress", cwd=tmp_path)
    first = wait_for("a trial to run", running(url, name))[0]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE)
    # 130; once (on CI, and perhaps once in 26 runs here) the process, its trial re-queued and its message printed, ended
    # by SIGINT at exit instead (-2, which a shell also shows as 130): the stored state below is what counts.
    assert proc.returncode in (130, -signal.SIGINT) and "re-queued" in err and "Traceback" not in err, err
    stabsearch("run", module_path("slow"), *args, "--trials", 2, "--confirm", 0, "--no-progress", cwd=tmp_path)
    trials = trials_of(url, name)
    # the trial seen running, or (when it finished between the look and the signal) the next one
    interrupted = [t for t in trials if t.user_attrs.get("failure") == "interrupted"]
    assert interrupted and interrupted[0].number >= first.number, [(t.number, t.user_attrs.get("failure")) for t in trials]
    assert_accounted(trials)
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_workers_die_with_their_parent(store, tmp_path, sig):
    url, args, name = store
    proc = start("run", module_path("slow"), *args, "--trials", 20, "--steps", 400, "--workers", 2, "--confirm", 0,
                 "--no-progress", cwd=tmp_path)
    wait_for("both workers to run a trial", running(url, name, 2))
    workers = children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(sig)
    proc.communicate(timeout=DEADLINE)
    wait_for("the workers to exit", lambda: not any(alive(p) for p in workers), deadline=60)
    trials = trials_of(url, name)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert len([t for t in trials if t.user_attrs.get("failure") == "interrupted"]) == 2


def test_interrupts_are_held_while_a_trial_is_being_ended():
    from stabsearch.study import interrupts

    with interrupts.handling():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
                ended = True  # the block ran to its end before the interrupt was raised
        assert ended
        interrupts.shield()  # where the interrupt is caught: the cleanup that follows is never cut short
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert interrupts.interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_python_swallowed_is_raised_at_the_next_check():
    from stabsearch.study import interrupts

    with interrupts.handling():
        try:  # as Python does with an exception raised inside a weakref callback
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


# --- item 4: owners and heartbeats ---------------------------------------------------------------


def test_a_crash_then_an_immediate_resume_recovers_the_dead_trial(store, tmp_path):
    url, args, name = store
    common = ("run", module_path("slow"), *args, "--trials", 3, "--confirm", 0, "--no-progress")
    proc = start(*common, cwd=tmp_path)  # the default 10 s heartbeat: waiting out 6 beats would take a minute
    killed = wait_for("a trial to run", running(url, name))[0]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)
    assert trials_of(url, name)[killed.number].state.name == "RUNNING"
    r = stabsearch(*common, cwd=tmp_path, timeout=60)
    assert "3/3 trials finished" in r.stderr, r.stderr
    trials = trials_of(url, name)
    lost = trials[killed.number]
    assert lost.state.name == "FAIL" and lost.user_attrs["failure"] == "worker lost"
    assert "is gone" in lost.user_attrs["error"]
    assert_accounted(trials)


def _with_owner(url, name, *, beat_age, interval, machine="another-machine"):
    """A RUNNING trial whose owner is on another machine, beating every ``interval`` s, last ``beat_age`` s ago."""
    from stabsearch.study.slots import HEARTBEAT_KEY, OWNER_KEY

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, load_if_exists=True)
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, OWNER_KEY, {
        "host": "elsewhere", "machine": machine, "pid": 1, "start": "1", "interval": interval, "claimed": time.time() - beat_age})
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_KEY, time.time() - beat_age)
    return study, trial


@pytest.mark.parametrize("observer", [0.01, math.nan, math.inf])
def test_staleness_is_judged_by_the_writers_heartbeat_not_the_observers(store, observer):
    from stabsearch.study.slots import recover_lost

    url, _, name = store
    study, live = _with_owner(url, name, beat_age=5, interval=10)
    assert recover_lost(study, observer) == []
    assert study._storage.get_trial(live._trial_id).state.name == "RUNNING"
    _, dead = _with_owner(url, name, beat_age=61, interval=10)  # 6 of its 10 s beats missed
    assert recover_lost(study, observer) == [dead.number]
    assert study._storage.get_trial(live._trial_id).state.name == "RUNNING"


def test_a_trial_of_a_live_process_on_this_machine_is_not_recovered(store):
    from stabsearch.study.slots import OWNER_KEY, claim, owner_record, recover_lost

    url, _, name = store
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url)
    study.enqueue_trial({}, user_attrs={"kind": "search"})
    trial = claim(study, interval=5.0)
    owner = study._storage.get_trial(trial._trial_id).system_attrs[OWNER_KEY]
    assert owner["pid"] == os.getpid() and owner["start"] == owner_record(1)["start"] and owner["interval"] == 5.0
    assert recover_lost(study, 0.01, now=time.time() + 20) == []  # alive, and within 6 of its beats
    assert recover_lost(study, 0.01, now=time.time() + 40) == [trial.number]  # alive but silent: its beat thread is gone


def test_confirm_recovers_a_killed_run_and_two_confirms_share_the_runs(store, tmp_path):
    url, args, name = store
    stabsearch("run", module_path("slow"), *args, "--trials", 3, "--confirm", 0, "--no-progress", cwd=tmp_path)
    confirm = ("confirm", module_path("slow"), *args, "--confirm", 1, "--seeds", 2, "--no-progress")
    proc = start(*confirm, cwd=tmp_path)
    killed = wait_for("a confirmation run", lambda: [t for t in trials_of(url, name) if t.state.name == "RUNNING" and t.user_attrs.get("kind") == "confirm" and "config" in t.user_attrs])[0]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)
    both = [start(*confirm, cwd=tmp_path) for _ in range(2)]
    for p in both:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = trials_of(url, name)
    assert trials[killed.number].user_attrs["failure"] == "worker lost"
    assert_accounted(trials)
    runs = [json.dumps([t.user_attrs["config"], t.user_attrs["seed"], t.user_attrs["steps"]], sort_keys=True)
            for t in trials if t.user_attrs.get("kind") == "confirm" and t.user_attrs.get("failure") != "worker lost"]
    assert runs and len(runs) == len(set(runs)), runs  # each run once, whichever process ran it


# --- item 8: the parent ends a worker that logs no step --------------------------------------------


def test_the_parent_ends_a_worker_whose_trial_logs_no_step_for_the_trial_timeout(store, tmp_path, monkeypatch):
    import dataclasses

    from stabsearch.training.loader import load_model_module
    from stabsearch.study.runner import SearchSettings
    from stabsearch.study.space import SearchSpace
    from stabsearch.study.storage import open_storage
    from stabsearch.study.runner import open_context
    from stabsearch.study.workers import run_workers

    url, _, name = store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    module = load_model_module(module_path("hang"))
    space = SearchSpace().override(module.space, source="hang SPACE")
    settings = dataclasses.replace(SearchSettings(trials=2, steps=40, progress=False, heartbeat=0.2), trial_timeout=3.0)
    started = time.time()
    summary = run_workers(2, module_path("hang"), open_context(module, space, open_storage(url, create=True), name, settings))
    assert time.time() - started < DEADLINE
    trials = trials_of(url, name)
    assert summary.finished == 2 and not summary.worker_errors and not summary.interrupted
    assert [t.user_attrs.get("failure") for t in trials] == ["timed out", "timed out"]
    assert all("no step logged for 3s" in t.user_attrs["error"] for t in trials)


# --- item 10: bounded resources ------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--workers", 1000], ["--population", 100000]])
def test_more_workers_or_members_than_the_machine_holds_are_refused(workdir, cli, option):
    r = cli("run", module_path("tiny"), "--trials", 3, "--confirm", 0, "--no-progress", *option)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert str(option[1]) in r.err and "Traceback" not in r.err
    assert not (workdir / "studies" / "stabsearch.db").exists()


def test_reserving_slots_is_one_transaction_that_an_interrupt_rolls_back(store):
    from stabsearch.study.slots import budget_state, reserve

    url, _, name = store
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url)
    started = time.perf_counter()
    assert reserve(study, 2000) == 2000
    assert time.perf_counter() - started < 30  # one transaction, not one per slot
    assert budget_state(study) == (0, 0, 2000)
    timer = threading.Timer(0.3, _thread.interrupt_main)  # Ctrl-C in the middle of a bigger reservation
    timer.start()
    try:
        reserve(study, 200000)
        time.sleep(5)  # the interrupt, had the reservation ended first
    except KeyboardInterrupt:
        pass
    finally:
        timer.cancel()
    assert budget_state(study)[2] in (2000, 200000)  # all of it, or none of it


# --- the soak ------------------------------------------------------------------------------------


def _soak(url, args, name, cwd, *, trials, parents, workers, seed=14, deadline=420.0):
    """Run ``parents`` x ``workers`` on one study while random signals hit workers and parents; resume until done."""
    import random

    rng = random.Random(seed)
    run = ("run", module_path("tiny"), *args, "--trials", trials, "--steps", 8, "--workers", workers, "--heartbeat", 1,
           "--no-early-warning", "--confirm", 0, "--no-progress")
    procs: list = [None] * parents
    sent = {"SIGINT": 0, "SIGTERM": 0, "SIGKILL": 0}
    resumes = killed_parents = 0
    end = time.time() + deadline
    while time.time() < end:
        for i, p in enumerate(procs):
            if p is None or p.poll() is not None:
                if p is not None:
                    resumes += 1
                procs[i] = subprocess.Popen([sys.executable, "-m", "stabsearch", *map(str, run)], cwd=cwd, env=ENV,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from stabsearch.study.slots import counts_toward_budget

        if sum(map(counts_toward_budget, trials_of(url, name))) >= trials:
            break
        time.sleep(rng.uniform(0.5, 2.5))
        if sum(sent.values()) >= 16:
            continue  # enough chaos: let it finish
        sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
        parent = rng.choice(procs)
        victims = [p for p in children(parent.pid) if p in _owners(url, name)]
        if not victims:
            continue  # still starting: a signal now would only restart it
        target = parent.pid if rng.random() < 0.2 else rng.choice(victims)
        killed_parents += target == parent.pid
        try:
            os.kill(target, sig)
            sent[sig.name] += 1
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(timeout=DEADLINE)
    final = stabsearch(*run, cwd=cwd, timeout=DEADLINE)  # a last resume, with nothing left to do
    assert "Traceback" not in final.stderr, final.stderr
    return sent, resumes, killed_parents


def _owners(url, name):
    """The pids that run a trial now."""
    from stabsearch.study.slots import OWNER_KEY

    return {t.system_attrs[OWNER_KEY]["pid"] for t in trials_of(url, name) if t.state.name == "RUNNING" and OWNER_KEY in t.system_attrs}


def _check_soak(trials, n):
    from collections import Counter

    search = [t for t in trials if t.user_attrs.get("kind", "search") == "search"]
    assert_accounted(search)
    finished = [t for t in search if t.state.name in ("COMPLETE", "PRUNED") or t.user_attrs.get("failure") not in (None, "interrupted", "worker lost")]
    assert len(finished) == n
    runs = Counter(configurations(finished))
    assert max(runs.values()) == 1, runs.most_common(3)  # no configuration finished twice
    by_number = {t.number: t for t in search}
    for t in search:  # every other run of a configuration is a documented retry of an interrupted or lost one
        if "requeued_from" in t.user_attrs:
            source = by_number[t.user_attrs["requeued_from"]]
            assert source.user_attrs["failure"] in ("interrupted", "worker lost")
            assert t.system_attrs["fixed_params"] == (source.params if "config" in source.user_attrs else source.system_attrs["fixed_params"])
    # configurations drawn anew never repeat; a trial stopped before the sampler drew (no params) drew nothing
    singles = Counter(configurations([t for t in search if "requeued_from" not in t.user_attrs and t.params]))
    assert max(singles.values()) == 1, singles.most_common(3)
    return Counter(t.user_attrs.get("failure") or t.user_attrs.get("verdict") for t in search)


@pytest.mark.slow
def test_soak_workers_under_random_signals_and_resumes(store, tmp_path):
    import sqlite3

    url, args, name = store
    on_pg = url.startswith("postgresql")
    cores = min(4, max(1, len(os.sched_getaffinity(0))))
    workers = min(cores, 4 if on_pg else 2)
    parents = max(1, (4 if on_pg else 2) // workers)
    n = 200 if on_pg else 120
    sent, resumes, killed_parents = _soak(url, args, name, tmp_path, trials=n, parents=parents, workers=workers)
    trials = trials_of(url, name)
    outcomes = _check_soak(trials, n)
    if not on_pg:
        with sqlite3.connect(tmp_path / "studies" / "stabsearch.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"\nsoak on {'PostgreSQL' if on_pg else 'SQLite'}: {parents} x {workers} workers, {n} trials wanted, "
          f"{len(trials)} trials stored: {dict(outcomes)}; signals sent {sent} ({killed_parents} to a parent), "
          f"{resumes} resumes")
