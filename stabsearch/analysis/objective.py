"""The score Optuna minimises: the final loss plus penalties for late spikes, a late rise and spikes that never recovered.

A diverged run gets a finite capped score (:func:`capped_score`), so Optuna's
sampler learns the region is bad: a NaN objective would make the trial FAIL,
and samplers ignore those.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stabsearch.analysis.curve import _TINY
from stabsearch.analysis.options import StabilityOptions, _check_options, _is_int
from stabsearch.analysis.spikes import Spike

__all__ = ["capped_score", "score"]


def _best_smoothed(x: np.ndarray, second_half: int, width: int) -> float:
    """Lowest trailing moving median (``width`` values) among windows ending at or
    after index ``second_half``. ``x`` is finite."""
    m = x.size
    if m == 0:
        return math.nan
    w = min(width, m)
    end = min(second_half, m - 1)
    first = max(0, end - w + 1)
    medians = np.median(sliding_window_view(x[first:], w), axis=1)
    return float(np.min(medians))


def capped_score(initial: float, options: StabilityOptions | None = None) -> float:
    """The score of a diverged run: ``log10(L0 + floor) + 1``.

    Finite on purpose: Optuna turns a NaN objective into a FAIL trial, and
    samplers ignore FAIL trials, so they would keep sampling the cliff. When
    ``L0`` is not finite (no finite loss was ever logged) ``L0 = 1.0`` is
    used, so the cap is still a number (``log10(1.001) + 1``).

    Args:
        initial: the run's first loss (``L0``).
        options: weights (``floor_fraction``); default ``StabilityOptions()``.

    Example:
        >>> round(capped_score(1.0), 6)
        1.000434
    """
    opts = _check_options(options)
    l0 = abs(float(initial)) if math.isfinite(initial) else 1.0
    floor = opts.floor_fraction * l0
    return math.log10(max(l0 + floor, _TINY)) + 1.0


def score(
    *,
    initial: float,
    final: float,
    best: float,
    spikes: Sequence[Spike],
    n: int,
    diverged: bool,
    options: StabilityOptions | None = None,
    midpoint: int | None = None,
    curve_final: float | None = None,
) -> float:
    """The objective Optuna minimises::

        floor = floor_fraction * L0
        score = log10(final + floor)
              + spike_weight * sum(size of spikes with step >= n // 2)
              + rise_weight * max(0, log10((final + floor) / (best + floor)) - log10(rise_tolerance))
              + unrecovered_weight * (number of spikes that did not recover)

    The floor stops the search chasing 1e-12 against 1e-11 to the edge of
    the cliff. A diverged run, or one whose final loss is not finite, gets
    ``capped_score(initial)``. A finished run's score is clipped to that same
    cap, so a diverged run is never better than a finished one (without the clip, a run with several unrecovered late spikes
    could score worse than diverging and teach the sampler to prefer the
    cliff).

    ``midpoint`` is the first step of the second half when spikes carry real
    step numbers (default ``n // 2``, i.e. steps are logged indices).
    ``curve_final`` is the curve's own final loss for the rise term when
    ``final`` is a held-out loss (default ``final``): the rise term measures
    a late rise of the training loss, not a train/held-out gap.

    Args:
        initial: the run's first loss (``L0``).
        final: the final loss (the median of the tail, or a held-out loss).
        best: the best smoothed loss of the second half.
        spikes: the run's spike events.
        n: how many values were logged.
        diverged: whether the run diverged (the score is then the cap).
        options: weights; default ``StabilityOptions()``.
        midpoint: the first step of the second half (default ``n // 2``).
        curve_final: the curve's own final loss for the rise term (default ``final``).

    Example:
        >>> round(score(initial=2.3, final=0.1, best=0.1, spikes=[], n=1000, diverged=False), 4)
        -0.9901
    """
    opts = _check_options(options)
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an integer >= 0; got {n!r}")
    cap = capped_score(initial, opts)
    if diverged or not math.isfinite(final):
        return cap
    l0 = abs(float(initial)) if math.isfinite(initial) else 1.0
    floor = opts.floor_fraction * l0
    mid = n // 2 if midpoint is None else midpoint
    late = sum(s.size for s in spikes if s.step >= mid and math.isfinite(s.size))
    unrecovered = sum(1 for s in spikes if not s.recovered)
    rise_final = final if curve_final is None else curve_final
    rise = 0.0
    if best >= 0 and rise_final >= 0 and math.isfinite(best) and math.isfinite(rise_final):
        # Floored like the final loss: a drift from 1e-15 to 1e-10 is a wiggle near zero, not a late rise.
        rise = max(0.0, math.log10((rise_final + floor) / (best + floor)) - math.log10(opts.rise_tolerance))
    value = (
        math.log10(max(final + floor, _TINY))
        + opts.spike_weight * late
        + opts.rise_weight * rise
        + opts.unrecovered_weight * unrecovered
    )
    return min(value, cap)
