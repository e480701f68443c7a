"""Write a recommendation as YAML, JSON, TOML, or Python code that builds it.

All four carry the same values. The Python output reuses the source of
:func:`stabsearch.schedule.lr_factor`, so production runs the schedule the
search measured, and carries the evidence in a comment above the code.

No value is ever written raw: the serializers quote them, and the Python
output writes each through :func:`json.dumps` (in comments) or
:func:`repr` of a plain float or int (in code), so a stored string holding a
newline cannot become a line of code. Non-finite numbers become null, which
TOML leaves out.
"""

from __future__ import annotations

import inspect
import json
import math
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
        return [_drop_none(v) for v in value if v is not None]
    return value


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _comment(value: Any) -> str:
    """``value`` as one line of JSON: quotes and escapes every string, so nothing in it ends the comment."""
    return json.dumps(value, default=str, ensure_ascii=True)


def format_recommendation(rec: Recommendation, fmt: str) -> str:
    """``rec`` in format ``fmt`` (one of :data:`FORMATS`)."""
    data = _finite(rec.to_dict())
    if fmt == "json":
        return json.dumps(data, indent=2, allow_nan=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    if fmt == "toml":
        return tomli_w.dumps(_drop_none(data))  # TOML has no null
    if fmt == "python":
        return _python(rec)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _python(rec: Recommendation) -> str:
    data = _finite(rec.to_dict())
    c = rec.config
    ev = data["evidence"]
    evidence = "\n".join(f"#   {k if str(k).isidentifier() else _comment(k)}: {_comment(v)}" for k, v in ev.items())
    cls = {"adam": "Adam", "adamw": "AdamW"}[c.optimizer]
    sched = data["schedule"]
    total = int(sched.get("total_steps", rec.total_steps))
    lr, beta1, beta2, eps, wd, warmup, floor = (
        float(v) for v in (c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, c.warmup, c.min_lr_factor)
    )
    return f'''# Optimizer settings recommended by stabsearch for study {_comment(str(rec.study))}.
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
        lr={lr!r},
        betas=({beta1!r}, {beta2!r}),
        eps={eps!r},
        weight_decay={wd!r},
    )
    warmup = round({warmup!r} * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total_steps, warmup, {str(c.schedule)!r}, {floor!r}),
    )
    return optimizer, scheduler


if __name__ == "__main__":
    optimizer, scheduler = build_optimizer(torch.nn.Linear(4, 1))
    print(optimizer)
'''
