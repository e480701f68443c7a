"""Write a recommendation as YAML, JSON, TOML, Python code that builds it, or framework settings.

All carry the same values. ``hf`` prints ``transformers.TrainingArguments``
fields (JSON once the ``#`` comment lines are dropped) and says where
Trainer cannot build what the trial trained; ``lightning`` prints a
``configure_optimizers`` method and the ``lightning.Trainer`` arguments for
clipping and precision. The Python output reuses the source of
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

from stabsearch.study.recommend import Recommendation
from stabsearch.schedule import lr_factor

FORMATS = ("yaml", "json", "toml", "python", "hf", "lightning")


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
    if fmt == "hf":
        return _hf(rec)
    if fmt == "lightning":
        return _lightning(rec)
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
import re

import torch

TOTAL_STEPS = {total!r}  # the horizon the schedule decays over; set it to your run's length


{inspect.getsource(lr_factor).strip()}
{_groups_source(rec)}{_python_notes(rec)}

def build_optimizer(model: torch.nn.Module, total_steps: int = TOTAL_STEPS):
    """The recommended optimizer and its learning-rate scheduler (call scheduler.step() after each optimizer.step())."""
    optimizer = torch.optim.{cls}(
        {_params_expr(rec, "model")},
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


# --------------------------------------------------------------- decay groups, clipping, precision


def _params_expr(rec: Recommendation, model: str) -> str:
    """What the exported optimizer trains: the decay groups when the trial used them, else all parameters."""
    return f"decay_groups({model}, {rec.config.weight_decay!r})" if rec.config.no_decay else f"{model}.parameters()"


def _groups_source(rec: Recommendation) -> str:
    """:func:`stabsearch.training.optim.decay_groups`, verbatim, when the trial left biases and norms out of decay."""
    if not rec.config.no_decay:
        return ""
    from stabsearch.training.optim import decay_groups  # torch, only for an export that carries the groups

    return f"\n\n{inspect.getsource(decay_groups).strip()}\n"


def _python_notes(rec: Recommendation) -> str:
    """Clipping and precision as constants, with the lines that apply them in a plain loop."""
    c = rec.config
    lines = [
        f"\nMAX_GRAD_NORM = {c.max_grad_norm!r}  # before optimizer.step(): "
        + ("torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)" if c.max_grad_norm is not None else "no clipping"),
        f"PRECISION = {c.precision!r}  # " + {
            "32": "float32 throughout",
            "bf16": "forward under torch.autocast(device_type, dtype=torch.bfloat16)",
            "fp16": "forward under torch.autocast(device_type, dtype=torch.float16), with torch.amp.GradScaler",
        }[c.precision],
    ]
    return "\n".join(lines) + "\n"


def _comments(rec: Recommendation, title: str) -> list[str]:
    """The header and evidence as comment lines; every stored value written through ``json.dumps``."""
    lines = [f"# {title} recommended by stabsearch for study {json.dumps(rec.study)}.", "# Evidence:"]
    lines += [f"#   {json.dumps(str(k))[1:-1]}: {json.dumps(v, default=str)}" for k, v in rec.evidence.items()]
    return lines


# --------------------------------------------------------------- transformers.TrainingArguments

#: stabsearch's precisions as TrainingArguments flags.
_HF_PRECISION = {"32": (False, False), "bf16": (True, False), "fp16": (False, True)}


def hf_fields(rec: Recommendation) -> tuple[dict[str, Any], list[str]]:
    """``TrainingArguments`` fields for ``rec``, and notes on what Trainer does not reproduce exactly.

    Example:
        >>> from stabsearch.config import OptimConfig
        >>> fields, notes = hf_fields(Recommendation("s", OptimConfig(optimizer="adamw", lr=1e-3), 100, {}))
        >>> fields["learning_rate"], fields["lr_scheduler_type"], fields["max_grad_norm"]
        (0.001, 'constant', 0.0)
    """
    c = rec.config
    bf16, fp16 = _HF_PRECISION[c.precision]
    fields: dict[str, Any] = {
        "learning_rate": c.lr, "adam_epsilon": c.eps, "adam_beta1": c.beta1, "adam_beta2": c.beta2,
        "weight_decay": c.weight_decay, "optim": "adamw_torch",
        "max_grad_norm": 0.0 if c.max_grad_norm is None else c.max_grad_norm,  # 0: off (Trainer's default clips at 1.0)
        "bf16": bf16, "fp16": fp16,
    }
    notes: list[str] = []
    kind, kwargs, schedule_notes = _hf_schedule(rec)
    fields["lr_scheduler_type"] = kind
    if kwargs:
        fields["lr_scheduler_kwargs"] = kwargs
    fields["warmup_steps"] = c.warmup  # a float below 1: a fraction of max_steps, as the trial's warmup was
    notes += schedule_notes
    if c.optimizer == "adam" and c.weight_decay > 0:
        notes.append("NO TRAINER EQUIVALENT: the trial used Adam with L2 weight decay (added to the gradient); "
                     "Trainer's optimizers decay decoupled (AdamW), so optim=adamw_torch is not the optimizer the trial used")
    if c.weight_decay > 0 and not c.no_decay:
        notes.append("NO TRAINER EQUIVALENT: the trial decayed every parameter; Trainer always leaves biases and norm weights out")
    if c.weight_decay > 0 and c.no_decay:
        notes.append("decay groups: Trainer leaves out biases, LayerNorm layers and parameters named *norm*; stabsearch also left "
                     "out other normalisation layers (BatchNorm, GroupNorm, RMSNorm) of the model")
    return fields, notes


def _hf_schedule(rec: Recommendation) -> tuple[str, dict[str, Any], list[str]]:
    """Trainer's ``lr_scheduler_type`` (and kwargs) for the trial's schedule, and what differs."""
    c = rec.config
    warm = c.warmup_steps(rec.total_steps)
    notes = []
    if c.warmup > 0:
        notes.append(f"warmup_steps={c.warmup!r} is a fraction of max_steps ({warm} of the search's {rec.total_steps}); "
                     "Trainer ramps as step/warmup from 0, stabsearch as (step+1)/(warmup+1): the same ramp one step earlier")
    constant = c.schedule == "constant" or c.min_lr_factor >= 1.0
    if constant:
        return ("constant_with_warmup" if c.warmup > 0 else "constant"), {}, notes
    notes.append(f"the decay runs over Trainer's max_steps; the search measured it over {rec.total_steps} steps")
    if c.schedule == "cosine":
        if c.min_lr_factor > 0:
            return "cosine_with_min_lr", {"min_lr_rate": c.min_lr_factor}, notes
        return "cosine", {}, notes
    if c.min_lr_factor > 0:  # a straight line to the floor: Trainer's polynomial decay of power 1
        return "polynomial", {"lr_end": c.lr * c.min_lr_factor, "power": 1.0}, notes
    return "linear", {}, notes


def _hf(rec: Recommendation) -> str:
    fields, notes = hf_fields(rec)
    lines = _comments(rec, "transformers.TrainingArguments fields")
    lines += ["# Drop the # lines and this is JSON: TrainingArguments(output_dir=..., **json.loads(text)),",
              "# or HfArgumentParser(TrainingArguments).parse_json_file once output_dir is added."]
    lines += [f"# NOTE: {n}" for n in notes]
    return "\n".join(lines) + "\n" + json.dumps(fields, indent=2) + "\n"


# --------------------------------------------------------------- lightning configure_optimizers

_LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def _lightning(rec: Recommendation) -> str:
    c = rec.config
    cls = {"adam": "Adam", "adamw": "AdamW"}[c.optimizer]
    trainer_kwargs: dict[str, Any] = {"precision": _LIGHTNING_PRECISION[c.precision]}
    if c.max_grad_norm is not None:
        trainer_kwargs.update(gradient_clip_val=c.max_grad_norm, gradient_clip_algorithm="norm")
    header = "\n".join(_comments(rec, "A LightningModule.configure_optimizers"))
    total = rec.total_steps
    return f'''{header}
# Paste configure_optimizers into your LightningModule (and lr_factor{", decay_groups" if c.no_decay else ""} beside it);
# build the Trainer with lightning.Trainer(..., **TRAINER_KWARGS).
import math
import re

import torch

TOTAL_STEPS = {total!r}  # the horizon the schedule decays over; set it to your run's max_steps
TRAINER_KWARGS = {trainer_kwargs!r}


{inspect.getsource(lr_factor).strip()}
{_groups_source(rec)}

def configure_optimizers(self):
    """The recommended optimizer, and its schedule stepped after every optimizer step."""
    optimizer = torch.optim.{cls}(
        {_params_expr(rec, "self")},
        lr={c.lr!r},
        betas=({c.beta1!r}, {c.beta2!r}),
        eps={c.eps!r},
        weight_decay={c.weight_decay!r},
    )
    warmup = round({c.warmup!r} * TOTAL_STEPS)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, TOTAL_STEPS, warmup, {c.schedule!r}, {c.min_lr_factor!r}),
    )
    return {{"optimizer": optimizer, "lr_scheduler": {{"scheduler": scheduler, "interval": "step", "frequency": 1}}}}
'''
