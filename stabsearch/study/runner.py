"""Run a search: ask Optuna for configurations, train them, tell Optuna what happened.

This is where stabsearch talks to Optuna while training. Rules:

- A trial whose run diverged, collapsed to chance or spiked late is told as
  PRUNED with its finite, capped score as its last intermediate value, so TPE
  learns that region is bad. Never NaN, never FAIL: samplers ignore FAIL.
- FAIL is for errors in user code or the machine; the traceback is kept on the trial.
- Losses are watched in memory every step; the storage hears from a trial
  only a few times per run (about every 5% of its steps).
- A search trial whose best reported value is above the median of the
  finished trials' at the same step is stopped as ``slow`` (the median rule
  of :mod:`stabsearch.analysis.median_rule`) and told PRUNED; confirmation runs never are.
- ``--trials N`` is the number of finished search trials the study should
  have, so running the same command again resumes an interrupted study.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import tempfile
import time
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from stabsearch.study import interrupts
from stabsearch.study.context import SearchContext
from stabsearch.config import OptimConfig, chance_loss
from stabsearch.analysis.early_warning import EarlyWarning, eps_regime, predict
from stabsearch.training.loader import ModelModule
from stabsearch.study import optuna_internals as internals
from stabsearch.study.slots import abandon, budget_state, claim, counts_toward_budget, heartbeat, recover_lost, reserve
from stabsearch.study.record import UNSTABLE, VERDICTS
from stabsearch.study.trial_attrs import (
    STUDY_MODEL, STUDY_SEED, STUDY_SPACE, STUDY_STEPS,
    ERROR, FAILED, SEARCH, STEPS, VERDICT, is_search, mark_failed, mark_stopped_slow, run_attrs, write_result,
)
from stabsearch.study.sampler import TrialSeededSampler
from stabsearch.schedule import lr_factor
from stabsearch.analysis.median_rule import is_slow, median_by_step
from stabsearch.study.space import SearchSpace, sample
from stabsearch.analysis.verdict import Analysis, analyze
from stabsearch.analysis.options import StabilityOptions
from stabsearch.study.storage import Storage, is_storage_fault
from stabsearch.training.telemetry import FIELDS as TELEMETRY_FIELDS
from stabsearch.training.trainer import Deadline, OutOfTime, Run, StopRun, TrainResult, train_trial

_REPORTS_PER_TRIAL = 20
#: The hint a trial that ran out of memory keeps.
OOM_HINT = "out of memory: use a smaller batch or model, or fewer --workers per device"


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How long and where to search."""

    trials: int
    steps: int
    seed: int = 0
    timeout: float | None = None
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    options: StabilityOptions = dataclasses.field(default_factory=StabilityOptions)
    progress: bool = True
    #: Added to the score (decades) of a trial the early warning predicts will blow up; 0 switches it off.
    warning_penalty: float = 1.0
    #: Seconds between a running trial's heartbeats; a trial silent for 6 of them is recovered.
    heartbeat: float = 10.0
    #: Trials trained at once as one vectorized population (1: one at a time).
    population: int = 1
    #: Stop a search trial that is slower than the median of the finished ones (stabsearch.analysis.median_rule).
    stop_slow: bool = True
    #: Measure the sharpness at the end of each trial and apply the early warning (off: no probe at all).
    early_warning: bool = True
    #: Seconds one trial may train; past it the trial ends FAIL "timed out" at its next logged step (counted, not
    #: retried); with --workers, also how long a worker may log no step before the parent ends it.
    trial_timeout: float | None = None
    #: Training precision of the search's trials ("32", "bf16", "fp16"): ``--precision`` or the module's ``PRECISION``.
    precision: str = "32"
    #: Leave biases and normalisation weights out of weight decay (the module's ``NO_DECAY``).
    no_decay: bool = True


@dataclasses.dataclass
class SearchSummary:
    """What a call of :func:`run_search` did."""

    study_name: str
    finished: int
    new_trials: int
    verdicts: dict[str, int]
    seconds: float
    interrupted: bool = False
    timed_out: bool = False
    #: How many of the ``new_trials`` failed, and the number of the first failure with an error that was reported.
    new_failed: int = 0
    first_error: int | None = None
    #: With --workers: the workers that died on their own (not stopped by the parent).
    worker_errors: list[str] = dataclasses.field(default_factory=list)


#: Hears a failed trial with an ``error`` attribute, the first of a call of :func:`run_search` (or of the workers').
ErrorCallback = Callable[[FrozenTrial], None]


def report_first_error(summary: SearchSummary, trial: FrozenTrial, on_error: ErrorCallback | None) -> None:
    """Call ``on_error`` with ``trial`` if it is the first failure with an error this search met."""
    if summary.first_error is None and trial.state == TrialState.FAIL and trial.user_attrs.get(ERROR):
        summary.first_error = trial.number
        if on_error is not None:
            on_error(trial)


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_search_study(storage: Storage, name: str, module: ModelModule, space: SearchSpace, settings: SearchSettings) -> optuna.Study:
    """Create the study or load it to resume; each trial is sampled with its own seed (see :mod:`stabsearch.study.sampler`)."""
    _quiet_optuna()
    study = optuna.create_study(study_name=name, storage=storage.storage, direction="minimize", load_if_exists=True)
    # Seeded by (seed, trial number): a resume draws new points, and workers never draw each other's.
    study.sampler = TrialSeededSampler(settings.seed)
    if STUDY_MODEL not in study.user_attrs:
        study.set_metric_names(["score"])
        study.set_user_attr(STUDY_MODEL, module.source)
        study.set_user_attr(STUDY_STEPS, settings.steps)
        study.set_user_attr(STUDY_SEED, settings.seed)
        study.set_user_attr(STUDY_SPACE, space.to_dict())
    return study


def open_context(
    module: ModelModule, space: SearchSpace, storage: Storage, study_name: str, settings: SearchSettings,
    *, on_error: ErrorCallback | None = None,
) -> SearchContext:
    """Open the study (create it, or load it to resume) and bundle what its trials share."""
    return SearchContext(open_search_study(storage, study_name, module, space, settings), module, space, storage, settings, on_error)


def run_search(
    module: ModelModule, space: SearchSpace, storage: Storage, study_name: str, settings: SearchSettings,
    *, reserve_slots: bool = True, on_error: ErrorCallback | None = None,
) -> SearchSummary:
    """Run search trials until the study has ``settings.trials`` finished ones, or time runs out.

    Each trial is a slot claimed from the study's queue (see :mod:`stabsearch.study.slots`),
    so several processes can run this on one study. ``reserve_slots=False`` only
    claims slots that are already there. ``on_error`` hears the first trial that
    fails with an error (a user-code error, out of memory), as it happens. SIGINT
    and SIGTERM end it as interrupted (:mod:`stabsearch.study.interrupts`): the running
    trial is re-queued.
    """
    with interrupts.handling():
        return _search(module, space, storage, study_name, settings, reserve_slots, on_error)


def _search(
    module: ModelModule, space: SearchSpace, storage: Storage, study_name: str, settings: SearchSettings, reserve_slots: bool,
    on_error: ErrorCallback | None,
) -> SearchSummary:
    started = time.perf_counter()
    deadline = Deadline.after(settings.timeout, "study")
    context = open_context(module, space, storage, study_name, settings, on_error=on_error)
    study = context.study
    recover_lost(study, settings.heartbeat)
    existing = study.get_trials(deepcopy=False)
    verdicts: collections.Counter[str] = collections.Counter(
        t.user_attrs.get(VERDICT, FAILED) for t in existing if counts_toward_budget(t)
    )
    finished = budget_state(study)[0]
    summary = SearchSummary(study_name, finished, 0, dict(verdicts), 0.0)
    bar = tqdm(total=settings.trials, initial=min(finished, settings.trials), unit="trial", disable=None if settings.progress else True, dynamic_ncols=True, leave=True)
    bar.set_postfix_str(verdict_counts(verdicts))
    held: list[optuna.Trial] = []
    size = settings.population
    try:
        while True:
            interrupts.check()
            if settings.timeout is not None and time.perf_counter() - started >= settings.timeout:
                summary.timed_out = True
                break
            if budget_state(study)[0] >= settings.trials:
                break
            with interrupts.deferred():  # a slot is claimed and held, or not claimed at all
                held = _claim_up_to(study, settings, size, reserve_slots)
            if not held:
                if recover_lost(study, settings.heartbeat):
                    continue
                break  # the remaining slots are held by other workers
            with heartbeat(study, [internals.trial_id(t) for t in held], settings.heartbeat, progress=Run.steps_logged):
                if len(held) == 1:
                    done = [run_trial(context, held[0], deadline=deadline)]
                else:
                    done = run_population(context, held, deadline=deadline)
            storage.check()  # user code may have deleted or replaced the database file
            for trial, verdict in zip(held, done):
                summary.new_trials += 1
                verdicts[verdict] += 1
                if verdict == "failed":
                    summary.new_failed += 1
                    report_first_error(summary, internals.stored_trial(trial), context.on_error)
            held = []
            bar.update(len(done))
            bar.set_postfix_str(verdict_counts(verdicts))
    except OutOfTime:  # --timeout reached inside a trial: it was re-queued
        summary.timed_out = True
    except KeyboardInterrupt:
        interrupts.shield()  # a second Ctrl-C or SIGTERM must not cut the re-queueing short
        summary.interrupted = True
        for trial in held:
            _abandon(study, trial)
    finally:
        bar.close()
    summary.finished = budget_state(study)[0]
    summary.verdicts = dict(verdicts)
    summary.seconds = time.perf_counter() - started
    return summary


def _claim_up_to(study: optuna.Study, settings: SearchSettings, size: int, reserve_slots: bool) -> list[optuna.Trial]:
    """Claim up to ``size`` slots, reserving what is missing towards ``settings.trials`` (a few at a time:
    nothing is left queued after Ctrl-C but re-queued trials)."""
    held: list[optuna.Trial] = []
    while len(held) < size:
        trial = claim(study, settings.heartbeat)
        if trial is not None:
            held.append(trial)
            continue
        if not reserve_slots or not reserve(study, settings.trials, at_most=size - len(held)):
            break
    return held


def run_population(context: SearchContext, trials: list[optuna.Trial], *, deadline: Deadline | None = None) -> list[str]:
    """Train ``trials`` at once as one vectorized population, then finish each like a sequential trial.

    Time limits end the whole population as they end a trial (see :func:`run_trial`).
    """
    from stabsearch.population.adam import why_not_population_configs
    from stabsearch.population.driver import train_population

    study, module, settings = context.study, context.module, context.settings
    steps, seed = settings.steps, settings.seed
    with interrupts.deferred():  # a trial's configuration is drawn whole, or not at all
        configs = [prepare_trial(t, context.space, settings, kind=SEARCH, seed=seed, steps=steps, attrs={"population": len(trials)}) for t in trials]
    if why_not_population_configs(configs) is not None:  # clipping or mixed precision: one at a time, never ignored
        return [run_trial(context, t, config=c, deadline=deadline) for t, c in zip(trials, configs)]
    try:
        results = train_population(
            module, configs, steps=steps, seed=seed, device=settings.device, options=settings.options,
            sharpness=settings.early_warning, deadlines=(deadline, Deadline.after(settings.trial_timeout, "trial")),
        )
    except OutOfTime as out:
        for trial in trials:
            _out_of_time(study, trial, out)
        if out.limit == "study":
            raise
        return ["failed"] * len(trials)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # user code: these trials fail, the study goes on
        if is_storage_fault(exc, disk=False):
            raise  # a report to the storage failed: not the user's error; the trials stay RUNNING, recoverable
        with interrupts.deferred():
            for trial in trials:
                _fail(trial, exc)
        return ["failed"] * len(trials)
    with interrupts.deferred():  # a trial being told is told to the end
        return [finish_trial(context, t, c, steps, r) for t, c, r in zip(trials, configs, results)]


def verdict_counts(verdicts: collections.Counter[str]) -> str:
    """``stable=3 spiky=1``: the verdicts counted so far, for the progress bar.

    Example:
        >>> verdict_counts(collections.Counter({"spiky": 1, "stable": 3}))
        'stable=3 spiky=1'
    """
    return " ".join(f"{v}={verdicts[v]}" for v in VERDICTS[:-1] if verdicts[v])


def _out_of_time(study: optuna.Study, trial: optuna.Trial, out: OutOfTime) -> None:
    """The study's time ran out: re-queue the trial; the trial's own ran out: it failed, "timed out"."""
    if out.limit == "study":
        _abandon(study, trial)
        return
    mark_failed(trial, "timed out", out, with_traceback=False)


def _abandon(study: optuna.Study, trial: optuna.Trial) -> None:
    """End a trial we could not finish as FAIL "interrupted", and queue its parameters to run again (one change).

    A trial told just before the interrupt is left as it is: nothing to redo.
    """
    with interrupts.deferred():
        abandon(study, trial, "interrupted")


def run_trial(
    context: SearchContext,
    trial: optuna.Trial,
    *,
    kind: str = "search",
    seed: int | None = None,
    steps: int | None = None,
    config: OptimConfig | None = None,
    attrs: dict[str, Any] | None = None,
    deadline: Deadline | None = None,
) -> str:
    """Train one trial and tell its result; returns its verdict.

    Search trials sample their configuration from ``context.space``; confirmation runs
    pass ``config``, a new ``seed`` and a longer ``steps``, and are tagged by ``kind``.
    Past ``deadline`` (the study's ``--timeout``) the trial stops at its next
    logged step, is re-queued as interrupted, and :class:`OutOfTime` is
    raised; past ``settings.trial_timeout`` it ends FAIL "timed out".
    """
    study, module, settings = context.study, context.module, context.settings
    steps = steps or settings.steps
    seed = settings.seed if seed is None else seed
    with interrupts.deferred():  # a trial's configuration is drawn whole, or not at all
        config = prepare_trial(trial, context.space, settings, kind=kind, seed=seed, steps=steps, config=config, attrs=attrs)
    every = max(50, steps // _REPORTS_PER_TRIAL)  # a few storage writes per trial, none for tiny runs
    medians = finished_medians(study, steps) if kind == SEARCH and settings.stop_slow else {}
    warmup = config.warmup_steps(steps)
    best, stopped_at = math.inf, None

    def on_progress(step: int, loss: float) -> None:
        nonlocal best, stopped_at
        interrupts.check()  # an interrupt Python swallowed (in a weakref callback, say) still stops the trial
        if step < steps:
            value = math.log10(max(loss, 1e-300))
            trial.report(value, step)
            best = min(best, value)
            if step >= warmup and is_slow(best, step, medians):
                stopped_at = step
                raise StopRun("slower than the median of the finished trials")

    try:
        result = train_trial(
            module, config, steps=steps, seed=seed, device=settings.device,
            options=settings.options, on_progress=on_progress, progress_every=every, sharpness=settings.early_warning,
            deadlines=(deadline, Deadline.after(settings.trial_timeout, "trial")),
        )
    except OutOfTime as out:
        _out_of_time(study, trial, out)
        if out.limit == "study":
            raise
        return "failed"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # user code: fail this trial only
        if is_storage_fault(exc, disk=False):
            raise  # a report to the storage failed: not the user's error; the trial stays RUNNING, recoverable
        with interrupts.deferred():
            _fail(trial, exc)
        return "failed"
    with interrupts.deferred():  # a trial being told is told to the end
        return finish_trial(context, trial, config, steps, result, stopped_slow=stopped_at)


def finished_medians(study: optuna.Study, steps: int) -> dict[int, float]:
    """Per report step, the median value of the study's finished search trials of ``steps`` steps."""
    finished = [
        t.intermediate_values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if is_search(t) and t.user_attrs.get(STEPS) == steps
    ]
    return median_by_step(finished)


def prepare_trial(
    trial: optuna.Trial, space: SearchSpace, settings: SearchSettings, *, kind: str, seed: int, steps: int,
    config: OptimConfig | None = None, attrs: dict[str, Any] | None = None,
) -> OptimConfig:
    """Sample (or take) the trial's configuration and record what it will run."""
    if config is None:  # a sampled search configuration trains at the run's precision and decay grouping
        config = dataclasses.replace(sample(space, trial), precision=settings.precision, no_decay=settings.no_decay)
    internals.set_trial_attrs(trial, run_attrs(kind, config, seed, steps, str(settings.device), attrs))
    return config


def finish_trial(
    context: SearchContext, trial: optuna.Trial, config: OptimConfig, steps: int, result: TrainResult,
    stopped_slow: int | None = None,
) -> str:
    """Analyse a finished run, store it on the trial and tell Optuna; returns the verdict.

    ``stopped_slow`` is the step where the median rule stopped the run: unless
    its curve already diverged, its verdict is ``slow``, and it ends PRUNED.
    """
    study, settings = context.study, context.settings
    try:
        if result.steps_run == 0:
            raise RuntimeError("the training loop logged no losses; call run.log(loss) once per step")
        analysis = analyze_result(result, context.module, config, steps, settings.options)
    except Exception as exc:
        _fail(trial, exc)
        return "failed"
    warning = early_warning(result, config, steps) if settings.early_warning else NO_WARNING
    penalty = settings.warning_penalty if warning.predicted_unstable and analysis.verdict != "diverged" else 0.0
    score = analysis.score + penalty
    artifact = upload_curve(trial, context.storage, result)
    write_result(trial, result, analysis, warning, score=score, penalty=penalty,
                 telemetry=telemetry_summary(result.telemetry), curve_artifact=artifact)
    if analysis.verdict in UNSTABLE and (stopped_slow is None or analysis.verdict == "diverged"):
        trial.report(score, steps)
        study.tell(trial, state=TrialState.PRUNED)
        return analysis.verdict
    if stopped_slow is not None:  # a cut curve's spikes and plateaus are not the run's; its value is its last report
        reported = internals.stored_trial(trial).intermediate_values.get(stopped_slow)
        mark_stopped_slow(trial, stopped_slow, reported)
        study.tell(trial, state=TrialState.PRUNED)
        return "slow"
    study.tell(trial, score)
    return analysis.verdict


#: What a trial of a search run with ``--no-early-warning`` stores as its warning.
NO_WARNING = EarlyWarning(False, math.nan, "not checked (--no-early-warning)")


def early_warning(result: TrainResult, config: OptimConfig, steps: int) -> EarlyWarning:
    """Check the eps-dominated rule at the largest learning rate of the run's schedule, if the run is headed there."""
    return predict(
        peak_lr(config, steps), config.eps, config.beta1, result.sharpness,
        regime=eps_regime(result.telemetry, steps), preconditioned=result.preconditioned_sharpness,
    )


def peak_lr(config: OptimConfig, steps: int) -> float:
    """The largest learning rate the schedule reaches in ``steps`` steps: at the end of its warmup."""
    warmup = config.warmup_steps(steps)
    top = min(warmup, steps - 1)
    return config.lr * lr_factor(top, steps, warmup, config.schedule, config.min_lr_factor)


def analyze_result(result: TrainResult, module: ModelModule, config: OptimConfig, steps: int, options: StabilityOptions) -> Analysis:
    """The stability analysis of one run, with what only the trainer knows (held-out loss, dead layers)."""
    return analyze(
        result.losses,
        chance_loss=chance_loss(module.classes),
        warmup=config.warmup_steps(steps),
        final=result.final_eval,
        dead_layer=bool(result.dead_layers),
        options=options,
        # a divergence only the trainer saw (non-finite weights or telemetry under a finite loss)
        diverged_at=result.diverged_at if "divergence" in result.checks else None,
    )


def _fail(trial: optuna.Trial, exc: BaseException) -> None:
    """User code (or the machine) failed the trial: FAIL, out of memory or a user-code error, with the traceback."""
    oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
    mark_failed(trial, "out of memory" if oom else "user-code error", exc, hint=OOM_HINT if oom else None)


def upload_curve(trial: optuna.Trial, storage: Storage, result: TrainResult) -> str:
    """The whole curve and telemetry series as a CSV artifact of ``trial``; returns its artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"loss_curve_trial{trial.number}.csv"
        write_curve(path, result.losses, result.telemetry)
        return optuna.artifacts.upload_artifact(
            artifact_store=storage.artifacts, file_path=str(path), study_or_trial=trial, mimetype="text/csv"
        )


def write_curve(path: Path, losses: np.ndarray, telemetry: list[dict[str, float]] = ()) -> None:
    """A ``step,loss,<telemetry>`` CSV; ``stabsearch analyze`` reads it back.

    Telemetry columns are filled on the sampled steps and empty elsewhere.
    """
    sampled = {int(row["step"]): row for row in telemetry}
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(("step", "loss", *TELEMETRY_FIELDS)) + "\n")
        for i, v in enumerate(losses.tolist()):
            row = sampled.get(i, {})
            extra = ",".join("" if row.get(k) is None else repr(float(row[k])) for k in TELEMETRY_FIELDS)
            f.write(f"{i},{v!r},{extra}\n")


def telemetry_summary(telemetry: list[dict[str, float]]) -> dict[str, float | None]:
    """Last, min and max of each telemetry series, for the trial's attributes."""
    out: dict[str, float | None] = {"samples": len(telemetry)}
    for key in TELEMETRY_FIELDS:
        values = [row[key] for row in telemetry if key in row and math.isfinite(row[key])]
        if values:
            out[f"{key}_last"], out[f"{key}_min"], out[f"{key}_max"] = values[-1], min(values), max(values)
    return out

