"""The confirmation stage: re-run the best configurations on new seeds at a longer horizon.

A single short run on one seed cannot show late instability, so the best
``candidates`` search trials are each trained again on ``seeds`` new seeds for
``stress`` times the search steps (search runs whose loss already jumped
tenfold mid-run, :func:`stabsearch.study.recommend.major_spikes`, rank last). If
every candidate fails, the one with the best worst case is confirmed again
at a third of its learning rate (and, if that fails too, a ninth): a rescue.
The best survivor is then probed at 3x (and, if that fails, sqrt(3)x) its
learning rate on the same seeds, to find how far the edge is (a population
probes every candidate beside the candidates' own runs, when it has room
for them all: :func:`_probes_ahead`); and the
back-off configuration that :func:`stabsearch.study.recommend.recommend` picks is
confirmed the same way, when it differs. Runs are trials of the same study,
tagged ``kind=confirm`` with the number of the search trial they check
(``of``), so ``trials`` and the dashboard show them apart. Finished runs are
never repeated, so an interrupted confirmation resumes where it stopped.

Each stage's runs are slots, like the search's (:mod:`stabsearch.study.slots`):
WAITING trials that carry their configuration, seed and horizon, reserved
atomically for the runs no trial has yet, and claimed one at a time. Two
``confirm`` processes on one study share the runs instead of repeating them,
and a run whose worker died is recovered and run again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from stabsearch.config import OptimConfig
from stabsearch.training.loader import ModelModule
from stabsearch.study.recommend import back_off, choose_confirmed, major_spikes, nearest_unstable_lr, probe_outcomes, rescue
from stabsearch.study import interrupts
from stabsearch.study import optuna_internals as internals
from stabsearch.study.record import TrialRecord
from stabsearch.study.slots import Slot, abandon, claim, claim_some, heartbeat, recover_lost, slot_changes
from stabsearch.study.trial_attrs import (
    BACKOFF, CONFIG, CONFIRM, FAILURE, KIND, NOT_COUNTED, OF, PROBE, RESCUE, SEED, STEPS, VERDICT, is_search,
    study_records, trial_record,
)
from stabsearch.study.context import SearchContext
from stabsearch.study.runner import SearchSettings, open_context, run_population, run_trial, slot_run
from stabsearch.training.trainer import Run
from stabsearch.study.space import SearchSpace
from stabsearch.study.storage import Storage


#: Rounds of rescue when every candidate fails: the best of them at 1/safety, then 1/safety^2 of its learning rate.
RESCUE_ROUNDS = 2
#: A run of the stage: the search trial it checks, its configuration, its seed and its tags.
Job = tuple[FrozenTrial, OptimConfig, int, dict]


@dataclasses.dataclass(frozen=True)
class ConfirmSettings:
    """How hard to check the best configurations."""

    candidates: int = 3
    seeds: int = 3
    stress: float = 2.0
    safety: float = 3.0

    def __post_init__(self) -> None:
        if self.candidates < 0 or self.seeds < 1 or self.stress <= 0 or self.safety < 1:
            raise ValueError(f"invalid confirmation settings {self}")


@dataclasses.dataclass
class ConfirmSummary:
    """What a confirmation did: runs it trained, runs an earlier call had finished, and whether it was interrupted."""

    runs: int = 0
    skipped: int = 0
    interrupted: bool = False


def confirmation_seeds(base: int, count: int) -> list[int]:
    """Seeds no search trial used (search trials all use ``base``)."""
    return [base + 1000 + i for i in range(count)]


def _key(config: dict, seed: int, steps: int) -> str:
    return json.dumps([config, seed, steps], sort_keys=True)


def _trial_key(t: FrozenTrial) -> str | None:
    a = t.user_attrs
    if a.get(KIND) != CONFIRM or not {CONFIG, SEED, STEPS} <= a.keys():
        return None
    return _key(a[CONFIG], a[SEED], a[STEPS])


def _done(trials: list[FrozenTrial]) -> set[str]:
    return {
        _trial_key(t)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        and t.user_attrs.get(FAILURE) not in NOT_COUNTED and _trial_key(t) is not None
    }


def _taken(trials: list[FrozenTrial]) -> set[str]:
    """Runs that are done, queued or running: no slot is added for them."""
    live = {_trial_key(t) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    return (live | _done(trials)) - {None}


def _slot(source: FrozenTrial, config: OptimConfig, seed: int, steps: int, tags: dict) -> Slot:
    """A confirmation run as a slot carrying ``source``'s parameters (with ``config``'s learning rate)."""
    params, dists = dict(source.params), dict(source.distributions)
    if "lr" in params and params["lr"] != config.lr:
        if dists["lr"].low <= config.lr <= dists["lr"].high:
            params["lr"] = config.lr
        else:  # below the searched range: the trial's config attribute still records it
            params.pop("lr"), dists.pop("lr")
    attrs = {KIND: CONFIRM, CONFIG: config.to_dict(), SEED: seed, STEPS: steps,
             OF: source.number, BACKOFF: False, PROBE: False, RESCUE: False, **tags}
    return Slot(user_attrs=attrs, params=params, distributions=dists)


def _reserve_runs(study: optuna.Study, slots: dict[str, Slot]) -> None:
    with interrupts.deferred(), slot_changes(study) as changes:
        taken = _taken(changes.trials())
        changes.add([slot for key, slot in slots.items() if key not in taken])


def run_confirmation(
    module: ModelModule, space: SearchSpace, storage: Storage, study_name: str,
    settings: SearchSettings, confirm: ConfirmSettings,
) -> ConfirmSummary:
    """Confirm the best search configurations, then the backed-off recommendation.

    SIGINT and SIGTERM end it as interrupted; the run they stopped is done again on resume.
    """
    if confirm.candidates == 0:
        return ConfirmSummary()
    with interrupts.handling():
        return _confirmation(module, space, storage, study_name, settings, confirm)


def _confirmation(
    module: ModelModule, space: SearchSpace, storage: Storage, study_name: str, settings: SearchSettings, confirm: ConfirmSettings,
) -> ConfirmSummary:
    summary = ConfirmSummary()
    context = open_context(module, space, storage, study_name, settings)
    study = context.study
    recover_lost(study, settings.heartbeat)
    trials = study.get_trials(deepcopy=False)
    before = _done(trials)  # runs an earlier call finished: "already done" (a probe trained ahead is not)
    # Best scores first; a search run that already jumped tenfold mid-run would fail confirmation, so it
    # comes after every one that did not, and a run that learned too slowly (verdict slow) after those.
    # Ties are not broken by the lower learning rate here (the choice among survivors is): the candidates
    # that fail are the evidence of the edge.
    best = sorted(
        (t for t in trials if is_search(t) and t.state == TrialState.COMPLETE),
        key=lambda t: (t.user_attrs.get(VERDICT) == "slow", major_spikes(trial_record(t)) > 0, t.value),
    )[: confirm.candidates]
    horizon = max(1, round(confirm.stress * settings.steps))
    seeds = confirmation_seeds(settings.seed, confirm.seeds)
    jobs = [(t, OptimConfig.from_dict(t.user_attrs[CONFIG]), s, {}) for t in best for s in seeds]
    jobs += _probes_ahead(context, study_records(study), jobs, len(seeds), confirm.safety)
    summary = _run_jobs(context, jobs, horizon, summary, "confirm", before)
    if summary.interrupted:
        return summary
    for _ in range(RESCUE_ROUNDS):  # every candidate failed: back the most promising off and try that
        if choose_confirmed(study_records(study)) is not None:
            break
        found = rescue(study_records(study), confirm.safety)
        if found is None:
            break
        jobs = [(study.trials[found.source.number], found.config, s, {RESCUE: True}) for s in seeds]
        summary = _run_jobs(context, jobs, horizon, summary, f"rescue lr {found.config.lr:.3g}", before)
        if summary.interrupted:
            return summary
    chosen = choose_confirmed(study_records(study))
    if chosen is None:
        return summary
    source, config = study.trials[chosen.source.number], chosen.config
    # Edge probes: does the candidate still train at 3x (then sqrt(3)x) its learning rate? Skip a
    # probe at or above a learning rate already known to fail; stop at the first that passes.
    for factor in (confirm.safety, math.sqrt(confirm.safety)):
        probe = dataclasses.replace(config, lr=config.lr * factor)
        known = nearest_unstable_lr(study_records(study), config)
        if known is not None and probe.lr >= known:
            continue
        jobs = [(source, probe, s, {PROBE: True}) for s in seeds]
        summary = _run_jobs(context, jobs, horizon, summary, f"edge probe x{factor:.3g}", before)
        if summary.interrupted or probe_outcomes(study_records(study), config).get(probe.lr) is False:
            break  # interrupted, or it passed: the margin is proven
    if summary.interrupted:
        return summary
    safe = back_off(study_records(study), config, confirm.safety)
    if safe != config:
        jobs = [(source, safe, s, {BACKOFF: True}) for s in seeds]
        summary = _run_jobs(context, jobs, horizon, summary, "back-off", before)
    return summary


def _probes_ahead(context: SearchContext, records: Sequence[TrialRecord], jobs: list[Job], seeds: int, safety: float) -> list[Job]:
    """The edge probes of every candidate, to train beside the candidates' own ``jobs`` when a population
    holds them all at once.

    One run at a time, the probes wait for the candidates' runs, since only
    the chosen candidate is probed. A population trains the probes of all
    candidates in the same steps as the candidates' runs, so the later
    stages find the chosen one's probes done instead of training two more
    rounds. The 3x probes are added, then the sqrt(3)x ones, each only if
    the population still has room for them all; a probe at or above a
    learning rate already known to fail is left out (the later stage may
    skip more, knowing this stage's failures).
    """
    if not _as_population(context, jobs):
        return []
    room = context.settings.population - len(jobs)
    taken = {_key(c.to_dict(), s, 0) for _, c, s, _ in jobs}
    ahead: list[Job] = []
    for factor in (safety, math.sqrt(safety)):
        if factor <= 1:  # no probe above the candidate itself
            break
        more = []
        for source, config, _, _ in jobs[::seeds]:  # one per candidate
            probe = dataclasses.replace(config, lr=config.lr * factor)
            known = nearest_unstable_lr(records, config)
            if known is not None and probe.lr >= known:
                continue
            more += [(source, probe, seed, {PROBE: True}) for _, _, seed, _ in jobs[:seeds]]
        more = [job for job in more if _key(job[1].to_dict(), job[2], 0) not in taken]
        if len(more) > room:
            break
        ahead += more
        room -= len(more)
    return ahead


def _run_jobs(
    context: SearchContext, jobs: list[Job], horizon: int, summary: ConfirmSummary,
    label: str, before: set[str],
) -> ConfirmSummary:
    """Run the stage's ``jobs`` (source trial, configuration, seed, tags) as slots of ``horizon`` steps,
    and wait for those other processes hold; returns ``summary``, whose ``skipped`` counts the jobs among
    ``before`` (finished before this confirmation began; taken out of it once counted)."""
    study, settings = context.study, context.settings
    slots = {_key(c.to_dict(), s, horizon): _slot(src, c, s, horizon, tags) for src, c, s, tags in jobs}
    done = _done(study.get_trials(deepcopy=False))
    counted = before & slots.keys()  # each counted once: a probe trained ahead is a job of two stages
    summary.skipped += len(counted)
    before -= counted
    bar = tqdm(total=len(slots), initial=sum(k in done for k in slots), unit="run", desc=label,
               disable=None if settings.progress else True, dynamic_ncols=True)
    if _as_population(context, jobs):
        try:
            return _run_population(context, slots, summary, bar)
        finally:
            bar.close()
    trial = None
    try:
        while True:
            interrupts.check()
            _reserve_runs(study, slots)
            with interrupts.deferred():
                trial = claim(study, settings.heartbeat, accept=lambda t: _trial_key(t) in slots and t.state == TrialState.WAITING)
            if trial is None:
                if not _wait_for_others(study, slots, settings):
                    break
                continue
            with heartbeat(study, internals.trial_id(trial), settings.heartbeat, progress=Run.steps_logged):
                run_trial(context, trial, kind=CONFIRM, **slot_run(trial))
            trial = None
            summary.runs += 1
            bar.update(1)
    except KeyboardInterrupt:
        interrupts.shield()
        summary.interrupted = True
        if trial is not None:
            with interrupts.deferred():
                abandon(study, trial, "interrupted")
    finally:
        bar.close()
    return summary


def _as_population(context: SearchContext, jobs: list[Job]) -> bool:
    """Whether the stage's runs train as one population: ``--population`` is on, and their seeds build the same
    frozen parameters and constant buffers."""
    settings = context.settings
    if settings.population < 2 or len(jobs) < 2:
        return False
    from stabsearch.population.trainer import seeds_share_frozen_state

    return seeds_share_frozen_state(context.module, [seed for _, _, seed, _ in jobs], settings.device)


def _run_population(context: SearchContext, slots: dict[str, Slot], summary: ConfirmSummary, bar: tqdm) -> ConfirmSummary:
    """The stage's runs as one population of up to ``--population`` members, each on its own seed (its own
    initial weights and batches), each claimed as a slot when a member's place frees and told as it ends:
    the resume semantics of runs one at a time (runs told are done; those interrupted run again)."""
    study, settings = context.study, context.settings

    def is_slot(t: FrozenTrial) -> bool:
        return _trial_key(t) in slots and t.state == TrialState.WAITING

    def claim_next() -> optuna.Trial | None:  # the stage's slots are reserved once a round, below
        return claim(study, settings.heartbeat, accept=is_slot)

    def done(trial: optuna.Trial, verdict: str) -> None:
        summary.runs += 1
        bar.update(1)

    held: list[optuna.Trial] = []
    try:
        while True:
            interrupts.check()
            with interrupts.deferred():  # a slot is claimed and held, or not claimed at all
                _reserve_runs(study, slots)
                held = claim_some(study, settings.population, settings.heartbeat, accept=is_slot)
            if not held:
                if not _wait_for_others(study, slots, settings):
                    break
                continue
            beating = {internals.trial_id(t) for t in held}
            with heartbeat(study, beating, settings.heartbeat, progress=Run.steps_logged):
                if len(held) == 1:
                    run_trial(context, held[0], kind=CONFIRM, **slot_run(held[0]))
                    done(held[0], "")
                else:
                    run_population(context, held, kind=CONFIRM, refill=claim_next, on_done=done, beating=beating)
            held = []
    except KeyboardInterrupt:
        interrupts.shield()
        summary.interrupted = True
        with interrupts.deferred():
            for trial in held:
                abandon(study, trial, "interrupted")
    return summary


def _wait_for_others(study: optuna.Study, slots: dict, settings: SearchSettings) -> bool:
    """With no slot of the stage left to claim: True (after a pause) while other processes still run some."""
    pending = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)) if _trial_key(t) in slots]
    if not pending:
        return False
    if not recover_lost(study, settings.heartbeat):
        time.sleep(min(1.0, settings.heartbeat))
    return True
