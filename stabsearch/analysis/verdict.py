"""Stability analysis of a loss curve: divergence, collapse, spikes, slow runs, the score.

Pure functions of a 1-D array of logged losses (numpy and the standard library
only: no torch, no Optuna), so the trainer, the CLI's ``analyze`` command and
the tests all run the very same rules:

* **start**: a run starts at its first loss (``L0``, :func:`first_loss`):
  the default loop logs the loss before the first update as its first
  value, and every later value has seen updates, so a learning rate that
  explodes at once shows in the second value already. The score, the spike
  floors and the progress test measure from it.
* **diverged**: a non-finite loss; or, after warmup, ``diverge_run`` logged
  values in a row above ``margin * max(R, chance loss)``. ``R`` is the
  :func:`reference_loss`, the median of the first ``head`` values each
  capped at ``start_cap`` (2) times the first: an easy first batch does not
  set the bar under the run's real starting level, and an explosion in the
  first steps cannot lift it (a GPT-2 at lr 0.62 going 4.4 -> 49 -> 27.8
  and staying there diverges; a cap of 10x would set the bar at 28.4). Losses are capped at the initial loss as in Wortsman et al. 2023,
  and the Deep Learning Tuning Playbook calls such a trial infeasible. The
  margin is for mini-batch noise: with none, a run that sits at its
  starting loss soon shows 5 noisy values in a row above it. It is
  ``max(diverge_factor, exp(diverge_sigmas * noise))``: at least 1.2, and
  wider when the log-loss noise (measured on the first ``window`` values,
  from their step-to-step changes) is heavy.
* **plateau** (collapsed, or never trained), the first of:

  - the trainer saw a dead hidden layer (``dead_layer``);
  - **chance** (with ``chance_loss = ln K``): the last ``plateau_fraction``
    of the run, through a moving median of ``smooth`` values, never
    meaningfully below ``ln K`` (all of it at or above ``(1 -
    plateau_tolerance) * ln K``) and the second half not still falling
    (:func:`is_plateau`). One-sided: a collapsed softmax sits where its
    output bias puts it, often a few percent above ``ln K``;
  - **rebound**: the run rose ``rebound_factor`` (10) times above its first
    loss in its first half and ended less than ``slow_progress`` (5%) below
    it: an explosion
    that fell back into a collapse (a classifier at lr 1 going 2.32 ->
    4,324 and settling at 2.29-2.41);
  - **no progress**: the end level (:func:`end_level`, the median of the
    last quarter) at or above ``(1 - progress_tolerance)`` (98%) of the
    first loss times ``exp(noise)`` (the log-loss noise of the first
    ``window`` values: the first loss is one mini-batch), and the second
    half not still falling. A run that ends no lower than where it started
    has not trained, whatever its shape; from the loss alone a model that
    collapsed at once and a learning rate far too small to move it look
    the same, and the advice names both.
* **spike**: a robust z-score of the log-loss against the trailing window,
  plus an absolute rise, that persists (or is far too big for noise). The
  relative rules of the Lightning, llm-foundry and Megatron-LM spike
  callbacks (3x a 10-step mean, 2x a window mean, 10x the max) fire on
  mini-batch noise and on wiggles near zero; the median/MAD scale, the
  absolute floor and the persistence rule are what stop that. A rise that
  builds over tens of steps carries its trailing window with it and is
  never flagged that way, so a **relapse** counts as a spike too: the
  smoothed loss (a moving median) climbing ``relapse_factor`` (10x) above its
  lowest level of the last ``window`` values, and by more than the absolute
  floor.
* **slow**: trained, but too little: the end level less than
  ``slow_progress`` (5%) below the first loss while the second half is
  still falling (:func:`still_falling`: the least-squares slope of its
  log-loss more than ``trend_sigmas`` (3) standard errors below zero, the
  noise measured from step-to-step changes; cause ``too_slow``); or no
  clear progress on a curve too noisy to call a collapse (the end level
  at or above 98% of the first loss, but within its noise;
  ``no_clear_progress``). Learning too slowly is no instability: a slow
  run is no evidence of a cliff.
* **verdict**: the first that applies of ``diverged``, ``plateau``,
  ``spiky`` (a spike in the second half, or one that never recovered),
  ``slow``, ``stable``. A collapse outranks its spikes (the explosion that
  caused it is one); a slow run with a late spike is spiky.
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
    "divergence_noise",
    "divergence_step",
    "end_level",
    "final_loss",
    "find_relapses",
    "find_spikes",
    "first_loss",
    "is_plateau",
    "log_noise",
    "log_trend",
    "reference_loss",
    "score",
    "still_falling",
]

_TINY = float(np.finfo(np.float64).tiny)  # clamp for log of non-positive losses
_MAD_SCALE = 1.4826  # MAD -> standard deviation for normal noise
_MIN_HISTORY = 10  # values of history needed before a value can be flagged
_NOISE_HISTORY = 20  # values needed before the log-loss noise is known
_EXPLODE = 10.0  # while it is not: a run this far above the start diverges whatever the noise
_RECOVER_RUN = 5  # recovery must hold for most of this many values
_BURST = 3  # a flag persists when a value up to this many steps before or after it is still raised
_CHUNK = 4096  # rows of the sliding window processed at once (bounded memory)
_MIN_TREND = 1e-4  # a change in log-loss this small across a stretch is no trend
_SLOW = ("too_slow", "no_clear_progress")  # causes of a slow verdict; the others make a plateau


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
    """Thresholds and weights of the analysis (the module docstring says what each rule does).

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
    """What ``analyze`` found on one loss curve; ``score`` is what Optuna minimises.

    ``initial_loss`` is where the run started: its first logged loss (the
    loss before the first update, in the default loop). ``reference_loss``
    is the robust base of the divergence threshold (:func:`reference_loss`).
    ``progress`` is ``1 - end / initial_loss``, with ``end`` the level the
    run ended at (:func:`end_level`): 0 for a run that ended where it
    started, negative for one that ended above it, NaN when unknown.
    ``cause`` says in a few words why the verdict is ``plateau`` or ``slow``
    (``None`` for the others).
    """

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
    reference_loss: float = math.nan
    progress: float = math.nan
    cause: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: non-finite numbers become ``None``, spikes a list of dicts."""
        return {
            "verdict": self.verdict,
            "initial_loss": _json_float(self.initial_loss),
            "reference_loss": _json_float(self.reference_loss),
            "final_loss": _json_float(self.final_loss),
            "best_loss": _json_float(self.best_loss),
            "progress": _json_float(self.progress),
            "cause": self.cause,
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


def first_loss(losses: ArrayLike) -> float:
    """Where the run started: its first finite value; NaN if it has none.

    The default training loop logs the loss of the first batch before the
    first update, so this is the untrained model's loss. Every later value
    has seen updates: a learning rate that explodes at once shows in the
    second value already, which is why the start is not a median of the
    first few.

    Example:
        >>> first_loss([4.47, 49.0, 27.8, 28.4, 27.9])
        4.47
        >>> first_loss([float("nan"), 2.3, 2.2])
        2.3
    """
    x = _as_curve(losses)
    finite = x[np.isfinite(x)]
    return float(finite[0]) if finite.size else math.nan


def reference_loss(losses: ArrayLike, head: int = 5, cap: float = 2.0) -> float:
    """The base of the divergence threshold: the median of the first ``head`` finite values, each
    capped at ``cap`` times the first; NaN if none.

    The median keeps one mini-batch that happens to be easy from lowering
    the threshold under the run's real starting level, which on a noisy
    curve would call ordinary noise divergence. The cap is there because
    only the first value is measured before any update: a learning rate
    that explodes within a few steps must not lift the base to the
    exploded level and hide the very divergence it is meant to reveal
    (a GPT-2 at lr 0.62 that goes 4.4 -> 49 -> 27.8 and stays there has a
    base of at most 8.8, not 28). ``StabilityOptions.start_cap`` (2) is
    the default; see ``analyze`` for how it was chosen.

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


def log_noise(losses: ArrayLike) -> float:
    """Robust standard deviation of the step-to-step noise of ``log(loss)``.

    ``1.4826 * MAD(diff(log L)) / sqrt(2)`` over the finite values: the MAD of
    first differences, around their median, so a steady trend (a fall or a
    blow-up at a constant rate) does not count as noise, and a few odd steps
    do not move it. 0.0 with fewer than two differences.

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
    loss above where it started is as bad as diverging: Wortsman et al. 2023
    cap losses at the initial loss). A run that starts before index
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
      scale instead of firing the detector (unlike the fixed-ratio rules of
      Lightning, llm-foundry and Megatron-LM). The scale is the MAD of the
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
    memory (about 0.2 s for 100k noisy values on one CPU core).

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


# --------------------------------------------------------------------------- score


def capped_score(initial: float, options: StabilityOptions | None = None) -> float:
    """The score of a diverged run: ``log10(L0 + floor) + 1``.

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
    """The objective Optuna minimises::

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


def _with_relapses(spikes: Sequence[Spike], relapses: Sequence[Spike], st: np.ndarray, opts: StabilityOptions) -> tuple[Spike, ...]:
    """All events in step order; a relapse that a spike event already covers is the same disturbance, dropped.

    A relapse is covered when a spike fired between ``window`` values before
    its first raised level (where the climb it measures can have begun) and
    its peak: spike flags that close are one event too.
    """
    def covered(r: Spike) -> bool:
        begin = int(st[max(0, int(np.searchsorted(st, r.step)) - opts.window)])
        return any(begin <= s.step <= r.peak_step for s in spikes)

    return tuple(sorted([*spikes, *(r for r in relapses if not covered(r))], key=lambda e: e.step))


def analyze(
    losses: ArrayLike,
    *,
    steps: ArrayLike | None = None,
    chance_loss: float | None = None,
    warmup: int = 0,
    final: float | None = None,
    dead_layer: bool = False,
    options: StabilityOptions | None = None,
    diverged_at: int | None = None,
) -> Analysis:
    """Diagnose one loss curve: verdict, spikes, final loss and score.

    Args:
        losses: the logged losses, oldest first; NaN and inf are allowed
            (they mean the run diverged).
        steps: the step number of each logged value (strictly increasing);
            default ``0 .. n-1``. Every step reported comes from it.
        chance_loss: the loss at chance (``ln K`` for K balanced classes);
            enables the chance test of the plateau verdict and raises the
            divergence threshold to ``max(R, chance_loss)``.
        warmup: steps (in the unit of ``steps``) during which a loss above
            the threshold is not divergence.
        final: a held-out loss (``evaluate(model)``) that replaces the
            median of the last 5% as the final loss. A non-finite one means
            the run diverged, at the last logged step.
        dead_layer: the trainer found a hidden ReLU layer completely dead;
            the run is a plateau (collapse) whatever its loss does.
        diverged_at: the index of a logged value where the trainer saw the
            run diverge while the loss stayed finite (a non-finite weight or
            gradient norm); the curve is judged as diverged there.
        options: thresholds and weights; default ``StabilityOptions()``.

    Spikes are both kinds of event: :func:`find_spikes` and
    :func:`find_relapses`. The verdict is the first that applies (the
    module docstring gives each rule): ``diverged``, ``plateau`` (a dead
    layer, stuck at or above chance, a rebound from an explosion, or no
    progress from the first loss), ``spiky`` (a spike in the second half,
    or any spike that never recovered), ``slow`` (less than 5% below the
    first loss and still falling), ``stable``. ``Analysis.cause`` names the
    rule behind a plateau or slow verdict: ``"dead_layer"``, ``"chance"``,
    ``"rebound"``, ``"no_progress"`` (plateau), ``"too_slow"`` or
    ``"no_clear_progress"`` (slow). A recovered spike in
    the first half is an early transient: listed, not penalised. Spikes are
    searched only before the divergence point, and one still rising into it
    (unrecovered, its peak among the last ``diverge_run`` values before it)
    is the divergence's onset, not listed.

    The thresholds were measured. ``start_cap = 2``: on 720 curves that
    jump 10-1000x for 1-4 steps and then sit at 1-6x their first loss,
    1 is called stable (noise 0.3, sitting at its start: the last
    quarter's median drew 5.04% under the first); of the 144 that sit at 6x, a
    cap of 10 calls 8 diverged (the rest plateau), a cap of 2 all 144, and
    on 480 clean curves with lognormal or
    Student-t noise of 0.1-0.6 none diverges with a cap of 2 (or more),
    1 with 1.5, 4 with 1.2 and 13 with 1.0. The progress rules compare
    one mini-batch (the first) with the last quarter's median, so on a
    curve whose noise is large (0.1 or more in log-loss) against the
    progress it made, the verdict between ``stable``, ``slow`` and
    ``plateau`` is a matter of that first draw.

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
        >>> burst = analyze([2.32, 4324.0, 2000.0, 700.0, 49.0, 3.6] + [2.33, 2.35, 2.31, 2.36] * 50)
        >>> burst.initial_loss, burst.verdict, burst.cause
        (2.32, 'plateau', 'rebound')
        >>> slow = analyze(np.linspace(2.31, 2.28, 1000))
        >>> slow.verdict, slow.cause, round(slow.progress, 3)
        ('slow', 'too_slow', 0.011)
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
    if diverged_at is not None and not (_is_int(diverged_at) and 0 <= diverged_at < n):
        raise ValueError(f"diverged_at must be an index of the curve (0 .. {n - 1}); got {diverged_at!r}")

    l0 = first_loss(x)
    base = reference_loss(x, opts.head, opts.start_cap)
    warmup_index = int(np.searchsorted(st, warmup, side="left"))
    div = divergence_step(
        x,
        initial=base,
        chance_loss=chance_loss,
        warmup=warmup_index,
        run=opts.diverge_run,
        factor=opts.diverge_factor,
        noise=divergence_noise(x, window=opts.window),
        sigmas=opts.diverge_sigmas,
    )
    if diverged_at is not None:
        div = diverged_at if div is None else min(div, diverged_at)
    end = n if div is None else div
    head = x[:end]  # finite, and before any divergence
    spikes = _with_relapses(
        find_spikes(head, initial=l0, options=opts, steps=st[:end]),
        find_relapses(head, initial=l0, options=opts, steps=st[:end]),
        st,
        opts,
    )
    if div is not None:
        # A spike still rising into the divergence (unrecovered, peak among the last `diverge_run`
        # values before it) is the divergence's onset, not an event of its own.
        onset = int(st[max(0, div - opts.diverge_run)])
        spikes = tuple(s for s in spikes if s.recovered or s.peak_step < onset)

    curve_final = final_loss(head, opts.final_fraction) if end else math.nan
    final_value = curve_final if final is None else float(final)
    diverged_at = None if div is None else int(st[div])
    if diverged_at is None and not math.isfinite(final_value):
        diverged_at = int(st[-1])  # the held-out loss blew up
    best = _best_smoothed(head, n // 2, opts.smooth)
    midpoint = int(st[n // 2])
    late = sum(1 for s in spikes if s.step >= midpoint)
    unrecovered = sum(1 for s in spikes if not s.recovered)
    progress, untrained = _trained(head, l0, opts)
    at_chance = is_plateau(x, chance_loss=chance_loss, options=opts)
    cause = _cause(dead_layer=bool(dead_layer), at_chance=at_chance, untrained=untrained)
    if diverged_at is not None:
        verdict = "diverged"
    elif cause is not None and cause not in _SLOW:
        verdict = "plateau"
    elif late or unrecovered:
        verdict = "spiky"
    elif cause in _SLOW:
        verdict = "slow"
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
        plateau=cause is not None and cause not in _SLOW,
        chance_loss=None if chance_loss is None else float(chance_loss),
        score=value,
        steps=n,
        reference_loss=base,
        progress=progress,
        cause=cause if verdict in ("plateau", "slow") else None,
    )


def _cause(*, dead_layer: bool, at_chance: bool, untrained: str | None) -> str | None:
    """Why a run collapsed or trained too little, the strongest evidence first; ``None`` if it trained."""
    if dead_layer:
        return "dead_layer"
    if at_chance:
        return "chance"
    return untrained

