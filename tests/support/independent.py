"""A training loop and a pass rule written without stabsearch, to check what it recommends."""

from __future__ import annotations

import math

import torch


def schedule_factor(step: int, total: int, warmup: int, name: str) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1.0 - progress}[name]


def train(module, rec: dict, steps: int, seed: int) -> tuple[list[float], torch.nn.Module]:
    """Train a model module with a recommendation dict (the `recommend --format json` output)."""
    torch.manual_seed(seed)
    model = module.model()
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[rec["optimizer"]]
    opt = cls(model.parameters(), lr=rec["lr"], betas=tuple(rec["betas"]), eps=rec["eps"], weight_decay=rec["weight_decay"])
    warmup = round(rec["schedule"]["warmup_fraction"] * steps)
    losses: list[float] = []
    data = iter(module.batches(seed))
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = rec["lr"] * schedule_factor(step, steps, warmup, rec["schedule"]["name"])
        try:
            batch = next(data)
        except StopIteration:
            data = iter(module.batches(seed))
            batch = next(data)
        loss = module.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
    return losses, model


def spiked_or_diverged(losses: list[float], steps: int, floor: float = 1e-3) -> str | None:
    """A reason if the run diverged, or if after the first 10% a loss ever rose 10x above the running
    minimum to more than ``floor`` times the first loss (wiggles near zero don't count). Meant for full-batch
    runs, where every step sees the same data and one value is a real measurement, not a hard batch."""
    if len(losses) < steps or not all(math.isfinite(v) for v in losses):
        return f"diverged at step {len(losses) - 1}"
    running = math.inf
    floor = floor * losses[0]
    for i, v in enumerate(losses):
        if i >= steps // 10 and v > 10 * running and v > floor:
            return f"spike at step {i}: {v:.3g} vs running min {running:.3g}"
        running = min(running, v)
    return None
