"""How a population's memory grows with K, and the largest K that fits: :func:`max_population`.

A population needs ``shared + K * per_member`` bytes (:class:`PopulationMemory`).
:func:`population_memory` measures both from the peaks of a 1- and a 2-member
population taking two steps: ``torch.cuda.max_memory_allocated`` on CUDA, and on
the CPU :class:`LiveBytes`, a dispatch mode that counts tensor storage as the
CUDA allocator does. Should the CPU measurement fail, an estimate from tensor
sizes stands in (:func:`_estimate_cpu`).
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

from stabsearch.config import OptimConfig
from stabsearch.population.adam import AdamSettings
from stabsearch.population.driver import _Population
from stabsearch.population.stacking import _Bound, _Plan
from stabsearch.population.vectorizable import _own_rng, _probe_model, why_not_vectorizable
from stabsearch.training.loader import ModelModule


@dataclasses.dataclass(frozen=True)
class PopulationMemory:
    """Bytes a population needs: ``shared + k * per_member``, against ``available`` on the device.

    ``measured`` is True when the numbers are the peaks of a 1- and a
    2-member step, False for the CPU's fallback estimate from tensor sizes.

    Example:
        >>> memory = PopulationMemory(shared=1000, per_member=300, available=10_000, measured=True)
        >>> memory.bytes_for(4), memory.max_population(0.5)
        (2200, 13)
    """

    shared: int
    per_member: int
    available: int
    measured: bool

    def bytes_for(self, k: int) -> int:
        """Bytes a population of ``k`` members needs."""
        return self.shared + k * self.per_member

    def max_population(self, limit_fraction: float = 0.8) -> int:
        """The largest K whose :meth:`bytes_for` fits in ``limit_fraction`` of ``available`` (0 if none does)."""
        budget = limit_fraction * self.available - self.shared
        return max(0, int(budget // max(1, self.per_member)))


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    return []


def _cpu_available() -> int:
    """Bytes of RAM this process could still use: MemAvailable, capped by a cgroup limit when there is one."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, available)


class LiveBytes(TorchDispatchMode):
    """The CPU's ``max_memory_allocated``: peak bytes of tensor storage that the ops run inside it allocate.

    A dispatch mode sees every op below ``vmap`` and ``grad``, so it counts
    the real, batched tensors. Each new storage counts until the last tensor
    on it is freed; views and in-place results count nothing new.

    Example:
        >>> with LiveBytes() as mode:
        ...     x = torch.ones(1000)
        ...     y = (x * 2).sum()
        >>> mode.peak  # x, and x * 2 while it is summed
        8004
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}  # storage pointer -> [bytes, tensors alive on it]
        self.now = self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del self._live[ptr]
                self.now -= entry[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _leaves([list(args), kwargs or {}])}
        for t in _leaves(out if isinstance(out, (list, tuple)) else [out]):
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if ptr in self._live:
                self._live[ptr][1] += 1
            elif ptr in inputs or size == 0:
                continue  # a view of, or a write into, a tensor made outside
            else:
                self._live[ptr] = [size, 1]
                self.now += size
                self.peak = max(self.peak, self.now)
            weakref.finalize(t, self._release, ptr)
        return out


def _step_peak(bound: _Bound, plan: _Plan, batch: Any, device: torch.device, k: int, linear_rewrite: bool) -> int:
    """Peak bytes allocated while a K-member population (on one linear path) is built and takes two steps."""

    def run() -> None:
        population = _Population(bound, plan, AdamSettings([OptimConfig()] * k, 2, device))
        population.linear_rewrite = linear_rewrite
        population.load_block(0, 2)
        population.step(batch, 0)
        population.step(batch, 1)

    if device.type != "cuda":
        with LiveBytes() as mode:
            run()
        return mode.peak
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def population_memory(module: ModelModule, device: torch.device) -> PopulationMemory:
    """How memory grows with K for ``module`` on ``device`` (see :class:`PopulationMemory`).

    Measured: the peak bytes allocated by a 1- and a 2-member population
    taking two steps (``torch.cuda.max_memory_allocated`` on CUDA,
    :class:`LiveBytes` on the CPU); their difference is one member. The base
    model and the batch are already allocated, so they are in neither. Both
    linear paths are measured (the population times them and may take either)
    and the larger member and shared part kept.
    Available: free GPU memory, or MemAvailable within a cgroup limit. Should
    the CPU measurement fail, an estimate from tensor sizes stands in (see
    :func:`_estimate_cpu`).
    """
    if module.model is None or module.batches is None or module.loss is None or module.train is not None:
        raise ValueError(f"{module.source}: not a population module ({why_not_vectorizable(module, device)})")
    with _own_rng(device):
        bound, plan, batch = _probe_model(module, device)
        try:
            paths = [[_step_peak(bound, plan, batch, device, k, rewrite) for k in (1, 2)] for rewrite in (True, False)]
        except Exception:
            if device.type == "cuda":
                raise
            return _estimate_cpu(bound, plan, batch)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        available = torch.cuda.mem_get_info(device)[0]
    else:
        available = _cpu_available()
    members = [(max(1, two - one), one) for one, two in paths]  # (one member, the 1-member peak) per path
    per_member = max(member for member, _ in members)
    shared = max(max(0, one - member) for member, one in members)
    return PopulationMemory(shared=shared, per_member=per_member, available=available, measured=True)


def _estimate_cpu(bound: _Bound, plan: _Plan, batch: Any) -> PopulationMemory:
    """One member: parameters, gradients, two Adam states and two work tensors (6x the trainable bytes),
    stacked buffers, the activations autograd saves (``saved_tensors_hooks``, less the batch and weights)
    and twice the largest of those (the gradients flowing in and out)."""
    named, buffers = dict(bound.named_parameters()), dict(bound.named_buffers())
    trainable = sum(_tensor_bytes(named[n]) for n in plan.trainable)
    stacked_buffers = sum(_tensor_bytes(buffers[n]) for n in plan.mutable)
    known = {t.data_ptr() for t in [*named.values(), *buffers.values(), *_leaves(batch)]}
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in known:
            saved.append(_tensor_bytes(t))
        return t

    params = {n: named[n].detach().clone().requires_grad_(True) for n in plan.trainable}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        functional_call(bound, (params, {n: b.clone() for n, b in buffers.items()}), (batch,))
    per_member = 6 * trainable + stacked_buffers + sum(saved) + 2 * max(saved, default=0)
    return PopulationMemory(shared=0, per_member=per_member, available=_cpu_available(), measured=False)


def max_population(module: ModelModule, device: torch.device, *, limit_fraction: float = 0.8) -> int:
    """The largest K whose population fits in ``limit_fraction`` of the memory available on ``device``.

    Example:
        >>> from stabsearch import load_model_module
        >>> max_population(load_model_module("tests/modules/tiny.py"), torch.device("cpu")) > 1000
        True
    """
    if not (isinstance(limit_fraction, (int, float)) and 0 < limit_fraction <= 1):
        raise ValueError(f"limit_fraction must be in (0, 1], got {limit_fraction!r}")
    return population_memory(module, device).max_population(limit_fraction)
