"""The batches of each seed a population trains, drawn as ``train_trial`` draws them.

``train_trial`` seeds everything, builds the model, then draws batch after
batch from ``module.batches(seed)`` with the random state that seeding and
``model()`` left, carried from draw to draw. A population whose members run
on several seeds draws each seed's batches with that seed's own random
state (:class:`BatchStream`), so a ``batches`` that uses the global
generators (``torch.randint`` in a loop, say) gives each member the batches
it would get alone.

Example:
    >>> from stabsearch import load_model_module
    >>> module = load_model_module("tests/modules/tiny.py")
    >>> stream = BatchStream(module, 0, torch.device("cpu"), rng_state(torch.device("cpu")))
    >>> stream.draw(3) is stream.draw(3)  # kept while a member may still need it
    True
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from stabsearch.training.loader import ModelModule
from stabsearch.training.trainer import batch_stream

RngState = tuple[Any, Any, torch.Tensor, "torch.Tensor | None"]


def rng_state(device: torch.device) -> RngState:
    """Python's, numpy's and torch's random states (and the CUDA device's, on one)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def set_rng_state(state: RngState, device: torch.device) -> None:
    """Put back states from :func:`rng_state`."""
    py, np_state, cpu, cuda = state
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


@contextmanager
def own_rng(device: torch.device) -> Iterator[None]:
    """Seed freely inside; the caller's Python, numpy and torch random states come back afterwards."""
    saved = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(saved, device)


class BatchStream:
    """The batches of ``module.batches(seed)`` by step, shared by the members of one seed.

    Draws use the stream's own random state (``rng``), swapped in and out by
    :meth:`draw`: one stream at a time owns the global generators
    (:attr:`owner`). Batches are kept while a member may still need them,
    up to :attr:`CACHE`; past that, :meth:`forget_below` drops those no
    member needs, and a stream that forgot its first batches takes no new
    members (:attr:`base` > 0): a new stream of the same seed starts over.

    Args:
        module: the model module.
        seed: the seed ``batches`` is called with.
        device: where the batches go.
        rng: the random state to draw with (what ``seed_everything(seed); model()`` left).
    """

    CACHE = 1024
    owner: BatchStream | None = None  # whose random state the global generators hold now

    def __init__(self, module: ModelModule, seed: int, device: torch.device, rng: RngState) -> None:
        self.iterator = batch_stream(module, seed, device)
        self.device = device
        self.rng = rng
        self.cache: dict[int, Any] = {}
        self.produced = 0
        self.base = 0  # the first step still in the cache

    def draw(self, step: int) -> Any:
        """Batch ``step`` (0-based) of this stream, drawn with the stream's own random state."""
        batch = self.cache.get(step)
        if batch is not None:
            return batch
        if step < self.base:
            raise IndexError(f"batch {step} of this stream was forgotten (the first kept is {self.base})")
        if BatchStream.owner is not self:
            if BatchStream.owner is not None:
                BatchStream.owner.rng = rng_state(self.device)
            set_rng_state(self.rng, self.device)
            BatchStream.owner = self
        while self.produced <= step:
            self.cache[self.produced] = next(self.iterator)
            self.produced += 1
        return self.cache[step]

    def forget_below(self, step: int) -> None:
        """Drop the kept batches before ``step`` once more than :attr:`CACHE` are kept."""
        if len(self.cache) > self.CACHE:
            for s in range(self.base, step):
                self.cache.pop(s, None)
            self.base = max(self.base, step)

    @classmethod
    def release(cls) -> None:
        """Save the owner's random state and let the global generators go (before other code uses them)."""
        if cls.owner is not None:
            cls.owner.rng = rng_state(cls.owner.device)
            cls.owner = None
