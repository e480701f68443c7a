"""stabsearch: optimizer settings that train a PyTorch model well and stably.

The pieces, one concept per module:

- :mod:`stabsearch.space`: the search space and its overrides;
- :mod:`stabsearch.loader`: the model-module contract;
- :mod:`stabsearch.config`, :mod:`stabsearch.optim`, :mod:`stabsearch.schedule`: one configuration, built for torch;
- :mod:`stabsearch.trainer`: train one trial and watch its loss;
- :mod:`stabsearch.population`: train many trials at once as one vectorized population;
- :mod:`stabsearch.stability`: pure analysis of a loss curve;
- :mod:`stabsearch.runner`: the search loop that talks to Optuna;
- :mod:`stabsearch.confirm`: re-running the best configurations on new seeds at a longer horizon;
- :mod:`stabsearch.recommend`, :mod:`stabsearch.export`: the recommendation and its formats;
- :mod:`stabsearch.report`, :mod:`stabsearch.dashboard`: the HTML report and optuna-dashboard;
- :mod:`stabsearch.queue`, :mod:`stabsearch.workers`: sharing a study between workers;
- :mod:`stabsearch.cli`: the command line.
"""

import importlib
from typing import Any

# Names are imported on first use (PEP 562), as Optuna's own package does: ``import stabsearch`` and the
# pure analysis (``stabsearch.analyze``) load no torch, Optuna, plotly or pandas, and the command line
# pays for torch only in the commands that train.
_HOMES = {
    "Analysis": "stabsearch.stability",
    "ModelModule": "stabsearch.loader",
    "OptimConfig": "stabsearch.config",
    "Recommendation": "stabsearch.recommend",
    "Run": "stabsearch.trainer",
    "SearchSpace": "stabsearch.space",
    "Spike": "stabsearch.stability",
    "StabilityOptions": "stabsearch.stability",
    "StopRun": "stabsearch.trainer",
    "TrainResult": "stabsearch.trainer",
    "UsageError": "stabsearch.errors",
    "analyze": "stabsearch.stability",
    "build_report": "stabsearch.report",
    "load_model_module": "stabsearch.loader",
    "lr_factor": "stabsearch.schedule",
    "max_population": "stabsearch.population",
    "recommend": "stabsearch.recommend",
    "train_population": "stabsearch.population",
    "train_trial": "stabsearch.trainer",
    "why_not_vectorizable": "stabsearch.population",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'stabsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [  # noqa: F822 (provided by __getattr__)
    "Analysis",
    "ModelModule",
    "OptimConfig",
    "Recommendation",
    "Run",
    "SearchSpace",
    "Spike",
    "StabilityOptions",
    "StopRun",
    "TrainResult",
    "UsageError",
    "analyze",
    "build_report",
    "load_model_module",
    "lr_factor",
    "max_population",
    "recommend",
    "train_population",
    "train_trial",
    "why_not_vectorizable",
]

__version__ = "0.1.0"
