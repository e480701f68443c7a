"""The learning-rate schedule: warmup, then constant, cosine or linear decay.

``lr_factor`` is a pure function of the step (nanoGPT style) so that the
trainer, the population trainer and the exported ``--format python`` code all
run the very same schedule. Keep it free of imports other than ``math``: its
source is copied verbatim into exported code.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "constant",
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate before optimizer step ``step`` (0-based).

    Warmup rises linearly to 1 over ``warmup_steps`` steps, then the factor
    stays at 1 ("constant") or decays to ``min_factor`` at ``total_steps``
    along a half cosine ("cosine") or a straight line ("linear").

    Example:
        >>> lr_factor(0, 100, warmup_steps=9)
        0.1
        >>> lr_factor(100, 100, schedule="linear")
        0.0
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "cosine":
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_factor + (1.0 - min_factor) * (1.0 - progress)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of constant, cosine, linear")
