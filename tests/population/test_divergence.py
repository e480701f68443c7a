"""The divergence watch over K curves: Run's verdict for every member, each frozen at the end of its block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stabsearch.analysis.options import StabilityOptions
from stabsearch.config import OptimConfig
from stabsearch.population.divergence import DivergenceWatch
from stabsearch.training.trainer import Run, StopRun

STEPS, BLOCK = 120, 16


def curves() -> np.ndarray:
    """``[STEPS, 5]``: calm, NaN at step 37, a finite leap at step 30 that stays, one lone spike, a late leap."""
    t = np.arange(STEPS, dtype=np.float64)
    calm = 2.0 * np.exp(-t / 40) + 0.1
    nan = calm.copy()
    nan[37:] = np.nan
    leap = calm.copy()
    leap[30:] = 50.0
    spike = calm.copy()
    spike[50] = 50.0
    late = calm.copy()
    late[100:] = 10.0
    return np.stack([calm, nan, leap, spike, late], axis=1)


def run_alone(curve: np.ndarray, chance: float | None) -> tuple[int | None, int]:
    """Run's verdict on ``curve`` fed value by value, and how many values it took before it stopped."""
    run = Run(OptimConfig(), steps=STEPS, seed=0, device=torch.device("cpu"), chance_loss=chance, block=BLOCK)
    taken = 0
    try:
        for value in curve.tolist():
            taken += 1
            run.log(value)
        run.flush()
    except StopRun:
        pass
    return run.diverged_at, taken


def watch_all(values: np.ndarray, chance: float | None) -> DivergenceWatch:
    """Feed ``values`` block by block as the population does: a diverged member leaves the stacks."""
    watch = DivergenceWatch([OptimConfig()] * values.shape[1], STEPS, chance, StabilityOptions())
    members = np.arange(values.shape[1])
    for start in range(0, STEPS, BLOCK):
        diverged = watch.add(values[start : start + BLOCK][:, members], members)
        members = np.delete(members, diverged)
    return watch


@pytest.mark.parametrize("chance", [None, 1.5], ids=["no-chance", "chance-1.5"])
def test_every_member_gets_the_verdict_and_curve_of_run_alone(chance):
    values = curves()
    watch = watch_all(values, chance)
    verdicts = [run_alone(values[:, i], chance) for i in range(values.shape[1])]
    assert watch.diverged_at == [at for at, _ in verdicts]
    assert [watch.curve(i).size for i in range(values.shape[1])] == [taken for _, taken in verdicts]
    assert watch.diverged_at[0] is None and watch.diverged_at[3] is None  # calm, and one lone spike
    assert watch.diverged_at[1] == 37 and watch.curve(1).size == 48  # frozen at the end of its block
    for i in range(values.shape[1]):
        np.testing.assert_array_equal(watch.curve(i), values[: watch.curve(i).size, i])


def test_non_finite_weights_under_a_finite_loss_end_the_curve_at_the_sample():
    values = curves()[:BLOCK, :2]
    watch = DivergenceWatch([OptimConfig()] * 2, STEPS, None, StabilityOptions())
    diverged = watch.add(values, np.arange(2))
    assert diverged == []
    assert watch.add_nonfinite({1: 9}, np.arange(2), diverged) == [1]
    assert watch.diverged_at == [None, 9] and watch.curve(1).size == 10 and watch.nonfinite == {1: 9}


def test_a_divergence_the_loss_showed_first_stands():
    values = curves()[:BLOCK, 1:2].copy()
    values[5:] = np.nan  # the loss says step 5; a later sample of the weights changes nothing
    watch = DivergenceWatch([OptimConfig()], STEPS, None, StabilityOptions())
    diverged = watch.add(values, np.arange(1))
    assert watch.add_nonfinite({0: 9}, np.arange(1), diverged) == [0]
    assert watch.diverged_at == [5] and watch.nonfinite == {} and watch.curve(0).size == BLOCK


def test_the_curves_grow_past_their_first_allocation():
    steps = 5000  # more than the 4096 rows allocated up front
    watch = DivergenceWatch([OptimConfig()], steps, None, StabilityOptions())
    for start in range(0, steps, 1000):
        watch.add(np.full((1000, 1), 1.0), np.arange(1))
    assert watch.curve(0).size == steps and watch.diverged_at == [None]
