"""Which models a population can train: :func:`why_not_vectorizable`, and the probe the checks share.

A model is refused where one vmapped forward and gradient on its first batch
fails or differs from the plain one; the reason is one line. The checks here,
and the memory and speed measurements, try their step on the seed-0 model
(:func:`_probe_model`) and leave the caller's random state as it was
(:func:`_own_rng`). Which *configurations* a population cannot train is
:func:`stabsearch.population.adam.why_not_population_configs`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from stabsearch.config import OptimConfig
from stabsearch.population.adam import AdamSettings
from stabsearch.population.driver import _Population
from stabsearch.population.stacking import _Bound, _Plan, _plan
from stabsearch.training.loader import ModelModule
from stabsearch.training.trainer import batch_stream, seed_everything


@contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Seed freely inside; the caller's Python, numpy and torch random states come back afterwards."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def _one_line(exc: BaseException) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    text = lines[0] if lines else ""
    if len(text) > 200:  # keep whole sentences where there are some
        cut = text.rfind(". ", 0, 200)
        text = text[: cut + 1] if cut > 40 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_HINTS = {
    "random operation": "the model or loss draws random numbers (dropout?), and members could not reproduce train_trial's draws; ",
    "data-dependent control flow": "the model or loss branches on a tensor's value or calls .item(); ",
}


def _hint(exc: BaseException) -> str:
    return next((hint for key, hint in _HINTS.items() if key in str(exc)), "")


def _probe_model(module: ModelModule, device: torch.device) -> tuple[_Bound, _Plan, Any]:
    """A seed-0 model bound to its loss, its plan, and the first batch: what the checks try a step on."""
    seed_everything(0)
    model = module.model().to(device)
    model.train()
    batch = next(batch_stream(module, 0, device))
    bound = _Bound(model, module.loss)
    return bound, _plan(bound, batch), batch


def why_not_vectorizable(module: ModelModule, device: torch.device) -> str | None:
    """``None`` if ``module`` can be trained as a population on ``device``, else a one-line reason.

    Refused: a custom ``train(run)`` loop; a loss that is not a scalar or
    reaches no parameter; anything ``torch.func.vmap`` fails on in one
    vmapped forward and gradient on the first batch (data-dependent control
    flow, ``.item()``, random ops such as dropout, in-place writes it cannot
    batch); and a vmapped loss that differs from the plain one. BatchNorm is
    trained correctly: its running statistics are stacked per member and
    updated in place by each member's own batch statistics. The caller's
    random state is left as it was.

    Example:
        >>> from stabsearch import load_model_module
        >>> why_not_vectorizable(load_model_module("tests/modules/custom_loop.py"), torch.device("cpu"))
        'custom train(run) loop: the population trainer needs model(), batches(seed) and loss(model, batch)'
    """
    if module.train is not None:
        return "custom train(run) loop: the population trainer needs model(), batches(seed) and loss(model, batch)"
    if module.model is None or module.batches is None or module.loss is None:
        return "the module lacks model(), batches(seed) or loss(model, batch)"
    with _own_rng(device):
        try:
            bound, plan, batch = _probe_model(module, device)
            plain = float(functional_call(bound, {n: b.clone() for n, b in bound.named_buffers()}, (batch,)).detach())
        except Exception as exc:  # user code, before any vmap
            return f"one plain training step fails: {_one_line(exc)}"
        if not plan.trainable:
            return "loss(model, batch) reaches no trainable parameter"
        try:
            population = _Population(bound, plan, AdamSettings([OptimConfig()] * 2, 1, device))
            _, losses = population.gradients(batch)
            values = losses.cpu().tolist()
        except Exception as exc:  # what vmap could not batch
            return f"torch.func.vmap cannot train it: {_hint(exc)}{_one_line(exc)}"
    if not all(math.isclose(v, plain, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(v) and math.isnan(plain)) for v in values):
        return f"the vmapped loss {values[0]:.6g} differs from the plain loss {plain:.6g}"
    return None
