"""A trial's stored attributes: their names, their types, how they are written and read back.

The one place that knows how stabsearch lays out a trial's user attributes.
The runner writes a finished run's result with :func:`write_result` (one
storage transaction) and a failure with :func:`mark_failed`; everything
read back for records, recommendations and exports goes through
:func:`typed_attrs` first, and :func:`trial_record` turns a trial into the
plain :class:`~stabsearch.study.record.TrialRecord`.

Anyone who can write the study's database (a shared PostgreSQL server, a
copied SQLite file) can store any JSON under any attribute. A value of the
wrong type is dropped on reading (the reader then sees its default, as if it
were never stored), and its name is reported, so that a tampered study can
neither crash a command nor carry a string where a number belongs into
exported code.
"""

from __future__ import annotations

import dataclasses
import math
import traceback as tracebacks
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from stabsearch.config import OptimConfig
from stabsearch.study import optuna_internals
from stabsearch.study.record import VERDICTS, TrialRecord

if TYPE_CHECKING:
    from stabsearch.analysis.early_warning import EarlyWarning
    from stabsearch.analysis.verdict import Analysis
    from stabsearch.training.trainer import TrainResult

# --- names ----------------------------------------------------------------------------------------

#: What a trial is: ``search`` (sampled by the search; also a trial with no ``kind``) or ``confirm``.
KIND, SEARCH, CONFIRM = "kind", "search", "confirm"
#: How it ended: one of :data:`~stabsearch.study.record.VERDICTS`; a failure's reason, error line, traceback, hint.
VERDICT, FAILURE, ERROR, TRACEBACK, HINT = "verdict", "failure", "error", "traceback", "hint"
FAILED = "failed"
#: What it ran: the configuration (``OptimConfig.to_dict()``), the seed and the horizon in steps.
CONFIG, SEED, STEPS = "config", "seed", "steps"
#: A confirmation run's tags: the search trial it checks, and which stage ran it.
OF, BACKOFF, PROBE, RESCUE = "of", "backoff", "probe", "rescue"
CONFIRM_TAGS = (OF, BACKOFF, PROBE, RESCUE)
#: A queued re-run: the trial it re-runs, and whether it is the one retry of a lost trial.
REQUEUED_FROM, RETRY = "requeued_from", "retry"
#: The score told to Optuna, the step where the median rule stopped the run, the run's training seconds.
SCORE, STOPPED_SLOW_AT, SECONDS = "score", "stopped_slow_at", "seconds"
#: The id of the loss-curve CSV in the storage's artifact store.
CURVE_ARTIFACT = "curve_artifact"
#: The system attribute holding the violated constraints (late spikes, predicted blow-up), as optuna-dashboard reads it.
CONSTRAINTS = "constraints"
#: The study's own attributes, set by the first `stabsearch run`: the model module, the search horizon,
#: the base seed and the searched space (``SearchSpace.to_dict()``).
STUDY_MODEL, STUDY_STEPS, STUDY_SEED, STUDY_SPACE = "model", "steps", "seed", "space"
#: Failures that do not use up a slot: the trial is re-run instead.
NOT_COUNTED = frozenset({"interrupted", "worker lost"})

_MAX_SPIKES_STORED = 50
_ERROR_CHARS, _TRACEBACK_CHARS = 500, 8000


def is_search(trial: FrozenTrial | optuna.Trial) -> bool:
    """Whether ``trial`` is a search trial (a trial stored without a ``kind`` is one).

    Example:
        >>> is_search(optuna.trial.create_trial(value=1.0, user_attrs={"kind": "confirm"}))
        False
    """
    return trial.user_attrs.get(KIND, SEARCH) == SEARCH


# --- writing --------------------------------------------------------------------------------------


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 500 characters: what ``error`` holds.

    Example:
        >>> error_line(ValueError("bad shape\\nmore"))
        'ValueError: bad shape'
    """
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:_ERROR_CHARS]


def failure_attrs(reason: str, error: str | None = None) -> dict[str, Any]:
    """The attributes of a failed trial: verdict ``failed``, the ``failure`` reason and, if given, the ``error`` line.

    Example:
        >>> failure_attrs("worker lost", "no heartbeat for 70s: the worker died")
        {'verdict': 'failed', 'failure': 'worker lost', 'error': 'no heartbeat for 70s: the worker died'}
    """
    return {VERDICT: FAILED, FAILURE: reason, **({} if error is None else {ERROR: error})}


def mark_failed(trial: optuna.Trial, reason: str, exc: BaseException | None = None, *,
                with_traceback: bool = True, hint: str | None = None, reports: Mapping[int, float] = {}) -> None:
    """Record why the running ``trial`` failed (one storage transaction) and tell Optuna it FAILed.

    Args:
        trial: the running trial.
        reason: the ``failure`` attribute: ``"user-code error"``, ``"out of memory"``, ``"timed out"``...
        exc: the exception, kept as its ``error`` line and (``with_traceback``) its traceback's last 8000 characters.
        hint: a line of advice shown with the trial.
        reports: progress reports (intermediate values by step) still to write, written with the failure.
    """
    attrs = failure_attrs(reason, None if exc is None else error_line(exc))
    if exc is not None and with_traceback:
        attrs[TRACEBACK] = "".join(tracebacks.format_exception(exc))[-_TRACEBACK_CHARS:]
    if hint is not None:
        attrs[HINT] = hint
    optuna_internals.set_trial_attrs(trial, attrs, reports=reports)
    trial.study.tell(trial, state=TrialState.FAIL)


def run_attrs(kind: str, config: OptimConfig, seed: int, steps: int, device: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a trial records before it trains: its kind, configuration, seed, horizon and device (and ``extra``)."""
    return {KIND: kind, CONFIG: config.to_dict(), SEED: seed, STEPS: steps, "device": device, **(extra or {})}


def write_result(
    trial: optuna.Trial, result: TrainResult, analysis: Analysis, warning: EarlyWarning, *, score: float,
    penalty: float, telemetry: Mapping[str, float | None], curve_artifact: str | None, reports: Mapping[int, float] = {},
) -> None:
    """Store a finished run on ``trial``: verdict, numbers, its curve's artifact id, its constraints and the
    reports not yet written, in one transaction.

    Args:
        trial: the running trial.
        result: what the trainer returned.
        analysis: the stability analysis of its curve.
        warning: the early warning's prediction.
        score: the score told to Optuna (``analysis.score`` plus ``penalty``).
        penalty: the decades the early warning added.
        telemetry: the summary of the run's telemetry series.
        curve_artifact: the id of its loss-curve CSV in the artifact store.
        reports: progress reports (intermediate values by step) still to write.
    """
    attrs: dict[str, Any] = {
        VERDICT: analysis.verdict,
        SCORE: score,
        "curve_score": analysis.score,
        "predicted_unstable": warning.predicted_unstable,
        "warning": warning.reason,
        "warning_penalty": penalty,
        "sharpness": _finite_or_none(result.sharpness),
        "preconditioned_sharpness": _finite_or_none(result.preconditioned_sharpness),
        "checks": dict(result.checks),
        "sharpness_seconds": round(result.sharpness_seconds, 4),
        "telemetry": dict(telemetry),
        "final_loss": _finite_or_none(analysis.final_loss),
        "initial_loss": _finite_or_none(analysis.initial_loss),
        "cause": analysis.cause,
        "n_spikes": len(analysis.spikes),
        "late_spikes": analysis.late_spikes,
        "unrecovered": analysis.unrecovered,
        "spikes": [s.to_dict() for s in analysis.spikes[:_MAX_SPIKES_STORED]],
        "diverged_at": analysis.diverged_at,
        "dead_layers": list(result.dead_layers),
        "steps_run": result.steps_run,
        SECONDS: round(result.seconds, 3),
    }
    if result.config is not None:  # what the run trained with, where its framework's own arguments decided
        attrs[CONFIG] = result.config.to_dict()
    if result.skipped_steps:
        attrs["skipped_steps"] = result.skipped_steps
    attrs[CURVE_ARTIFACT] = curve_artifact
    # Late spikes and a predicted blow-up are violated constraints (feasible when <= 0), written in the
    # list format that optuna-dashboard reads; TPE and best_trial then prefer feasible trials.
    constraints = [float(analysis.late_spikes), 1.0 if warning.predicted_unstable else 0.0]
    optuna_internals.set_trial_attrs(trial, attrs, {CONSTRAINTS: constraints}, reports)


def mark_stopped_slow(trial: optuna.Trial, step: int, score: float | None) -> None:
    """Record that the median rule stopped ``trial`` at ``step``: verdict ``slow``, ``score`` its last report."""
    optuna_internals.set_trial_attrs(trial, {VERDICT: "slow", STOPPED_SLOW_AT: step, SCORE: score})


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# --- reading --------------------------------------------------------------------------------------

#: What a check returns for a value of the wrong type.
MISSING = object()


def number(value: Any) -> float | object:
    """A real number (not a bool) as a float, else :data:`MISSING`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return MISSING


def count(value: Any) -> int | object:
    """A whole number (an int, or a float without a fraction) as an int, else :data:`MISSING`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return MISSING


def text(value: Any) -> str | object:
    return value if isinstance(value, str) else MISSING


def flag(value: Any) -> bool | object:
    return value if isinstance(value, bool) else MISSING


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``check``, letting ``None`` through as ``None``."""
    return lambda value: None if value is None else check(value)


_SCALAR = (str, int, float, bool, type(None))


def spike_list(value: Any) -> list[dict[str, Any]] | object:
    """A list of spike dicts whose values are all numbers, bools or ``None``."""
    if not isinstance(value, list):
        return MISSING
    for spike in value:
        if not isinstance(spike, dict) or any(
            not isinstance(k, str) or not isinstance(v, (int, float, bool, type(None))) for k, v in spike.items()
        ):
            return MISSING
    return value


def config(value: Any) -> dict[str, Any] | object:
    """A dict of scalars that :class:`~stabsearch.config.OptimConfig` accepts, its number fields as floats."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, _SCALAR) for k, v in value.items()):
        return MISSING
    value = dict(value)
    for field in dataclasses.fields(OptimConfig):
        if field.name in value:
            checked = _FIELD_CHECKS.get(str(field.type), number)(value[field.name])
            if checked is MISSING:
                return MISSING
            value[field.name] = checked
    try:
        OptimConfig.from_dict(value)
    except (TypeError, ValueError):
        return MISSING
    return value


#: How a configuration field of each declared type is read back (anything else: a number).
_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "str": text, "<class 'str'>": text, "bool": flag, "<class 'bool'>": flag,
    "float | None": optional(number), "Optional[float]": optional(number),
}

#: The type of each attribute stabsearch reads back; attributes not named here are passed through untouched.
SCHEMA: dict[str, Callable[[Any], Any]] = {
    "verdict": text, "kind": text, "failure": optional(text), "error": optional(text), "warning": optional(text),
    "score": optional(number), "warning_penalty": optional(number), "final_loss": optional(number), "initial_loss": optional(number),
    "n_spikes": count, "late_spikes": count, "unrecovered": count,
    "seed": optional(count), "steps": optional(count), "steps_run": optional(count),
    "diverged_at": optional(count), "of": optional(count),
    "predicted_unstable": flag, "backoff": flag, "probe": flag, "rescue": flag,
    "spikes": optional(spike_list), "config": config, "seconds": optional(number), "curve_artifact": optional(text),
}


def typed_attr(attrs: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """One attribute read as :func:`typed_attrs` reads it: ``default`` when missing, ``None`` or of the wrong type.

    Example:
        >>> typed_attr({"seconds": "1\\nimport os"}, "seconds", 0.0), typed_attr({"seconds": 2}, "seconds", 0.0)
        (0.0, 2.0)
    """
    value = attrs.get(key)
    check = SCHEMA.get(key)
    if check is not None and value is not None:
        value = check(value)
    return default if value is None or value is MISSING else value


def typed_attrs(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``attrs`` without the values of the wrong type, and the names of those dropped.

    Args:
        attrs: a trial's user attributes as stored.

    Example:
        >>> typed_attrs({"final_loss": "0.1\\nimport os", "n_spikes": 2, "seed": True, "other": "kept"})
        ({'n_spikes': 2, 'other': 'kept'}, ('final_loss', 'seed'))
    """
    out: dict[str, Any] = {}
    dropped = []
    for key, value in attrs.items():
        check = SCHEMA.get(key)
        checked = value if check is None else check(value)
        if checked is MISSING:
            dropped.append(key)
        else:
            out[key] = checked
    return out, tuple(sorted(dropped))


# --- records --------------------------------------------------------------------------------------


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
        fallback = config(dict(trial.params))
        return None if fallback is MISSING else dict(fallback)
    return {}


def trial_record(trial: FrozenTrial) -> TrialRecord:
    """Turn an Optuna trial into a :class:`TrialRecord`.

    Stored values of the wrong type are dropped (:func:`typed_attrs`) and named in
    ``unreadable``; a finished trial whose configuration cannot be read at all becomes ``failed``.
    """
    attrs, unreadable = typed_attrs(trial.user_attrs)
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
