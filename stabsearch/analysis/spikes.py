"""Spikes and relapses: the loss jumping well above its recent level, quickly or over tens of steps.

* :func:`find_spikes`: a robust z-score of the log-loss against its trailing
  window, plus an absolute rise, that persists (or is far too big for noise).
  A fixed ratio to a recent mean (the rules ``bench/detectors.py`` compares
  against) fires on mini-batch noise and on wiggles near zero; the median/MAD
  scale, the absolute floor and the persistence rule are what stop that;
* :func:`find_relapses`: a rise that builds over tens of steps carries its
  trailing window with it and is never flagged that way, so the smoothed loss
  (a moving median) climbing ``relapse_factor`` (10x) above its lowest level
  of the last ``window`` values counts as a spike too.

Both return :class:`Spike` events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike

from stabsearch.analysis.curve import (
    _MAD_SCALE,
    _MIN_HISTORY,
    _TINY,
    _as_curve,
    _as_steps,
    _first_nonfinite,
    _json_float,
    _log,
)
from stabsearch.analysis.options import _DEFAULTS, StabilityOptions, _check_options

__all__ = ["Spike", "find_relapses", "find_spikes"]

_RECOVER_RUN = 5  # recovery must hold for most of this many values
_BURST = 3  # a flag persists when a value up to this many steps before or after it is still raised
_CHUNK = 4096  # rows of the sliding window processed at once (bounded memory)


@dataclass(frozen=True)
class Spike:
    """One spike event: flags closer than ``window`` logged values merged into one.

    ``step`` is where the first flag fired, ``peak_step`` where the loss was
    highest between the event's first and last flag. ``size`` is
    ``log10(peak / before)`` in decades, ``before`` the median loss of the
    window before the event. ``recover_steps`` counts steps from the peak to
    the recovery, ``None`` when the loss never came back.
    """

    step: int
    peak_step: int
    size: float
    before: float
    peak: float
    recovered: bool
    recover_steps: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become ``None``)."""
        return {
            "step": int(self.step),
            "peak_step": int(self.peak_step),
            "size": _json_float(self.size),
            "before": _json_float(self.before),
            "peak": _json_float(self.peak),
            "recovered": bool(self.recovered),
            "recover_steps": None if self.recover_steps is None else int(self.recover_steps),
        }


def _medians(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the median of the losses and the median of the log-losses.

    One partition serves both: clamping and the log are monotone, so the
    log-median is the mean of the logs of the two middle order statistics."""
    w = raw.shape[1]
    k = w // 2
    if w % 2:
        lo = hi = np.partition(raw, k, axis=1)[:, k]
    else:
        part = np.partition(raw, (k - 1, k), axis=1)
        lo, hi = part[:, k - 1], part[:, k]
    return 0.5 * (lo + hi), 0.5 * (_log(lo) + _log(hi))


def _flags(x: np.ndarray, initial: float, opts: StabilityOptions) -> tuple[np.ndarray, ...]:
    """Flagged values of the finite curve ``x``: their indices, the median loss of
    the trailing window at each, their z-scores, and the window's median
    log-loss and scale (what a z-score is measured against)."""
    n, w = x.size, opts.window
    history = min(_MIN_HISTORY, w)
    rise = opts.abs_rise * abs(initial)
    empty = np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), np.empty(0), np.empty(0)
    if n <= history or not math.isfinite(rise):
        return empty
    logs = _log(x)
    steps = np.diff(logs)  # steps[i] = log x[i + 1] - log x[i]
    found: list[np.ndarray] = []
    befores: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    centres: list[np.ndarray] = []
    scales: list[np.ndarray] = []

    def test(t: np.ndarray, raw: np.ndarray, step_windows: np.ndarray) -> None:
        median, log_median = _medians(raw)
        excess = logs[t] - log_median
        # Cheap necessary conditions first (MAD >= 0): the MAD costs two more
        # partitions, so only rows that can still be flagged pay for it.
        maybe = np.flatnonzero((excess > opts.z_threshold * opts.mad_floor) & (x[t] - median > rise))
        if maybe.size == 0:
            return
        d = step_windows[maybe]
        if d.shape[1]:
            mad = np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)
        else:
            mad = np.zeros(maybe.size)
        scale = _MAD_SCALE * mad / math.sqrt(2.0) + opts.mad_floor
        z = excess[maybe] / scale
        hit = z > opts.z_threshold
        found.append(t[maybe[hit]])
        befores.append(median[maybe[hit]])
        scores.append(z[hit])
        centres.append(log_median[maybe[hit]])
        scales.append(scale[hit])

    # Short history (the first `window` values): use all the values there are.
    for t in range(history, min(w, n)):
        test(np.array([t]), x[None, :t], steps[None, : t - 1])
    # Full trailing windows x[t - w : t] and the w - 1 steps inside each, in chunks to bound memory.
    if n > w:
        raw_windows = sliding_window_view(x[:-1], w)
        step_windows = sliding_window_view(steps, w - 1) if w > 1 else np.empty((n - w + 1, 0))
        for start in range(0, n - w, _CHUNK):
            stop = min(start + _CHUNK, n - w)
            test(np.arange(start + w, stop + w), raw_windows[start:stop], step_windows[start:stop])
    if not found:
        return empty
    return tuple(np.concatenate(parts) for parts in (found, befores, scores, centres, scales))


def _recovery(x: np.ndarray, start: int, threshold: float) -> int | None:
    """First index ``>= start`` whose value is below ``threshold`` and where most
    of the next ``_RECOVER_RUN`` values are too (one lucky mini-batch on a raised
    plateau is not a recovery). Near the end of the curve, what is left counts."""
    below = x[start:] < threshold
    if not below.any():
        return None
    m = below.size
    cumulative = np.concatenate(([0], np.cumsum(below)))
    idx = np.arange(m)
    ends = np.minimum(idx + _RECOVER_RUN, m)
    held = 2 * (cumulative[ends] - cumulative[idx]) > ends - idx
    hits = np.flatnonzero(below & held)
    return start + int(hits[0]) if hits.size else None


def _events(x: np.ndarray, flagged: tuple[np.ndarray, ...], opts: StabilityOptions) -> list[tuple[int, int]]:
    """Group the flags of ``_flags`` into events: ``(first, last)`` positions in its arrays.

    A flag at ``t`` opens an event only when the disturbance lasts: another
    value within 3 steps of it (before or after) is still more than
    ``z_persist`` robust sigmas above the window ``t`` was measured against.
    Heavy-tailed mini-batch noise (Student-t) makes lone outliers of 4-17x
    for one step; a real spike lasts, even as it relaxes, and a burst of
    jumps a few steps apart is one disturbance. Two exceptions: a z-score
    above ``z_single`` (a one-step jump far too big for mini-batch noise),
    and a flag among the last two values of the curve (too early to tell:
    reported). A flag closer than ``window`` values to the last flag of the
    open event extends it, lasting or not; other lone flags are dropped."""
    flags, _, z, centre, scale = flagged
    n = x.size
    logs = _log(x)
    persists = np.zeros(flags.size, dtype=bool)
    for lag in range(-_BURST, _BURST + 1):
        if lag:
            other = np.clip(flags + lag, 0, n - 1)
            persists |= (flags + lag >= 0) & (flags + lag < n) & ((logs[other] - centre) / scale > opts.z_persist)
    opens = persists | (z > opts.z_single) | (flags >= n - 2)
    groups: list[tuple[int, int]] = []
    first = last = -1
    for k, t in enumerate(flags.tolist()):
        if first >= 0 and t - int(flags[last]) < opts.window:
            last = k
        elif opens[k]:
            if first >= 0:
                groups.append((first, last))
            first = last = k
    if first >= 0:
        groups.append((first, last))
    return groups


def _finite_part(losses: ArrayLike, options: StabilityOptions | None, steps: ArrayLike | None) -> tuple[StabilityOptions, np.ndarray, np.ndarray]:
    """Checked options, the curve up to its first non-finite value, and the step numbers of the whole curve."""
    opts = _check_options(options)
    x = _as_curve(losses)
    st = _as_steps(steps, x.size)
    end = _first_nonfinite(x)
    return opts, (x if end is None else x[:end]), st


def find_spikes(
    losses: ArrayLike,
    *,
    initial: float,
    options: StabilityOptions = _DEFAULTS,
    steps: ArrayLike | None = None,
) -> list[Spike]:
    """Spike events of a loss curve.

    Value ``t`` is flagged when both hold, over the trailing window of the
    ``window`` values before it (fewer near the start; nothing is flagged
    before 10 values of history):

    * ``(log L_t - median(log win)) / (1.4826 * MAD(diff(log win)) / sqrt(2) + mad_floor) > z_threshold``:
      a robust z-score, so ordinary multiplicative mini-batch noise sets the
      scale instead of firing the detector (as a fixed ratio to a recent
      mean does). The scale is the MAD of the
      step-to-step changes of the log-loss in the window: the noise, not the
      trend, so a blow-up right after a fall of several decades within the
      window stands out;
    * ``L_t - median(win) > abs_rise * |initial|``: an absolute rise, so that
      wiggles between 1e-12 and 1e-9 near the end of a converged run are not
      spikes.

    A flag opens an event only if the disturbance lasts: another value within
    3 steps of it (before or after) is still more than ``z_persist`` (3)
    robust sigmas above the same window. Heavy-tailed mini-batch noise makes
    lone one-step outliers; a real spike lasts, even as it relaxes, and a
    burst of jumps a few steps apart is one disturbance. A one-step jump with a z-score above
    ``z_single`` (18) still counts, and so does a flag among the last two
    values of the curve (too early to tell). Flags closer than ``window``
    values to the previous flag of an event extend it; the peak is the
    maximum between the event's first and last flag.
    The event recovered when, after its last flag, the loss is back below
    ``recover_factor * before`` and most of the next 5 values stay there.
    Only the part before the first non-finite value is searched: a non-finite
    loss is divergence, not a spike. A NaN ``initial`` finds no spikes.

    Runs in O(n * window) with vectorised partitions, in chunks of bounded
    memory.

    Args:
        losses: the logged losses, oldest first.
        initial: the run's first loss, which sets the absolute floor of a rise.
        options: thresholds (``window``, ``z_threshold``, ``z_persist``, ``z_single``,
            ``mad_floor``, ``abs_rise``, ``recover_factor``); default ``StabilityOptions()``.
        steps: the step number of each logged value; default ``0 .. n-1``.

    Example:
        >>> import numpy as np
        >>> curve = np.full(300, 0.5)
        >>> curve[200] = 5.0
        >>> [(s.step, round(s.size, 3), s.recovered) for s in find_spikes(curve, initial=2.3)]
        [(200, 1.0, True)]
    """
    opts, x, st = _finite_part(losses, options, steps)
    flagged = _flags(x, float(initial), opts)
    flags, befores = flagged[0], flagged[1]
    if flags.size == 0:
        return []
    groups = _events(x, flagged, opts)
    spikes: list[Spike] = []
    for i, j in groups:
        first, last = int(flags[i]), int(flags[j])
        before = float(befores[i])
        peak = first + int(np.argmax(x[first : last + 1]))
        back = _recovery(x, last + 1, opts.recover_factor * before)
        spikes.append(
            Spike(
                step=int(st[first]),
                peak_step=int(st[peak]),
                size=math.log10(max(float(x[peak]), _TINY) / max(before, _TINY)),
                before=before,
                peak=float(x[peak]),
                recovered=back is not None,
                recover_steps=None if back is None else int(st[back] - st[peak]),
            )
        )
    return spikes


def _moving_median(x: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving median: ``out[i] = median(x[i - width + 1 : i + 1])`` for ``i >= width - 1``."""
    windows = sliding_window_view(x, width)
    return np.concatenate([np.median(windows[i : i + _CHUNK * 16], axis=1) for i in range(0, len(windows), _CHUNK * 16)])


def find_relapses(
    losses: ArrayLike,
    *,
    initial: float,
    options: StabilityOptions = _DEFAULTS,
    steps: ArrayLike | None = None,
) -> list[Spike]:
    """Slow spikes: the loss level climbing an order of magnitude within ``window`` steps.

    The level is the trailing moving median of ``smooth`` values (20), so a
    lone bad mini-batch does not move it. A level is raised when it is more
    than ``relapse_factor`` (10) times the lowest of the ``window`` (100)
    levels before it, and higher than that by more than ``abs_rise *
    |initial|`` (the absolute floor of :func:`find_spikes`: a climb from
    1e-12 to 1e-10 is a wiggle near zero). A creep of 10x over a thousand
    steps is no event: the score's late-rise term is what weighs that.
    Raised stretches closer than ``window`` values are one event. The z-score
    rule of :func:`find_spikes` compares each value with its own trailing
    window, which follows a rise that builds over tens of steps (Adam's
    loss bumps once a memorised training loss has made the gradients tiny),
    so those go unseen there.

    A relapse is a :class:`Spike` whose ``step`` is where the level first
    rose that far, ``peak`` the highest level of the event, ``before`` the
    lowest level of the window before it, and ``size = log10(peak /
    before)`` (at least one decade). It recovered when the level comes back
    below ``recover_factor * before`` plus the absolute floor and most of
    the next 5 levels stay there. Only the part before the first non-finite
    value is searched.

    Args:
        losses: the logged losses, oldest first.
        initial: the run's first loss, which sets the absolute floor of a rise.
        options: thresholds (``smooth``, ``window``, ``relapse_factor``, ``abs_rise``,
            ``recover_factor``); default ``StabilityOptions()``.
        steps: the step number of each logged value; default ``0 .. n-1``.

    Example:
        >>> import numpy as np
        >>> curve = np.concatenate([np.geomspace(2.0, 0.01, 300), np.full(80, 0.2), np.full(300, 0.005)])
        >>> [(s.step, round(s.size, 2), s.recovered) for s in find_relapses(curve, initial=2.0)]
        [(310, 1.23, True)]
    """
    opts, x, st = _finite_part(losses, options, steps)
    width, floor = opts.smooth, opts.abs_rise * abs(float(initial))
    if x.size <= width or not math.isfinite(floor):
        return []
    level = _moving_median(x, width)  # level[j] ends at curve index j + width - 1
    # before[j]: the lowest of the `window` levels before j (fewer at the start)
    padded = np.concatenate((np.full(opts.window, np.inf), level[:-1]))
    before = sliding_window_view(padded, opts.window).min(axis=1)
    raised = np.flatnonzero((level > opts.relapse_factor * before) & (level - before > floor))
    if raised.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(raised) >= opts.window)
    relapses: list[Spike] = []
    for lo, hi in zip(np.concatenate(([0], breaks + 1)), np.concatenate((breaks, [raised.size - 1]))):
        first, last = int(raised[lo]), int(raised[hi])
        base = float(before[first])
        top = first + int(np.argmax(level[first : last + 1]))
        back = _recovery(level, last + 1, opts.recover_factor * base + floor)
        relapses.append(
            Spike(
                step=int(st[first + width - 1]),
                peak_step=int(st[top + width - 1]),
                size=math.log10(max(float(level[top]), _TINY) / max(base, _TINY)),
                before=base,
                peak=float(level[top]),
                recovered=back is not None,
                recover_steps=None if back is None else int(st[back + width - 1] - st[top + width - 1]),
            )
        )
    return relapses
