"""Cheaper vmap batching for the population's forward: the same sums, in kernels that suit K members.

Every member of a population sees the same batch, and ``torch.func.vmap``
batches each op by a generic rule that is slow for two ops every classifier
has:

- **A first linear layer** multiplies one unbatched input by K weight
  matrices. vmap expands the input K times and runs K small matmuls, forward
  and backward. The same product written ``(W @ x.T).T`` is batched by
  folding the K weight matrices into the rows of one large matmul
  (``[K*out, in] @ [in, n]``), and its weight gradient is one matmul too.
  It is not always faster (its output comes out transposed, and some layer
  shapes lose; the README's Benchmarks give the figures), so this rewrite can
  be switched off, and the population times both ways and keeps the faster.
- **Cross-entropy** on ``[n, C]`` logits with integer targets has no batching
  rule of its own: vmap runs ``log_softmax`` over ``[K, n, C]`` along the
  last dimension, a path that is slow for short rows, and ``nll_loss`` as a
  decomposition of a dozen small ops. It is written as ``log_softmax`` +
  ``gather``, and for fewer than :data:`SHORT_ROWS` classes with the softmax
  taken along the other dimension (vectorized across the rows).

:class:`CheaperBatching` is a ``TorchFunctionMode`` that rewrites those calls
when vmap batches the member's tensors (weights, logits) and not the shared
ones (input, targets); every other call runs as it is. Each rewrite computes
the same sums and products, so results differ from the plain ones only in
float rounding, like vmap's own batched kernels, and the population's
equivalence tests hold them to that.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_is_batched = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)

SHORT_ROWS = 32
"""Below this many classes, cross-entropy's softmax runs across the rows (where that measured faster: see the
README's Benchmarks)."""


def _batched(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and bool(_is_batched(value))


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` for an unbatched ``x`` and a batched ``weight``: ``weight @ x.T``, one matmul under vmap."""
    flat = x.reshape(-1, x.shape[-1])  # a 1-d input is one row
    out = torch.mm(weight, flat.T).T.reshape(*x.shape[:-1], weight.shape[0])
    return out if bias is None else out + bias


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, reduction: str) -> torch.Tensor:
    """``F.cross_entropy`` on ``[n, C]`` logits and ``[n]`` class indices, unweighted, as log_softmax + gather.

    Targets equal to ``ignore_index`` count as in ``nll_loss``: they add 0 and
    are left out of the mean (all of them ignored: 0 / 0, NaN, as there).
    """
    keep = target != ignore_index
    index = torch.where(keep, target, 0)
    if logits.shape[-1] < SHORT_ROWS:
        picked = logits.transpose(-1, -2).log_softmax(-2).gather(-2, index[None, :]).squeeze(-2)
    else:
        picked = logits.log_softmax(-1).gather(-1, index[:, None]).squeeze(-1)
    losses = torch.where(keep, -picked, 0.0)
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else total / keep.sum()


def _linear_args(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[Any, Any, Any]:  # noqa: A002
    return input, weight, bias


def _rewrite_linear(args: tuple, kwargs: dict) -> torch.Tensor | None:
    x, weight, bias = _linear_args(*args, **kwargs)
    if (
        isinstance(x, torch.Tensor)
        and weight.dim() == 2
        and x.dim() >= 1
        and _batched(weight)
        and not _batched(x)
        and not torch.is_autocast_enabled(x.device.type)  # autocast casts F.linear's bias too; `out + bias` would not
    ):
        return _linear(x, weight, bias)
    return None


def _cross_entropy_args(
    input: torch.Tensor,  # noqa: A002
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, int, str] | None:
    """The arguments the rewrite keeps, or ``None`` where it does not apply (weights, smoothing, legacy flags)."""
    if weight is not None or size_average is not None or reduce is not None or label_smoothing != 0.0:
        return None
    return input, target, ignore_index, reduction


def _rewrite_cross_entropy(args: tuple, kwargs: dict) -> torch.Tensor | None:
    found = _cross_entropy_args(*args, **kwargs)
    if found is None:
        return None
    logits, target, ignore_index, reduction = found
    if (
        isinstance(logits, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and logits.dim() == 2
        and target.dim() == 1
        and target.shape[0] == logits.shape[0]  # a mismatch is F.cross_entropy's error to raise
        and logits.is_floating_point()
        and not target.is_floating_point()  # float targets are class probabilities
        and reduction in ("mean", "sum", "none")
        and _batched(logits)
        and not _batched(target)
    ):
        return _cross_entropy(logits, target, int(ignore_index), reduction)
    return None


_REWRITES = {
    torch.nn.functional.linear: _rewrite_linear,
    torch.nn.functional.cross_entropy: _rewrite_cross_entropy,
}


class CheaperBatching(TorchFunctionMode):
    """Inside ``vmap``: a shared-input linear layer becomes one large matmul, cross-entropy a gather.

    ``linear=False`` leaves linear layers to vmap: the one large matmul wins
    for some layer shapes and loses for others (see
    ``population._Population.choose_linear_rewrite``, which times both).
    """

    def __init__(self, linear: bool = True) -> None:
        super().__init__()
        self.linear = linear

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        rewrite = _REWRITES.get(func) if _is_batched is not None else None
        if rewrite is not None and (self.linear or func is not torch.nn.functional.linear):
            out = rewrite(args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)
