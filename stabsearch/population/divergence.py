"""``trainer.Run``'s divergence watch over K members' loss curves, read in blocks of ``[steps, K]``.

Members are independent: nothing reduces across them. Each member's losses
are read off the device in blocks, and a member that may have diverged is
judged by a :class:`~stabsearch.training.trainer.Run` itself, so it is frozen
at the very step where ``train_trial`` would have stopped it, with the same curve.

Example:
    >>> watch = DivergenceWatch([OptimConfig()] * 2, steps=32, chance=None, options=StabilityOptions())
    >>> block = np.ones((16, 2))
    >>> block[8:, 1] = np.nan  # the second member's loss turns NaN at step 8
    >>> watch.add(block, np.arange(2)), watch.diverged_at
    ([1], [None, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stabsearch.analysis.divergence import reference_loss
from stabsearch.analysis.options import StabilityOptions
from stabsearch.config import OptimConfig
from stabsearch.training.trainer import Run, StopRun


class DivergenceWatch:
    """``trainer.Run``'s divergence watch over K curves, read in blocks of ``[steps, K]``.

    The verdict is Run's own: a member is checked by a fresh :class:`Run`
    fed its whole curve so far in one block. That finds what Run, fed block
    by block, finds at this block: the earliest run of high values complete
    by now (none was complete before, or the member would be frozen), with
    the same ``L0``, noise estimate and warmup. Only members that can have
    diverged in this block are checked: a non-finite value, or one above
    ``diverge_factor * max(L0, chance)``, the least margin ``divergence_step``
    allows. The others cost one vectorized comparison.

    Args:
        configs: one per member.
        steps: the run's horizon.
        chance: the loss of guessing (``log(classes)``), or ``None``.
        options: the thresholds ``Run`` judges by.
    """

    def __init__(self, configs: Sequence[OptimConfig], steps: int, chance: float | None, options: StabilityOptions) -> None:
        self.configs = list(configs)
        self.steps = steps
        self.options = options
        self.chance = chance
        self.curves = np.full((min(steps, 4096), len(configs)), np.nan)  # grown as needed: steps may be huge
        self.ends = np.full(len(configs), steps)  # length of each member's curve
        self.diverged_at: list[int | None] = [None] * len(configs)
        self.nonfinite: dict[int, int] = {}  # member -> step where its weights turned non-finite under a finite loss
        self.initial = np.full(len(configs), np.inf)  # L0 once `head` values are in; inf before (Run's rule)
        self.count = 0

    def add(self, block: np.ndarray, members: np.ndarray) -> list[int]:
        """Record ``block`` (``[n, len(members)]``) for ``members``; return the rows that diverged in it."""
        start, self.count = self.count, self.count + block.shape[0]
        if self.count > self.curves.shape[0]:
            grown = np.full((min(self.steps, 2 * self.count), self.curves.shape[1]), np.nan)
            grown[:start] = self.curves[:start]
            self.curves = grown
        self.curves[start : self.count, members] = block
        head = self.options.head
        if self.count >= head and start < head:
            for i in members:
                base = reference_loss(self.curves[: self.count, i], head=head, cap=self.options.start_cap)
                self.initial[i] = np.nan_to_num(base, nan=np.inf)
        base = np.fmax(self.initial[members], -np.inf if self.chance is None else self.chance)
        limit = base + (self.options.diverge_factor - 1.0) * np.abs(base)
        suspects = np.flatnonzero((~np.isfinite(block) | (block > limit[None, :])).any(axis=0))
        diverged = []
        for row in suspects.tolist():
            i = int(members[row])
            found = self._run_verdict(i)
            if found is not None:
                self.diverged_at[i], self.ends[i] = found, self.count
                diverged.append(row)
        return diverged

    def add_nonfinite(self, hidden: dict[int, int], members: np.ndarray, diverged: list[int]) -> list[int]:
        """``diverged`` and the rows whose weights a sample found non-finite (row -> step) while the loss hid it.

        Such a row diverged at the sampled step (``Run.sample_telemetry``'s
        rule), unless the loss showed a divergence earlier; its curve ends there.
        """
        for row, step in hidden.items():
            i = int(members[row])
            if row not in diverged or self.diverged_at[i] > step:  # the loss hid it: stop where the sample saw it
                self.diverged_at[i], self.ends[i] = step, step + 1
                self.nonfinite[i] = step
                diverged = sorted({*diverged, row})
        return diverged

    def curve(self, i: int) -> np.ndarray:
        """Member ``i``'s losses as far as it trained (a copy)."""
        return self.curves[: min(self.ends[i], self.count), i].copy()

    def _run_verdict(self, i: int) -> int | None:
        run = Run(self.configs[i], steps=self.steps, seed=0, device=torch.device("cpu"), chance_loss=self.chance,
                  options=self.options, block=self.count)
        try:
            for value in self.curves[: self.count, i].tolist():
                run.log(value)
        except StopRun:
            pass
        return run.diverged_at
