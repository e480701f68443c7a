"""Build the ``torch.optim`` optimizer and scheduler for a configuration."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch

from stabsearch.config import OptimConfig
from stabsearch.schedule import lr_factor

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_optimizer(params: Iterable[torch.nn.Parameter] | Iterable[dict], config: OptimConfig) -> torch.optim.Optimizer:
    """The Adam or AdamW optimizer that ``config`` describes.

    Example:
        >>> opt = build_optimizer(torch.nn.Linear(2, 1).parameters(), OptimConfig(lr=0.01))
        >>> type(opt).__name__, opt.param_groups[0]["lr"]
        ('Adam', 0.01)
    """
    cls = _OPTIMIZERS[config.optimizer]
    return cls(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that follows :func:`stabsearch.schedule.lr_factor` over ``total_steps``."""
    factor = partial(
        lr_factor,
        total_steps=total_steps,
        warmup_steps=config.warmup_steps(total_steps),
        schedule=config.schedule,
        min_factor=config.min_lr_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
