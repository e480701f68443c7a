"""Read a loss log from any training run, for ``stabsearch analyze``.

Accepted: a CSV with a ``loss`` column (and optionally ``step``), such as the
curve artifacts stabsearch stores, or plain text with one number per line.
pandas does the parsing (imported when a file is read); this module only decides which shape a file has and
turns every problem into a one-line :class:`UsageError`.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np

from stabsearch.errors import UsageError
from stabsearch.inputs import read_user_file, shorten


@dataclasses.dataclass(frozen=True)
class LossLog:
    losses: np.ndarray
    steps: np.ndarray | None


def read_loss_log(path: str | Path) -> LossLog:
    """Losses (and steps, when the file has them) from ``path``.

    Args:
        path: the loss log; a CSV with a ``loss`` column (and optionally ``step``),
            or one number per line.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "log.csv")
        >>> _ = open(f, "w").write("step,loss\\n0,2.5\\n10,1.5\\n")
        >>> read_loss_log(f).losses.tolist(), read_loss_log(f).steps.tolist()
        ([2.5, 1.5], [0, 10])
    """
    import pandas as pd  # here, not at the top: importing the analysis loads no pandas

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    try:
        text = read_user_file(path, "loss log")
    except UsageError as exc:
        raise UsageError(str(exc).removeprefix("loss log ")) from None
    first = text.split("\n", 1)[0].strip()
    if not first:
        raise UsageError(f"{path}: the file is empty")
    try:
        float(first.split(",")[0])
        has_header = False
    except ValueError:
        has_header = True
    try:
        if has_header:
            frame = pd.read_csv(io.StringIO(text), skipinitialspace=True)
        else:
            frame = pd.read_csv(io.StringIO(text), header=None, names=["loss"], usecols=[0], skipinitialspace=True)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a CSV loss log ({shorten((str(exc).splitlines() or [''])[0])[1:-1]})") from None
    columns = {str(c).strip().lower(): c for c in frame.columns}
    if "loss" not in columns:
        raise UsageError(f"{path}: no 'loss' column (columns: {shorten(', '.join(map(str, frame.columns)))[1:-1]})")
    losses = pd.to_numeric(frame[columns["loss"]], errors="coerce")
    bad = losses.isna() & frame[columns["loss"]].notna() & ~frame[columns["loss"]].astype(str).str.strip().str.lower().isin(["nan", "inf", "-inf", "+inf"])
    if bad.any():
        row = int(bad.idxmax()) + (2 if has_header else 1)
        raise UsageError(f"{path}: line {row}: {shorten(frame[columns['loss']].iloc[int(bad.idxmax())])} is not a number")
    if losses.empty:
        raise UsageError(f"{path}: no loss values")
    steps = None
    if "step" in columns:
        step_values = pd.to_numeric(frame[columns["step"]], errors="coerce")
        if step_values.isna().any() or not step_values.is_monotonic_increasing or step_values.duplicated().any():
            raise UsageError(f"{path}: the 'step' column must hold increasing whole numbers")
        steps = step_values.to_numpy(dtype=np.int64)
    return LossLog(losses=losses.to_numpy(dtype=np.float64), steps=steps)
