"""The schedule is a pure function of the step, and the torch scheduler follows it."""

from __future__ import annotations

import math

import pytest
import torch

from stabsearch import OptimConfig, lr_factor
from stabsearch.training.optim import build_optimizer, build_scheduler


def test_warmup_rises_linearly_to_one():
    assert [lr_factor(s, 100, warmup_steps=4) for s in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_decay_shapes(schedule):
    values = [lr_factor(s, 100, warmup_steps=10, schedule=schedule) for s in range(101)]
    assert values[10] == 1.0
    if schedule == "constant":
        assert set(values[10:]) == {1.0}
    else:
        assert values[100] == pytest.approx(0.0, abs=1e-12)
        assert all(a >= b for a, b in zip(values[10:], values[11:]))
    if schedule == "cosine":
        assert values[55] == pytest.approx(0.5)
    if schedule == "linear":
        assert values[55] == pytest.approx(0.5)


def test_min_factor_and_bad_schedule():
    assert lr_factor(100, 100, schedule="cosine", min_factor=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(50, 100, schedule="step")


def test_torch_scheduler_follows_the_function():
    config = OptimConfig(optimizer="adamw", lr=0.01, eps=1e-6, beta1=0.85, beta2=0.99, weight_decay=0.1, schedule="cosine", warmup=0.1)
    opt = build_optimizer(torch.nn.Linear(2, 1).parameters(), config)
    sched = build_scheduler(opt, config, 50)
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert (group["eps"], group["betas"], group["weight_decay"]) == (1e-6, (0.85, 0.99), 0.1)
    for step in range(50):
        assert group["lr"] == pytest.approx(0.01 * lr_factor(step, 50, 5, "cosine"))
        opt.step()
        sched.step()


def test_config_rejects_out_of_range_values():
    with pytest.raises(ValueError, match="eps=0"):
        OptimConfig(eps=0)
    with pytest.raises(ValueError, match="optimizer 'sgd'"):
        OptimConfig(optimizer="sgd")
    assert OptimConfig(warmup=0.1).warmup_steps(1000) == 100
    assert not math.isnan(OptimConfig().lr)
