"""Divergence: a non-finite loss, or a run of values well above where the run started.

After warmup, ``diverge_run`` (5) logged values in a row above
``margin * max(R, chance loss)`` diverge. ``R`` is the :func:`reference_loss`:
the median of the first ``head`` values, each capped at ``start_cap`` (2) times
the first, so an easy first batch does not set the bar under the run's real
starting level and an explosion in the first steps cannot lift it. The margin
is for mini-batch noise: with none, a run that sits at its starting loss soon
shows 5 noisy values in a row above it. It is ``max(diverge_factor,
exp(diverge_sigmas * noise))``: at least 1.2, and wider when the log-loss noise
of the first ``window`` values (:func:`divergence_noise`) is heavy. During
warmup only an explosion, 10 times the base, counts.

The trainer runs :func:`divergence_step` as the loss comes in, to stop a run at
once; :func:`~stabsearch.analysis.verdict.analyze` runs it on the whole curve.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike

from stabsearch.analysis.curve import _as_curve, _first_nonfinite, log_noise
from stabsearch.analysis.options import _is_int, _is_real

__all__ = ["divergence_noise", "divergence_step", "reference_loss"]

_NOISE_HISTORY = 20  # values needed before the log-loss noise is known
_EXPLODE = 10.0  # while it is not: a run this far above the start diverges whatever the noise


def reference_loss(losses: ArrayLike, head: int = 5, cap: float = 2.0) -> float:
    """The base of the divergence threshold: the median of the first ``head`` finite values, each
    capped at ``cap`` times the first; NaN if none.

    The median keeps one mini-batch that happens to be easy from lowering
    the threshold under the run's real starting level, which on a noisy
    curve would call ordinary noise divergence. The cap is there because
    only the first value is measured before any update: a learning rate
    that explodes within a few steps must not lift the base to the
    exploded level and hide the very divergence it is meant to reveal
    (a curve that goes 4.4 -> 49 -> 27.8 and stays there has a base of at
    most 8.8, not 28). ``StabilityOptions.start_cap`` (2) is
    the default; the README's "How a trial is judged" says how it was chosen.

    Args:
        losses: the logged losses, oldest first.
        head: how many of the first finite values the median is taken over.
        cap: each of them is capped at this many times the first (>= 1).

    Example:
        >>> reference_loss([2.3, 9.0, 2.2, 2.4, 2.1, 0.5])
        2.3
        >>> reference_loss([0.4, 5e4, 2e5, 1e5, 8e4])
        0.8
    """
    if not _is_int(head) or head < 1:
        raise ValueError(f"head must be an integer >= 1; got {head!r}")
    if not _is_real(cap) or cap < 1.0:
        raise ValueError(f"cap must be a finite number >= 1; got {cap!r}")
    x = _as_curve(losses)
    finite = x[np.isfinite(x)][:head]
    if not finite.size:
        return math.nan
    return float(np.median(np.minimum(finite, cap * abs(finite[0]))))


def divergence_noise(losses: ArrayLike, *, window: int = 100, start: int = 0, stop: int | None = None) -> np.ndarray:
    """The ``noise`` that :func:`divergence_step` allows at each index ``i`` in ``start .. stop - 1``.

    ``log_noise`` of the first ``min(i + 1, window)`` values: what had been
    seen when a run of high values ending at ``i`` completed, and from
    ``window`` values on a fixed number. ``inf`` (no run can diverge yet)
    while fewer than ``min(20, window)`` values are in: an estimate from a handful of
    values is often far too low, and 5 noisy values in a row would then read
    as divergence. Only the first ``window`` values are read, so a caller
    that logs as it goes (the trainer) can pass just those, with ``stop``
    the length of its curve (default ``len(losses)``).

    Args:
        losses: the logged losses, oldest first; only the first ``window`` are read.
        window: how many values the noise is measured on, at most.
        start: the first index to return the noise for.
        stop: one past the last index (default ``len(losses)``).

    Example:
        >>> import numpy as np
        >>> noise = divergence_noise(np.random.default_rng(0).lognormal(0.0, 0.3, 1000), window=100)
        >>> float(noise[18]), round(float(noise[19]), 2), round(float(noise[99]), 2), bool(noise[99] == noise[999])
        (inf, 0.18, 0.24, True)
    """
    if not _is_int(window) or window < 1:
        raise ValueError(f"window must be an integer >= 1; got {window!r}")
    x = _as_curve(losses)
    stop = x.size if stop is None else stop
    if not (_is_int(start) and _is_int(stop) and 0 <= start <= stop):
        raise ValueError(f"need integers 0 <= start <= stop; got start={start!r}, stop={stop!r}")
    if min(stop, window) > x.size:
        raise ValueError(f"stop={stop} needs the first {min(stop, window)} values; got {x.size}")
    head = x[:window]
    need = min(_NOISE_HISTORY, window)
    out = np.full(stop - start, math.inf)
    for i in range(max(start, need - 1), min(stop, window)):
        out[i - start] = log_noise(head[: i + 1])
    if stop > window:  # from `window` values on, the noise of the first `window` values
        out[max(start, window) - start :] = log_noise(head)
    return out


def divergence_step(
    losses: ArrayLike,
    *,
    initial: float,
    chance_loss: float | None = None,
    warmup: int = 0,
    run: int = 5,
    factor: float = 1.2,
    noise: float | ArrayLike = 0.0,
    sigmas: float = 2.5,
) -> int | None:
    """Index where the run diverged, or ``None``.

    The first non-finite value; or the first of ``run`` consecutive values
    above ``max(factor, exp(sigmas * noise)) * max(initial, chance_loss)`` (a
    loss that stays above where it started is as bad as diverging). A run that starts before index
    ``warmup`` counts only if it is an explosion, above ``max(that margin,
    10)`` times the base: a warmup may lift the loss a little, not tenfold,
    and waiting for its end trains a run that has already blown up. The
    earlier of the two wins. The margin
    keeps mini-batch noise around the starting loss from counting: at least
    ``factor`` (``StabilityOptions.diverge_factor``), wider for a noisy
    curve; ``factor=1.0`` with ``noise=0`` is the bare rule.

    ``noise`` is the standard deviation of the log-loss noise
    (:func:`log_noise`), ``sigmas`` how many of them the margin allows
    (``StabilityOptions.diverge_sigmas``): with heavy mini-batch noise near
    the start of a run, 5 values in a row above ``1.2 * L0`` happen by
    chance (``L0`` is itself a median of noisy values). Either
    one number, or one number per value: the threshold for a run is then the
    one at the run's last value (``analyze`` and the trainer pass
    ``log_noise`` of the first ``min(i + 1, window)`` values at index ``i``,
    what was seen when the run completed: :func:`divergence_noise`). A clean
    curve has ``noise`` near 0 and keeps the plain threshold. ``inf`` means
    the noise is not known yet (``divergence_noise`` says so for the first 20
    values): a run that completes there diverges if it is above
    ``max(factor, 10) * base`` (an explosion, whatever the noise), and is
    otherwise judged at the first index where the noise is known, and must
    stay above that threshold all the way to it. NaN thresholds are ignored,
    so with no usable threshold only non-finite values count.

    Args:
        losses: the logged losses, oldest first.
        initial: the base of the threshold (:func:`reference_loss`).
        chance_loss: the loss at chance; the base is the larger of the two.
        warmup: the index before which a run of high values counts only as an explosion.
        run: how many values in a row must be above the threshold.
        factor: the smallest margin over the base (>= 1).
        noise: the log-loss noise, one number or one per value (``inf``: not known yet).
        sigmas: how many noise sigmas the margin allows.

    Example:
        >>> divergence_step([2.0, 1.0, float("nan")], initial=2.0)
        2
        >>> divergence_step([2.0, 1.0, 3, 3, 3, 3, 3], initial=2.0, run=5)
        2
        >>> divergence_step([2.0, 1.0, 3, 3, 3, 3, 3], initial=2.0, noise=0.2) is None  # 3 < 2.0 * e^0.5
        True
    """
    if not _is_int(warmup) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0; got {warmup!r}")
    if not _is_int(run) or run < 1:
        raise ValueError(f"run must be an integer >= 1; got {run!r}")
    if not _is_real(factor) or factor < 1.0:
        raise ValueError(f"factor must be a finite number >= 1; got {factor!r}")
    if not _is_real(sigmas) or sigmas < 0.0:
        raise ValueError(f"sigmas must be a finite number >= 0; got {sigmas!r}")
    x = _as_curve(losses)
    try:
        spread = np.asarray(noise, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"noise must be a number or one number per loss; got {noise!r}") from None
    if spread.ndim not in (0, 1) or (spread.ndim == 1 and spread.shape != x.shape):
        raise ValueError(f"noise must be a number or one number per loss; got shape {spread.shape} for {x.size} losses")
    if np.any(np.isnan(spread)) or np.any(spread < 0):
        raise ValueError("noise must be >= 0 (inf: not known yet, no run can diverge there)")
    found = _first_nonfinite(x)
    base = float(np.fmax(initial, -math.inf if chance_loss is None else chance_loss))
    if math.isnan(base) or x.size < run:
        return found
    n = x.size
    spread = np.broadcast_to(spread, x.shape)
    known = np.isfinite(spread)
    with np.errstate(over="ignore", invalid="ignore"):
        margin = np.where(known, np.maximum(factor, np.exp(sigmas * np.where(known, spread, 0.0))), max(factor, _EXPLODE))
        limit = base + (margin - 1.0) * abs(base)  # = margin * base for a positive loss
        lowest = sliding_window_view(x, run).min(axis=1)  # NaN propagates and compares False
        ok = lowest > limit[run - 1 :]
    # A run that completes while the noise is not known yet, and is no explosion, is judged at the
    # first index where it is known, and must hold above the threshold there all the way to it.
    position = np.where(known, np.arange(n), n)
    judged = np.minimum.accumulate(position[::-1])[::-1][run - 1 :]
    waits = ~known[run - 1 :] & (judged < n)
    for end in np.unique(judged[waits]):
        js = np.flatnonzero(waits & (judged == end))
        first = int(js[0])
        held = np.minimum.accumulate(x[first : end + 1][::-1])[::-1]  # held[k] = min(x[first + k : end + 1])
        with np.errstate(invalid="ignore"):
            ok[js] |= held[js - first] > limit[end]
    during = min(warmup, ok.size)  # a run starting in warmup counts only as an explosion
    if during:
        explosion = np.maximum(limit[run - 1 : run - 1 + during], base + (max(factor, _EXPLODE) - 1.0) * abs(base))
        with np.errstate(invalid="ignore"):
            ok[:during] = lowest[:during] > explosion
    starts = np.flatnonzero(ok)
    if starts.size and (found is None or starts[0] < found):
        return int(starts[0])
    return found
