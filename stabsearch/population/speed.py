"""Is the population faster? One K-member step timed against K steps of one trial.

A population that is no faster than training its members one at a time
only costs memory, so ``stabsearch run`` times both on the first batch
(:func:`measure_population_speed`) and trains one trial at a time where
:func:`population_pays` says the population does not pay.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from stabsearch.config import OptimConfig
from stabsearch.population.adam import AdamSettings
from stabsearch.population.driver import _check, _Population
from stabsearch.population.timing import _pick_linear_rewrite, fastest
from stabsearch.population.vectorizable import _own_rng, _probe_model
from stabsearch.training.loader import ModelModule
from stabsearch.training.optim import build_optimizer


@dataclasses.dataclass(frozen=True)
class PopulationSpeed:
    """Seconds of one population step of ``k`` members, and of ``k`` sequential steps of one trial."""

    k: int
    population: float
    sequential: float

    @property
    def ratio(self) -> float:
        """The population step's time over the ``k`` sequential steps' (below 1: the population is faster)."""
        return self.population / self.sequential

    @property
    def pays(self) -> bool:
        return population_pays(self.population, self.sequential)


def population_pays(population_seconds: float, sequential_seconds: float) -> bool:
    """Whether a population is worth training: its step takes less time than its K members' sequential steps.

    A population that is no faster only costs memory (a K-fold model and
    Adam state), so a tie goes to sequential training.

    Args:
        population_seconds: one step of the K-member population.
        sequential_seconds: K steps of one trial trained alone.

    Example:
        >>> population_pays(0.010, 0.040), population_pays(0.058, 0.041)
        (True, False)
    """
    for name, value in (("population_seconds", population_seconds), ("sequential_seconds", sequential_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return population_seconds < sequential_seconds


def measure_population_speed(module: ModelModule, device: torch.device, k: int, *, steps: int = 2, repeats: int = 3) -> PopulationSpeed:
    """Time one step of a ``k``-member population against ``k`` steps of one trial, on the first batch.

    Each side trains ``steps`` steps per round on the seed-0 model (the
    population on the linear path it would train with, chosen and cached as
    :func:`train_population` does; one trial as the sequential trainer does:
    forward, backward, ``torch.optim`` Adam/AdamW), timed by :func:`fastest`
    (a warm-up round, then the best of ``repeats``). Members alternate Adam
    with L2 and AdamW with decoupled decay, so every branch of the
    population's step runs. The caller's random state is left as it was.

    Args:
        module: a module :func:`why_not_vectorizable` accepts (check it first).
        device: where both would train.
        k: the population size (at least 2).
        steps: steps per timed round on each side.
        repeats: timed rounds after the warm-up.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    _check(module, [OptimConfig()], steps)
    assert module.loss is not None
    configs = [OptimConfig(optimizer="adam", weight_decay=1e-4), OptimConfig(optimizer="adamw", weight_decay=1e-2)]
    with _own_rng(device):
        bound, plan, batch = _probe_model(module, device)
        population = _Population(bound, plan, AdamSettings([configs[i % 2] for i in range(k)], steps, device))
        _pick_linear_rewrite(population, batch)
        population.load_block(0, steps)
        model = bound.model  # the population holds its own copies: training this one leaves them alone
        optimizer = build_optimizer(model.parameters(), configs[1])

        def population_steps() -> None:
            for t in range(steps):
                population.step(batch, t)

        def sequential_steps() -> None:
            for _ in range(steps):
                loss = module.loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        best = fastest({"population": population_steps, "sequential": sequential_steps}, device, repeats)
    return PopulationSpeed(k=k, population=best["population"] / steps, sequential=k * best["sequential"] / steps)
