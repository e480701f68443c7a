"""Typed reading of a trial's stored attributes.

Anyone who can write the study's database (a shared PostgreSQL server, a
copied SQLite file) can store any JSON under any attribute. Everything read
back for records, recommendations and exports goes through
:func:`typed_attrs` first: a value of the wrong type is dropped (the reader
then sees its default, as if it were never stored), and its name is
reported, so that a tampered study can neither crash a command nor carry a
string where a number belongs into exported code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from stabsearch.config import OptimConfig

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
