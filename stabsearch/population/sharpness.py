"""The early warning's sharpness (top Hessian eigenvalue) of every member at once, by a vmapped power iteration.

Each member gets the value ``train_trial(..., sharpness=True)`` would have
measured: the same power iteration as
:func:`stabsearch.training.telemetry.hessian_top_eigenvalue`, each member
stopping on its own, each iteration one vmapped Hessian-vector product for all.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.func import functional_call, grad, vjp, vmap

from stabsearch.population.stacking import Params
from stabsearch.training.telemetry import double_backward_kernels
from stabsearch.training.trainer import one_line

if TYPE_CHECKING:
    from stabsearch.population.driver import _Population


@dataclasses.dataclass(frozen=True)
class SharpnessProbe:
    """What the probe gave: whether it was asked for, one value per row of the stacks, seconds per member, and
    what ran (a check line)."""

    wanted: bool
    values: np.ndarray
    seconds: float
    check: str


def probe_sharpness(population: _Population, batch: Any, seed: int, *, wanted: bool, share: int) -> SharpnessProbe:
    """The members' sharpness on ``batch`` if ``wanted``, its time divided by ``share``; a failure is reported, never raised.

    The probe is stabsearch's, not the trial's: an exception in it fails no member.
    """
    values, seconds, check = np.full(population.members.size, np.nan), 0.0, "skipped: --no-early-warning"
    if wanted and population.members.size:
        started = time.perf_counter()
        try:
            with double_backward_kernels():
                values, check = _sharpness(population, batch, seed), "ran"
        except Exception as exc:  # a probe of ours: never the trial's failure
            check = f"failed: {one_line(exc)}"
        seconds = (time.perf_counter() - started) / share
    return SharpnessProbe(wanted, values, seconds, check)


def _sharpness(population: _Population, batch: Any, seed: int, iters: int = 10, tol: float = 1e-3) -> np.ndarray:
    """Top Hessian eigenvalue of each member's loss on ``batch``, as ``telemetry.hessian_top_eigenvalue`` finds it.

    The same power iteration (start vector drawn from ``seed``, Rayleigh
    quotient, stop once it moves less than ``tol``), each member stopping on
    its own; each iteration is one vmapped Hessian-vector product
    (reverse over reverse, as the double backward there) for all members.
    Eval mode, as train_trial's probe after ``evaluate``.
    """
    bound, buffers = population.bound, population.buffers
    params = {n: p.detach() for n, p in population.params.items()}
    k = population.members.size

    def loss(p: Params, b: Params) -> torch.Tensor:
        return functional_call(bound, (p, b), (batch,)).reshape(())

    def hvp(p: Params, b: Params, v: Params) -> Params:
        _, pullback = vjp(lambda q: grad(loss)(q, b), p)
        return pullback(v)[0]

    def per_member(values: dict[str, torch.Tensor]) -> torch.Tensor:  # sum over each member's own entries
        total = torch.zeros((), device=population.device)
        for t in values.values():
            total = total + t.reshape(k, -1).sum(1)
        return total

    training = bound.training
    bound.eval()
    try:
        finite = torch.isfinite(vmap(loss)(params, buffers)).cpu().numpy()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        start = {n: torch.randn(p.shape[1:], generator=gen).to(p.device, p.dtype) for n, p in params.items()}
        norm = torch.sqrt(sum((v * v).sum() for v in start.values()))
        vec = {n: (v / norm).expand(k, *v.shape).clone() for n, v in start.items()}
        result, estimate, done = np.full(k, np.nan), np.full(k, np.nan), ~finite
        batched = vmap(hvp)
        for _ in range(iters):
            if done.all():
                break
            hv = batched(params, buffers, vec)
            rayleigh = per_member({n: hv[n] * vec[n] for n in hv}).detach()
            hv_norm = torch.sqrt(per_member({n: hv[n] * hv[n] for n in hv})).detach()
            r, h = rayleigh.cpu().double().numpy(), hv_norm.cpu().double().numpy()
            stuck = ~done & (~np.isfinite(r) | (h == 0.0))
            result[stuck] = np.where(np.isfinite(r[stuck]), r[stuck], np.nan)
            moving = ~done & ~stuck
            converged = moving & np.isfinite(estimate) & (np.abs(r - estimate) <= tol * np.abs(estimate))
            result[converged] = r[converged]
            step = torch.as_tensor(moving, device=population.device)
            for n in vec:
                shape = (k,) + (1,) * (vec[n].dim() - 1)
                vec[n] = torch.where(step.view(shape), hv[n].detach() / hv_norm.view(shape), vec[n])
            estimate = np.where(moving & ~converged, r, estimate)
            done = done | stuck | converged
        result[~done] = estimate[~done]
    finally:
        bound.train(training)
    return result
