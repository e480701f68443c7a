"""The per-trial seeded TPE sampler: one read of the study's trials per draw, drawing what TPE draws reading them each time."""

from __future__ import annotations

import optuna
import pytest
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from stabsearch.study.sampler import STARTUP_TRIALS, TrialSeededSampler, trial_seed
from stabsearch.study.space import SearchSpace, sample


class TPEEachRead(BaseSampler):
    """The same per-trial seeded TPE, handed the study itself: its constant liar reads the trials for each parameter."""

    def __init__(self, seed: int) -> None:
        self.seed, self.by_trial = seed, {}

    def _for(self, trial):
        return self.by_trial.setdefault(trial.number, TPESampler(
            seed=trial_seed(self.seed, trial.number), multivariate=True, constant_liar=True, n_startup_trials=STARTUP_TRIALS))

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        return self._for(trial).sample_independent(study, trial, name, distribution)


class CountingStorage(InMemoryStorage):
    reads = 0

    def get_all_trials(self, *args, **kwargs):
        CountingStorage.reads += 1
        return super().get_all_trials(*args, **kwargs)


def draws(sampler: BaseSampler, *, told_between: bool) -> tuple[list[dict], int]:
    """12 told trials (past the start-up) and 3 running, then 3 slots drawn one after another: as a population's
    first members (nothing told between) or as its refills (a running member told before each). Returns their
    configurations and the reads of the trials their draws made."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchSpace()
    study = optuna.create_study(storage=CountingStorage(), sampler=sampler)
    value = lambda c: (c.lr - 3e-3) ** 2 + c.eps  # noqa: E731
    for _ in range(12):
        trial = study.ask()
        study.tell(trial, value(sample(space, trial)))
    running = [(t := study.ask(), sample(space, t)) for _ in range(3)]
    ids = [study._storage.create_new_trial(study._study_id) for _ in range(3)]  # three claimed slots
    drawn, reads = [], 0
    for trial_id, (member, config) in zip(ids, running):
        if told_between:
            study.tell(member, value(config))
        study._storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        CountingStorage.reads = 0
        drawn.append(sample(space, optuna.Trial(study, trial_id)).to_dict())
        reads += CountingStorage.reads
    return drawn, reads


@pytest.mark.parametrize("told_between", [False, True], ids=["first members", "refills"])
def test_a_draw_reads_the_trials_once_and_draws_what_tpe_draws_reading_them_for_each_parameter(told_between):
    ours, our_reads = draws(TrialSeededSampler(seed=5), told_between=told_between)
    theirs, their_reads = draws(TPEEachRead(seed=5), told_between=told_between)
    # TPE alone: the constant liar reads them per draw, and after a tell one more read renews Optuna's cache
    assert our_reads == 3 and their_reads == (6 if told_between else 3), (our_reads, their_reads)
    # the constant liar saw the same running trials, the slots drawn before among them: the same configurations
    # (the same arithmetic on the same trials in one process)
    assert ours == theirs
    assert len({c["lr"] for c in ours}) == 3
