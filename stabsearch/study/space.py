"""The search space: which optimizer settings a study samples, and from where.

Defaults are the README's "The search space" table. A model module's ``SPACE`` and a YAML file
(``--space FILE``) override them, in that order. An override can narrow a range
(``lr: {low: 1e-4, high: 1e-2}``), fix a value (``eps: 1e-8``) or restrict the
choices (``optimizer: [adamw]``). Gradient clipping is off unless asked for:
``max_grad_norm: {low: 0.1, high: 10}`` searches it (on a log scale),
``max_grad_norm: 1.0`` fixes it, and ``null`` (or ``off``) in a list of
choices is "no clipping".

This module is pure: it samples through any object with Optuna's
``suggest_float``/``suggest_categorical`` methods (an ``optuna.Trial`` is one)
without importing Optuna.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Union


from stabsearch.config import OPTIMIZERS, OptimConfig
from stabsearch.errors import UsageError
from stabsearch.inputs import load_yaml, read_user_file
from stabsearch.schedule import SCHEDULES


@dataclasses.dataclass(frozen=True)
class Range:
    """A float range; ``zero`` adds the value 0 as an alternative (weight decay)."""

    low: float
    high: float
    log: bool = False
    zero: bool = False


@dataclasses.dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Fixed:
    value: Any


ParamSpec = Union[Range, Choice, Fixed]

#: Parameters sampled as ``1 - value`` on a log scale (beta2 near 1 needs that resolution).
COMPLEMENT = frozenset({"beta2"})

#: Physical bounds every value must respect: (low, high, low_inclusive, high_inclusive).
_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "lr": (0.0, math.inf, False, False),
    "eps": (0.0, math.inf, False, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "weight_decay": (0.0, math.inf, True, False),
    "warmup": (0.0, 0.5, True, True),
    "max_grad_norm": (0.0, math.inf, False, False),
}
#: Parameters whose value may be ``None`` ("off"): YAML ``null`` or ``off``.
OPTIONAL = frozenset({"max_grad_norm"})
#: The range a mapping override of a parameter fixed by default starts from.
_RANGES = {"max_grad_norm": Range(0.1, 10.0, log=True)}
_CHOICES: dict[str, tuple[str, ...]] = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}

DEFAULTS: dict[str, ParamSpec] = {
    "optimizer": Choice(("adam", "adamw")),
    "lr": Range(1e-5, 1.0, log=True),
    "eps": Range(1e-10, 1e-1, log=True),
    "beta1": Range(0.8, 0.99),
    "beta2": Range(0.9, 0.9999, log=True),
    "weight_decay": Range(1e-6, 1e-1, log=True, zero=True),
    "schedule": Choice(SCHEDULES),
    "warmup": Range(0.0, 0.1),
    "max_grad_norm": Fixed(None),
}


class Suggests(Protocol):
    """What :func:`sample` needs from a trial (``optuna.Trial`` has it)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An immutable mapping of parameter name to its spec.

    Example:
        >>> space = SearchSpace().override({"eps": 1e-8, "optimizer": ["adamw"]}, source="example")
        >>> space.params["eps"], space.params["optimizer"]
        (Fixed(value=1e-08), Fixed(value='adamw'))
    """

    params: Mapping[str, ParamSpec] = dataclasses.field(default_factory=lambda: dict(DEFAULTS))

    def override(self, overrides: Mapping[str, Any] | None, *, source: str) -> "SearchSpace":
        """A new space with ``overrides`` applied; ``source`` names them in error messages."""
        if overrides is None:
            return self
        if not isinstance(overrides, Mapping):
            raise UsageError(f"{source}: the space must be a mapping of parameter names, got {type(overrides).__name__}")
        params = dict(self.params)
        for name, value in overrides.items():
            if name not in params:
                raise UsageError(f"{source}: unknown parameter {name!r}; known: {', '.join(params)}")
            params[name] = _parse_override(name, value, params[name], f"{source}: {name}")
        return SearchSpace(params)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description, stored on the study for the record."""
        out: dict[str, Any] = {}
        for name, spec in self.params.items():
            if isinstance(spec, Fixed):
                out[name] = spec.value
            elif isinstance(spec, Choice):
                out[name] = list(spec.choices)
            else:
                out[name] = dataclasses.asdict(spec)
        return out


def load_space_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML space file; any problem is a one-line :class:`UsageError`."""
    path = Path(path)
    data = load_yaml(read_user_file(path, "space file"), f"space file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"space file {path}: expected a mapping of parameter names, got {type(data).__name__}")
    return data


def sample(space: SearchSpace, trial: Suggests) -> OptimConfig:
    """Sample one configuration from ``space`` through ``trial``."""
    values: dict[str, Any] = {}
    for name, spec in space.params.items():
        values[name] = _sample_one(name, spec, trial)
    return OptimConfig.from_dict(values)


def _sample_one(name: str, spec: ParamSpec, trial: Suggests) -> Any:
    if isinstance(spec, Fixed):
        return spec.value
    if isinstance(spec, Choice):
        return trial.suggest_categorical(name, list(spec.choices))
    if name in COMPLEMENT:
        value = 1.0 - trial.suggest_float(f"one_minus_{name}", 1.0 - spec.high, 1.0 - spec.low, log=spec.log)
    else:
        value = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if spec.zero and not trial.suggest_categorical(f"{name}_on", [True, False]):
        return 0.0
    return value


def _number(value: Any, where: str) -> float:
    """Accept YAML's ``1e-4`` (a string to PyYAML) as well as real numbers."""
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UsageError(f"{where}: {value!r} is not a finite number")
    return number


def _off(name: str, value: Any) -> bool:
    """``None``, YAML's ``off``/``false`` or the words none/off, for a parameter that may be switched off."""
    return name in OPTIONAL and (value is None or value is False or (isinstance(value, str) and value.lower() in ("none", "off", "null")))


def _optional_number(name: str, value: Any, where: str) -> float | None:
    return None if _off(name, value) else _check_bounds(name, _number(value, where), where)


def _check_bounds(name: str, value: float, where: str) -> float:
    low, high, low_in, high_in = _BOUNDS[name]
    ok_low = value >= low if low_in else value > low
    ok_high = value <= high if high_in else value < high
    if not (ok_low and ok_high):
        lo = "[" if low_in else "("
        hi = "]" if high_in else ")"
        raise UsageError(f"{where}: {value!r} is outside {lo}{low:g}, {high:g}{hi}")
    return value


def _check_choice(name: str, value: Any, where: str) -> Any:
    allowed = _CHOICES[name]
    if value not in allowed:
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _parse_override(name: str, value: Any, current: ParamSpec, where: str) -> ParamSpec:
    if name in _CHOICES:
        if isinstance(value, Mapping):
            if set(value) != {"choices"}:
                raise UsageError(f"{where}: expected a value, a list, or {{choices: [...]}}, got keys {sorted(value)}")
            value = value["choices"]
        if isinstance(value, (list, tuple)):
            if not value:
                raise UsageError(f"{where}: the list of choices is empty")
            choices = tuple(dict.fromkeys(_check_choice(name, v, where) for v in value))
            return Fixed(choices[0]) if len(choices) == 1 else Choice(choices)
        return Fixed(_check_choice(name, value, where))

    if isinstance(value, (list, tuple)):
        if not value:
            raise UsageError(f"{where}: the list of choices is empty")
        numbers = tuple(dict.fromkeys(_optional_number(name, v, where) for v in value))
        return Fixed(numbers[0]) if len(numbers) == 1 else Choice(numbers)
    if not isinstance(value, Mapping):
        return Fixed(_optional_number(name, value, where))

    unknown = set(value) - {"low", "high", "log", "zero"}
    if unknown:
        raise UsageError(f"{where}: unknown keys {sorted(unknown)}; use low, high, log, zero")
    base = current if isinstance(current, Range) else _RANGES.get(name, DEFAULTS[name])
    assert isinstance(base, Range)
    low = _check_bounds(name, _number(value.get("low", base.low), f"{where}.low"), f"{where}.low")
    high = _check_bounds(name, _number(value.get("high", base.high), f"{where}.high"), f"{where}.high")
    log = value.get("log", base.log)
    zero = value.get("zero", base.zero)
    for key, flag in (("log", log), ("zero", zero)):
        if not isinstance(flag, bool):
            raise UsageError(f"{where}.{key}: expected true or false, got {flag!r}")
    if low > high:
        raise UsageError(f"{where}: low {low:g} is above high {high:g}")
    if low == high:
        return Fixed(low)
    if log and low <= 0 and name not in COMPLEMENT:
        raise UsageError(f"{where}: a log range needs low > 0, got {low:g}")
    return Range(low, high, log=log, zero=zero)
