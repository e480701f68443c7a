"""``--workers N``: N processes on one study, one progress bar, Ctrl-C ends them all.

The parent starts the workers as fresh interpreters (no CUDA or SQLite state
is inherited), gives each its own GPU when there are several, and watches the
study's progress from the storage. Each worker is an ordinary
:func:`stabsearch.study.runner.run_search` that reserves and claims its own slots.
The same study can also be shared across machines: run ``stabsearch run`` on
each, all pointing at one PostgreSQL or MySQL URL.

Signals and lifetimes:

- Workers run in their own session, so the terminal's Ctrl-C reaches only the
  parent; the parent (on Ctrl-C or SIGTERM) sends each worker one SIGTERM,
  which a worker handles like Ctrl-C: it re-queues its running trial and exits.
- Each worker holds the read end of a pipe from the parent. When the parent
  dies (even by SIGKILL) the pipe closes; the worker interrupts itself as if
  by Ctrl-C, and exits at the latest :data:`ORPHAN_GRACE` seconds later.
- With a trial timeout, a worker whose running trial has logged no step for
  that long is killed, its trial ends FAIL "timed out", and a new worker takes its place.
- A worker that dies otherwise is reported; its trial is recovered at once
  (its owner is gone) and, while slots remain, a new worker is started (a few times at most).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from tqdm import tqdm

from stabsearch.study import interrupts
from stabsearch.errors import UsageError
from stabsearch.study.slots import budget_state, counts_toward_budget, end_timed_out, recover_lost, stalled
from stabsearch.study.context import SearchContext
from stabsearch.study.runner import ErrorCallback, SearchSettings, SearchSummary, report_first_error, verdict_counts
from stabsearch.study.space import SearchSpace
from stabsearch.study.trial_attrs import FAILED, VERDICT

#: Seconds an orphaned worker has to re-queue its trial before it exits regardless.
ORPHAN_GRACE = 60.0
#: Seconds interrupted workers have to exit before they are killed (their trials are then recovered).
STOP_GRACE = 120.0
#: Workers per CUDA device at most.
PER_DEVICE = 4
#: Workers per CPU core at most (a worker waits on its storage part of the time).
PER_CORE = 2


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs; plain data, so it pickles."""

    model: str
    space: SearchSpace
    storage_url: str
    study_name: str
    settings: SearchSettings
    device: str


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def max_workers(device: torch.device) -> tuple[int, str]:
    """How many workers this machine can run at once on ``device``, and why that many."""
    cores = cpu_cores()
    if device.type != "cuda":
        return PER_CORE * cores, f"{PER_CORE} per CPU core, {cores} core(s)"
    gpus = 1 if device.index is not None else max(1, torch.cuda.device_count())
    if PER_CORE * cores <= PER_DEVICE * gpus:
        return PER_CORE * cores, f"{PER_CORE} per CPU core, {cores} core(s), for {gpus} CUDA device(s)"
    return PER_DEVICE * gpus, f"{PER_DEVICE} per CUDA device, {gpus} device(s)"


def check_workers(n: int, device: torch.device) -> None:
    """Refuse more workers than the machine can run (each is a whole Python process with torch loaded)."""
    most, why = max_workers(device)
    if n > most:
        raise UsageError(f"--workers {n}: at most {most} on this machine ({why})")


def worker_devices(device: torch.device, n: int) -> list[str]:
    """One device per worker: CUDA devices round-robin when there are several."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(n)]
    return [str(device)] * n


def _watch_parent(fd: int) -> None:
    """Block until the parent's end of the pipe ``fd`` closes, then stop this worker."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)  # handled like Ctrl-C: the running trial is re-queued
    time.sleep(ORPHAN_GRACE)
    os._exit(75)


def worker_main() -> None:
    """A worker's entry point: the job arrives pickled on stdin, which stays open as the parent's lifeline."""
    from stabsearch.training.loader import load_model_module
    from stabsearch.study.runner import run_search
    from stabsearch.study.storage import open_storage

    with os.fdopen(os.dup(0), "rb") as stream:  # the parent writes the job and nothing else
        job: WorkerJob = pickle.load(stream)
    # The raw descriptor, not sys.stdin: a daemon thread blocked on a buffered stream aborts interpreter shutdown.
    threading.Thread(target=_watch_parent, args=(0,), name="parent-watch", daemon=True).start()
    settings = dataclasses.replace(job.settings, device=torch.device(job.device), progress=False)
    module = load_model_module(job.model)
    storage = open_storage(job.storage_url)
    summary = run_search(module, job.space, storage, job.study_name, settings)
    raise SystemExit(130 if summary.interrupted else 0)


def _start(job: WorkerJob) -> subprocess.Popen:
    """Start one worker in its own session (no terminal signals), with the job on its stdin."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "stabsearch.study.workers"], stdin=subprocess.PIPE, env=env,
                            start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(job))
    proc.stdin.flush()  # and left open: its end tells the worker the parent is gone
    return proc


@dataclasses.dataclass
class _Pool:
    jobs: list[WorkerJob]
    procs: list[subprocess.Popen]
    crashes: list[str] = dataclasses.field(default_factory=list)
    killed: set[int] = dataclasses.field(default_factory=set)

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def replace(self, i: int) -> None:
        self.procs[i] = _start(self.jobs[i])


def run_workers(n: int, model: str, context: SearchContext) -> SearchSummary:
    """Run the search of ``context`` (opened by :func:`stabsearch.study.runner.open_context`) in ``n`` worker
    processes that each load the model module ``model`` (a path or module name), and wait for them.

    The summary's ``worker_errors`` lists the workers that died on their own.
    ``context.on_error`` hears the first trial that fails with an error, as the
    parent sees it in the storage (within a second of the worker's tell).
    """
    with interrupts.handling():
        return _supervise(n, model, context)


def _supervise(n: int, model: str, context: SearchContext) -> SearchSummary:
    started = time.perf_counter()
    study, space, storage, settings, on_error = context.study, context.space, context.storage, context.settings, context.on_error
    study_name = study.study_name
    recover_lost(study, settings.heartbeat)
    initial = budget_state(study)[0]
    jobs = [WorkerJob(model, space, storage.url, study_name, settings, dev) for dev in worker_devices(settings.device, n)]
    summary = SearchSummary(study_name, initial, 0, {}, 0.0)
    bar = tqdm(total=settings.trials, initial=min(initial, settings.trials), unit="trial",
               disable=None if settings.progress else True, dynamic_ncols=True)
    pool = _Pool(jobs, [])
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    refresh = lambda: _refresh(study, bar, summary, before, on_error)  # noqa: E731
    try:
        with interrupts.deferred():  # every worker started is in the pool, to be stopped
            for job in jobs:
                pool.procs.append(_start(job))
        _watch(pool, study, settings, summary, started, refresh)
    except KeyboardInterrupt:
        interrupts.shield()
        summary.interrupted = True
        _stop(pool, study, settings)
    finally:
        refresh()
        bar.close()
    if any(p.returncode == 130 for p in pool.procs) and not summary.timed_out and summary.finished < settings.trials:
        summary.interrupted = True  # a worker was stopped from outside, and the study is not done
    summary.worker_errors = pool.crashes
    summary.seconds = time.perf_counter() - started
    return summary


def _watch(pool: _Pool, study: optuna.Study, settings: SearchSettings, summary: SearchSummary, started: float,
           refresh: Callable[[], None]) -> None:
    trial_timeout = getattr(settings, "trial_timeout", None)
    while pool.alive():
        interrupts.check()
        refresh()
        if settings.timeout is not None and time.perf_counter() - started >= settings.timeout and not summary.timed_out:
            summary.timed_out = True
            _interrupt(pool.alive())
        if trial_timeout is not None:
            _end_stalled(pool, study, trial_timeout)
        _check_exits(pool, study, settings, summary)
        time.sleep(0.25)


def _check_exits(pool: _Pool, study: optuna.Study, settings: SearchSettings, summary: SearchSummary) -> None:
    """Note workers that died on their own; recover their trials and start others while work remains."""
    for i, p in enumerate(pool.procs):
        if p.returncode in (None, 0, 130) or p.pid in pool.killed:
            continue
        pool.killed.add(p.pid)  # handled once
        pool.crashes.append(f"worker {i} (pid {p.pid}) exited with status {p.returncode}")
        recover_lost(study, settings.heartbeat)
        finished, running, waiting = budget_state(study)
        if not summary.timed_out and len(pool.crashes) <= 2 * len(pool.procs) and (waiting or finished + running < settings.trials):
            pool.replace(i)


def _end_stalled(pool: _Pool, study: optuna.Study, timeout: float) -> None:
    """Kill a worker whose trial logged no step for ``timeout`` seconds (past a heartbeat), end it as timed out."""
    ours = {p.pid: i for i, p in enumerate(pool.procs) if p.poll() is None}
    for pid, trials in stalled(study, timeout).items():
        if pid not in ours:
            continue
        proc = pool.procs[ours[pid]]
        pool.killed.add(pid)
        proc.kill()
        proc.wait()
        for t in trials:
            end_timed_out(study, t, timeout)
        pool.replace(ours[pid])


def _interrupt(procs: list[subprocess.Popen]) -> None:
    """Ask workers to stop as on Ctrl-C: SIGTERM, which also ends one still starting up without a trace."""
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass


def _stop(pool: _Pool, study: optuna.Study, settings: SearchSettings) -> None:
    """Forward the interrupt once, wait for the workers to re-queue their trials; kill any that hang."""
    _interrupt(pool.alive())
    deadline = time.monotonic() + STOP_GRACE
    for p in pool.procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    recover_lost(study, settings.heartbeat)  # a killed worker's trial: its owner is gone


def _refresh(study: optuna.Study, bar: tqdm, summary: SearchSummary, before: set[int], on_error: ErrorCallback | None) -> None:
    """Bring the bar and ``summary`` up to date with the storage; ``before``: trials finished before the workers started."""
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if counts_toward_budget(t)]
    new_failed = [t for t in counted if t.number not in before and t.state == optuna.trial.TrialState.FAIL]
    summary.new_failed = len(new_failed)
    for trial in new_failed:
        report_first_error(summary, trial, on_error)
    verdicts = collections.Counter(t.user_attrs.get(VERDICT, FAILED) for t in counted)
    summary.new_trials += len(counted) - summary.finished
    summary.finished = len(counted)
    summary.verdicts = dict(verdicts)
    bar.n = min(len(counted), bar.total)
    bar.set_postfix_str(verdict_counts(verdicts))
    bar.refresh()


if __name__ == "__main__":
    worker_main()
