"""Stability analysis of a loss curve: divergence, plateau, spikes, the score.

Pure functions of a 1-D array of logged losses (numpy and the standard library
only: no torch, no Optuna), so the trainer, the CLI's ``analyze`` command and
the tests all run the very same rules. DESIGN sections 6 and 7 give them:

* **diverged**: a non-finite loss; or, after warmup, ``diverge_run`` logged
  values in a row above ``diverge_factor * max(L0, chance loss)``. Losses are
  capped at the initial loss as in Wortsman et al. 2023, and the Deep
  Learning Tuning Playbook calls such a trial infeasible. The factor (default
  1.2) is a margin for mini-batch noise: with none, a run that sits at its
  starting loss (a collapse to chance, or a learning rate too small to move
  it) soon shows 5 noisy values in a row above it, and would be called
  diverged instead of plateau or stable.
* **plateau**: the end of the run sits within ``plateau_tolerance`` of the
  chance loss ``ln K`` (or the trainer saw a dead hidden layer).
* **spike**: a robust z-score of the log-loss against the trailing window,
  plus an absolute rise. The relative rules of the Lightning, llm-foundry and
  Megatron-LM spike callbacks (3x a 10-step mean, 2x a window mean, 10x the
  max) fire on mini-batch noise and on wiggles near zero; the median/MAD scale
  and the absolute floor are what stop that.
* **score**: ``log10(final + floor)`` plus penalties for late spikes, a final
  loss well above the best one, and spikes that never recovered; a diverged
  run gets a finite capped score so Optuna's sampler learns the region is bad
  (a NaN objective would make the trial FAIL, and samplers ignore those).

Conventions:

* Indices are 0-based positions in the logged curve. When ``steps`` is given
  (one step number per logged value, strictly increasing), every step the
  results report is taken from it.
* Spikes are measured on ``log(loss)``. Values <= 0 are clamped to the smallest
  positive float before the log, so the rules assume a loss that is >= 0
  (cross-entropy, MSE); shift a loss that can go negative before analysing it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike

__all__ = [
    "Analysis",
    "Spike",
    "StabilityOptions",
    "analyze",
    "capped_score",
    "divergence_step",
    "final_loss",
    "find_spikes",
    "initial_loss",
    "is_plateau",
    "score",
]

_TINY = float(np.finfo(np.float64).tiny)  # clamp for log of non-positive losses
_MAD_SCALE = 1.4826  # MAD -> standard deviation for normal noise
_MIN_HISTORY = 10  # values of history needed before a value can be flagged
_RECOVER_RUN = 5  # recovery must hold for most of this many values
_CHUNK = 4096  # rows of the sliding window processed at once (bounded memory)


# --------------------------------------------------------------------------- options


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
    """Thresholds and weights of the analysis; the defaults are DESIGN sections 6-7.

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
    mad_floor: float = 0.05
    abs_rise: float = 1e-3
    recover_factor: float = 1.15
    diverge_run: int = 5
    diverge_factor: float = 1.2
    final_fraction: float = 0.05
    plateau_tolerance: float = 0.02
    plateau_fraction: float = 0.25
    floor_fraction: float = 1e-3
    spike_weight: float = 1.0
    rise_weight: float = 1.0
    rise_tolerance: float = 1.5
    unrecovered_weight: float = 1.0
    smooth: int = 20

    def __post_init__(self) -> None:
        for name in ("window", "head", "diverge_run", "smooth"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"StabilityOptions.{name} must be an integer >= 1; got {value!r}")
        # (name, lower bound, lower bound allowed, upper bound or None)
        checks = (
            ("z_threshold", 0.0, False, None),
            ("mad_floor", 0.0, False, None),
            ("abs_rise", 0.0, True, None),
            ("recover_factor", 0.0, False, None),
            ("diverge_factor", 1.0, True, None),
            ("final_fraction", 0.0, False, 1.0),
            ("plateau_tolerance", 0.0, False, None),
            ("plateau_fraction", 0.0, False, 1.0),
            ("floor_fraction", 0.0, True, None),
            ("spike_weight", 0.0, True, None),
            ("rise_weight", 0.0, True, None),
            ("rise_tolerance", 1.0, True, None),
            ("unrecovered_weight", 0.0, True, None),
        )
        for name, low, low_ok, high in checks:
            value = getattr(self, name)
            ok = _is_real(value) and (value >= low if low_ok else value > low)
            ok = ok and (high is None or value <= high)
            if not ok:
                if high is not None:
                    rule = f"in ({low:g}, {high:g}]"
                else:
                    rule = f"{'>=' if low_ok else '>'} {low:g}"
                raise ValueError(f"StabilityOptions.{name} must be a finite number {rule}; got {value!r}")


_DEFAULTS = StabilityOptions()


# --------------------------------------------------------------------------- results


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


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


@dataclass(frozen=True)
class Analysis:
    """What ``analyze`` found on one loss curve; ``score`` is what Optuna minimises."""

    verdict: str
    initial_loss: float
    final_loss: float
    best_loss: float
    spikes: tuple[Spike, ...]
    late_spikes: int
    unrecovered: int
    diverged_at: int | None
    plateau: bool
    chance_loss: float | None
    score: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: non-finite numbers become ``None``, spikes a list of dicts."""
        return {
            "verdict": self.verdict,
            "initial_loss": _json_float(self.initial_loss),
            "final_loss": _json_float(self.final_loss),
            "best_loss": _json_float(self.best_loss),
            "spikes": [spike.to_dict() for spike in self.spikes],
            "late_spikes": int(self.late_spikes),
            "unrecovered": int(self.unrecovered),
            "diverged_at": None if self.diverged_at is None else int(self.diverged_at),
            "plateau": bool(self.plateau),
            "chance_loss": _json_float(self.chance_loss),
            "score": _json_float(self.score),
            "steps": int(self.steps),
        }


# --------------------------------------------------------------------------- input checks


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


def _check_options(options: StabilityOptions | None) -> StabilityOptions:
    if options is None:
        return _DEFAULTS
    if not isinstance(options, StabilityOptions):
        raise TypeError(f"options must be a StabilityOptions; got {type(options).__name__}")
    return options


def _check_fraction(name: str, value: float) -> None:
    if not _is_real(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]; got {value!r}")


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _TINY))


def _first_nonfinite(x: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(x))
    return int(bad[0]) if bad.size else None


# --------------------------------------------------------------------------- curve summaries


def initial_loss(losses: ArrayLike, head: int = 5) -> float:
    """``L0``: the median of the first ``head`` finite values, each capped at 10x the first; NaN if none.

    The median keeps one odd first batch from moving the divergence threshold
    or the score floor. The cap is there because only the first value is
    measured before any update: a learning rate that explodes within a few
    steps would otherwise lift ``L0`` to the exploded level and hide the very
    divergence it is meant to reveal.

    Example:
        >>> initial_loss([2.3, 9.0, 2.2, 2.4, 2.1, 0.5])
        2.3
        >>> initial_loss([0.4, 5e4, 2e5, 1e5, 8e4])
        4.0
    """
    if not _is_int(head) or head < 1:
        raise ValueError(f"head must be an integer >= 1; got {head!r}")
    x = _as_curve(losses)
    finite = x[np.isfinite(x)][:head]
    if not finite.size:
        return math.nan
    return float(np.median(np.minimum(finite, 10.0 * abs(finite[0]))))


def final_loss(losses: ArrayLike, fraction: float = 0.05) -> float:
    """The median of the finite values among the last ``max(1, ceil(fraction * n))``.

    A median of the tail, because the last mini-batch loss alone is noise.
    NaN when that tail holds no finite value (or the curve is empty).

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


def divergence_step(
    losses: ArrayLike,
    *,
    initial: float,
    chance_loss: float | None = None,
    warmup: int = 0,
    run: int = 5,
    factor: float = 1.2,
) -> int | None:
    """Index where the run diverged, or ``None``.

    The first non-finite value; or, counting only indices ``>= warmup``, the
    first of ``run`` consecutive values above ``factor * max(initial,
    chance_loss)`` (a loss above where it started is as bad as diverging:
    Wortsman et al. 2023 cap losses at the initial loss). The earlier of the
    two wins. ``factor`` (``StabilityOptions.diverge_factor``) keeps
    mini-batch noise around the starting loss from counting; ``factor=1.0``
    is the bare rule. NaN thresholds are ignored, so with no usable threshold
    only non-finite values count.

    Example:
        >>> divergence_step([2.0, 1.0, float("nan")], initial=2.0)
        2
        >>> divergence_step([2.0, 1.0, 3, 3, 3, 3, 3], initial=2.0, run=5)
        2
    """
    if not _is_int(warmup) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0; got {warmup!r}")
    if not _is_int(run) or run < 1:
        raise ValueError(f"run must be an integer >= 1; got {run!r}")
    if not _is_real(factor) or factor < 1.0:
        raise ValueError(f"factor must be a finite number >= 1; got {factor!r}")
    x = _as_curve(losses)
    found = _first_nonfinite(x)
    base = float(np.fmax(initial, -math.inf if chance_loss is None else chance_loss))
    limit = base + (factor - 1.0) * abs(base)  # = factor * base for a positive loss
    if math.isnan(limit) or x.size < run:
        return found
    above = x > limit  # NaN compares False
    above[: min(warmup, x.size)] = False
    counts = np.convolve(above.astype(np.int64), np.ones(run, dtype=np.int64), mode="valid")
    starts = np.flatnonzero(counts == run)
    if starts.size and (found is None or starts[0] < found):
        return int(starts[0])
    return found


def is_plateau(
    losses: ArrayLike,
    *,
    chance_loss: float | None,
    options: StabilityOptions | None = None,
) -> bool:
    """True when the last ``plateau_fraction`` of the run stays within ``plateau_tolerance``
    (relative) of ``chance_loss``, read through a moving median of ``smooth`` values.

    This is the "stuck at chance" collapse: cost about ``ln K``, accuracy
    ``1/K``. The moving median lets mini-batch jitter of a few percent around
    ``ln K`` still count as stuck, while a run that trains below chance for
    even a short stretch does not. Without a chance loss there is no plateau.

    Example:
        >>> import math
        >>> is_plateau([2.0, 1.9, 1.79, 1.792, 1.791, 1.7918], chance_loss=math.log(6))
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
    return bool(np.all(np.abs(tail - chance_loss) <= opts.plateau_tolerance * abs(chance_loss)))


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


# --------------------------------------------------------------------------- spikes


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


def _flags(x: np.ndarray, initial: float, opts: StabilityOptions) -> tuple[np.ndarray, np.ndarray]:
    """Indices of flagged values of the finite curve ``x`` and the median loss of
    the trailing window at each."""
    n, w = x.size, opts.window
    history = min(_MIN_HISTORY, w)
    rise = opts.abs_rise * abs(initial)
    if n <= history or not math.isfinite(rise):
        return np.empty(0, dtype=np.int64), np.empty(0)
    logs = _log(x)
    found: list[np.ndarray] = []
    befores: list[np.ndarray] = []

    def test(t: np.ndarray, raw: np.ndarray, log_windows: np.ndarray) -> None:
        median, log_median = _medians(raw)
        excess = logs[t] - log_median
        # Cheap necessary conditions first (MAD >= 0): the MAD costs a second
        # partition, so only rows that can still be flagged pay for it.
        maybe = np.flatnonzero((excess > opts.z_threshold * opts.mad_floor) & (x[t] - median > rise))
        if maybe.size == 0:
            return
        mad = np.median(np.abs(log_windows[maybe] - log_median[maybe, None]), axis=1)
        hit = maybe[excess[maybe] / (_MAD_SCALE * mad + opts.mad_floor) > opts.z_threshold]
        found.append(t[hit])
        befores.append(median[hit])

    # Short history (the first `window` values): use all the values there are.
    for t in range(history, min(w, n)):
        test(np.array([t]), x[None, :t], logs[None, :t])
    # Full trailing windows x[t - w : t], in chunks to bound memory.
    if n > w:
        raw_windows = sliding_window_view(x[:-1], w)
        log_windows = sliding_window_view(logs[:-1], w)
        for start in range(0, n - w, _CHUNK):
            stop = min(start + _CHUNK, n - w)
            test(np.arange(start + w, stop + w), raw_windows[start:stop], log_windows[start:stop])
    if not found:
        return np.empty(0, dtype=np.int64), np.empty(0)
    return np.concatenate(found), np.concatenate(befores)


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


def find_spikes(
    losses: ArrayLike,
    *,
    initial: float,
    options: StabilityOptions = _DEFAULTS,
    steps: ArrayLike | None = None,
) -> list[Spike]:
    """Spike events of a loss curve (DESIGN section 6).

    Value ``t`` is flagged when both hold, over the trailing window of the
    ``window`` values before it (fewer near the start; nothing is flagged
    before 10 values of history):

    * ``(log L_t - median(log win)) / (1.4826 * MAD(log win) + mad_floor) > z_threshold``:
      a robust z-score, so ordinary multiplicative mini-batch noise sets the
      scale instead of firing the detector (unlike the fixed-ratio rules of
      Lightning, llm-foundry and Megatron-LM);
    * ``L_t - median(win) > abs_rise * |initial|``: an absolute rise, so that
      wiggles between 1e-12 and 1e-9 near the end of a converged run are not
      spikes.

    Flags closer than ``window`` values to the previous flag merge into one
    event; the peak is the maximum between the event's first and last flag.
    The event recovered when, after its last flag, the loss is back below
    ``recover_factor * before`` and most of the next 5 values stay there.
    Only the part before the first non-finite value is searched: a non-finite
    loss is divergence, not a spike. A NaN ``initial`` finds no spikes.

    Runs in O(n * window) with vectorised partitions, in chunks of bounded
    memory (about 0.2 s for 100k noisy values on one CPU core).

    Example:
        >>> import numpy as np
        >>> curve = np.full(300, 0.5)
        >>> curve[200] = 5.0
        >>> [(s.step, round(s.size, 3), s.recovered) for s in find_spikes(curve, initial=2.3)]
        [(200, 1.0, True)]
    """
    opts = _check_options(options)
    x = _as_curve(losses)
    st = _as_steps(steps, x.size)
    end = _first_nonfinite(x)
    if end is not None:
        x = x[:end]
    flags, befores = _flags(x, float(initial), opts)
    if flags.size == 0:
        return []
    # Merge flags into events: a gap of `window` values or more opens a new event.
    opens = np.concatenate(([0], np.flatnonzero(np.diff(flags) >= opts.window) + 1))
    closes = np.concatenate((opens[1:] - 1, [flags.size - 1]))
    spikes: list[Spike] = []
    for i, j in zip(opens, closes):
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


# --------------------------------------------------------------------------- score


def capped_score(initial: float, options: StabilityOptions | None = None) -> float:
    """The score of a diverged run: ``log10(L0 + floor) + 1`` (DESIGN section 7).

    Finite on purpose: Optuna turns a NaN objective into a FAIL trial, and
    samplers ignore FAIL trials, so they would keep sampling the cliff. When
    ``L0`` is not finite (no finite loss was ever logged) ``L0 = 1.0`` is
    used, so the cap is still a number (``log10(1.001) + 1``).

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
    """The objective Optuna minimises (DESIGN section 7)::

        floor = floor_fraction * L0
        score = log10(final + floor)
              + spike_weight * sum(size of spikes with step >= n // 2)
              + rise_weight * max(0, log10((final + floor) / (best + floor)) - log10(rise_tolerance))
              + unrecovered_weight * (number of spikes that did not recover)

    The floor stops the search chasing 1e-12 against 1e-11 to the edge of
    the cliff. A diverged run, or one whose final loss is not finite, gets
    ``capped_score(initial)``. A finished run's score is clipped to that same
    cap, so a diverged run is never better than a finished one (the design's
    promise; without the clip, a run with several unrecovered late spikes
    could score worse than diverging and teach the sampler to prefer the
    cliff).

    ``midpoint`` is the first step of the second half when spikes carry real
    step numbers (default ``n // 2``, i.e. steps are logged indices).
    ``curve_final`` is the curve's own final loss for the rise term when
    ``final`` is a held-out loss (default ``final``): the rise term measures
    a late rise of the training loss, not a train/held-out gap.

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


# --------------------------------------------------------------------------- analyze


def analyze(
    losses: ArrayLike,
    *,
    steps: ArrayLike | None = None,
    chance_loss: float | None = None,
    warmup: int = 0,
    final: float | None = None,
    dead_layer: bool = False,
    options: StabilityOptions | None = None,
) -> Analysis:
    """Diagnose one loss curve: verdict, spikes, final loss and score.

    Args:
        losses: the logged losses, oldest first; NaN and inf are allowed
            (they mean the run diverged).
        steps: the step number of each logged value (strictly increasing);
            default ``0 .. n-1``. Every step reported comes from it.
        chance_loss: the loss at chance (``ln K`` for K balanced classes);
            enables the plateau check and raises the divergence threshold to
            ``max(L0, chance_loss)``.
        warmup: steps (in the unit of ``steps``) during which a loss above
            the threshold is not divergence.
        final: a held-out loss (``evaluate(model)``) that replaces the
            median of the last 5% as the final loss. A non-finite one means
            the run diverged, at the last logged step.
        dead_layer: the trainer found a hidden ReLU layer completely dead;
            the run is a plateau (collapse) whatever its loss does.
        options: thresholds and weights; default ``StabilityOptions()``.

    The verdict is the first that applies: ``diverged``, ``plateau``,
    ``spiky`` (a spike in the second half, or any spike that never
    recovered), ``stable``. A recovered spike in the first half is an early
    transient: listed, not penalised. Spikes are searched only before the
    divergence point.

    Example:
        >>> import numpy as np
        >>> curve = 2.3 * np.exp(-np.arange(1000) / 200) + 0.05
        >>> curve[700] = 5.0  # one late spike, gone at the next step
        >>> a = analyze(curve)
        >>> a.verdict, [(s.step, s.recovered, s.recover_steps) for s in a.spikes]
        ('spiky', [(700, True, 1)])
        >>> analyze(curve[:600]).verdict
        'stable'
        >>> analyze([2.3, 2.2, float("nan")]).diverged_at
        2
    """
    opts = _check_options(options)
    x = _as_curve(losses)
    n = x.size
    if n == 0:
        raise ValueError("losses is empty")
    st = _as_steps(steps, n)
    if not _is_int(warmup) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0; got {warmup!r}")
    if chance_loss is not None and (not _is_real(chance_loss) or chance_loss <= 0):
        raise ValueError(f"chance_loss must be a finite number > 0; got {chance_loss!r}")
    if final is not None and not isinstance(final, numbers.Real):
        raise ValueError(f"final must be a number; got {final!r}")

    l0 = initial_loss(x, opts.head)
    warmup_index = int(np.searchsorted(st, warmup, side="left"))
    div = divergence_step(
        x,
        initial=l0,
        chance_loss=chance_loss,
        warmup=warmup_index,
        run=opts.diverge_run,
        factor=opts.diverge_factor,
    )
    end = n if div is None else div
    head = x[:end]  # finite, and before any divergence
    spikes = tuple(find_spikes(head, initial=l0, options=opts, steps=st[:end]))

    curve_final = final_loss(head, opts.final_fraction) if end else math.nan
    final_value = curve_final if final is None else float(final)
    diverged_at = None if div is None else int(st[div])
    if diverged_at is None and not math.isfinite(final_value):
        diverged_at = int(st[-1])  # the held-out loss blew up
    best = _best_smoothed(head, n // 2, opts.smooth)
    midpoint = int(st[n // 2])
    late = sum(1 for s in spikes if s.step >= midpoint)
    unrecovered = sum(1 for s in spikes if not s.recovered)
    plateau = bool(dead_layer) or is_plateau(x, chance_loss=chance_loss, options=opts)

    if diverged_at is not None:
        verdict = "diverged"
    elif plateau:
        verdict = "plateau"
    elif late or unrecovered:
        verdict = "spiky"
    else:
        verdict = "stable"
    value = score(
        initial=l0,
        final=final_value,
        best=best,
        spikes=spikes,
        n=n,
        diverged=diverged_at is not None,
        options=opts,
        midpoint=midpoint,
        curve_final=curve_final,
    )
    return Analysis(
        verdict=verdict,
        initial_loss=l0,
        final_loss=final_value,
        best_loss=best,
        spikes=spikes,
        late_spikes=late,
        unrecovered=unrecovered,
        diverged_at=diverged_at,
        plateau=plateau,
        chance_loss=None if chance_loss is None else float(chance_loss),
        score=value,
        steps=n,
    )
