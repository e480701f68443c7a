"""The early warning, the telemetry that feeds it, and the Hessian estimate."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import module_path
from stabsearch import OptimConfig, load_model_module, train_trial
from stabsearch.early_warning import eps_floor, predict, stability_bound
from stabsearch.telemetry import adam_telemetry, hessian_top_eigenvalue, relu_dead_units


def test_rule_is_the_momentum_sgd_bound():
    assert stability_bound(0.9) == pytest.approx(38.0)
    # lr/eps * lambda just over the bound is unstable; just under it is not.
    assert predict(1e-3, 1e-3, 0.9, 38.1).predicted_unstable
    assert not predict(1e-3, 1e-3, 0.9, 37.9).predicted_unstable
    w = predict(1e-3, 1e-8, 0.9, 10.0, v_over_eps=250.0)
    assert w.predicted_unstable and "eps >= 0.00026" in w.reason and "250x eps" in w.reason
    assert eps_floor(1e-3, 10.0) == pytest.approx(1e-3 * 10 / 38)


def test_rule_without_curvature_says_so():
    assert not predict(1e-3, 1e-8, 0.9, None).predicted_unstable
    assert "could not be checked" in predict(1e-3, 1e-8, 0.9, math.nan).reason
    assert "not positive" in predict(1e-3, 1e-8, 0.9, -2.0).reason


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic():
    h = torch.diag(torch.tensor([9.0, 3.0, 1.0, 0.5]))
    x = torch.nn.Parameter(torch.ones(4))
    top = hessian_top_eigenvalue(lambda: 0.5 * x @ h @ x, [x], iters=50, tol=1e-6)
    assert top == pytest.approx(9.0, rel=1e-3)


def test_adam_telemetry_matches_a_hand_computation():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.Adam([p], lr=0.1, eps=1e-3)
    p.grad = torch.tensor([0.5, -0.5])
    opt.step()
    t = adam_telemetry(opt)
    # After one step m_hat = g and sqrt(v_hat) = |g|: the update is lr * g / (|g| + eps).
    update = 0.1 * 0.5 / (0.5 + 1e-3)
    assert t["grad_norm"] == pytest.approx(math.sqrt(0.5))
    assert t["update_rms"] == pytest.approx(update, rel=1e-5)
    assert t["v_over_eps"] == pytest.approx(500.0, rel=1e-5)
    assert t["update_ratio"] == pytest.approx(update * math.sqrt(2) / math.hypot(1 - update, 2 - update), rel=1e-3)


def test_dead_units_are_counted_per_layer():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([-1.0, -1.0, 1.0, -1.0]))
    counts = relu_dead_units(model, lambda: model(torch.randn(8, 3)))
    assert counts == {"1": (3, 4)}
    assert model.training  # the probe restores the mode


def test_trial_records_telemetry_series_and_sharpness():
    m = load_model_module(module_path("tiny"))
    result = train_trial(m, OptimConfig(lr=1e-2), steps=400, seed=0, device=torch.device("cpu"))
    assert len(result.telemetry) == 8 and result.telemetry[0]["step"] == 49  # every max(50, steps // 20)
    assert {"grad_norm", "update_rms", "update_ratio", "v_over_eps"} <= set(result.telemetry[-1])
    assert result.sharpness is not None and result.sharpness > 0
