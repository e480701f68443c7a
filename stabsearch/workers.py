"""``--workers N``: N processes on one study, one progress bar, Ctrl-C ends them all.

The parent reserves the remaining trial slots, starts the workers (``spawn``,
so no CUDA or SQLite state is inherited), gives each its own GPU when there
are several, and watches the study's progress from the storage. Each worker is
an ordinary :func:`stabsearch.runner.run_search` that only claims slots. The
same study can also be shared across machines: run ``stabsearch run`` on each,
all pointing at one PostgreSQL or MySQL URL.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import signal
import time

import optuna
import torch
from tqdm import tqdm

from stabsearch.queue import budget_state, counts_toward_budget, recover_lost, reserve
from stabsearch.runner import ErrorCallback, SearchSettings, SearchSummary, _postfix, open_search_study, report_first_error
from stabsearch.space import SearchSpace


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs; plain data, so it pickles under ``spawn``."""

    model: str
    space: SearchSpace
    storage_url: str
    study_name: str
    settings: SearchSettings
    device: str


def worker_devices(device: torch.device, n: int) -> list[str]:
    """One device per worker: CUDA devices round-robin when there are several."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(n)]
    return [str(device)] * n


def _worker_main(job: WorkerJob) -> None:
    from stabsearch.loader import load_model_module
    from stabsearch.runner import run_search
    from stabsearch.storage import open_storage

    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = dataclasses.replace(job.settings, device=torch.device(job.device), progress=False)
    module = load_model_module(job.model)
    storage = open_storage(job.storage_url)
    summary = run_search(module, job.space, storage, job.study_name, settings, reserve_slots=False)
    raise SystemExit(130 if summary.interrupted else 0)


def run_workers(n: int, model: str, module, space: SearchSpace, storage, study_name: str, settings: SearchSettings,  # noqa: ANN001
                on_error: ErrorCallback | None = None) -> SearchSummary:
    """Run the search in ``n`` worker processes and wait for them.

    ``on_error`` hears the first trial that fails with an error, as the
    parent sees it in the storage (within a second of the worker's tell).
    """
    started = time.perf_counter()
    study = open_search_study(storage, study_name, module, space, settings)
    recover_lost(study, settings.heartbeat)
    reserve(study, settings.trials)
    initial = budget_state(study)[0]
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(WorkerJob(model, space, storage.url, study_name, settings, dev),), name=f"stabsearch-worker-{i}")
        for i, dev in enumerate(worker_devices(settings.device, n))
    ]
    for p in procs:
        p.start()
    summary = SearchSummary(study_name, initial, 0, {}, 0.0)
    bar = tqdm(total=settings.trials, initial=min(initial, settings.trials), unit="trial",
               disable=None if settings.progress else True, dynamic_ncols=True)
    refresh = lambda: _refresh(study, bar, summary, before, on_error)  # noqa: E731
    try:
        while any(p.is_alive() for p in procs):
            refresh()
            if settings.timeout is not None and time.perf_counter() - started >= settings.timeout:
                summary.timed_out = True
                _interrupt(procs)
            for p in procs:
                p.join(timeout=0.5 / len(procs))
    except KeyboardInterrupt:
        summary.interrupted = True
        _interrupt(procs)
        for p in procs:
            p.join()
    finally:
        refresh()
        bar.close()
    if any(p.exitcode == 130 for p in procs) and not summary.timed_out:
        summary.interrupted = True
    summary.seconds = time.perf_counter() - started
    return summary


def _interrupt(procs: list) -> None:  # noqa: ANN001
    for p in procs:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGINT)


def _refresh(study: optuna.Study, bar: tqdm, summary: SearchSummary, before: set[int], on_error: ErrorCallback | None) -> None:
    """Bring the bar and ``summary`` up to date with the storage; ``before``: trials finished before the workers started."""
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if counts_toward_budget(t)]
    new_failed = [t for t in counted if t.number not in before and t.state == optuna.trial.TrialState.FAIL]
    summary.new_failed = len(new_failed)
    for trial in new_failed:
        report_first_error(summary, trial, on_error)
    verdicts = collections.Counter(t.user_attrs.get("verdict", "failed") for t in counted)
    summary.new_trials += len(counted) - summary.finished
    summary.finished = len(counted)
    summary.verdicts = dict(verdicts)
    bar.n = min(len(counted), bar.total)
    bar.set_postfix_str(_postfix(verdicts))
    bar.refresh()
