"""K members' weights stacked along a new first dimension, and what one plain step says to stack.

The model and its loss are bound into one module (:class:`_Bound`) so that
``torch.func.functional_call`` can swap in one member's tensors; one plain
forward and backward on the first batch (:func:`_plan`) finds the parameters
that get a gradient and the buffers the forward writes (BatchNorm's running
statistics); :func:`_stack` makes K copies of exactly those, and
:func:`stack_batches` stacks one batch per member where members see different batches.

Example:
    >>> bound = _Bound(torch.nn.Linear(3, 2), lambda model, x: model(x).sum())
    >>> plan = _plan(bound, torch.ones(4, 3))
    >>> plan.trainable
    ('model.weight', 'model.bias')
    >>> params, buffers = _stack(bound, plan, 5)
    >>> tuple(params["model.weight"].shape), buffers
    ((5, 2, 3), {})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state

Params = dict[str, torch.Tensor]


class _Bound(torch.nn.Module):
    """``loss(model, batch)`` as a module, so ``functional_call`` can swap in one member's tensors."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[Any, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self._loss(self.model, batch)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one plain forward/backward on the first batch says about the model."""

    trainable: tuple[str, ...]  # parameters that get a gradient (torch.optim skips the others)
    mutable: tuple[str, ...]  # buffers the forward changes in place (BatchNorm statistics): stacked per member


def _plan(bound: _Bound, batch: Any) -> _Plan:
    """Which parameters get gradients and which buffers the forward writes, without touching ``bound``."""
    named = {n: p for n, p in bound.named_parameters() if p.requires_grad}
    params = {n: p.detach().clone().requires_grad_(True) for n, p in named.items()}
    originals = dict(bound.named_buffers())
    buffers = {n: b.detach().clone() for n, b in originals.items()}
    versions = {n: b._version for n, b in buffers.items()}
    loss = functional_call(bound, (params, buffers), (batch,))
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"loss(model, batch) must return a scalar tensor, got {_describe(loss)}")
    grads = torch.autograd.grad(loss.reshape(()), list(params.values()), allow_unused=True) if params else ()
    trainable = tuple(n for n, g in zip(params, grads) if g is not None)
    # Some kernels (BatchNorm's running statistics) write without bumping the version: compare values too.
    mutable = tuple(
        n for n, b in buffers.items() if b._version != versions[n] or not torch.equal(b, originals[n])
    )
    return _Plan(trainable, mutable)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _stack(bound: _Bound, plan: _Plan, k: int) -> tuple[Params, Params]:
    """K copies of the trainable parameters and of the buffers the forward writes, stacked along dim 0.

    Every member starts from the same model (the sequential search trains
    every trial from ``seed_everything(seed); model()``), so the K "models"
    given to ``stack_module_state`` are one model K times.
    """
    params, buffers = stack_module_state([bound] * k)
    return (
        {n: params[n].detach().requires_grad_(True) for n in plan.trainable},
        {n: buffers[n].detach() for n in plan.mutable},
    )


def stack_batches(batches: Sequence[Any]) -> tuple[Any, Any]:
    """One batch per member stacked along a new dim 0, and vmap's ``in_dims`` for it (``None`` for non-tensors).

    Tensors are stacked; lists, tuples, namedtuples and dicts are walked
    (their structure kept); anything else is taken from the first batch and
    shared. The members' batches must have the same structure and shapes.

    Example:
        >>> stacked, dims = stack_batches([{"x": torch.zeros(4, 3), "n": 4}, {"x": torch.ones(4, 3), "n": 4}])
        >>> tuple(stacked["x"].shape), dims
        ((2, 4, 3), {'x': 0, 'n': None})
    """
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(batches)), 0
    if isinstance(first, (list, tuple)):
        parts = [stack_batches([b[i] for b in batches]) for i in range(len(first))]
        make = (lambda xs: type(first)(*xs)) if hasattr(first, "_fields") else type(first)  # noqa: E731
        return make([p for p, _ in parts]), make([d for _, d in parts])
    if isinstance(first, dict):
        parts = {k: stack_batches([b[k] for b in batches]) for k in first}
        return {k: p for k, (p, _) in parts.items()}, {k: d for k, (_, d) in parts.items()}
    return first, None
