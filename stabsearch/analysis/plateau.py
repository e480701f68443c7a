"""Runs that did not train, or trained too little: collapse to chance, no progress, slow progress.

* :func:`end_level`: the level a run ended at, the median of its last quarter;
* :func:`log_trend` and :func:`still_falling`: whether the second half is still
  going down, by more than its noise;
* :func:`is_plateau`: stuck at or above the chance loss ``ln K``.

A run that ends no lower than where it started has not trained, whatever its
shape (a plateau); one that ends a little lower and is still falling has
trained too slowly (slow). Learning too slowly is no instability: a slow run is
no evidence of a cliff.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from stabsearch.analysis.curve import _MIN_HISTORY, _as_curve, _log, log_noise
from stabsearch.analysis.options import StabilityOptions, _check_options

__all__ = ["end_level", "is_plateau", "log_trend", "still_falling"]

_MIN_TREND = 1e-4  # a change in log-loss this small across a stretch is no trend


def end_level(losses: ArrayLike, options: StabilityOptions | None = None) -> float:
    """The level a run ended at: the median of the finite values among the last
    ``max(smooth, ceil(plateau_fraction * n))`` (the last quarter, and 20 at
    least); NaN if none is finite.

    A long stretch, because this level is compared with the first loss to
    tell whether the run trained at all: the median of 50 values with a
    mini-batch noise of 0.3 in log-loss still wanders by 5%, that of the
    last quarter of a 1000-step run by 2%. On a run still falling at its
    end the level lags a little behind the last values, which makes the
    progress it shows a little smaller.

    Args:
        losses: the logged losses, oldest first.
        options: thresholds (``smooth``, ``plateau_fraction``); default ``StabilityOptions()``.

    Example:
        >>> end_level([2.3] * 10 + [1.0] * 30)
        1.0
    """
    opts = _check_options(options)
    x = _as_curve(losses)
    k = max(opts.smooth, math.ceil(opts.plateau_fraction * x.size - 1e-9))
    tail = x[-k:]
    tail = tail[np.isfinite(tail)]
    return float(np.median(tail)) if tail.size else math.nan


def log_trend(losses: ArrayLike) -> float:
    """How many standard errors the slope of ``log(loss)`` over ``losses`` is from 0 (negative: falling).

    The least-squares slope of the log-loss against the position, with the
    noise taken from the step-to-step changes (:func:`log_noise`: robust,
    and blind to the trend itself), so the standard error is
    ``noise / sqrt(sum((t - mean t)^2))`` for independent mini-batch noise.
    Values further than 5 noise sigmas from a robust line (through the
    medians of the two halves) are clipped to that distance before the
    fit, so a few wild mini-batches cannot make or hide a trend.
    ``0.0`` with fewer than 10 finite values or a change under 1e-4 in
    log-loss across them; ``-inf``/``inf`` for a noise-free fall/rise.

    Args:
        losses: the stretch of logged losses to measure, oldest first.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> bool(log_trend(np.linspace(2.31, 2.28, 1000) * rng.lognormal(0.0, 0.01, 1000)) < -3)
        True
        >>> bool(abs(log_trend(2.3 * rng.lognormal(0.0, 0.01, 1000))) < 3)
        True
    """
    x = _as_curve(losses)
    where = np.flatnonzero(np.isfinite(x))
    if where.size < _MIN_HISTORY:
        return 0.0
    t = where.astype(np.float64) - where.mean()
    y = _log(x[where])
    sxx = float(t @ t)
    sigma = log_noise(x[where])
    if sigma > 0:  # clip around a robust line: through the medians of the two halves
        h = t.size // 2
        rough = (np.median(y[-h:]) - np.median(y[:h])) / (np.median(t[-h:]) - np.median(t[:h]))
        line = rough * t + np.median(y - rough * t)
        y = line + np.clip(y - line, -5.0 * sigma, 5.0 * sigma)
    slope = float(t @ (y - y.mean())) / sxx
    if abs(slope) * (where[-1] - where[0]) < _MIN_TREND:
        return 0.0
    if sigma == 0:
        return math.copysign(math.inf, slope)
    return slope * math.sqrt(sxx) / sigma


def still_falling(losses: ArrayLike, options: StabilityOptions | None = None) -> bool:
    """Whether the second half of the curve is still falling: :func:`log_trend` below ``-trend_sigmas`` (3).

    Args:
        losses: the logged losses, oldest first; the second half is tested.
        options: thresholds (``trend_sigmas``); default ``StabilityOptions()``.

    Example:
        >>> still_falling([2.31 - 3e-5 * i for i in range(1000)])
        True
        >>> still_falling([1.8] * 1000)
        False
    """
    opts = _check_options(options)
    x = _as_curve(losses)
    return log_trend(x[x.size // 2 :]) < -opts.trend_sigmas


def is_plateau(
    losses: ArrayLike,
    *,
    chance_loss: float | None,
    options: StabilityOptions | None = None,
) -> bool:
    """Collapse to chance: the last ``plateau_fraction`` of the run, read through a moving median of
    ``smooth`` values, never meaningfully below ``chance_loss`` (all of it at or above ``(1 -
    plateau_tolerance) * chance_loss``), and the second half not still falling (:func:`still_falling`).

    This is the "stuck at chance" collapse: cost about ``ln K`` or above it,
    accuracy ``1/K``. The test is one-sided: a collapsed softmax sits where
    its output bias puts it, often a few percent above ``ln K`` (1.85-1.92
    for 6 classes, ``ln 6 = 1.79``), never below it, while a run that
    learns goes below ``ln K`` and stays there. The moving median lets
    mini-batch jitter under ``ln K`` still count as stuck. A run still
    falling towards ``ln K`` from above is learning (slowly), not stuck.
    Without a chance loss there is no such test.

    Args:
        losses: the logged losses, oldest first.
        chance_loss: the loss at chance (``ln K``); ``None``: no chance test, never a plateau.
        options: thresholds (``plateau_fraction``, ``smooth``, ``plateau_tolerance``,
            ``trend_sigmas``); default ``StabilityOptions()``.

    Example:
        >>> import math
        >>> is_plateau([2.0, 1.9, 1.79, 1.792, 1.791, 1.7918], chance_loss=math.log(6))
        True
        >>> is_plateau([1.86, 1.9, 1.88, 1.91, 1.87, 1.89, 1.9, 1.88], chance_loss=math.log(6))
        True
    """
    opts = _check_options(options)
    if chance_loss is None:
        return False
    x = _as_curve(losses)
    if x.size == 0 or not np.all(np.isfinite(x[-1:])):
        return False
    k = max(1, math.ceil(opts.plateau_fraction * x.size - 1e-9))
    tail = x[-k:]
    width = min(opts.smooth, tail.size)
    if width > 1:
        tail = np.median(np.lib.stride_tricks.sliding_window_view(tail, width), axis=1)
    at_or_above = bool(np.all(tail >= (1.0 - opts.plateau_tolerance) * abs(chance_loss)))
    return at_or_above and not still_falling(x, opts)


def _trained(x: np.ndarray, first: float, opts: StabilityOptions) -> tuple[float, str | None]:
    """Progress of the finite curve ``x`` from ``first``, and the cause when it did not train
    (``"rebound"``, ``"no_progress"``: a plateau) or trained too little, or not clearly at all
    (``"too_slow"``, ``"no_clear_progress"``: slow)."""
    end = end_level(x, opts)
    if not (math.isfinite(first) and first > 0 and math.isfinite(end)):
        return math.nan, None
    progress = 1.0 - end / first
    if x.size < _MIN_HISTORY or progress >= opts.slow_progress:
        return progress, None
    falling = still_falling(x, opts)
    early = x[: max(1, x.size // 2)]  # a jump later on is a spike of a run that did get going
    if float(np.max(early)) >= opts.rebound_factor * first * (1.0 - 1e-9):  # 10x or more, whatever the rounding
        return progress, "rebound"
    if falling:
        return progress, "too_slow"
    if progress > opts.progress_tolerance:
        return progress, None
    # No progress. The first loss is one mini-batch: a collapse is called only when the end level is at
    # or above it by more than its noise (one sigma of the log-loss noise of the first `window` values).
    noise = log_noise(x[: opts.window])
    return progress, "no_progress" if end >= (1.0 - opts.progress_tolerance) * first * math.exp(noise) else "no_clear_progress"
