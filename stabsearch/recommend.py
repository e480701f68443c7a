"""Choose the configuration to recommend, with the evidence behind it.

Pure: works on :class:`~stabsearch.records.TrialRecord` lists, no Optuna.
Until confirmation runs exist, the recommendation is the best-scoring search
trial whose verdict is stable, and its margin is the distance, in decades of
learning rate, to the nearest larger learning rate the study saw go unstable.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from stabsearch.config import OptimConfig
from stabsearch.errors import UsageError
from stabsearch.records import TrialRecord

UNSTABLE = ("spiky", "diverged", "plateau")
#: Closer than this to an unstable learning rate (a factor of 3, DESIGN section 9) counts as "at the cliff".
CLIFF_DECADES = math.log10(3.0)


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
            "schedule": schedule,
            "evidence": dict(self.evidence),
        }


def recommend(records: Sequence[TrialRecord], study: str) -> Recommendation:
    """The best stable search trial of ``records``, or :class:`NothingToRecommend`.

    Example:
        >>> recommend([], "empty")
        Traceback (most recent call last):
        ...
        stabsearch.recommend.NothingToRecommend: study 'empty' has no finished search trials yet; run `stabsearch run` first
    """
    search = [r for r in records if r.kind == "search" and r.state in ("COMPLETE", "PRUNED", "FAIL")]
    stable = [r for r in search if r.verdict == "stable" and r.state == "COMPLETE" and r.score is not None]
    if not stable:
        raise NothingToRecommend(_nothing_message(search, study))
    best = min(stable, key=lambda r: r.score)
    config = OptimConfig.from_dict(best.params)
    edge = nearest_unstable_lr(search, config.lr)
    margin = math.log10(edge / config.lr) if edge is not None else None
    evidence = {
        "trial": best.number,
        "seeds": [best.seed],
        "horizon": best.steps,
        "spikes": best.spikes,
        "divergences": 0,
        "final_loss": best.final_loss,
        "score": best.score,
        "stable_trials": len(stable),
        "unstable_trials": sum(r.verdict in UNSTABLE for r in search),
        "nearest_unstable_lr": edge,
        "margin_decades": None if margin is None else round(margin, 3),
        "at_cliff": margin is not None and margin < CLIFF_DECADES,
        "confirmed": False,
    }
    return Recommendation(study=study, config=config, total_steps=best.steps or 0, evidence=evidence)


def nearest_unstable_lr(records: Sequence[TrialRecord], lr: float) -> float | None:
    """The smallest learning rate above ``lr`` whose trial went unstable (None if none did)."""
    above = [float(r.params["lr"]) for r in records if r.verdict in UNSTABLE and float(r.params.get("lr", 0)) > lr]
    return min(above) if above else None


def _nothing_message(search: Sequence[TrialRecord], study: str) -> str:
    if not search:
        return f"study {study!r} has no finished search trials yet; run `stabsearch run` first"
    counts = Counter(r.verdict for r in search)
    parts = ", ".join(f"{n} {v}" for v, n in counts.most_common())
    return (
        f"study {study!r}: none of its {len(search)} trials trained stably ({parts}); "
        "nothing to recommend. Narrow the space to lower learning rates or larger eps, or run more trials"
    )
