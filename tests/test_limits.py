"""Time limits stop a running trial; weights that went NaN under a finite loss are a divergence."""

from __future__ import annotations

import optuna
import torch

from tests.support import module_path
from stabsearch import OptimConfig, SearchSpace, load_model_module, train_trial
from stabsearch.study.runner import SearchSettings, run_search
from stabsearch.study.storage import open_storage

CPU = torch.device("cpu")


def _study(tmp_path, name: str, **settings):
    module = load_model_module(module_path(name))
    store = open_storage(f"sqlite:///{tmp_path}/{name}.db", create=True)
    summary = run_search(module, SearchSpace(), store, name, SearchSettings(seed=0, progress=False, device=CPU, **settings))
    return summary, optuna.load_study(study_name=name, storage=store.storage).get_trials(deepcopy=False)


def test_the_study_timeout_stops_the_running_trial_and_requeues_it(tmp_path):
    summary, trials = _study(tmp_path, "endless", trials=3, steps=10**9, timeout=0.5)
    assert summary.timed_out and summary.finished == 0
    states = [(t.state.name, t.user_attrs.get("failure")) for t in trials]
    assert ("FAIL", "interrupted") in states and "RUNNING" not in [s for s, _ in states]
    requeued = [t for t in trials if t.state.name == "WAITING"]
    assert requeued and requeued[0].user_attrs["requeued_from"] == trials[0].number


def test_the_trial_timeout_fails_the_trial_and_counts_it(tmp_path):
    summary, trials = _study(tmp_path, "endless", trials=2, steps=10**9, trial_timeout=0.3)
    assert summary.finished == 2 and not summary.timed_out
    assert [(t.state.name, t.user_attrs["failure"]) for t in trials] == [("FAIL", "timed out")] * 2  # not retried
    assert all("trial time limit of 0.3s" in t.user_attrs["error"] for t in trials)


def test_a_population_stops_at_the_study_timeout_too(tmp_path):
    summary, trials = _study(tmp_path, "endless", trials=4, steps=10**9, timeout=0.5, population=2)
    assert summary.timed_out
    assert sorted(t.state.name for t in trials).count("RUNNING") == 0
    assert [t.user_attrs.get("failure") for t in trials if t.state.name == "FAIL"] == ["interrupted"] * 2


def test_weights_that_went_nan_under_a_finite_loss_are_a_divergence(tmp_path):
    m = load_model_module(module_path("hidden_nan"))
    result = train_trial(m, OptimConfig(lr=1e-2), steps=200, seed=0, device=CPU)
    assert result.diverged_at is not None and 60 <= result.diverged_at < 110, result.diverged_at
    assert "non-finite" in result.checks["divergence"]
    _, (trial,) = _study(tmp_path, "hidden_nan", trials=1, steps=200)
    assert trial.user_attrs["verdict"] == "diverged" and trial.state.name == "PRUNED"
    assert trial.user_attrs["diverged_at"] == result.diverged_at


def test_population_members_whose_weights_went_nan_under_a_finite_loss_diverge_as_alone():
    from stabsearch.population.driver import train_population
    from tests.support.inline import make_module

    def model():
        return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def hidden_loss(model, batch):  # 0 * |u| at u = 0: a finite value whose gradient is NaN
        x, y = batch
        u = model[0].bias[0] - model[0].bias[0].detach()
        return torch.nan_to_num(torch.nn.functional.mse_loss(model(x), y) + 0.0 * torch.sqrt(u * u), nan=0.0)

    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(64, 4, generator=g)
        yield x, torch.sin(x.sum(1, keepdim=True))

    module = make_module(model, hidden_loss, batches=batches)
    configs = [OptimConfig(lr=1e-2), OptimConfig(lr=1e-3, schedule="cosine")]
    runs = train_population(module, configs, steps=200, seed=0, device=CPU)
    for run, config in zip(runs, configs):
        alone = train_trial(module, config, steps=200, seed=0, device=CPU)
        assert float(alone.losses[-1]) == 0.0  # the loss hides it: NaN weights from step 1 on
        assert run.diverged_at == alone.diverged_at == 49  # the first telemetry sample sees them
        assert run.steps_run == alone.steps_run == 50
        assert "non-finite" in run.checks["divergence"] and "non-finite" in alone.checks["divergence"]
