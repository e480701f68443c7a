"""Read a study's trials back as plain records (for ``trials``, ``recommend`` and reports).

The one place that knows how the runner lays out a trial's user attributes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from stabsearch.study import attrs as typed

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
    #: Stored attributes dropped because their value had the wrong type (see :mod:`stabsearch.study.attrs`).
    unreadable: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_safe(v) for k, v in dataclasses.asdict(self).items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _verdict(trial: FrozenTrial, attrs: dict[str, Any]) -> str:
    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING:
        return "waiting"
    verdict = attrs.get("verdict", "failed")
    return verdict if verdict in VERDICTS else "failed"


def _params(trial: FrozenTrial, attrs: dict[str, Any], unreadable: tuple[str, ...]) -> dict[str, Any] | None:
    """The trial's stored ``config``, else (none stored) Optuna's parameters; ``None`` when it cannot be read."""
    if "config" in unreadable:
        return None  # Optuna's raw parameters (one_minus_beta2, ...) would mean another configuration
    if attrs.get("config"):
        return dict(attrs["config"])
    if trial.params:
        fallback = typed.config(dict(trial.params))
        return None if fallback is typed.MISSING else dict(fallback)
    return {}


def trial_record(trial: FrozenTrial) -> TrialRecord:
    """Turn an Optuna trial into a :class:`TrialRecord`.

    Stored values of the wrong type are dropped (:func:`stabsearch.study.attrs.typed_attrs`) and named in
    ``unreadable``; a finished trial whose configuration cannot be read at all becomes ``failed``.
    """
    attrs, unreadable = typed.typed_attrs(trial.user_attrs)
    params = _params(trial, attrs, unreadable)
    verdict = _verdict(trial, attrs)
    if params is None:
        params, verdict = {}, ("failed" if trial.state.is_finished() else verdict)
        attrs["failure"] = "unreadable stored configuration"
    score = trial.value if trial.values else attrs.get("score")
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        verdict=verdict,
        score=score,
        final_loss=attrs.get("final_loss"),
        spikes=int(attrs.get("n_spikes", 0)),
        late_spikes=int(attrs.get("late_spikes", 0)),
        params=params,
        kind=attrs.get("kind", "search"),
        seed=attrs.get("seed"),
        steps=attrs.get("steps"),
        steps_run=attrs.get("steps_run"),
        diverged_at=attrs.get("diverged_at"),
        unrecovered=int(attrs.get("unrecovered", 0)),
        predicted_unstable=bool(attrs.get("predicted_unstable", False)),
        of=attrs.get("of"),
        backoff=bool(attrs.get("backoff", False)),
        probe=bool(attrs.get("probe", False)),
        rescue=bool(attrs.get("rescue", False)),
        failure=attrs.get("failure"),
        error=attrs.get("error"),
        spike_events=tuple(attrs.get("spikes") or ()),
        warning=attrs.get("warning"),
        warning_penalty=_penalty(attrs, score),
        checks=_checks(attrs.get("checks")),
        curve_artifact=attrs.get("curve_artifact"),
        unreadable=unreadable,
    )


def _checks(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _penalty(attrs: dict[str, Any], score: float | None) -> float:
    """Decades the early warning added to the score; 0.0 when none.

    Trials stored before ``warning_penalty`` was recorded carry it as the
    difference of their score and their curve's own score.
    """
    value = attrs.get("warning_penalty")
    if value is None and attrs.get("predicted_unstable") and attrs.get("verdict") not in ("slow", "diverged"):
        curve = attrs.get("curve_score")
        value = score - curve if isinstance(score, (int, float)) and isinstance(curve, (int, float)) else 0.0
    try:
        value = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return round(value, 12) if math.isfinite(value) and value > 0 else 0.0


def study_records(study: optuna.Study) -> list[TrialRecord]:
    """All trials of ``study`` in number order."""
    return [trial_record(t) for t in study.get_trials(deepcopy=False)]
