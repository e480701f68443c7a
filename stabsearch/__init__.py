"""stabsearch: optimizer settings that train a PyTorch model well and stably.

The layers, with data flowing one way (each subpackage's docstring lists its modules):

- :mod:`stabsearch.analysis`: the pure core, numpy functions of a loss curve;
- :mod:`stabsearch.training`: train one trial and watch its loss;
- :mod:`stabsearch.population`: train many trials at once as one vectorised population;
- :mod:`stabsearch.study`: the search space, the study's storage, the runner, workers and confirmation;
- :mod:`stabsearch.reporting`: the HTML report, the exports and optuna-dashboard;
- :mod:`stabsearch.integrations`: Lightning and transformers;
- :mod:`stabsearch.config`, :mod:`stabsearch.schedule`: one configuration, shared by all layers;
- :mod:`stabsearch.api`: each command as a function, exported here as :func:`search`, :func:`confirm`,
  :func:`recommend`, :func:`report` and :func:`analyze`;
- :mod:`stabsearch.cli`: the command line, which parses its options and calls :mod:`stabsearch.api`.

Example:
    >>> import stabsearch
    >>> stabsearch.analyze([2.3, 1.0, 0.5, 0.2] * 30).verdict
    'stable'
"""

from stabsearch._lazy import lazy_names

# Names are imported on first use (PEP 562), as Optuna's own package does: ``import stabsearch`` and the
# pure analysis (``stabsearch.analyze``) load no torch, Optuna, plotly or pandas, and the command line
# pays for torch only in the commands that train.
_HOMES = {
    "Analysis": "stabsearch.analysis.verdict",
    "ModelModule": "stabsearch.training.loader",
    "OptimConfig": "stabsearch.config",
    "Recommendation": "stabsearch.study.recommend",
    "Run": "stabsearch.training.trainer",
    "SearchResult": "stabsearch.api",
    "SearchSpace": "stabsearch.study.space",
    "Spike": "stabsearch.analysis.spikes",
    "StabilityOptions": "stabsearch.analysis.options",
    "StopRun": "stabsearch.training.trainer",
    "TrainResult": "stabsearch.training.trainer",
    "UsageError": "stabsearch.errors",
    "analyze": "stabsearch.api",
    "build_report": "stabsearch.reporting.page",
    "confirm": "stabsearch.api",
    "load_model_module": "stabsearch.training.loader",
    "lr_factor": "stabsearch.schedule",
    "max_population": "stabsearch.population.memory",
    "recommend": "stabsearch.api",
    "report": "stabsearch.api",
    "search": "stabsearch.api",
    "train_population": "stabsearch.population.driver",
    "train_trial": "stabsearch.training.trainer",
    "why_not_vectorizable": "stabsearch.population.vectorizable",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)


__all__ = [  # noqa: F822 (provided by __getattr__)
    "Analysis",
    "ModelModule",
    "OptimConfig",
    "Recommendation",
    "Run",
    "SearchResult",
    "SearchSpace",
    "Spike",
    "StabilityOptions",
    "StopRun",
    "TrainResult",
    "UsageError",
    "analyze",
    "build_report",
    "confirm",
    "load_model_module",
    "lr_factor",
    "max_population",
    "recommend",
    "report",
    "search",
    "train_population",
    "train_trial",
    "why_not_vectorizable",
]

__version__ = "0.1.0"
