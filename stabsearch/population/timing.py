"""Timing calls as cuDNN's benchmark mode times its kernels, and the linear-path choice timed once per shape.

A population computes a shared-input linear layer either by vmap's own
batched matmuls or as one large matmul
(:class:`~stabsearch.population.rewrites.CheaperBatching`); which is faster
depends on the layer shapes and the device, so each population times its
gradient both ways on the first batch. :func:`_pick_linear_rewrite` keeps the
answer for the rest of the process, keyed by what the timing depends on
(:func:`_shape_key`): a search refills its populations with the same shapes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._pytree import tree_leaves

if TYPE_CHECKING:
    from stabsearch.population.driver import _Population

_LINEAR_REWRITE: dict[tuple, bool] = {}
"""choose_linear_rewrite's answer for each :func:`_shape_key` met in this process."""


def _shape_key(population: _Population, batch: Any) -> tuple:
    """What the timing depends on: a member's parameter shapes and dtypes, K (to the next power of two: a
    population that drains at the end of a search is not timed again at every size), the batch's shapes,
    the device and threads."""
    leaves = tree_leaves(batch)
    k = population.members.size
    return (
        str(population.device),
        torch.get_num_threads(),
        1 << max(0, (k - 1).bit_length()),
        tuple((n, tuple(p.shape[1:]), p.dtype) for n, p in population.params.items()),
        tuple((tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__ for t in leaves),
    )


def _pick_linear_rewrite(population: _Population, batch: Any) -> None:
    """Set the population's linear path, timed once per shape and process: a search refills with the same shapes."""
    key = _shape_key(population, batch)
    if key not in _LINEAR_REWRITE:
        _LINEAR_REWRITE[key] = population.choose_linear_rewrite(batch)
    population.linear_rewrite = _LINEAR_REWRITE[key]


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a clock read measures them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastest(calls: dict[Any, Callable[[], Any]], device: torch.device, repeats: int = 3) -> dict[Any, float]:
    """The best wall time of each call, in seconds, as cuDNN's benchmark mode times its kernels.

    One warm-up round of every call (not counted: first calls allocate and
    compile), then ``repeats`` rounds calling each in turn, so a machine that
    slows down mid-way slows all of them alike; the device is synchronised
    around each call.

    Args:
        calls: what to time, by any key.
        device: where the calls queue their work.
        repeats: timed rounds after the warm-up (at least 1).

    Example:
        >>> times = fastest({"sum": lambda: torch.ones(100).sum()}, torch.device("cpu"), repeats=2)
        >>> list(times) == ["sum"] and times["sum"] > 0
        True
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    best = dict.fromkeys(calls, math.inf)
    for round_ in range(repeats + 1):
        for key, call in calls.items():
            _sync(device)
            started = time.perf_counter()
            call()
            _sync(device)
            if round_:  # the first round warms every call up
                best[key] = min(best[key], time.perf_counter() - started)
    return best
