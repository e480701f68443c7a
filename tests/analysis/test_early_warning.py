"""The early warning, the telemetry that feeds it, and the Hessian estimate."""

from __future__ import annotations

import math

import pytest
import torch

from tests.support import module_path
from stabsearch import OptimConfig, load_model_module, train_trial
from stabsearch.analysis.early_warning import eps_floor, predict, stability_bound
from stabsearch.training.telemetry import adam_telemetry, hessian_top_eigenvalue, relu_dead_units


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


# --------------------------------------------------------------------------- the regime the rule applies to


def test_a_run_in_or_falling_into_the_eps_regime_is_heading_there():
    from stabsearch.analysis.early_warning import eps_regime

    def samples(*values, share=0.0):
        return [{"step": 100 * (i + 1) - 1, "v_over_eps": v, "eps_share": share} for i, v in enumerate(values)]

    assert eps_regime(samples(3.0, 2.0, 0.5), 300).heading  # eps dominates the median coordinate
    assert eps_regime(samples(4e4, 3e4, 1.5e4), 300).heading  # v decays as an EMA of vanishing gradients
    assert eps_regime(samples(9.0, 8.8, 7.5, share=0.04), 300).heading  # a share at eps, drifting down
    noisy = eps_regime(samples(1.2e3, 1.3e3, 1.8e3, share=0.002), 300)  # gradient noise holds v up
    assert noisy.heading is False and noisy.fall < 1 and "not falling" in noisy.describe()
    assert eps_regime(samples(9.0, 8.9, 8.0, share=0.04)[:2] + samples(9.0, 8.9, 9.5, share=0.04)[2:], 300).heading is False
    assert eps_regime([{"step": 10, "grad_norm": 1.0}], 300).heading is None  # no Adam state sampled


def test_the_rule_is_silent_for_a_run_that_gradient_noise_keeps_away_from_eps():
    from stabsearch.analysis.early_warning import EpsRegime

    noisy = EpsRegime(False, v_over_eps=1800.0, eps_share=0.0, fall=0.95)
    w = predict(4.1e-3, 5.4e-7, 0.9, 3.0, regime=noisy, preconditioned=500.0)
    assert not w.predicted_unstable and w.ratio > 1  # the bare rule is broken ...
    assert "does not apply" in w.reason and "1.8e+03x eps" in w.reason  # ... and the reason says why it is silent
    assert "preconditioned sharpness 500 against 38/lr = 9.27e+03" in w.reason
    heading = EpsRegime(True, v_over_eps=1800.0, eps_share=0.0, fall=2.1)
    assert predict(4.1e-3, 5.4e-7, 0.9, 3.0, regime=heading).predicted_unstable
    assert predict(4.1e-3, 5.4e-7, 0.9, 3.0).predicted_unstable  # no telemetry: the rule as it stands


def test_the_rule_is_judged_at_the_peak_of_the_schedule():
    from stabsearch.study.runner import peak_lr

    cosine = OptimConfig(lr=1e-2, schedule="cosine", warmup=0.1)
    assert peak_lr(cosine, 1000) == pytest.approx(1e-2)  # not the ~0 of its last step
    assert peak_lr(OptimConfig(lr=1e-2, schedule="linear", warmup=0.0), 1000) == pytest.approx(1e-2)
    assert peak_lr(OptimConfig(lr=1e-2), 1) == pytest.approx(1e-2)


def test_preconditioned_sharpness_of_a_quadratic_is_the_top_eigenvalue_of_p_inverse_h():
    from stabsearch.training.telemetry import adam_preconditioner

    h = torch.diag(torch.tensor([9.0, 3.0, 1.0, 0.5]))
    x = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([x], lr=0.1, eps=0.5)
    x.grad = torch.tensor([1.0, 2.0, 0.5, 0.1])
    opt.step()  # one step: sqrt(v_hat) = |g|, P = |g| + eps
    scale = adam_preconditioner(opt, [x])
    top = hessian_top_eigenvalue(lambda: 0.5 * x @ h @ x, [x], iters=100, tol=1e-8, scale=scale)
    p = torch.tensor([1.0, 2.0, 0.5, 0.1]) + 0.5
    assert top == pytest.approx(float((torch.diag(h) / p).max()), rel=1e-4)
    assert adam_preconditioner(torch.optim.SGD([x], lr=0.1), [x]) is None


# --------------------------------------------------------------------------- probes never fail a trial


class _Attention(torch.nn.Module):
    def __init__(self, fused: bool):
        super().__init__()
        self.fused = fused
        self.qkv, self.out = torch.nn.Linear(8, 24), torch.nn.Linear(8, 1)

    def forward(self, x):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        if self.fused:
            att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # the same attention written out
            scores = (q @ k.transpose(-1, -2)) / 2.0
            mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
            att = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.out(att.transpose(1, 2).reshape(x.shape[0], x.shape[1], 8)).mean()


def test_hessian_products_through_scaled_dot_product_attention_match_the_written_out_attention():
    torch.manual_seed(0)
    fused, plain = _Attention(fused=True), _Attention(fused=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 6, 8)
    values = [
        hessian_top_eigenvalue(lambda m=m: m(x) ** 2, list(m.parameters()), iters=30, tol=1e-6, seed=1)
        for m in (fused, plain)
    ]
    assert math.isfinite(values[0]) and values[0] > 0
    assert values[0] == pytest.approx(values[1], rel=1e-3)


def test_a_probe_that_cannot_run_leaves_the_trial_its_result():
    m = load_model_module(module_path("no_double_backward"))
    result = train_trial(m, OptimConfig(lr=1e-2), steps=120, seed=0, device=torch.device("cpu"))
    assert result.steps_run == 120 and result.diverged_at is None
    assert result.sharpness is None and result.checks["sharpness"].startswith("failed: RuntimeError")
    assert result.checks["telemetry"] == "ran" and result.checks["dead_units"] == "ran"


def test_telemetry_that_fails_stops_only_the_telemetry(monkeypatch):
    from stabsearch.training import trainer

    def broken(optimizer):
        raise RuntimeError("no state to read")

    monkeypatch.setattr(trainer, "adam_telemetry", broken)
    m = load_model_module(module_path("tiny"))
    result = train_trial(m, OptimConfig(lr=1e-2), steps=120, seed=0, device=torch.device("cpu"))
    assert result.steps_run == 120 and result.telemetry == []
    assert result.checks["telemetry"] == "failed: RuntimeError: no state to read"
    assert result.checks["sharpness"] == "ran"


def test_a_custom_loop_says_which_checks_ran_and_watch_turns_them_on():
    m = load_model_module(module_path("custom_params_loop"))
    blind = train_trial(m, OptimConfig(lr=1e-2), steps=100, seed=0, device=torch.device("cpu"))
    assert blind.final_eval is None and blind.sharpness is None
    assert blind.checks["evaluate"].startswith("skipped: the loop never gave stabsearch its model")
    assert blind.checks["telemetry"] == "ran"  # the optimizer came from run.make_optimizer
    m.module.WATCH = True
    try:
        seen = train_trial(m, OptimConfig(lr=1e-2), steps=100, seed=0, device=torch.device("cpu"))
    finally:
        m.module.WATCH = False
    assert seen.final_eval is not None and seen.sharpness is not None and seen.preconditioned_sharpness is not None
    assert {seen.checks[k] for k in ("evaluate", "dead_units", "sharpness", "telemetry")} == {"ran"}


def test_without_the_early_warning_no_probe_runs():
    m = load_model_module(module_path("tiny"))
    result = train_trial(m, OptimConfig(lr=1e-2), steps=120, seed=0, device=torch.device("cpu"), sharpness=False)
    assert result.sharpness is None and result.checks["sharpness"] == "skipped: --no-early-warning"
