"""Write a recommendation as YAML, JSON, TOML, or Python code that builds it.

All four carry the same values. The Python output reuses the source of
:func:`stabsearch.schedule.lr_factor`, so production runs the schedule the
search measured, and carries the evidence in a comment above the code.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import tomli_w
import yaml

from stabsearch.recommend import Recommendation
from stabsearch.schedule import lr_factor

FORMATS = ("yaml", "json", "toml", "python")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def format_recommendation(rec: Recommendation, fmt: str) -> str:
    """``rec`` in format ``fmt`` (one of :data:`FORMATS`)."""
    data = rec.to_dict()
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    if fmt == "toml":
        return tomli_w.dumps(_drop_none(data))  # TOML has no null
    if fmt == "python":
        return _python(rec)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _python(rec: Recommendation) -> str:
    data = rec.to_dict()
    c = rec.config
    ev = data["evidence"]
    evidence = "\n".join(f"#   {k}: {v}" for k, v in ev.items())
    cls = {"adam": "Adam", "adamw": "AdamW"}[c.optimizer]
    sched = data["schedule"]
    total = sched.get("total_steps", rec.total_steps)
    return f'''# Optimizer settings recommended by stabsearch for study {rec.study!r}.
# Evidence:
{evidence}
import math

import torch

TOTAL_STEPS = {total!r}  # the horizon the schedule decays over; set it to your run's length


{inspect.getsource(lr_factor).strip()}


def build_optimizer(model: torch.nn.Module, total_steps: int = TOTAL_STEPS):
    """The recommended optimizer and its learning-rate scheduler (call scheduler.step() after each optimizer.step())."""
    optimizer = torch.optim.{cls}(
        model.parameters(),
        lr={c.lr!r},
        betas=({c.beta1!r}, {c.beta2!r}),
        eps={c.eps!r},
        weight_decay={c.weight_decay!r},
    )
    warmup = round({c.warmup!r} * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total_steps, warmup, {c.schedule!r}, {c.min_lr_factor!r}),
    )
    return optimizer, scheduler


if __name__ == "__main__":
    optimizer, scheduler = build_optimizer(torch.nn.Linear(4, 1))
    print(optimizer)
'''
