"""Build the ``torch.optim`` optimizer and scheduler for a configuration."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import partial

import torch

from stabsearch.config import OPTIMIZER_CLASSES, OptimConfig
from stabsearch.schedule import lr_factor


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: ``weight_decay`` for most parameters, none for biases and normalisation weights.

    Left out of decay, as ``transformers.Trainer`` leaves them out: parameters
    whose lowercased name matches ``bias``, ``layernorm``, ``rmsnorm`` or a
    ``norm`` component, and every parameter of a normalisation layer
    (LayerNorm, GroupNorm, RMSNorm, BatchNorm, InstanceNorm). Its source is
    copied verbatim into exported code, so keep its imports to ``re`` and ``torch``.

    Args:
        model: the module whose parameters to group (in ``named_parameters`` order).
        weight_decay: the decay of the first group.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        >>> [len(g["params"]) for g in decay_groups(net, 0.1)], [g["weight_decay"] for g in decay_groups(net, 0.1)]
        ([1, 3], [0.1, 0.0])
    """
    patterns = [re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")]
    norm_layers = tuple(t for t in (torch.nn.LayerNorm, torch.nn.GroupNorm, getattr(torch.nn, "RMSNorm", None),
                                    torch.nn.modules.batchnorm._NormBase) if t is not None)
    in_norm_layer = {id(p) for m in model.modules() if isinstance(m, norm_layers) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        skip = id(param) in in_norm_layer or any(p.search(name.lower()) for p in patterns)
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer_params(model_or_params: torch.nn.Module | Iterable, config: OptimConfig) -> Iterable:
    """What the optimizer of ``config`` trains: :func:`decay_groups` for a model when ``config.no_decay``, else the parameters.

    Example:
        >>> len(optimizer_params(torch.nn.Linear(2, 1), OptimConfig(no_decay=True)))
        2
    """
    if isinstance(model_or_params, torch.nn.Module):
        if config.no_decay:
            return decay_groups(model_or_params, config.weight_decay)
        return model_or_params.parameters()
    return model_or_params


def build_optimizer(params: Iterable[torch.nn.Parameter] | Iterable[dict] | torch.nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """The Adam or AdamW optimizer that ``config`` describes, for a model (grouped per ``config.no_decay``) or parameters.

    Example:
        >>> opt = build_optimizer(torch.nn.Linear(2, 1).parameters(), OptimConfig(lr=0.01))
        >>> type(opt).__name__, opt.param_groups[0]["lr"]
        ('Adam', 0.01)
    """
    cls = getattr(torch.optim, OPTIMIZER_CLASSES[config.optimizer])
    return cls(optimizer_params(params, config), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


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
