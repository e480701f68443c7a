"""Choose the configuration to recommend, with the evidence behind it.

Pure: works on :class:`~stabsearch.study.record.TrialRecord` lists, no Optuna.

With confirmation runs (the best search configurations re-run on new seeds at
a longer horizon), the recommendation is the configuration with the best worst
case among those that never diverged, collapsed, left a spike unrecovered or
jumped tenfold once training was under way (:func:`major_spikes`) on any
seed. When every candidate failed, the confirmation stage tries the best of
them again at a lower learning rate (:func:`rescue`). The choice is then
backed off along the learning rate: it stays a safety factor (default 3)
below wherever the edge may be. The edge lies between the highest learning
rate known to pass (the candidate's own, or a passed edge probe at 3x or
sqrt(3)x of it) and the lowest known to fail (a failed probe, a candidate
that failed confirmation, or any trial at similar eps and beta2 that
diverged, collapsed or spiked late). Without confirmation runs it falls back
to the best stable search trial and says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from itertools import takewhile
from typing import Any, TypeVar

from stabsearch.config import OptimConfig
from stabsearch.errors import UsageError
from stabsearch.study.record import UNSTABLE, TrialRecord
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
#: "Similar" eps and beta2 for the cliff search: within this many decades of eps and of 1 - beta2.
EPS_DECADES = 1.0
BETA2_DECADES = 0.5
#: A confirmation run fails on a spike of this many decades or more once training is under way
#: (after warmup and the first SETTLED_FRACTION of its steps), recovered or not.
MAJOR_SPIKE_DECADES = 1.0
SETTLED_FRACTION = 0.1
T = TypeVar("T")
#: Scores within this many decades of a group's best tie; the lower learning rate ranks first among them.
TIE_DECADES = 0.01
#: A configuration's settings but its learning rate (see :func:`_setting`): what a candidate and its probes share.
Setting = tuple[tuple[str, Any], ...]


class NothingToRecommend(UsageError):
    """The study holds no configuration that trained stably."""


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """Settings to copy into production, and why they are trusted."""

    study: str
    config: OptimConfig
    total_steps: int
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        schedule: dict[str, Any] = {
            "name": c.schedule,
            "warmup_steps": c.warmup_steps(self.total_steps),
            "warmup_fraction": c.warmup,
        }
        if c.schedule != "constant":
            schedule["total_steps"] = self.total_steps
            schedule["min_lr_factor"] = c.min_lr_factor
        return {
            "study": self.study,
            "optimizer": c.optimizer,
            "lr": c.lr,
            "eps": c.eps,
            "betas": [c.beta1, c.beta2],
            "weight_decay": c.weight_decay,
            "no_decay": c.no_decay,
            "max_grad_norm": c.max_grad_norm,
            "precision": c.precision,
            "schedule": schedule,
            "evidence": dict(self.evidence),
        }


def ranked(items: Sequence[T], score: Callable[[T], float], lr: Callable[[T], float]) -> list[T]:
    """``items`` best (lowest) score first, scores within :data:`TIE_DECADES` of a group's best tied, and the
    lower learning rate first among ties.

    Below the score's floor (a final loss far under ``floor_fraction`` of the
    start) every run scores the same to a few decimals: one that reached
    1e-15 is no better than one at 1e-9, and was often pushed there by a
    learning rate near the cliff. Among equals, the one farther from the
    cliff comes first.

    Example:
        >>> ranked([(-3.0139, 0.05), (-3.0138, 0.002), (-2.5, 0.001)], score=lambda x: x[0], lr=lambda x: x[1])
        [(-3.0138, 0.002), (-3.0139, 0.05), (-2.5, 0.001)]
    """
    ordered = sorted(items, key=score)
    out: list[T] = []
    while ordered:
        best = score(ordered[0])
        tied = 1 + sum(1 for _ in takewhile(lambda x: score(x) <= best + TIE_DECADES, ordered[1:]))  # the group's best and its ties
        out += sorted(ordered[:tied], key=lr)
        ordered = ordered[tied:]
    return out


def major_spikes(run: TrialRecord) -> int:
    """Spikes of a decade or more after warmup and the first tenth of ``run``: the loss level jumping
    tenfold once training is under way. Early transients of the first descent do not count."""
    if not run.steps:
        return 0
    warmup = float(run.params.get("warmup", 0.0) or 0.0)
    settled = max(SETTLED_FRACTION, warmup) * run.steps
    return sum(
        1 for s in run.spike_events
        if (s.get("size") or 0.0) >= MAJOR_SPIKE_DECADES and (s.get("step") or 0) >= settled
    )


def survived(runs: Sequence[TrialRecord]) -> bool:
    """No divergence, collapse, failure, unrecovered spike or major spike (:func:`major_spikes`) on any run.

    A recovered spike of a decade or more is no proof of stability either:
    the same configuration on another seed or a longer horizon may not
    recover, and a user who copies it would see the jump.
    """
    return bool(runs) and all(
        r.state != "FAIL" and r.verdict not in ("diverged", "plateau") and r.unrecovered == 0 and major_spikes(r) == 0
        for r in runs
    )


def similar(a: dict[str, Any], b: OptimConfig) -> bool:
    """Same neighbourhood of eps and beta2, where a learning-rate cliff carries over."""
    try:
        eps_gap = abs(math.log10(float(a["eps"])) - math.log10(b.eps))
        b2_gap = abs(math.log10(1 - float(a["beta2"])) - math.log10(1 - b.beta2))
    except (KeyError, ValueError, TypeError):
        return False
    return eps_gap <= EPS_DECADES and b2_gap <= BETA2_DECADES


def nearest_unstable_lr(records: Sequence[TrialRecord], config: OptimConfig) -> float | None:
    """The smallest learning rate above ``config.lr`` that went unstable at similar eps and beta2.

    Failed edge probes (:func:`probe_failed`) and candidates that failed
    confirmation (:func:`survived`) at similar eps and beta2 count as unstable too.
    """
    lrs = [
        float(r.params["lr"])
        for r in records
        if r.verdict in UNSTABLE and not r.probe and "lr" in r.params
        and float(r.params["lr"]) > config.lr and similar(r.params, config)
    ]
    lrs += [lr for (setting, lr), failed in _probe_results(records).items()
            if lr > config.lr and failed and similar(dict(setting), config)]
    lrs += [
        lr for (_, lr), runs in confirmation_groups(records).items()
        if lr > config.lr and not survived(runs) and similar(runs[0].params, config)
    ]
    return min(lrs) if lrs else None


def _setting(config: OptimConfig) -> Setting:
    """Every setting of ``config`` but its learning rate, as a key."""
    return tuple((k, v) for k, v in sorted(config.to_dict().items()) if k != "lr")


def _run_setting(run: TrialRecord) -> Setting | None:
    """:func:`_setting` of the configuration ``run`` trained, or ``None`` when it cannot be read."""
    try:
        return _setting(OptimConfig.from_dict(run.params))
    except (TypeError, ValueError):
        return None


def probes(records: Sequence[TrialRecord]) -> dict[float, list[TrialRecord]]:
    """Finished edge-probe runs by learning rate, of every candidate (:func:`probe_outcomes` takes one's)."""
    out: dict[float, list[TrialRecord]] = defaultdict(list)
    for r in records:
        if r.probe and r.state in FINISHED and r.failure != "interrupted" and "lr" in r.params:
            out[float(r.params["lr"])].append(r)
    return dict(out)


def probe_failed(runs: Sequence[TrialRecord], reference: float | None = None) -> bool:
    """An edge probe failed: it diverged, collapsed, spiked late, or trained a decade worse than ``reference``."""
    if not survived(runs) or any(r.verdict == "spiky" for r in runs):
        return True
    worst = max((r.score for r in runs if r.score is not None), default=math.inf)
    return reference is not None and worst > reference + 1.0


def _probe_results(records: Sequence[TrialRecord]) -> dict[tuple[Setting, float], bool]:
    """Whether each probe failed, by (settings but the learning rate, probed learning rate), judged against its
    candidate's confirmation runs."""
    groups = confirmation_groups(records)
    runs_of: dict[tuple[Setting, float], list[TrialRecord]] = defaultdict(list)
    for lr, runs in probes(records).items():
        for r in runs:
            setting = _run_setting(r)
            if setting is not None:
                runs_of[setting, lr].append(r)
    outcomes = {}
    for key, runs in runs_of.items():
        worst = [max(r.score for r in g) for (of, _), g in groups.items()
                 if of == runs[0].of and survived(g) and all(r.score is not None for r in g)]
        outcomes[key] = probe_failed(runs, min(worst, default=None))
    return outcomes


def probe_outcomes(records: Sequence[TrialRecord], config: OptimConfig) -> dict[float, bool]:
    """Whether each probed learning rate of ``config``'s settings failed.

    Candidates are probed at their own settings with a higher learning
    rate, so a probe belongs to the candidates whose settings (all but the
    learning rate) it shares; the population confirmation probes every
    candidate at once.
    """
    wanted = _setting(config)
    return {lr: failed for (setting, lr), failed in _probe_results(records).items() if setting == wanted}


def highest_passing_lr(records: Sequence[TrialRecord], config: OptimConfig, below: float | None) -> float:
    """The highest learning rate, from ``config.lr`` up to ``below``, that passed an edge probe of ``config``'s settings."""
    passed = [lr for lr, failed in probe_outcomes(records, config).items() if not failed and (below is None or lr < below)]
    return max([config.lr, *passed])


def back_off(records: Sequence[TrialRecord], config: OptimConfig, safety: float = 3.0) -> OptimConfig:
    """``config`` with a learning rate ``safety`` times below wherever the edge may be.

    The edge lies between the highest learning rate known to pass (``config``'s
    own, or a passed edge probe) and the lowest known to fail. Anywhere in that
    bracket is possible, so the learning rate goes to ``safety`` below its
    bottom: stay 3x below the cliff even if it is right above the last pass.
    """
    edge = nearest_unstable_lr(records, config)
    if edge is None:
        return config
    lr = min(config.lr, highest_passing_lr(records, config, edge) / safety)
    return config if lr >= config.lr else dataclasses.replace(config, lr=lr)


def confirmation_groups(records: Sequence[TrialRecord]) -> dict[tuple[int, float], list[TrialRecord]]:
    """Finished confirmation runs of each candidate, keyed by (search trial, learning rate).

    A candidate is a search trial's configuration, or the same backed off
    after every candidate failed (a rescue); probes and the final back-off
    check are not candidates.
    """
    groups: dict[tuple[int, float], list[TrialRecord]] = defaultdict(list)
    for r in records:
        if (r.kind == "confirm" and not r.backoff and not r.probe and r.of is not None
                and r.state in FINISHED and r.failure != "interrupted" and "lr" in r.params):
            groups[r.of, float(r.params["lr"])].append(r)
    return dict(groups)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A confirmed configuration: the search trial it came from, its runs, and the settings they ran."""

    source: TrialRecord
    runs: list[TrialRecord]
    config: OptimConfig

    @property
    def worst(self) -> float:
        return max(r.score for r in self.runs)


def candidates(records: Sequence[TrialRecord]) -> list[Candidate]:
    """Every confirmed candidate whose source trial is in ``records`` and whose runs all have a score."""
    by_number = {r.number: r for r in records}
    return [
        Candidate(by_number[of], runs, OptimConfig.from_dict(runs[0].params))
        for (of, _), runs in confirmation_groups(records).items()
        if of in by_number and all(r.score is not None for r in runs)
    ]


def choose_confirmed(records: Sequence[TrialRecord]) -> Candidate | None:
    """The candidate whose confirmation runs all survived with the best worst score (ties: :func:`ranked`)."""
    passing = [c for c in candidates(records) if survived(c.runs)]
    return next(iter(ranked(passing, score=lambda c: c.worst, lr=lambda c: c.config.lr)), None)


def rescue(records: Sequence[TrialRecord], safety: float) -> Candidate | None:
    """When no candidate survived: the one with the best worst case, its learning rate ``safety`` times lower.

    Every confirmed learning rate was at or past the edge, so the next
    candidate is the most promising of them backed off as ``recommend``
    would back off a survivor. ``None`` when a candidate survived or none
    was confirmed.
    """
    found = candidates(records)
    if not found or any(survived(c.runs) for c in found):
        return None
    # A candidate whose backed-off setting already ran was rescued before: that rescue is a candidate now, and
    # the next round backs it off again (a third, then a ninth), rather than proposing the same third twice
    # (diverged runs tie on score, so the best worst case alone may pick the original again).
    fresh = [c for c in found if not any(_same_setting(other.config, c.config, c.config.lr / safety) for other in found)]
    if not fresh:
        return None
    best = ranked(fresh, score=lambda c: c.worst, lr=lambda c: c.config.lr)[0]
    return dataclasses.replace(best, config=dataclasses.replace(best.config, lr=best.config.lr / safety))


def _same_setting(config: OptimConfig, base: OptimConfig, lr: float) -> bool:
    """Whether ``config`` is ``base`` at learning rate ``lr`` (to float precision: stored values round-trip JSON)."""
    return math.isclose(config.lr, lr, rel_tol=1e-9) and dataclasses.replace(config, lr=lr) == dataclasses.replace(base, lr=lr)


def recommend(records: Sequence[TrialRecord], study: str, *, safety: float = 3.0, tolerance: float = 0.5) -> Recommendation:
    """The safe recommendation from a study's trials, or :class:`NothingToRecommend`.

    ``safety`` is the back-off factor below the nearest unstable learning rate;
    ``tolerance`` (decades of score) defines the basin of learning rates
    that did about as well as the best worst case.

    Example:
        >>> recommend([], "empty")
        Traceback (most recent call last):
        ...
        stabsearch.study.recommend.NothingToRecommend: study 'empty' has no finished search trials yet; run `stabsearch run` first
    """
    if safety < 1:
        raise ValueError(f"safety must be at least 1, got {safety}")
    search = [r for r in records if r.kind == "search" and r.state in FINISHED]
    stable = [r for r in search if r.verdict == "stable" and r.state == "COMPLETE" and r.score is not None]
    if not stable:
        raise NothingToRecommend(_nothing_message(search, study))
    groups = confirmation_groups(records)
    chosen = choose_confirmed(records)
    if groups and chosen is None:
        raise NothingToRecommend(
            f"study {study!r}: none of the {len(groups)} best configurations survived confirmation on new seeds "
            "(each diverged, collapsed, kept a spike or jumped tenfold after its first tenth on some seed); "
            "nothing safe to recommend. "
            "Narrow the space to lower learning rates or larger eps and run again"
        )
    if chosen is None:
        source, runs = ranked(stable, score=lambda r: r.score, lr=lambda r: float(r.params["lr"]))[0], []
        worst, best = source.score, OptimConfig.from_dict(source.params)
    else:
        source, runs, worst, best = chosen.source, chosen.runs, chosen.worst, chosen.config
    config = back_off(records, best, safety)
    edge = nearest_unstable_lr(records, best)
    evidence: dict[str, Any] = {
        "trial": source.number,
        "confirmed": bool(runs),
        "seeds": sorted({r.seed for r in runs if r.seed is not None}) if runs else [source.seed],
        "horizon": max((r.steps or 0) for r in runs) if runs else source.steps,
        "spikes": sum(r.spikes for r in runs) if runs else source.spikes,
        "divergences": sum(r.verdict == "diverged" for r in runs),
        "final_loss": max((r.final_loss for r in runs if r.final_loss is not None), default=source.final_loss),
        "worst_score": worst,
        "search_score": source.score,
        "candidates_confirmed": len(groups),
        "rescued_from": float(source.params["lr"]) if runs and best.lr != float(source.params["lr"]) else None,
        "stable_trials": len(stable),
        "unstable_trials": sum(r.verdict in UNSTABLE for r in records),
        "basin_lr": _basin(stable, best, worst, tolerance),
        "nearest_unstable_lr": edge,
        "highest_stable_lr": highest_passing_lr(records, best, edge) if runs else None,
        "edge_probes": {f"{lr:.3g}": "failed" if failed else "passed" for lr, failed in sorted(probe_outcomes(records, best).items())},
        "margin_decades": None if edge is None else round(math.log10(edge / config.lr), 3),
        "proven_margin_decades": round(math.log10(highest_passing_lr(records, best, edge) / config.lr), 3) if runs else None,
        "at_cliff": edge is not None and best.lr * safety > edge,
        "backed_off_from": best.lr if config.lr != best.lr else None,
        "backoff_check": _backoff_check(records, config),
    }
    horizon = evidence["horizon"] or source.steps or 0
    return Recommendation(study=study, config=config, total_steps=int(horizon), evidence=evidence)


def _basin(stable: Sequence[TrialRecord], best: OptimConfig, worst: float, tolerance: float) -> list[float]:
    """Learning rates of stable search trials at similar eps/beta2 scoring within ``tolerance`` of ``worst``."""
    lrs = [float(r.params["lr"]) for r in stable if r.score <= worst + tolerance and similar(r.params, best)]
    lrs.append(best.lr)
    return [min(lrs), max(lrs)]


def _backoff_check(records: Sequence[TrialRecord], config: OptimConfig) -> dict[str, Any] | None:  # noqa: D103
    """What the confirmation runs of the backed-off configuration showed, if any were made."""
    runs = [r for r in records if r.backoff and r.state in FINISHED and math.isclose(float(r.params.get("lr", -1)), config.lr, rel_tol=1e-9)]
    if not runs:
        return None
    return {
        "seeds": sorted({r.seed for r in runs if r.seed is not None}),
        "spikes": sum(r.spikes for r in runs),
        "divergences": sum(r.verdict == "diverged" for r in runs),
        "survived": survived(runs),
    }


def _nothing_message(search: Sequence[TrialRecord], study: str) -> str:
    if not search:
        return f"study {study!r} has no finished search trials yet; run `stabsearch run` first"
    counts = Counter(r.verdict for r in search)
    parts = ", ".join(f"{n} {v}" for v, n in counts.most_common())
    return (
        f"study {study!r}: none of its {len(search)} trials trained stably ({parts}); "
        "nothing to recommend. Narrow the space to lower learning rates or larger eps, or run more trials"
    )
