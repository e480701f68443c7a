"""Warn before the late blow-up: Adam's eps-dominated stability rule, where it applies.

Once ``sqrt(v_hat)`` falls well below eps, Adam is momentum SGD with step
``lr / eps``, and momentum SGD is stable only while the step times the top
Hessian eigenvalue stays under ``(2 + 2*beta1) / (1 - beta1)`` (38 for
beta1 = 0.9; the README's "Inside Adam" gives the source). A run that breaks
this rule has not spiked yet, but will once its gradients shrink enough for
``v`` to collapse.

The rule describes only runs that are headed there: gradients shrinking
toward zero, as when a network memorises or interpolates its data. Gradient
noise keeps ``v`` far above ``eps**2`` on most real models (a language model
with dropout, a classifier on mini-batches), and the rule then says nothing
about them. So a run is warned only when its telemetry shows it heading for
the eps-dominated regime (:func:`eps_regime`): already in it (eps above
the median ``sqrt(v_hat)``), ``sqrt(v_hat)`` falling steadily over the
second half of the run, or a measurable share of coordinates at or below
eps while it falls at all. Otherwise the reason reports the
preconditioned sharpness, the top eigenvalue of ``P^-1 H`` with Adam's own
preconditioner ``P = sqrt(v_hat) + eps``, against ``38 / lr``: the adaptive
edge of stability that Adam trains at, informative and
never penalised. Both are judged at the largest learning rate the schedule
reaches, not the last one (a decayed schedule ends near zero and would pass
any rule).

Pure: numbers in, a verdict and a one-line reason out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

#: A run heads for the eps-dominated regime when the median ``sqrt(v_hat) / eps`` fell by this
#: factor or more over the second half of the run ...
FALL_FACTOR = 1.5
#: ... or when at least this share of its coordinates is at or below eps (``eps_share``) at the last
#: sample and the median fell by :data:`DRIFT_FACTOR` or more: gradient noise that holds ``v`` up
#: leaves such coordinates where they are.
NEAR_SHARE = 0.01
DRIFT_FACTOR = 1.1


@dataclasses.dataclass(frozen=True)
class EarlyWarning:
    """Whether the eps-dominated rule is broken by a run headed there, by how much, and why in one line."""

    predicted_unstable: bool
    ratio: float  # lr * lambda_max / eps over the bound; above 1 breaks the rule
    reason: str

    def to_dict(self) -> dict:
        return {"predicted_unstable": self.predicted_unstable, "ratio": self.ratio if math.isfinite(self.ratio) else None, "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class EpsRegime:
    """Whether a run is heading for the eps-dominated regime, and the telemetry that says so.

    ``heading`` is ``None`` when there was no telemetry to tell.
    """

    heading: bool | None
    v_over_eps: float | None = None  # median sqrt(v_hat) / eps at the last sample
    eps_share: float | None = None  # share of coordinates with sqrt(v_hat) near or below eps there
    fall: float | None = None  # how many times the median fell over the second half (1: flat)

    def describe(self) -> str:
        if self.heading is None:
            return "no telemetry of Adam's state"
        parts = []
        if self.v_over_eps is not None:
            parts.append(f"sqrt(v_hat) is {self.v_over_eps:.3g}x eps")
        if self.eps_share is not None:
            parts.append(f"{100 * self.eps_share:.3g}% of coordinates at or below eps")
        if self.fall is not None:
            parts.append(f"fell {self.fall:.3g}x over the second half" if self.fall > 1 else "not falling")
        return ", ".join(parts)


def stability_bound(beta1: float) -> float:
    """``(2 + 2*beta1) / (1 - beta1)``: the largest stable step x sharpness for momentum ``beta1``.

    Args:
        beta1: Adam's first-moment decay, in [0, 1).

    Example:
        >>> round(stability_bound(0.9), 6)
        38.0
    """
    return (2.0 + 2.0 * beta1) / (1.0 - beta1)


def eps_floor(lr: float, sharpness: float, beta1: float = 0.9) -> float:
    """Smallest eps for which Adam, once eps dominates ``sqrt(v)``, stays stable at this curvature.

    Args:
        lr: the learning rate (the largest the schedule reaches).
        sharpness: the top Hessian eigenvalue.
        beta1: Adam's first-moment decay.

    Example:
        >>> round(eps_floor(1e-3, 380.0), 6)
        0.01
    """
    return lr * sharpness / stability_bound(beta1)


def eps_regime(telemetry: Sequence[Mapping[str, float]], steps: int) -> EpsRegime:
    """Read the run's telemetry samples: is it heading for the eps-dominated regime?

    The fall is the median ``v_over_eps`` at the first sample of the second
    half of the run over the one at the last. Heading when the last sample
    is already in the regime (median ``v_over_eps`` at most 1), when the fall
    is :data:`FALL_FACTOR` or more (shrinking gradients, as in memorisation),
    or when :data:`NEAR_SHARE` of the coordinates are at or below eps and the
    fall is :data:`DRIFT_FACTOR` or more.

    Args:
        telemetry: the trainer's samples, each with ``step`` and, for an
            Adam-family optimizer, ``v_over_eps`` and ``eps_share``.
        steps: the run's step budget.

    Example:
        >>> eps_regime([{"step": 149, "v_over_eps": 2e4, "eps_share": 0.0},
        ...             {"step": 199, "v_over_eps": 1e4, "eps_share": 0.0}], 200).heading
        True
        >>> eps_regime([{"step": 149, "v_over_eps": 1e3, "eps_share": 0.002},
        ...             {"step": 199, "v_over_eps": 1.2e3, "eps_share": 0.002}], 200).heading
        False
        >>> eps_regime([], 200).heading is None
        True
    """
    rows = [r for r in telemetry if _finite(r.get("v_over_eps"))]
    if not rows:
        return EpsRegime(None)
    last = rows[-1]
    share = last.get("eps_share")
    share = float(share) if _finite(share) else None
    late = [r for r in rows if r.get("step", 0) >= steps // 2]
    fall = None
    if len(late) >= 2 and late[-1]["v_over_eps"] > 0:
        fall = late[0]["v_over_eps"] / late[-1]["v_over_eps"]
    median = float(last["v_over_eps"])
    falling = fall is not None and fall >= FALL_FACTOR
    drifting = share is not None and share >= NEAR_SHARE and fall is not None and fall >= DRIFT_FACTOR
    return EpsRegime(median <= 1.0 or falling or drifting, median, share, fall)


def predict(
    lr: float,
    eps: float,
    beta1: float,
    sharpness: float | None,
    v_over_eps: float | None = None,
    *,
    regime: EpsRegime | None = None,
    preconditioned: float | None = None,
) -> EarlyWarning:
    """Apply the rule ``lr / eps < (2 + 2*beta1) / ((1 - beta1) * lambda_max)`` to a run headed for it.

    Args:
        lr: the largest learning rate of the run's schedule.
        eps: Adam's eps.
        beta1: Adam's first-moment decay.
        sharpness: the top Hessian eigenvalue ``lambda_max`` at the end of the run.
        v_over_eps: the median ``sqrt(v_hat) / eps`` last seen, for the reason (``regime`` carries it too).
        regime: what :func:`eps_regime` read from the telemetry. A run not
            heading for the eps-dominated regime is never warned; without it
            (``None``, or a regime that could not be read) the rule is applied
            as it stands.
        preconditioned: the top eigenvalue of ``P^-1 H`` (Adam's
            preconditioner), reported against ``38 / lr`` when given.

    Example:
        >>> predict(1e-3, 1e-8, 0.9, 50.0).predicted_unstable
        True
        >>> predict(1e-3, 1e-2, 0.9, 50.0).predicted_unstable
        False
        >>> noisy = EpsRegime(False, v_over_eps=1800.0, eps_share=0.0, fall=0.9)
        >>> predict(1e-3, 1e-8, 0.9, 50.0, regime=noisy).predicted_unstable
        False
    """
    bound = stability_bound(beta1)
    edge = ""
    if preconditioned is not None and math.isfinite(preconditioned) and preconditioned > 0:
        edge = (f"; preconditioned sharpness {preconditioned:.3g} against {bound:.3g}/lr = {bound / lr:.3g} "
                f"({lr * preconditioned / bound:.2g} of the adaptive edge of stability)")
    if sharpness is None or not math.isfinite(sharpness):
        return EarlyWarning(False, math.nan, "no sharpness estimate: the rule could not be checked" + edge)
    if sharpness <= 0:
        return EarlyWarning(False, 0.0, f"top Hessian eigenvalue {sharpness:.3g} is not positive: no curvature to blow up on" + edge)
    ratio = (lr / eps) * sharpness / bound
    if regime is not None and regime.heading is not None:
        state = f"; {regime.describe()}"
    elif v_over_eps is not None and math.isfinite(v_over_eps):
        state = f"; sqrt(v_hat) is now {v_over_eps:.3g}x eps"
    else:
        state = ""
    broken = f"lr/eps = {lr / eps:.3g} exceeds {bound:.3g}/lambda_max = {bound / sharpness:.3g} (lambda_max {sharpness:.3g})"
    if ratio >= 1.0 and regime is not None and regime.heading is False:
        return EarlyWarning(
            False, ratio,
            f"{broken}, but the run is not heading for the eps-dominated regime{state}: the rule does not apply{edge}",
        )
    if ratio >= 1.0:
        return EarlyWarning(
            True, ratio,
            f"{broken}{state}: will blow up once v collapses; eps >= {eps_floor(lr, sharpness, beta1):.2g} avoids it{edge}",
        )
    return EarlyWarning(False, ratio, f"lr/eps = {lr / eps:.3g} is within {bound:.3g}/lambda_max = {bound / sharpness:.3g}{state}{edge}")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
