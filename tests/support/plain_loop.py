"""A plain PyTorch training loop for model modules, with nothing of stabsearch in it.

The objective tests use it to show that each ready module fails with its
``FAILING`` settings and trains with its ``STABLE`` settings on its own,
whatever stabsearch does on top.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch


def make_optimizer(params: Any, settings: dict) -> torch.optim.Optimizer:
    """torch.optim.Adam or AdamW from a settings dict (constant lr, no warmup)."""
    kind = settings.get("optimizer", "adam")
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if kind not in classes:
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {kind!r}")
    return classes[kind](
        params,
        lr=settings["lr"],
        eps=settings["eps"],
        betas=(settings.get("beta1", 0.9), settings.get("beta2", 0.999)),
        weight_decay=settings.get("weight_decay", 0.0),
    )


def train_plain(
    module: ModuleType, settings: dict, steps: int, seed: int, *, return_model: bool = False
) -> list[float] | tuple[list[float], torch.nn.Module]:
    """Train ``module.model()`` for ``steps`` steps and return the loss of every step.

    Seeds torch with ``seed``, builds the model and the optimizer, and walks
    ``module.batches(seed)``, starting it again when it ends. Stops at the first
    non-finite loss (that loss is the last value of the list; nothing is padded).
    With ``return_model=True`` it returns ``(losses, model)``.
    """
    torch.manual_seed(seed)
    net = module.model()
    opt = make_optimizer(net.parameters(), settings)
    it = iter(module.batches(seed))
    losses: list[float] = []
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(module.batches(seed))
            batch = next(it)
        value = module.loss(net, batch)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
        if not math.isfinite(losses[-1]):
            break
    return (losses, net) if return_model else losses
