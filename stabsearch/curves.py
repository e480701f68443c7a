"""Read a loss log from any training run, for ``stabsearch analyze``.

Accepted: a CSV with a ``loss`` column (and optionally ``step``), such as the
curve artifacts stabsearch stores, or plain text with one number per line.
pandas does the parsing; this module only decides which shape a file has and
turns every problem into a one-line :class:`UsageError`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from stabsearch.errors import UsageError


@dataclasses.dataclass(frozen=True)
class LossLog:
    losses: np.ndarray
    steps: np.ndarray | None


def read_loss_log(path: str | Path) -> LossLog:
    """Losses (and steps, when the file has them) from ``path``.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "log.csv")
        >>> _ = open(f, "w").write("step,loss\\n0,2.5\\n10,1.5\\n")
        >>> read_loss_log(f).losses.tolist(), read_loss_log(f).steps.tolist()
        ([2.5, 1.5], [0, 10])
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        first = path.open(encoding="utf-8").readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it as text ({exc.__class__.__name__})") from None
    if not first:
        raise UsageError(f"{path}: the file is empty")
    try:
        float(first.split(",")[0])
        has_header = False
    except ValueError:
        has_header = True
    try:
        if has_header:
            frame = pd.read_csv(path, skipinitialspace=True)
        else:
            frame = pd.read_csv(path, header=None, names=["loss"], usecols=[0], skipinitialspace=True)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a CSV loss log ({str(exc).splitlines()[0]})") from None
    columns = {c.strip().lower(): c for c in frame.columns}
    if "loss" not in columns:
        raise UsageError(f"{path}: no 'loss' column (columns: {', '.join(map(str, frame.columns))})")
    losses = pd.to_numeric(frame[columns["loss"]], errors="coerce")
    bad = losses.isna() & frame[columns["loss"]].notna() & ~frame[columns["loss"]].astype(str).str.strip().str.lower().isin(["nan", "inf", "-inf", "+inf"])
    if bad.any():
        row = int(bad.idxmax()) + (2 if has_header else 1)
        raise UsageError(f"{path}: line {row}: {frame[columns['loss']].iloc[int(bad.idxmax())]!r} is not a number")
    if losses.empty:
        raise UsageError(f"{path}: no loss values")
    steps = None
    if "step" in columns:
        step_values = pd.to_numeric(frame[columns["step"]], errors="coerce")
        if step_values.isna().any() or not step_values.is_monotonic_increasing or step_values.duplicated().any():
            raise UsageError(f"{path}: the 'step' column must hold increasing whole numbers")
        steps = step_values.to_numpy(dtype=np.int64)
    return LossLog(losses=losses.to_numpy(dtype=np.float64), steps=steps)
