"""A loss curve: the checks every analysis function runs on its input, and the plain summaries.

The summaries are where a run started (:func:`first_loss`), where it ended
(:func:`final_loss`) and how noisy its log-loss is from one step to the next
(:func:`log_noise`).

Conventions, shared by every module of the analysis:

* a curve is a 1-D array of logged losses, oldest first; indices are 0-based
  positions in it. ``steps``, when given, holds one strictly increasing step
  number per logged value, and every step a result reports is taken from it;
* rules are measured on ``log(loss)``. Values <= 0 are clamped to the smallest
  positive float before the log, so the rules assume a loss that is >= 0
  (cross-entropy, MSE); shift a loss that can go negative before analysing it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from stabsearch.analysis.options import _check_fraction

__all__ = ["final_loss", "first_loss", "log_noise"]

_TINY = float(np.finfo(np.float64).tiny)  # clamp for log of non-positive losses
_MAD_SCALE = 1.4826  # MAD -> standard deviation for normal noise
_MIN_HISTORY = 10  # values of history needed before a value can be flagged or a trend measured


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _as_curve(losses: ArrayLike) -> np.ndarray:
    try:
        x = np.asarray(losses, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"losses must be a sequence of numbers: {exc}") from None
    if x.ndim != 1:
        raise ValueError(f"losses must be one-dimensional; got shape {x.shape}")
    return x


def _as_steps(steps: ArrayLike | None, n: int) -> np.ndarray:
    if steps is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(steps)
    if arr.ndim != 1:
        raise ValueError(f"steps must be one-dimensional; got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"steps has {len(arr)} values but losses has {n}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("steps must be whole numbers")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"steps must be integers; got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n > 1 and np.any(np.diff(arr) <= 0):
        bad = int(np.flatnonzero(np.diff(arr) <= 0)[0]) + 1
        raise ValueError(f"steps must be strictly increasing; steps[{bad}] = {arr[bad]} follows {arr[bad - 1]}")
    return arr


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _TINY))


def _first_nonfinite(x: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(x))
    return int(bad[0]) if bad.size else None


def first_loss(losses: ArrayLike) -> float:
    """Where the run started: its first finite value; NaN if it has none.

    The default training loop logs the loss of the first batch before the
    first update, so this is the untrained model's loss. Every later value
    has seen updates: a learning rate that explodes at once shows in the
    second value already, which is why the start is not a median of the
    first few.

    Args:
        losses: the logged losses, oldest first.

    Example:
        >>> first_loss([4.47, 49.0, 27.8, 28.4, 27.9])
        4.47
        >>> first_loss([float("nan"), 2.3, 2.2])
        2.3
    """
    x = _as_curve(losses)
    finite = x[np.isfinite(x)]
    return float(finite[0]) if finite.size else math.nan


def final_loss(losses: ArrayLike, fraction: float = 0.05) -> float:
    """The median of the finite values among the last ``max(1, ceil(fraction * n))``.

    A median of the tail, because the last mini-batch loss alone is noise.
    NaN when that tail holds no finite value (or the curve is empty).

    Args:
        losses: the logged losses, oldest first.
        fraction: the share of the curve, at its end, whose median is taken, in (0, 1].

    Example:
        >>> final_loss([5.0, 4.0, 3.0, 1.0, 1.2, 0.8], fraction=0.5)
        1.0
    """
    _check_fraction("fraction", fraction)
    x = _as_curve(losses)
    if x.size == 0:
        return math.nan
    k = max(1, math.ceil(fraction * x.size - 1e-9))
    tail = x[-k:]
    tail = tail[np.isfinite(tail)]
    return float(np.median(tail)) if tail.size else math.nan


def log_noise(losses: ArrayLike) -> float:
    """Robust standard deviation of the step-to-step noise of ``log(loss)``.

    ``1.4826 * MAD(diff(log L)) / sqrt(2)`` over the finite values: the MAD of
    first differences, around their median, so a steady trend (a fall or a
    blow-up at a constant rate) does not count as noise, and a few odd steps
    do not move it. 0.0 with fewer than two differences.

    Args:
        losses: the logged losses, oldest first; non-finite values are left out.

    Example:
        >>> log_noise([2.0, 1.0, 0.5, 0.25, 0.125])  # a clean geometric fall: no noise
        0.0
        >>> import numpy as np
        >>> round(log_noise(np.random.default_rng(0).lognormal(0.0, 0.3, 1000)), 2)
        0.29
    """
    x = _as_curve(losses)
    x = x[np.isfinite(x)]
    if x.size < 3:
        return 0.0
    d = np.diff(_log(x))
    return float(_MAD_SCALE * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))
