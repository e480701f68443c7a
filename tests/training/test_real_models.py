"""Searches on architectures people train: the probes never fail a trial, and the early warning fits the model."""

from __future__ import annotations

import re

import optuna
import pytest
import torch

from tests.support import module_path
from stabsearch import SearchSpace, load_model_module
from stabsearch.analysis.early_warning import predict
from stabsearch.study.runner import SearchSettings, peak_lr, run_search
from stabsearch.study.storage import open_storage
from stabsearch.config import OptimConfig

CPU = torch.device("cpu")


def _search(tmp_path, name: str, trials: int, steps: int, **settings) -> list[optuna.trial.FrozenTrial]:
    module = load_model_module(module_path(name))
    store = open_storage(f"sqlite:///{tmp_path}/{name}.db", create=True)
    config = SearchSettings(trials=trials, steps=steps, seed=0, progress=False, device=CPU, **settings)
    run_search(module, SearchSpace(), store, name, config)
    return optuna.load_study(study_name=name, storage=store.storage).get_trials(deepcopy=False)


def test_a_transformer_with_sdpa_and_dropout_searches_without_failures_or_false_warnings(tmp_path):
    trials = _search(tmp_path, "sdpa_transformer", trials=6, steps=160, stop_slow=False)
    assert [t.state.name for t in trials].count("FAIL") == 0, [t.user_attrs.get("error") for t in trials]
    trained = [t for t in trials if t.user_attrs["verdict"] != "diverged"]
    assert trained and all(t.user_attrs["checks"]["sharpness"] == "ran" for t in trained)
    assert all(t.user_attrs["sharpness"] is not None for t in trained)
    # Gradient noise keeps sqrt(v_hat) far above eps: the warning stays silent, and nothing is penalised ...
    assert not any(t.user_attrs["predicted_unstable"] for t in trials), [t.user_attrs["warning"] for t in trials]
    best = min(trained, key=lambda t: t.user_attrs["final_loss"])
    assert best.user_attrs["warning_penalty"] == 0.0 and best.value == pytest.approx(best.user_attrs["curve_score"])
    # ... where the bare eps rule, blind to the regime, would have penalised most of these trials.
    bare = [
        predict(peak_lr(OptimConfig(**t.user_attrs["config"]), 160), t.params["eps"], t.params["beta1"], t.user_attrs["sharpness"]).predicted_unstable
        for t in trained
    ]
    assert sum(bare) >= len(trained) // 2, bare


def test_a_probe_that_cannot_run_is_stored_and_the_trial_keeps_its_result(tmp_path):
    trials = _search(tmp_path, "no_double_backward", trials=2, steps=120)
    for t in trials:
        assert t.state.name == "COMPLETE" and t.user_attrs["verdict"] in ("stable", "slow")  # it trained
        assert t.user_attrs["checks"]["sharpness"].startswith("failed: RuntimeError: derivative for square_backward")
        assert t.user_attrs["steps_run"] == 120 and t.user_attrs["curve_artifact"]
        assert "no sharpness estimate" in t.user_attrs["warning"]


def test_no_early_warning_runs_no_probe(tmp_path):
    (trial,) = _search(tmp_path, "tiny", trials=1, steps=120, early_warning=False)
    assert trial.state.name == "COMPLETE" and trial.user_attrs["sharpness"] is None
    assert trial.user_attrs["checks"]["sharpness"] == "skipped: --no-early-warning"
    assert trial.user_attrs["warning"] == "not checked (--no-early-warning)"


def test_the_cli_takes_no_early_warning(cli, workdir):
    r = cli("run", module_path("no_double_backward"), "--trials", 1, "--confirm", 0, "--no-early-warning", "--no-progress")
    assert r.code == 0, r.err
    assert re.search(r"1/1 trials finished \(1 (stable|slow)\)", r.err), r.err  # it trained; the draw decides which


def test_the_probe_failure_is_shown_by_trials_show(cli, workdir):
    r = cli("run", module_path("no_double_backward"), "--trials", 1, "--confirm", 0, "--no-progress")
    assert r.code == 0 and re.search(r"1/1 trials finished \(1 (stable|slow)\)", r.err), r.err
    shown = cli("trials", "--show", 0).out
    assert "sharpness failed: RuntimeError: derivative for square_backward is not implemented" in shown
    assert re.search(r"COMPLETE, verdict (stable|slow)", shown), shown
