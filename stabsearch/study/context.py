"""What every trial of one search or confirmation shares, as one object.

The runner, the population path, the confirmation stages and the worker
supervisor all need the same five things: the Optuna study, the user's model
module, the search space, the study's storage and the search settings. They
pass one :class:`SearchContext` instead of threading the five through each call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: this module imports nothing heavy
    import optuna
    from optuna.trial import FrozenTrial

    from stabsearch.study.runner import SearchSettings
    from stabsearch.study.space import SearchSpace
    from stabsearch.study.storage import Storage
    from stabsearch.training.loader import ModelModule


@dataclasses.dataclass(frozen=True)
class SearchContext:
    """The study being searched and what its trials are trained with.

    Built by :func:`stabsearch.study.runner.open_context`, which creates the
    study or loads it to resume.

    Args:
        study: The Optuna study the trials belong to.
        module: The user's model module (:class:`~stabsearch.training.loader.ModelModule`).
        space: The search space trials are sampled from.
        storage: The study's storage, with its artifact store.
        settings: Steps, seed, device and the other :class:`~stabsearch.study.runner.SearchSettings`.
        on_error: Hears the first trial of the search that fails with an error, as it happens.

    Example:
        >>> from stabsearch.study.context import SearchContext
        >>> [f.name for f in __import__("dataclasses").fields(SearchContext)]
        ['study', 'module', 'space', 'storage', 'settings', 'on_error']
    """

    study: optuna.Study
    module: ModelModule
    space: SearchSpace
    storage: Storage
    settings: SearchSettings
    on_error: Callable[[FrozenTrial], None] | None = None

    @property
    def study_name(self) -> str:
        return self.study.study_name
