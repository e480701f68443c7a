"""The optimizer settings one trial trains with, and the facts every layer reads about them.

A plain frozen dataclass, so the trainer, the analysis, the recommendation and
the exporters share one description of "a configuration" without any of them
knowing about Optuna; beside it, the one table of optimizer names
(:data:`OPTIMIZER_CLASSES`) and of the bounds of each numeric setting
(:data:`BOUNDS`) that the search space, the trainer and the exporters read,
and the chance loss of a classification task (:func:`chance_loss`). Pure: no torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from stabsearch.schedule import SCHEDULES

#: Each optimizer a configuration may name, and its class in ``torch.optim``.
OPTIMIZER_CLASSES: dict[str, str] = {"adam": "Adam", "adamw": "AdamW"}
OPTIMIZERS = tuple(OPTIMIZER_CLASSES)
#: Training precisions: full float32, bfloat16 autocast, float16 autocast with a GradScaler.
PRECISIONS = ("32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class Bound:
    """The values a numeric setting may take: from ``low`` to ``high``, each end included or not.

    Example:
        >>> BOUNDS["beta2"].contains(0.999), BOUNDS["beta2"].contains(1.0), str(BOUNDS["beta2"])
        (True, False, '[0, 1)')
    """

    low: float
    high: float
    low_inclusive: bool
    high_inclusive: bool

    def contains(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        below = value <= self.high if self.high_inclusive else value < self.high
        return above and below

    def __str__(self) -> str:
        return f"{'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}{']' if self.high_inclusive else ')'}"


#: What every value of each numeric setting must respect (a search space's ranges and values too).
BOUNDS: dict[str, Bound] = {
    "lr": Bound(0.0, math.inf, False, False),
    "eps": Bound(0.0, math.inf, False, False),
    "beta1": Bound(0.0, 1.0, True, False),
    "beta2": Bound(0.0, 1.0, True, False),
    "weight_decay": Bound(0.0, math.inf, True, False),
    "warmup": Bound(0.0, 0.5, True, True),
    "min_lr_factor": Bound(0.0, 1.0, True, True),
    "max_grad_norm": Bound(0.0, math.inf, False, False),
}


def chance_loss(classes: int | None) -> float | None:
    """The cross-entropy of guessing among ``classes`` balanced classes, ``ln K``; None without a class count.

    Example:
        >>> round(chance_loss(10), 4), chance_loss(None)
        (2.3026, None)
    """
    return math.log(classes) if classes else None


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
        if norm is not None and (isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm)
                                 or not BOUNDS["max_grad_norm"].contains(norm)):
            raise ValueError(f"max_grad_norm={norm!r} is out of range; a positive number, or None for no clipping")
        for name, bound in BOUNDS.items():
            value = getattr(self, name)
            if name != "max_grad_norm" and (not bound.contains(value) or not math.isfinite(value)):
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
