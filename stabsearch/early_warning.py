"""Warn before the late blow-up: Adam's eps-dominated stability rule.

Once ``sqrt(v_hat)`` falls well below eps, Adam is momentum SGD with step
``lr / eps``, and momentum SGD is stable only while the step times the top
Hessian eigenvalue stays under ``(2 + 2*beta1) / (1 - beta1)`` (38 for
beta1 = 0.9; Cohen et al. 2022). A run that breaks this rule has not spiked
yet, but will once its gradients shrink enough for ``v`` to collapse.
Pure: numbers in, a verdict and a one-line reason out.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class EarlyWarning:
    """Whether the eps-dominated rule is broken, by how much, and why in one line."""

    predicted_unstable: bool
    ratio: float  # lr * lambda_max / eps over the bound; above 1 breaks the rule
    reason: str

    def to_dict(self) -> dict:
        return {"predicted_unstable": self.predicted_unstable, "ratio": self.ratio if math.isfinite(self.ratio) else None, "reason": self.reason}


def stability_bound(beta1: float) -> float:
    """``(2 + 2*beta1) / (1 - beta1)``: the largest stable step x sharpness for momentum ``beta1``."""
    return (2.0 + 2.0 * beta1) / (1.0 - beta1)


def eps_floor(lr: float, sharpness: float, beta1: float = 0.9) -> float:
    """Smallest eps for which Adam, once eps dominates ``sqrt(v)``, stays stable at this curvature.

    Example:
        >>> round(eps_floor(1e-3, 380.0), 6)
        0.01
    """
    return lr * sharpness / stability_bound(beta1)


def predict(lr: float, eps: float, beta1: float, sharpness: float | None, v_over_eps: float | None = None) -> EarlyWarning:
    """Apply the rule ``lr / eps < (2 + 2*beta1) / ((1 - beta1) * lambda_max)``.

    Example:
        >>> predict(1e-3, 1e-8, 0.9, 50.0).predicted_unstable
        True
        >>> predict(1e-3, 1e-2, 0.9, 50.0).predicted_unstable
        False
    """
    if sharpness is None or not math.isfinite(sharpness):
        return EarlyWarning(False, math.nan, "no sharpness estimate: the rule could not be checked")
    if sharpness <= 0:
        return EarlyWarning(False, 0.0, f"top Hessian eigenvalue {sharpness:.3g} is not positive: no curvature to blow up on")
    ratio = (lr / eps) * sharpness / stability_bound(beta1)
    v = f"; sqrt(v_hat) is now {v_over_eps:.3g}x eps" if v_over_eps is not None and math.isfinite(v_over_eps) else ""
    if ratio >= 1.0:
        return EarlyWarning(
            True,
            ratio,
            f"lr/eps = {lr / eps:.3g} exceeds {stability_bound(beta1):.3g}/lambda_max = "
            f"{stability_bound(beta1) / sharpness:.3g} (lambda_max {sharpness:.3g}){v}: "
            f"will blow up once v collapses; eps >= {eps_floor(lr, sharpness, beta1):.2g} avoids it",
        )
    return EarlyWarning(
        False, ratio, f"lr/eps = {lr / eps:.3g} is within {stability_bound(beta1):.3g}/lambda_max = {stability_bound(beta1) / sharpness:.3g}{v}"
    )
