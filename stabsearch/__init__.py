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

from stabsearch.config import OptimConfig
from stabsearch.errors import UsageError
from stabsearch.loader import ModelModule, load_model_module
from stabsearch.population import max_population, train_population, why_not_vectorizable
from stabsearch.recommend import Recommendation, recommend
from stabsearch.report import build_report
from stabsearch.schedule import lr_factor
from stabsearch.space import SearchSpace
from stabsearch.stability import Analysis, Spike, StabilityOptions, analyze
from stabsearch.trainer import Run, StopRun, TrainResult, train_trial

__all__ = [
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
