"""The optimizer settings one trial trains with.

A plain frozen dataclass, so the trainer, the analysis, the recommendation and
the exporters share one description of "a configuration" without any of them
knowing about Optuna.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from stabsearch.schedule import SCHEDULES

OPTIMIZERS = ("adam", "adamw")
#: Training precisions: full float32, bfloat16 autocast, float16 autocast with a GradScaler.
PRECISIONS = ("32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule settings.

    ``warmup`` is a fraction of the run's steps, so that one configuration means
    the same thing at the search horizon and at a longer stress horizon.
    ``max_grad_norm`` clips the gradients' total norm before each step (``None``:
    no clipping). ``precision`` is ``"32"``, ``"bf16"`` (autocast) or ``"fp16"``
    (autocast and a ``GradScaler``). ``no_decay`` leaves biases and normalisation
    weights out of weight decay (:func:`stabsearch.training.optim.decay_groups`); the
    default ``False`` decays every parameter, as ``torch.optim`` does, and
    ``stabsearch run`` sets it from the module's ``NO_DECAY`` (default on).

    Example:
        >>> OptimConfig(lr=3e-4, eps=1e-6).betas
        (0.9, 0.999)
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    eps: float = 1e-8
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.0
    min_lr_factor: float = 0.0
    max_grad_norm: float | None = None
    precision: str = "32"
    no_decay: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not isinstance(self.no_decay, bool):
            raise ValueError(f"no_decay={self.no_decay!r} is not true or false")
        norm = self.max_grad_norm
        if norm is not None and (isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm <= 0):
            raise ValueError(f"max_grad_norm={norm!r} is out of range; a positive number, or None for no clipping")
        checks = {
            "lr": self.lr > 0,
            "eps": self.eps > 0,
            "beta1": 0 <= self.beta1 < 1,
            "beta2": 0 <= self.beta2 < 1,
            "weight_decay": self.weight_decay >= 0,
            "warmup": 0 <= self.warmup <= 0.5,
            "min_lr_factor": 0 <= self.min_lr_factor <= 1,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise ValueError(f"{name}={value!r} is out of range")

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def warmup_steps(self, total_steps: int) -> int:
        """Warmup length in optimizer steps for a run of ``total_steps``."""
        return int(round(self.warmup * total_steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "OptimConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in fields})
