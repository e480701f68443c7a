"""Loss curves read back from the study's artifact store, and thinned for a figure.

Each trial's curve is a CSV in the storage's artifact folder, named by the
trial's ``curve_artifact`` attribute. A curve too long to draw point by point
is thinned to the minimum and maximum of each slice, so spikes survive.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stabsearch.study.trial_attrs import CURVE_ARTIFACT

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

#: Loss curves are thinned to a min/max envelope of this many buckets (spikes survive).
CURVE_BUCKETS = 600


def read_curve(trial: FrozenTrial, artifacts_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, losses) from a trial's curve artifact, or None when it has none or the file is gone.

    Args:
        trial: the trial; its ``curve_artifact`` attribute names the file (letters, digits and ``-`` only).
        artifacts_dir: the storage's artifact folder (:attr:`stabsearch.study.storage.Storage.artifacts_dir`).

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = (Path(folder) / "curve-1").write_text("step,loss\\n0,2.0\\n5,1.5\\n")
        ...     steps, losses = read_curve(SimpleNamespace(user_attrs={"curve_artifact": "curve-1"}), Path(folder))
        ...     gone = read_curve(SimpleNamespace(user_attrs={"curve_artifact": "curve-2"}), Path(folder))
        >>> steps.tolist(), losses.tolist(), gone
        ([0, 5], [2.0, 1.5], None)
    """
    from stabsearch.analysis.loss_log import read_loss_log
    from stabsearch.errors import UsageError

    artifact = trial.user_attrs.get(CURVE_ARTIFACT)
    if not artifact or not re.fullmatch(r"[0-9A-Za-z-]+", str(artifact)):
        return None
    path = Path(artifacts_dir) / str(artifact)
    try:
        log = read_loss_log(path)
    except UsageError:
        return None
    steps = log.steps if log.steps is not None else np.arange(len(log.losses))
    return steps, log.losses


def envelope(steps: np.ndarray, values: np.ndarray, buckets: int = CURVE_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """Thin a long curve to the min and max of each of ``buckets`` slices, in step order (keeps spikes).

    Example:
        >>> s, v = envelope(np.arange(10), np.arange(10.0), buckets=2)
        >>> s.tolist(), v.tolist()
        ([0, 4, 5, 9], [0.0, 4.0, 5.0, 9.0])
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if len(values) <= 2 * buckets:
        return steps, values
    keep: list[int] = []
    for chunk in np.array_split(np.arange(len(values)), buckets):
        part = values[chunk]
        finite = np.isfinite(part)
        if not finite.any():
            keep.append(int(chunk[0]))
            continue
        masked = np.where(finite, part, np.nan)
        lo, hi = int(chunk[np.nanargmin(masked)]), int(chunk[np.nanargmax(masked)])
        keep.extend(sorted({lo, hi}))
        if not finite.all():  # keep where it broke
            keep.append(int(chunk[np.argmin(finite)]))
    idx = np.unique(np.array(keep))
    return steps[idx], values[idx]

