"""One population member's loss curve, and ``trainer.Run``'s checks on it, block by block.

A member's losses are read off the device in blocks (16 steps on the CPU,
64 on a GPU, as :class:`stabsearch.training.trainer.Run` reads them). At the
end of each block :meth:`MemberCurve.flush` gives Run's divergence verdict
and :meth:`MemberCurve.progress` Run's progress report, so a member stops
at the very step where ``train_trial`` would have stopped it, with the same
curve, and its median rule hears the same reports.

Example:
    >>> curve = MemberCurve(OptimConfig(), steps=32, chance=None, options=StabilityOptions())
    >>> block = np.ones(16)
    >>> block[8:] = np.nan  # the loss turns NaN at step 8
    >>> curve.extend(block)
    >>> curve.flush()
    8
"""

from __future__ import annotations

import numpy as np
import torch

from stabsearch.analysis.divergence import reference_loss
from stabsearch.analysis.options import StabilityOptions
from stabsearch.config import OptimConfig
from stabsearch.training.trainer import Run, StopRun


class MemberCurve:
    """One member's losses and Run's verdict on them, checked at each flush.

    The verdict is Run's own: at a flush whose block may hold a divergence
    (a non-finite value, or one above ``diverge_factor * max(L0, chance)``,
    the least margin ``divergence_step`` allows) the member is judged by a
    fresh :class:`Run` fed its whole curve so far in one block. That finds
    what Run, fed block by block, finds at this flush: the earliest run of
    high values complete by now (none was complete before, or the member
    would have stopped), with the same ``L0``, noise estimate and warmup.
    Other blocks cost one comparison.

    Args:
        config: the member's configuration (its warmup).
        steps: the member's horizon.
        chance: the loss of guessing (``log(classes)``), or ``None``.
        options: the thresholds ``Run`` judges by.
    """

    def __init__(self, config: OptimConfig, steps: int, chance: float | None, options: StabilityOptions) -> None:
        self.config, self.steps, self.chance, self.options = config, steps, chance, options
        self.values = np.full(min(steps, 4096), np.nan)  # grown as needed: steps may be huge
        self.count = 0  # values recorded
        self.flushed = 0  # values checked
        self.initial = np.inf  # L0 once `head` values are in; inf before (Run's rule)
        self.diverged_at: int | None = None

    def extend(self, block: np.ndarray) -> None:
        """Record the next values (not checked until :meth:`flush`)."""
        end = self.count + block.size
        if end > self.values.size:
            grown = np.full(max(end, min(self.steps, 2 * self.values.size)), np.nan)
            grown[: self.count] = self.values[: self.count]
            self.values = grown
        self.values[self.count : end] = block
        self.count = end

    def cut(self, length: int) -> None:
        """Forget the values past ``length`` (a sample saw the run diverge there: Run stops at once)."""
        self.count = min(self.count, length)

    @property
    def losses(self) -> np.ndarray:
        """The curve as far as it trained (a copy)."""
        return self.values[: self.count].copy()

    def flush(self) -> int | None:
        """Check the values since the last flush; returns (and records) where the curve diverged, if it did."""
        start, self.flushed = self.flushed, self.count
        head = self.options.head
        if self.count >= head and start < head:
            base = reference_loss(self.values[: self.count], head=head, cap=self.options.start_cap)
            self.initial = float(np.nan_to_num(base, nan=np.inf))
        base = max(self.initial, -np.inf if self.chance is None else self.chance)
        limit = base + (self.options.diverge_factor - 1.0) * abs(base)
        block = self.values[start : self.count]
        if not (~np.isfinite(block) | (block > limit)).any():
            return None
        run = Run(self.config, steps=self.steps, seed=0, device=torch.device("cpu"), chance_loss=self.chance,
                  options=self.options, block=max(1, self.count))
        try:
            for value in self.values[: self.count].tolist():
                run.log(value)
        except StopRun:
            pass
        self.diverged_at = run.diverged_at
        return self.diverged_at

    def progress(self, block: int, every: int, start: int) -> tuple[int, float] | None:
        """Run's progress report for the flush that began at value ``start``: (step, median of the last block) or None.

        Example:
            >>> curve = MemberCurve(OptimConfig(), steps=64, chance=None, options=StabilityOptions())
            >>> curve.extend(np.arange(16.0))
            >>> curve.progress(block=16, every=10, start=0)  # the report at step 10: the median of values 0..9
            (10, 4.5)
        """
        mark = (self.count // every) * every
        if mark > start and mark > 0:
            recent = self.values[max(0, mark - block) : mark]
            recent = recent[np.isfinite(recent)]
            if recent.size:
                return mark, float(np.median(recent))
        return None
