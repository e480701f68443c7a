"""The probability that a run goes unstable, estimated from the trials around it (pure numpy).

The shading under each safe-region map is a Gaussian kernel estimate
(Nadaraya-Watson) in log10 space: a weighted share of the nearby trials that
went unstable, shrunk towards the study's overall share where trials are
sparse. It is a 2-D projection: every other parameter is averaged over.

Example:
    >>> import numpy as np
    >>> p = instability_probability(np.array([[0.1, 0.5], [0.9, 0.5]]), np.array([False, True]),
    ...                             np.array([[0.1, 0.5], [0.9, 0.5]]))
    >>> bool(p[0] < 0.5 < p[1])
    True
"""

from __future__ import annotations

import numpy as np

#: Kernel bandwidth, as a fraction of each map axis (in log10 units on log axes).
BANDWIDTH = 0.12
#: Pseudo-trials of the overall unstable share mixed into every estimate (shrinks sparse regions).
PRIOR_WEIGHT = 0.5


def instability_probability(
    points: np.ndarray, unstable: np.ndarray, grid: np.ndarray, *, bandwidth: float = BANDWIDTH, prior_weight: float = PRIOR_WEIGHT
) -> np.ndarray:
    """P(unstable) at each ``grid`` point from trials at ``points`` (both ``(n, 2)``, axes scaled to 0..1).

    A Nadaraya-Watson estimate with a Gaussian kernel, plus ``prior_weight``
    pseudo-trials at the overall unstable share, so a region with no trials
    reads as the study's base rate instead of 0 or 1.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    grid = np.asarray(grid, dtype=float).reshape(-1, 2)
    unstable = np.asarray(unstable, dtype=bool).reshape(-1)
    if len(points) != len(unstable):
        raise ValueError(f"points and unstable differ in length: {len(points)} != {len(unstable)}")
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    if len(points) == 0:
        return np.zeros(len(grid))
    base = float(unstable.mean())
    d2 = ((grid[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
    weights = np.exp(-0.5 * d2 / bandwidth**2)
    return (weights @ unstable.astype(float) + prior_weight * base) / (weights.sum(axis=1) + prior_weight)

