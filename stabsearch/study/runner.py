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
from collections.abc import Callable, Mapping
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
from stabsearch.study.slots import abandon, budget_state, claim, claim_some, counts_toward_budget, heartbeat, recover_lost, reserve
from stabsearch.study.record import UNSTABLE, VERDICTS
from stabsearch.study.trial_attrs import (
    STUDY_MODEL, STUDY_SEED, STUDY_SPACE, STUDY_STEPS,
    CONFIG, CONFIRM_TAGS, ERROR, FAILED, SEARCH, SEED, STEPS, VERDICT, is_search, mark_failed, mark_stopped_slow, run_attrs, write_result,
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

            def account(trial: optuna.Trial, verdict: str) -> None:
                summary.new_trials += 1
                verdicts[verdict] += 1
                if verdict == "failed":
                    summary.new_failed += 1
                    report_first_error(summary, internals.stored_trial(trial), context.on_error)
                bar.update(1)
                bar.set_postfix_str(verdict_counts(verdicts))

            beating = {internals.trial_id(t) for t in held}  # a population's refills join, its members leave
            with heartbeat(study, beating, settings.heartbeat, progress=Run.steps_logged):
                if len(held) == 1:
                    account(held[0], run_trial(context, held[0], deadline=deadline))
                else:
                    refill = _refill(study, settings, started, reserve_slots)
                    run_population(context, held, deadline=deadline, refill=refill, on_done=account, beating=beating)
            storage.check()  # user code may have deleted or replaced the database file
            held = []
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
        claimed = claim_some(study, size - len(held), settings.heartbeat)
        if claimed:
            held += claimed
            continue
        if not reserve_slots or not reserve(study, settings.trials, at_most=size - len(held)):
            break
    return held


def _refill(study: optuna.Study, settings: SearchSettings, started: float, reserve_slots: bool) -> Callable[[], optuna.Trial | None]:
    """Claim the next slot for a population's freed member: reserved one at a time, none past ``--timeout``."""

    def claim_next() -> optuna.Trial | None:
        if settings.timeout is not None and time.perf_counter() - started >= settings.timeout:
            return None
        trial = claim(study, settings.heartbeat)
        if trial is None and reserve_slots and reserve(study, settings.trials, at_most=1):
            trial = claim(study, settings.heartbeat)
        return trial

    return claim_next


@dataclasses.dataclass
class _Member:
    """A population member's trial, what it trains, its median rule and its own time limit."""

    trial: optuna.Trial
    config: OptimConfig
    steps: int
    rule: SlowRule
    limit: Deadline | None


def run_population(
    context: SearchContext, trials: list[optuna.Trial], *, kind: str = SEARCH, deadline: Deadline | None = None,
    refill: Callable[[], optuna.Trial | None] | None = None, on_done: Callable[[optuna.Trial, str], None] | None = None,
    beating: set[int] | None = None,
) -> list[str]:
    """Train ``trials`` as one vectorized population, each finished like a sequential trial; returns the verdicts
    in the order the members left.

    Search trials (``kind`` ``search``) draw their configuration when they
    join and train ``settings.steps`` steps on ``settings.seed``;
    confirmation runs (``kind`` ``confirm``: slots of
    :mod:`stabsearch.study.confirm`) train the configuration, seed and
    horizon their slot carries, each on its own seed (its own initial weights
    and batches), and are never stopped by the median rule.

    Each member reports and is stopped by the median rule as :func:`run_trial`
    reports and stops a trial, on the medians of the finished trials (read
    once, then each member this population completes adds its reports). A
    member that leaves (finished, diverged, slow, failed) is told at once,
    ``on_done`` hears it, and its slot goes to the trial ``refill()`` claims,
    whose configuration the sampler draws only then, having seen every trial
    told so far; its id joins ``beating`` (the ids the caller's heartbeat
    stamps) and leaves it when it ends. Past ``deadline`` (the study's
    ``--timeout``) every member still training is re-queued and
    :class:`OutOfTime` raised; past ``settings.trial_timeout`` a member ends
    FAIL "timed out", as a trial alone does.
    """
    from stabsearch.population.adam import why_not_population_configs
    from stabsearch.population.trainer import PopulationTrainer

    study, settings = context.study, context.settings
    size = len(trials)
    beating = set() if beating is None else beating
    trainer = PopulationTrainer(context.module, device=settings.device, options=settings.options,
                                sharpness=settings.early_warning, deadlines=(deadline,))
    live: dict[int, _Member] = {}
    verdicts: list[str] = []
    stop_slow = settings.stop_slow and kind == SEARCH
    reports = finished_reports(study, settings.steps) if stop_slow else []

    def join(trial: optuna.Trial) -> None:
        with interrupts.deferred():  # a trial's configuration is drawn whole, or not at all
            if kind == SEARCH:
                seed, steps, config, attrs = settings.seed, settings.steps, None, {}
            else:  # a confirmation slot: what to run is on the trial
                run = slot_run(trial)
                seed, steps, config, attrs = run["seed"], run["steps"], run["config"], run["attrs"]
            config = prepare_trial(trial, context.space, settings, kind=kind, seed=seed, steps=steps, config=config,
                                   attrs={**attrs, "population": size})
        if why_not_population_configs([config]) is not None:  # clipping or mixed precision: alone, never ignored
            leave(trial, run_trial(context, trial, kind=kind, seed=seed, steps=steps, config=config, deadline=deadline))
            return
        rule = SlowRule(trial, steps, config.warmup_steps(steps), median_by_step(reports) if stop_slow else {})
        live[trial.number] = _Member(trial, config, steps, rule, Deadline.after(settings.trial_timeout, "trial"))
        trainer.add(config, steps=steps, seed=seed, key=trial.number, on_progress=rule, progress_every=report_every(steps))

    def leave(trial: optuna.Trial, verdict: str, *, refilled: bool = True) -> None:
        member = live.pop(trial.number, None)
        told_complete = verdict != "failed" and verdict not in UNSTABLE and member is not None and member.rule.stopped_at is None
        if stop_slow and told_complete:  # finished_medians reads the COMPLETE trials' reports (their verdict may be slow)
            reports.append(dict(member.rule.reported))
        beating.discard(internals.trial_id(trial))
        verdicts.append(verdict)
        if on_done is not None:
            on_done(trial, verdict)
        if refilled and refill is not None:
            with interrupts.deferred():  # a slot is claimed and held, or not claimed at all
                new = refill()
                if new is not None:
                    beating.add(internals.trial_id(new))
                    live_trials.append(new)
            if new is not None:
                join(new)

    live_trials = list(trials)  # every trial this population holds or held: what an interrupt re-queues
    try:
        for trial in trials:
            join(trial)
        while len(trainer):
            for number, result in trainer.advance():
                member = live[number]
                with interrupts.deferred():  # a trial being told is told to the end
                    if isinstance(result, BaseException):  # evaluate(model) raised: user code
                        _fail(member.trial, result, member.rule.pending)
                        verdict = "failed"
                    else:
                        verdict = finish_trial(context, member.trial, member.config, member.steps, result,
                                               stopped_slow=member.rule.stopped_at, reports=member.rule.pending)
                leave(member.trial, verdict)
            now = time.monotonic()
            for member in [m for m in live.values() if m.limit is not None and now >= m.limit.at]:
                trainer.drop(member.trial.number)
                _out_of_time(study, member.trial, OutOfTime("trial", member.limit.seconds), member.rule.pending)
                leave(member.trial, "failed")
    except OutOfTime as out:  # the study's --timeout: every member still training is re-queued
        for member in live.values():
            _out_of_time(study, member.trial, out)
        raise
    except KeyboardInterrupt:
        interrupts.shield()  # a second Ctrl-C or SIGTERM must not cut the re-queueing short
        for trial in live_trials:
            _abandon(study, trial)
        raise
    except BaseException as exc:  # user code in the model or loss: the members still training fail, the study goes on
        if is_storage_fault(exc, disk=False):
            raise  # a report to the storage failed: not the user's error; the trials stay RUNNING, recoverable
        for member in list(live.values()):
            with interrupts.deferred():
                _fail(member.trial, exc, member.rule.pending)
            leave(member.trial, "failed", refilled=False)
    return verdicts


def verdict_counts(verdicts: collections.Counter[str]) -> str:
    """``stable=3 spiky=1``: the verdicts counted so far, for the progress bar.

    Example:
        >>> verdict_counts(collections.Counter({"spiky": 1, "stable": 3}))
        'stable=3 spiky=1'
    """
    return " ".join(f"{v}={verdicts[v]}" for v in VERDICTS[:-1] if verdicts[v])


def _out_of_time(study: optuna.Study, trial: optuna.Trial, out: OutOfTime, reports: Mapping[int, float] = {}) -> None:
    """The study's time ran out: re-queue the trial; the trial's own ran out: it failed, "timed out" (with its
    ``reports`` not yet written)."""
    if out.limit == "study":
        _abandon(study, trial)
        return
    mark_failed(trial, "timed out", out, with_traceback=False, reports=reports)


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
    medians = finished_medians(study, steps) if kind == SEARCH and settings.stop_slow else {}
    on_progress = SlowRule(trial, steps, config.warmup_steps(steps), medians)

    try:
        result = train_trial(
            module, config, steps=steps, seed=seed, device=settings.device,
            options=settings.options, on_progress=on_progress, progress_every=report_every(steps), sharpness=settings.early_warning,
            deadlines=(deadline, Deadline.after(settings.trial_timeout, "trial")),
        )
    except OutOfTime as out:
        _out_of_time(study, trial, out, on_progress.pending)
        if out.limit == "study":
            raise
        return "failed"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # user code: fail this trial only
        if is_storage_fault(exc, disk=False):
            raise  # a report to the storage failed: not the user's error; the trial stays RUNNING, recoverable
        with interrupts.deferred():
            _fail(trial, exc, on_progress.pending)
        return "failed"
    with interrupts.deferred():  # a trial being told is told to the end
        return finish_trial(context, trial, config, steps, result, stopped_slow=on_progress.stopped_at,
                            reports=on_progress.pending)


def slot_run(trial: optuna.Trial) -> dict[str, Any]:
    """``run_trial``'s ``seed``, ``steps``, ``config`` and ``attrs`` (its tags) for the confirmation slot ``trial``,
    as the slot carries them."""
    a = internals.stored_trial(trial).user_attrs
    return {"seed": a[SEED], "steps": a[STEPS], "config": OptimConfig.from_dict(a[CONFIG]), "attrs": {k: a[k] for k in CONFIRM_TAGS}}


def report_every(steps: int) -> int:
    """Steps between a trial's reports: a few storage writes per trial, none for tiny runs."""
    return max(50, steps // _REPORTS_PER_TRIAL)


#: Seconds between the writes of a running trial's reports: live in the dashboard, and a run of a few
#: seconds writes them once, with its result, instead of one storage transaction per report.
REPORT_WRITE_SECONDS = 10.0


class SlowRule:
    """A trial's progress reports (intermediate values, in decades) and the median rule, as one ``on_progress``.

    ``medians`` are the finished trials' (:func:`finished_medians`; empty:
    never stopped). Past the trial's warmup, a best reported value above the
    median at the same step stops the run (:class:`StopRun`); ``stopped_at``
    is then that step, and ``reported`` holds what was reported. Reports are
    written every :data:`REPORT_WRITE_SECONDS` (:meth:`write`); those still
    ``pending`` at the end go with the trial's result or its failure
    (:func:`finish_trial`, ``mark_failed``), since the medians read only
    finished trials.
    """

    def __init__(self, trial: optuna.Trial, steps: int, warmup: int, medians: dict[int, float]) -> None:
        self.trial, self.steps, self.warmup, self.medians = trial, steps, warmup, medians
        self.best = math.inf
        self.stopped_at: int | None = None
        self.reported: dict[int, float] = {}
        self.pending: dict[int, float] = {}
        self._written_at = time.monotonic()

    def __call__(self, step: int, loss: float) -> None:
        interrupts.check()  # an interrupt Python swallowed (in a weakref callback, say) still stops the trial
        if step < self.steps:
            value = math.log10(max(loss, 1e-300))
            self.reported[step] = self.pending[step] = value
            self.best = min(self.best, value)
            if time.monotonic() - self._written_at >= REPORT_WRITE_SECONDS:
                self.write()
            if step >= self.warmup and is_slow(self.best, step, self.medians):
                self.stopped_at = step
                raise StopRun("slower than the median of the finished trials")

    def write(self) -> None:
        """Store the pending reports on the trial, in one transaction."""
        if self.pending:
            internals.set_trial_attrs(self.trial, {}, reports=self.pending)
            self.pending = {}
        self._written_at = time.monotonic()


def finished_medians(study: optuna.Study, steps: int) -> dict[int, float]:
    """Per report step, the median value of the study's finished search trials of ``steps`` steps."""
    return median_by_step(finished_reports(study, steps))


def finished_reports(study: optuna.Study, steps: int) -> list[dict[int, float]]:
    """The reports (``intermediate_values``) of the study's finished search trials of ``steps`` steps."""
    return [
        dict(t.intermediate_values) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if is_search(t) and t.user_attrs.get(STEPS) == steps
    ]


def prepare_trial(
    trial: optuna.Trial, space: SearchSpace, settings: SearchSettings, *, kind: str, seed: int, steps: int,
    config: OptimConfig | None = None, attrs: dict[str, Any] | None = None,
) -> OptimConfig:
    """Sample (or take) the trial's configuration and record what it will run (with its parameters, one write)."""
    params: list[internals.Param] = []
    if config is None:  # a sampled search configuration trains at the run's precision and decay grouping
        with internals.params_kept(trial) as params:
            config = dataclasses.replace(sample(space, trial), precision=settings.precision, no_decay=settings.no_decay)
    internals.set_trial_attrs(trial, run_attrs(kind, config, seed, steps, str(settings.device), attrs), params=params)
    return config


def finish_trial(
    context: SearchContext, trial: optuna.Trial, config: OptimConfig, steps: int, result: TrainResult,
    stopped_slow: int | None = None, reports: Mapping[int, float] = {},
) -> str:
    """Analyse a finished run, store it on the trial and tell Optuna; returns the verdict.

    ``stopped_slow`` is the step where the median rule stopped the run: unless
    its curve already diverged, its verdict is ``slow``, and it ends PRUNED.
    ``reports`` are its progress reports not yet written (:class:`SlowRule`):
    they are written with the result.
    """
    study, settings = context.study, context.settings
    try:
        if result.steps_run == 0:
            raise RuntimeError("the training loop logged no losses; call run.log(loss) once per step")
        analysis = analyze_result(result, context.module, config, steps, settings.options)
    except Exception as exc:
        _fail(trial, exc, reports)
        return "failed"
    warning = early_warning(result, config, steps) if settings.early_warning else NO_WARNING
    penalty = settings.warning_penalty if warning.predicted_unstable and analysis.verdict != "diverged" else 0.0
    score = analysis.score + penalty
    artifact = upload_curve(trial, context.storage, result)
    unstable = analysis.verdict in UNSTABLE and (stopped_slow is None or analysis.verdict == "diverged")
    if unstable:  # told PRUNED, its score is its report at the full budget (a pruned trial's value)
        reports = {**reports, steps: score}
    write_result(trial, result, analysis, warning, score=score, penalty=penalty,
                 telemetry=telemetry_summary(result.telemetry), curve_artifact=artifact, reports=reports)
    if unstable:
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


def _fail(trial: optuna.Trial, exc: BaseException, reports: Mapping[int, float] = {}) -> None:
    """User code (or the machine) failed the trial: FAIL, out of memory or a user-code error, with the traceback
    (and its ``reports`` not yet written)."""
    oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
    mark_failed(trial, "out of memory" if oom else "user-code error", exc, hint=OOM_HINT if oom else None, reports=reports)


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

