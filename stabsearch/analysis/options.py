"""The thresholds and weights of the stability analysis, checked when they are built.

:class:`StabilityOptions` holds every number the rules use; the docstring of
:mod:`~stabsearch.analysis.verdict` says what each rule does, and each
function's docstring which fields it reads. A bad value fails when the object
is built, with a ``ValueError`` that names the field and the value, so no
analysis runs on thresholds that make no sense.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = ["StabilityOptions"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class StabilityOptions:
    """Thresholds and weights of the analysis (:mod:`~stabsearch.analysis.verdict` says what each rule does).

    Every field is checked when the object is built, with a ``ValueError``
    that names the field and the bad value.

    Example:
        >>> StabilityOptions(window=50).window
        50
        >>> StabilityOptions(window=0)
        Traceback (most recent call last):
        ...
        ValueError: StabilityOptions.window must be an integer >= 1; got 0
    """

    window: int = 100
    head: int = 5
    z_threshold: float = 6.0
    z_persist: float = 3.0  # a flag opens an event if a value within 3 steps of it keeps this z-score ...
    z_single: float = 18.0  # ... or if its own z-score is above this (a jump far too big for noise)
    mad_floor: float = 0.05
    abs_rise: float = 1e-3
    recover_factor: float = 1.15
    diverge_run: int = 5
    diverge_factor: float = 1.2
    diverge_sigmas: float = 2.5  # divergence margin: max(diverge_factor, exp(diverge_sigmas * log-loss noise))
    final_fraction: float = 0.05
    plateau_tolerance: float = 0.02
    plateau_fraction: float = 0.25
    floor_fraction: float = 1e-3
    spike_weight: float = 1.0
    rise_weight: float = 1.0
    rise_tolerance: float = 1.5
    unrecovered_weight: float = 1.0
    smooth: int = 20
    relapse_factor: float = 10.0  # a slow spike: the smoothed loss this many times its lowest of the last `window`
    start_cap: float = 2.0  # the divergence base: the first `head` values, each capped at this many times the first
    progress_tolerance: float = 0.02  # no progress: the end level at or above (1 - this) x the first loss
    slow_progress: float = 0.05  # slow: the end level above (1 - this) x the first loss, and still falling
    trend_sigmas: float = 3.0  # still falling: the second half's log-loss slope this many standard errors below 0
    rebound_factor: float = 10.0  # a run that rose this many times above its first loss and came back collapsed

    def __post_init__(self) -> None:
        for name in ("window", "head", "diverge_run", "smooth"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"StabilityOptions.{name} must be an integer >= 1; got {value!r}")
        # (name, lower bound, lower bound allowed, upper bound or None)
        checks = (
            ("z_threshold", 0.0, False, None),
            ("z_persist", 0.0, True, None),
            ("z_single", 0.0, False, None),
            ("mad_floor", 0.0, False, None),
            ("abs_rise", 0.0, True, None),
            ("recover_factor", 0.0, False, None),
            ("diverge_factor", 1.0, True, None),
            ("diverge_sigmas", 0.0, True, None),
            ("final_fraction", 0.0, False, 1.0),
            ("plateau_tolerance", 0.0, False, None),
            ("plateau_fraction", 0.0, False, 1.0),
            ("floor_fraction", 0.0, True, None),
            ("spike_weight", 0.0, True, None),
            ("rise_weight", 0.0, True, None),
            ("rise_tolerance", 1.0, True, None),
            ("unrecovered_weight", 0.0, True, None),
            ("relapse_factor", 1.0, False, None),
            ("start_cap", 1.0, True, None),
            ("progress_tolerance", 0.0, True, 1.0),
            ("slow_progress", 0.0, True, 1.0),
            ("trend_sigmas", 0.0, False, None),
            ("rebound_factor", 1.0, False, None),
        )
        for name, low, low_ok, high in checks:
            value = getattr(self, name)
            ok = _is_real(value) and (value >= low if low_ok else value > low)
            ok = ok and (high is None or value <= high)
            if not ok:
                if high is not None:
                    rule = f"in {'[' if low_ok else '('}{low:g}, {high:g}]"
                else:
                    rule = f"{'>=' if low_ok else '>'} {low:g}"
                raise ValueError(f"StabilityOptions.{name} must be a finite number {rule}; got {value!r}")
        if self.slow_progress < self.progress_tolerance:
            raise ValueError(
                f"StabilityOptions.slow_progress must be >= progress_tolerance ({self.progress_tolerance!r}); "
                f"got {self.slow_progress!r}"
            )


_DEFAULTS = StabilityOptions()


def _check_options(options: StabilityOptions | None) -> StabilityOptions:
    if options is None:
        return _DEFAULTS
    if not isinstance(options, StabilityOptions):
        raise TypeError(f"options must be a StabilityOptions; got {type(options).__name__}")
    return options


def _check_fraction(name: str, value: float) -> None:
    if not _is_real(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]; got {value!r}")
