"""One trial as the user sees it: a plain, frozen record, with no Optuna in it.

:func:`stabsearch.study.trial_attrs.trial_record` reads an Optuna trial into
one; the recommendation, the ``trials`` command and the reports work on these.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

VERDICTS = ("stable", "spiky", "diverged", "plateau", "slow", "failed", "running")
#: Verdicts of a run that went unstable: told to Optuna as PRUNED, and the edge the recommendation keeps away from.
UNSTABLE = ("spiky", "diverged", "plateau")


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as the user sees it."""

    number: int
    state: str
    verdict: str
    score: float | None
    final_loss: float | None
    spikes: int
    late_spikes: int
    params: dict[str, Any]
    kind: str = "search"
    seed: int | None = None
    steps: int | None = None
    steps_run: int | None = None
    diverged_at: int | None = None
    unrecovered: int = 0
    predicted_unstable: bool = False
    of: int | None = None
    backoff: bool = False
    probe: bool = False
    rescue: bool = False
    failure: str | None = None
    error: str | None = None
    spike_events: tuple[dict[str, Any], ...] = ()
    #: The early warning's one-line reason, and the decades it added to the score (0.0: none).
    warning: str | None = None
    warning_penalty: float = 0.0
    #: Each check stabsearch ran after training: name -> "ran", "skipped: <why>" or "failed: <why>".
    checks: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The id of the loss-curve CSV in the storage's artifact store (its file is ``artifacts_dir / id``).
    curve_artifact: str | None = None
    #: Stored attributes dropped because their value had the wrong type (see :mod:`stabsearch.study.trial_attrs`).
    unreadable: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_safe(v) for k, v in dataclasses.asdict(self).items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value
