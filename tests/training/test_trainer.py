"""The single-trial trainer: seeding, divergence stops, custom loops, blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.support import module_path
from stabsearch import OptimConfig, Run, StopRun, load_model_module, train_trial

CPU = torch.device("cpu")


def test_same_seed_same_curve_other_seed_other_curve():
    m = load_model_module(module_path("tiny"))
    cfg = OptimConfig(lr=1e-2)
    a = train_trial(m, cfg, steps=60, seed=3, device=CPU)
    b = train_trial(m, cfg, steps=60, seed=3, device=CPU)
    c = train_trial(m, cfg, steps=60, seed=4, device=CPU)
    assert a.steps_run == 60 and np.array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, c.losses)
    assert a.losses[-1] < a.losses[0] and a.diverged_at is None


def test_a_diverging_run_stops_at_once():
    m = load_model_module(module_path("tiny"))
    result = train_trial(m, OptimConfig(lr=50.0, eps=1e-10), steps=2000, seed=0, device=CPU)
    assert result.diverged_at is not None
    # Stopped within one block of losses (16 on CPU) after the divergence was visible.
    assert result.steps_run <= result.diverged_at + 5 + 16
    assert result.steps_run < 2000


def test_custom_loop_gets_config_and_is_stopped_even_if_it_swallows_exceptions():
    m = load_model_module(module_path("custom_loop"))
    ok = train_trial(m, OptimConfig(lr=1e-2), steps=40, seed=5, device=CPU)
    assert ok.steps_run == 40 and m.module.SEEN["seeds"][-1] == 5 and m.module.SEEN["steps"][-1] == 40
    bad = train_trial(m, OptimConfig(lr=1e4, eps=1e-12), steps=2000, seed=5, device=CPU)
    assert bad.diverged_at is not None and bad.steps_run < 2000


def test_run_reads_losses_in_blocks_and_reports_progress():
    seen = []
    run = Run(OptimConfig(), steps=100, seed=0, device=CPU, block=10, on_progress=lambda s, v: seen.append((s, v)), progress_every=25)
    for i in range(9):
        run.log(torch.tensor(1.0 / (i + 1)))
    assert run.losses.size == 0  # still on the device
    run.log(torch.tensor(0.1))
    assert run.losses.size == 10
    for _ in range(40):
        run.log(torch.tensor(0.05))
    assert [s for s, _ in seen] == [25, 50]


def test_run_raises_stop_on_nan_and_on_overrun():
    run = Run(OptimConfig(), steps=100, seed=0, device=CPU, block=4)
    with pytest.raises(StopRun):
        for v in [1.0, 0.9, float("nan"), 0.5]:
            run.log(v)
    assert run.diverged_at == 2
    short = Run(OptimConfig(), steps=3, seed=0, device=CPU, block=100)
    with pytest.raises(StopRun):
        for _ in range(4):
            short.log(1.0)


def test_softmax_collapse_reports_the_dead_layer():
    m = load_model_module("objectives.softmax_chance")
    result = train_trial(m, OptimConfig(**m.module.FAILING), steps=m.steps, seed=0, device=CPU)
    assert result.dead_layers, "the collapsed run should have a completely dead ReLU layer"
    assert abs(float(np.median(result.losses[-50:])) - math.log(6)) < 0.05 * math.log(6)
