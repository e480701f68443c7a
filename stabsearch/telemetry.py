"""Look inside Adam every few steps: gradient norm, update size, and how close eps is to dominating.

Sampled every N steps from the optimizer's own state, so it costs a few
tensor reductions and one device read per sample, not per step.

- ``grad_norm``: global L2 norm of the gradients of the step just taken;
- ``update_rms``: RMS of Adam's update ``lr_t * m_hat / (sqrt(v_hat) + eps)``;
- ``update_ratio``: ``||update|| / ||weights||``;
- ``v_over_eps``: median of ``sqrt(v_hat) / eps`` (below about 1, eps
  dominates and Adam turns into momentum SGD with step ``lr / eps``);
- ``dead_fraction``: share of ReLU units that are zero on every example of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

FIELDS = ("grad_norm", "update_rms", "update_ratio", "v_over_eps", "dead_fraction")
_SAMPLE_PER_TENSOR = 4096


@torch.no_grad()
def adam_telemetry(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The Adam-family numbers of :data:`FIELDS` (all but ``dead_fraction``) for the current state."""
    grad_sq, upd_sq, w_sq, count = [], [], [], 0
    ratios: list[torch.Tensor] = []
    for group in optimizer.param_groups:
        beta1, beta2 = group["betas"]
        lr, eps = float(group["lr"]), float(group["eps"])
        for p in group["params"]:
            state = optimizer.state.get(p)
            if p.grad is not None:
                grad_sq.append(p.grad.detach().float().pow(2).sum())
            if not state or "exp_avg_sq" not in state:
                continue
            t = float(state["step"])
            bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
            sqrt_v = (state["exp_avg_sq"].float() / bc2).sqrt()
            update = (lr / bc1) * state["exp_avg"].float() / (sqrt_v + eps)
            upd_sq.append(update.pow(2).sum())
            w_sq.append(p.detach().float().pow(2).sum())
            count += p.numel()
            flat = sqrt_v.reshape(-1)
            stride = max(1, flat.numel() // _SAMPLE_PER_TENSOR)
            ratios.append(flat[::stride] / eps)
    if not upd_sq:
        return {}
    zero = torch.zeros((), device=upd_sq[0].device)
    stacked = torch.stack([
        torch.stack(grad_sq).sum() if grad_sq else zero,
        torch.stack(upd_sq).sum(),
        torch.stack(w_sq).sum(),
        torch.cat(ratios).median(),
    ]).tolist()
    g2, u2, w2, v_over_eps = stacked
    return {
        "grad_norm": math.sqrt(g2),
        "update_rms": math.sqrt(u2 / max(1, count)),
        "update_ratio": math.sqrt(u2) / math.sqrt(w2) if w2 > 0 else math.inf,
        "v_over_eps": v_over_eps,
    }


@torch.no_grad()
def relu_dead_units(model: torch.nn.Module, forward: Callable[[], Any]) -> dict[str, tuple[int, int]]:
    """Per ``nn.ReLU`` layer, (units zero on every example, units) while ``forward()`` runs in eval mode.

    Eval mode, so that the probe neither draws dropout masks nor moves
    BatchNorm's running statistics.
    """
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
        for name, layer in model.named_modules()
        if isinstance(layer, torch.nn.ReLU)
    ]
    if not hooks:
        return {}
    training = model.training
    model.eval()
    try:
        forward()
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    counts = {}
    for name, out in outputs.items():
        if out.dim() >= 2 and out.shape[0] > 1:
            active = (out > 0).reshape(out.shape[0], out.shape[1], -1).any(dim=2).any(dim=0)
            counts[name] = (int((~active).sum()), int(active.numel()))
    return counts


def hessian_top_eigenvalue(
    loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], iters: int = 10, tol: float = 1e-3, seed: int = 0
) -> float:
    """Top Hessian eigenvalue of ``loss_fn()`` by power iteration on Hessian-vector products.

    One forward and backward with a graph, then ``iters`` double-backward
    products at most, stopping early once the estimate moves less than ``tol``
    (relative). Returns the Rayleigh quotient, NaN if the loss is not finite.
    """
    loss = loss_fn()
    if not torch.isfinite(loss):
        return math.nan
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(g, p) for g, p in zip(grads, params) if g is not None]
    if not pairs:
        return math.nan
    grads, params = [g for g, _ in pairs], [p for _, p in pairs]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vec = [torch.randn(p.shape, generator=gen).to(p.device, p.dtype) for p in params]
    norm = torch.sqrt(sum((v * v).sum() for v in vec))
    vec = [v / norm for v in vec]
    estimate = math.nan
    for _ in range(iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=vec, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h for h, p in zip(hv, params)]
        rayleigh = float(sum((h * v).sum() for h, v in zip(hv, vec)))
        norm = torch.sqrt(sum((h * h).sum() for h in hv))
        if not math.isfinite(rayleigh) or float(norm) == 0.0:
            return rayleigh if math.isfinite(rayleigh) else math.nan
        vec = [h / norm for h in hv]
        if math.isfinite(estimate) and abs(rayleigh - estimate) <= tol * abs(estimate):
            return rayleigh
        estimate = rayleigh
    return estimate
