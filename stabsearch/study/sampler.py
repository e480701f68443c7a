"""TPE seeded per trial: workers that start together never draw the same configurations.

One sampler seeded with the study's seed draws the same random points in
every process that starts at the same moment, so N workers ran each
configuration N times. Here trial ``n`` is sampled by a TPE sampler seeded
with ``(seed, n)``: every trial, and so every worker, has its own stream, and
a study run again with the same seed draws the same points for the same trial
numbers (its random start-up trials are the same whatever the number of workers).

A trial's draw reads the study's trials once: TPE's constant liar would read
them past Optuna's cache once more for each parameter, building every
RUNNING trial (a population's members) each time
(:class:`~stabsearch.study.optuna_internals.OneReadStudy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from stabsearch.study.optuna_internals import OneReadStudy


#: Trials drawn at random before TPE models the finished ones (Optuna's default).
STARTUP_TRIALS = 10


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` of a study seeded with ``seed``.

    Example:
        >>> trial_seed(0, 1) != trial_seed(0, 2) and trial_seed(0, 1) == trial_seed(0, 1)
        True
    """
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Multivariate TPE with the constant liar, one seeded instance per trial number.

    Args:
        seed: the study's seed.

    Example:
        >>> study = optuna.create_study(sampler=TrialSeededSampler(seed=3))
        >>> study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=3)
        >>> len({t.params["x"] for t in study.trials})
        3
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._by_trial: dict[int, TPESampler] = {}

    def _for(self, trial: FrozenTrial) -> TPESampler:
        sampler = self._by_trial.get(trial.number)
        if sampler is None:
            sampler = TPESampler(seed=trial_seed(self.seed, trial.number), multivariate=True, constant_liar=True,
                                 n_startup_trials=STARTUP_TRIALS)
            self._by_trial[trial.number] = sampler
        return sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        # A trial's draw begins here (at its first suggestion); to its last one, every read of the trials
        # shares one snapshot (one storage read per trial, not one per parameter).
        view = OneReadStudy(study)
        view.begin_draw(STARTUP_TRIALS)
        return self._for(trial).infer_relative_search_space(view, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(OneReadStudy(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(OneReadStudy(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        sampler = self._by_trial.pop(trial.number, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        for sampler in self._by_trial.values():
            sampler.reseed_rng()
