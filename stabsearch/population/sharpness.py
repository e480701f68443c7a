"""The early warning's sharpness (top Hessian eigenvalue) of many members at once, by a vmapped power iteration.

Each member gets the value ``train_trial(..., sharpness=True)`` would have
measured, on its own last batch, from the start vector of its own seed: the
same power iteration as
:func:`stabsearch.training.telemetry.hessian_top_eigenvalue`, each member
stopping on its own, each iteration one vmapped Hessian-vector product for all.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.func import functional_call, grad, vjp, vmap

from stabsearch.population.stacking import Params, stack_batches
from stabsearch.training.telemetry import double_backward_kernels
from stabsearch.training.trainer import one_line

if TYPE_CHECKING:
    from stabsearch.population.driver import _Population


@dataclasses.dataclass(frozen=True)
class SharpnessProbe:
    """What the probe gave: whether it was asked for, one value per member probed, seconds per member, and
    what ran (a check line)."""

    wanted: bool
    values: np.ndarray
    seconds: float
    check: str


def probe_sharpness(
    population: _Population, rows: Sequence[int], batches: Sequence[Any], seeds: Sequence[int], *, wanted: bool,
) -> SharpnessProbe:
    """The sharpness of the members in ``rows`` if ``wanted``, each on its batch and from its seed's start vector;
    a failure is reported, never raised.

    The probe is stabsearch's, not the trial's: an exception in it fails no member.

    Args:
        population: the stacks.
        rows: the rows to probe.
        batches: each row's last batch (the same object for rows that share one).
        seeds: each row's seed.
        wanted: ``False``: nothing runs (``--no-early-warning``).
    """
    values, seconds, check = np.full(len(rows), np.nan), 0.0, "skipped: --no-early-warning"
    if wanted and len(rows):
        started = time.perf_counter()
        try:
            with double_backward_kernels():
                values, check = _sharpness(population, list(rows), list(batches), list(seeds)), "ran"
        except Exception as exc:  # a probe of ours: never the trial's failure
            check = f"failed: {one_line(exc)}"
        seconds = (time.perf_counter() - started) / len(rows)
    return SharpnessProbe(wanted, values, seconds, check)


def _sharpness(population: _Population, rows: list[int], batches: list[Any], seeds: list[int], iters: int = 10,
               tol: float = 1e-3) -> np.ndarray:
    """Top Hessian eigenvalue of each row's loss on its batch, as ``telemetry.hessian_top_eigenvalue`` finds it.

    The same power iteration (start vector drawn from the row's seed, Rayleigh
    quotient, stop once it moves less than ``tol``), each member stopping on
    its own; each iteration is one vmapped Hessian-vector product
    (reverse over reverse, as the double backward there) for all members.
    Eval mode, as train_trial's probe after ``evaluate``.
    """
    bound = population.bound
    index = torch.as_tensor(rows, dtype=torch.long, device=population.device)
    params = {n: p.detach().index_select(0, index) for n, p in population.params.items()}
    buffers = {n: b.index_select(0, index) for n, b in population.buffers.items()}
    k = len(rows)
    if all(b is batches[0] for b in batches):
        batch, in_dims = batches[0], None
    else:
        batch, in_dims = stack_batches(batches)

    def loss(p: Params, b: Params, x: Any) -> torch.Tensor:
        return functional_call(bound, (p, b), (x,)).reshape(())

    def hvp(p: Params, b: Params, v: Params, x: Any) -> Params:
        _, pullback = vjp(lambda q: grad(loss)(q, b, x), p)
        return pullback(v)[0]

    def per_member(values: dict[str, torch.Tensor]) -> torch.Tensor:  # sum over each member's own entries
        total = torch.zeros((), device=population.device)
        for t in values.values():
            total = total + t.reshape(k, -1).sum(1)
        return total

    training = bound.training
    bound.eval()
    try:
        finite = torch.isfinite(vmap(loss, in_dims=(0, 0, in_dims))(params, buffers, batch)).cpu().numpy()
        starts: dict[int, dict[str, torch.Tensor]] = {}
        for seed in seeds:
            if seed not in starts:
                gen = torch.Generator(device="cpu").manual_seed(seed)
                start = {n: torch.randn(p.shape[1:], generator=gen).to(p.device, p.dtype) for n, p in params.items()}
                norm = torch.sqrt(sum((v * v).sum() for v in start.values()))
                starts[seed] = {n: v / norm for n, v in start.items()}
        vec = {n: torch.stack([starts[seed][n] for seed in seeds]) for n in params}
        result, estimate, done = np.full(k, np.nan), np.full(k, np.nan), ~finite
        batched = vmap(hvp, in_dims=(0, 0, 0, in_dims))
        for _ in range(iters):
            if done.all():
                break
            hv = batched(params, buffers, vec, batch)
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
