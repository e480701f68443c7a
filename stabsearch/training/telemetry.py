"""Look inside Adam every few steps: gradient norm, update size, and how close eps is to dominating.

Sampled every N steps from the optimizer's own state, so it costs a few
tensor reductions and one device read per sample, not per step.

- ``grad_norm``: global L2 norm of the gradients of the step just taken;
- ``update_rms``: RMS of Adam's update ``lr_t * m_hat / (sqrt(v_hat) + eps)``;
- ``update_ratio``: ``||update|| / ||weights||``;
- ``v_over_eps``: median of ``sqrt(v_hat) / eps`` (below about 1, eps
  dominates and Adam turns into momentum SGD with step ``lr / eps``);
- ``eps_share``: share of the coordinates that have had a gradient whose
  ``sqrt(v_hat)`` is at most :data:`NEAR_EPS` times eps (eps is half the
  denominator or more there; coordinates that never saw a gradient, such
  as unused embedding rows, are left out: their update is zero either way);
- ``dead_fraction``: share of ReLU units that are zero on every example of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

FIELDS = ("grad_norm", "update_rms", "update_ratio", "v_over_eps", "eps_share", "dead_fraction")
#: ``sqrt(v_hat)`` at most this many times eps counts as eps-dominated in ``eps_share``.
NEAR_EPS = 1.0
#: Coordinates of each tensor the ``sqrt(v_hat)`` statistics look at, at most (an even stride through it).
SAMPLE_PER_TENSOR = 4096


@torch.no_grad()
def adam_telemetry(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The Adam-family numbers of :data:`FIELDS` (all but ``dead_fraction``) for the current state."""
    grad_sq, upd_sq, w_sq, count = [], [], [], 0
    ratios: list[torch.Tensor] = []
    near: list[torch.Tensor] = []
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
            stride = max(1, flat.numel() // SAMPLE_PER_TENSOR)
            sampled = flat[::stride] / eps
            ratios.append(sampled)
            near.append(torch.stack([((sampled > 0) & (sampled <= NEAR_EPS)).sum(), (sampled > 0).sum()]))
    if not upd_sq:
        return {}
    zero = torch.zeros((), device=upd_sq[0].device)
    stacked = torch.stack([
        torch.stack(grad_sq).sum() if grad_sq else zero,
        torch.stack(upd_sq).sum(),
        torch.stack(w_sq).sum(),
        torch.cat(ratios).median(),
        *torch.stack(near).sum(0).float(),
    ]).tolist()
    g2, u2, w2, v_over_eps, n_near, n_seen = stacked
    return {
        "grad_norm": math.sqrt(g2),
        "update_rms": math.sqrt(u2 / max(1, count)),
        "update_ratio": math.sqrt(u2) / math.sqrt(w2) if w2 > 0 else math.inf,
        "v_over_eps": v_over_eps,
        "eps_share": n_near / n_seen if n_seen else 0.0,
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


@contextmanager
def double_backward_kernels() -> Iterator[None]:
    """Run attention on its math kernel inside, the one whose backward can itself be differentiated.

    ``F.scaled_dot_product_attention`` picks a fused kernel (flash,
    memory-efficient) whose backward has no derivative, so a Hessian-vector
    product through a transformer fails with "derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented". The math kernel computes the same attention with plain ops.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch before 2.3 has no backend switch
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


@torch.no_grad()
def adam_preconditioner(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """``(sqrt(v_hat) + eps) ** -1/2`` per parameter of ``params``: Adam's preconditioner, square-rooted.

    ``S H S`` with ``S`` this diagonal has the eigenvalues of ``P^-1 H``,
    ``P = sqrt(v_hat) + eps``. ``None`` when the optimizer keeps no Adam
    state for one of the parameters (another optimizer, or no step taken yet).
    """
    settings = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    scales = []
    for p in params:
        state, group = optimizer.state.get(p), settings.get(id(p))
        if not state or "exp_avg_sq" not in state or group is None:
            return None
        bc2 = 1.0 - group["betas"][1] ** float(state["step"])
        scales.append(((state["exp_avg_sq"] / bc2).sqrt() + group["eps"]).rsqrt().to(p.dtype))
    return scales


def hessian_top_eigenvalue(
    loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], iters: int = 10, tol: float = 1e-3, seed: int = 0,
    scale: list[torch.Tensor] | None = None,
) -> float:
    """Top Hessian eigenvalue of ``loss_fn()`` by power iteration on Hessian-vector products.

    One forward and backward with a graph, then ``iters`` double-backward
    products at most, stopping early once the estimate moves less than ``tol``
    (relative). Returns the Rayleigh quotient, NaN if the loss is not finite.
    With ``scale`` (one tensor per parameter, a diagonal ``S``) it is the top
    eigenvalue of ``S H S`` instead: with :func:`adam_preconditioner`, the
    preconditioned sharpness. Attention runs on its math kernel
    (:func:`double_backward_kernels`).
    """
    with double_backward_kernels():
        return _power_iteration(loss_fn, params, iters, tol, seed, scale)


def _power_iteration(
    loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], iters: int, tol: float, seed: int,
    scale: list[torch.Tensor] | None,
) -> float:
    loss = loss_fn()
    if not torch.isfinite(loss):
        return math.nan
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    kept = [i for i, g in enumerate(grads) if g is not None]
    if not kept:
        return math.nan
    grads, params = [grads[i] for i in kept], [params[i] for i in kept]
    scale = None if scale is None else [scale[i] for i in kept]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vec = [torch.randn(p.shape, generator=gen).to(p.device, p.dtype) for p in params]
    norm = torch.sqrt(sum((v * v).sum() for v in vec))
    vec = [v / norm for v in vec]
    estimate = math.nan
    for _ in range(iters):
        pushed = vec if scale is None else [s * v for s, v in zip(scale, vec)]
        hv = torch.autograd.grad(grads, params, grad_outputs=pushed, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h for h, p in zip(hv, params)]
        if scale is not None:
            hv = [s * h for s, h in zip(scale, hv)]
        rayleigh = float(sum((h * v).sum() for h, v in zip(hv, vec)))
        norm = torch.sqrt(sum((h * h).sum() for h in hv))
        if not math.isfinite(rayleigh) or float(norm) == 0.0:
            return rayleigh if math.isfinite(rayleigh) else math.nan
        vec = [h / norm for h in hv]
        if math.isfinite(estimate) and abs(rayleigh - estimate) <= tol * abs(estimate):
            return rayleigh
        estimate = rayleigh
    return estimate
