"""``analyze``: the verdict, the spikes and the score of one loss curve, from the rules of the analysis.

Pure functions of a 1-D array of logged losses (numpy and the standard library
only: no torch, no Optuna), so the trainer, the CLI's ``analyze`` command and
the tests all run the very same rules. Each rule lives in its own module:
:mod:`~stabsearch.analysis.curve` (input checks, start and final loss, noise),
:mod:`~stabsearch.analysis.divergence`, :mod:`~stabsearch.analysis.plateau`
(collapse and slow progress), :mod:`~stabsearch.analysis.spikes` (spikes and
relapses), :mod:`~stabsearch.analysis.objective`, with the thresholds in
:mod:`~stabsearch.analysis.options`. The rules:

* **start**: a run starts at its first loss (``L0``,
  :func:`~stabsearch.analysis.curve.first_loss`): the default loop logs the
  loss before the first update as its first value, and every later value has
  seen updates, so a learning rate that explodes at once shows in the second
  value already. The score, the spike floors and the progress test measure
  from it.
* **diverged**: a non-finite loss; or, after warmup, ``diverge_run`` logged
  values in a row above ``margin * max(R, chance loss)``. ``R`` is the
  :func:`~stabsearch.analysis.divergence.reference_loss`, the median of the
  first ``head`` values each capped at ``start_cap`` (2) times the first: an
  easy first batch does not set the bar under the run's real starting level,
  and an explosion in the first steps cannot lift it (a curve going
  4.4 -> 49 -> 27.8 and staying there diverges; a cap of 10x would set
  the bar at 28.4). A loss that stays above where the run started is as bad
  as diverging. The margin is for mini-batch noise: with none, a run that
  sits at its starting loss soon shows 5 noisy values in a row above it. It
  is ``max(diverge_factor, exp(diverge_sigmas * noise))``: at least 1.2, and
  wider when the log-loss noise (measured on the first ``window`` values,
  from their step-to-step changes) is heavy.
* **plateau** (collapsed, or never trained), the first of:

  - the trainer saw a dead hidden layer (``dead_layer``);
  - **chance** (with ``chance_loss = ln K``): the last ``plateau_fraction``
    of the run, through a moving median of ``smooth`` values, never
    meaningfully below ``ln K`` (all of it at or above ``(1 -
    plateau_tolerance) * ln K``) and the second half not still falling
    (:func:`~stabsearch.analysis.plateau.is_plateau`). One-sided: a collapsed
    softmax sits where its output bias puts it, often a few percent above
    ``ln K``;
  - **rebound**: the run rose ``rebound_factor`` (10) times above its first
    loss in its first half and ended less than ``slow_progress`` (5%) below
    it: an explosion that fell back into a collapse (a 10-class classifier's
    curve going 2.32 -> 4,324 and settling at 2.29-2.41);
  - **no progress**: the end level
    (:func:`~stabsearch.analysis.plateau.end_level`, the median of the last
    quarter) at or above ``(1 - progress_tolerance)`` (98%) of the first loss
    times ``exp(noise)`` (the log-loss noise of the first ``window`` values:
    the first loss is one mini-batch), and the second half not still falling.
    A run that ends no lower than where it started has not trained, whatever
    its shape; from the loss alone a model that collapsed at once and a
    learning rate far too small to move it look the same, and the advice
    names both.
* **spike**: a robust z-score of the log-loss against the trailing window,
  plus an absolute rise, that persists (or is far too big for noise)
  (:func:`~stabsearch.analysis.spikes.find_spikes`). A rise that builds over
  tens of steps carries its trailing window with it and is never flagged that
  way, so a **relapse** counts as a spike too: the smoothed loss (a moving
  median) climbing ``relapse_factor`` (10x) above its lowest level of the last
  ``window`` values, and by more than the absolute floor
  (:func:`~stabsearch.analysis.spikes.find_relapses`).
* **slow**: trained, but too little: the end level less than
  ``slow_progress`` (5%) below the first loss while the second half is still
  falling (:func:`~stabsearch.analysis.plateau.still_falling`: the
  least-squares slope of its log-loss more than ``trend_sigmas`` (3) standard
  errors below zero, the noise measured from step-to-step changes; cause
  ``too_slow``); or no clear progress on a curve too noisy to call a collapse
  (the end level at or above 98% of the first loss, but within its noise;
  ``no_clear_progress``). Learning too slowly is no instability: a slow run is
  no evidence of a cliff.
* **verdict**: the first that applies of ``diverged``, ``plateau``,
  ``spiky`` (a spike in the second half, or one that never recovered),
  ``slow``, ``stable``. A collapse outranks its spikes (the explosion that
  caused it is one); a slow run with a late spike is spiky.
* **score** (:func:`~stabsearch.analysis.objective.score`): ``log10(final +
  floor)`` plus penalties for late spikes, a final loss well above the best
  one, and spikes that never recovered; a diverged run gets a finite capped
  score so Optuna's sampler learns the region is bad (a NaN objective would
  make the trial FAIL, and samplers ignore those).

Indices, steps and the log of losses <= 0 follow the conventions of
:mod:`~stabsearch.analysis.curve`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from stabsearch.analysis.curve import _as_curve, _as_steps, _json_float, final_loss, first_loss
from stabsearch.analysis.divergence import divergence_noise, divergence_step, reference_loss
from stabsearch.analysis.options import StabilityOptions, _check_options, _is_int, _is_real
from stabsearch.analysis.plateau import _trained, is_plateau
from stabsearch.analysis.objective import _best_smoothed, score
from stabsearch.analysis.spikes import Spike, find_relapses, find_spikes

__all__ = ["Analysis", "analyze"]

_SLOW = ("too_slow", "no_clear_progress")  # causes of a slow verdict; the others make a plateau


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

    The progress rules compare
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
