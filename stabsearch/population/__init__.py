"""Training many trials at once as one vectorised population (``torch.func.vmap`` over stacked weights).

- :mod:`~stabsearch.population.driver`: K stacked models trained together, :func:`train_population`;
- :mod:`~stabsearch.population.trainer`: :class:`PopulationTrainer`, whose members come and go, each on
  its own seed and horizon;
- :mod:`~stabsearch.population.stacking`: K members' weights (and batches) stacked along a new first dimension;
- :mod:`~stabsearch.population.streams`: each seed's batches, drawn as a trial alone draws them;
- :mod:`~stabsearch.population.adam`: the vectorised Adam/AdamW (a class and its functional form), and the
  configurations it cannot train;
- :mod:`~stabsearch.population.curve`: one member's loss curve and Run's checks on it;
- :mod:`~stabsearch.population.sharpness`: every member's top Hessian eigenvalue by one vmapped power iteration;
- :mod:`~stabsearch.population.timing`: timing calls, and the linear-path choice timed once per shape;
- :mod:`~stabsearch.population.vectorizable`: which models a population can train;
- :mod:`~stabsearch.population.speed`: whether a population step beats K sequential ones;
- :mod:`~stabsearch.population.memory`: how memory grows with K, and the largest K that fits;
- :mod:`~stabsearch.population.rewrites`: cheaper batching rules for the ops every classifier has.

The names below are imported on first use (PEP 562), so importing this package loads no torch.
"""

from stabsearch._lazy import lazy_names


_HOMES = {
    "AdamSettings": "stabsearch.population.adam",
    "CheaperBatching": "stabsearch.population.rewrites",
    "BatchStream": "stabsearch.population.streams",
    "MemberCurve": "stabsearch.population.curve",
    "LiveBytes": "stabsearch.population.memory",
    "PopulationMemory": "stabsearch.population.memory",
    "PopulationSpeed": "stabsearch.population.speed",
    "PopulationTrainer": "stabsearch.population.trainer",
    "StackedAdam": "stabsearch.population.adam",
    "fastest": "stabsearch.population.timing",
    "max_population": "stabsearch.population.memory",
    "measure_population_speed": "stabsearch.population.speed",
    "population_memory": "stabsearch.population.memory",
    "population_pays": "stabsearch.population.speed",
    "seeds_share_frozen_state": "stabsearch.population.trainer",
    "stack_batches": "stabsearch.population.stacking",
    "stacked_adam": "stabsearch.population.adam",
    "train_population": "stabsearch.population.driver",
    "why_not_population_configs": "stabsearch.population.adam",
    "why_not_population_space": "stabsearch.population.adam",
    "why_not_vectorizable": "stabsearch.population.vectorizable",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)


__all__ = sorted(_HOMES)  # noqa: F822 (provided by __getattr__)
