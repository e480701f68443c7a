"""The vectorised Adam/AdamW: each member stepped as torch.optim steps it alone, and its arguments checked."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from stabsearch.config import OptimConfig
from stabsearch.population.adam import FIXED, PER_STEP, AdamSettings, StackedAdam, _decayed_rows, stacked_adam
from stabsearch.population.stacking import _Bound
from stabsearch.training.optim import build_optimizer, build_scheduler

CPU = torch.device("cpu")
STEPS = 40

CONFIGS = [
    OptimConfig(lr=1e-2, weight_decay=1e-2),  # Adam's L2
    OptimConfig(optimizer="adamw", lr=3e-3, weight_decay=0.1, schedule="cosine", warmup=0.1, min_lr_factor=0.1),
    OptimConfig(lr=5e-3, eps=1e-6, beta1=0.8, beta2=0.99, schedule="linear", warmup=0.05),
]

# Largest relative gap between a member and torch.optim over STEPS steps, measured on this machine: 0.0 (the same
# float32 ops in the same order). The bound leaves room for another machine's kernels rounding differently.
RTOL = 1e-5


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def gradients(model, generator):
    """Gradients of every size: some entries tiny, so ``eps`` and the bias correction matter."""
    return [torch.randn(p.shape, generator=generator) * 10.0 ** torch.randint(-6, 1, p.shape, generator=generator)
            for p in model.parameters()]


def train_both(configs, *, no_decay=False, drop=None, join=None):
    """Step each member's own model with torch.optim and all members stacked with StackedAdam, on the same
    gradients; ``drop=(step, row)`` cuts that row out of the stacks before that step, ``join=(step, config)``
    appends a member with a fresh state there, at its own step 0. Returns the worst relative gap of each member
    still in the stacks, over all steps, and those members."""
    configs = [dataclasses.replace(c, no_decay=no_decay) for c in configs]
    if join is not None:
        configs.append(dataclasses.replace(join[1], no_decay=no_decay))
    base = net()
    alone = [copy.deepcopy(base) for _ in configs]
    optimizers = [build_optimizer(m, c) for m, c in zip(alone, configs)]
    schedulers = [build_scheduler(o, c, STEPS) for o, c in zip(optimizers, configs)]
    names = [n for n, _ in base.named_parameters()]
    members = np.arange(len(configs) - (join is not None))
    starts = np.zeros(len(configs), dtype=np.int64)  # the step each member joined at
    stacked = {n: torch.stack([p.detach()] * members.size).requires_grad_(True) for n, p in base.named_parameters()}
    decayed = _decayed_rows(_Bound(base, lambda m, b: m(b)), [f"model.{n}" for n in names], no_decay)
    adam = StackedAdam(stacked, AdamSettings([configs[i] for i in members], STEPS, CPU), decayed)
    generator = torch.Generator().manual_seed(1)
    worst = np.zeros(len(configs))
    for t in range(STEPS):
        changed = False
        if drop is not None and t == drop[0]:
            rows = np.setdiff1d(np.arange(members.size), [drop[1]])
            index = torch.as_tensor(rows)
            stacked = {n: p.detach().index_select(0, index).requires_grad_(True) for n, p in stacked.items()}
            members = members[rows]
            adam.resize(index, AdamSettings([configs[i] for i in members], STEPS, CPU))
            changed = True
        if join is not None and t == join[0]:
            new = len(configs) - 1
            starts[new] = t
            fresh = dict(base.named_parameters())
            stacked = {n: torch.cat([p.detach(), fresh[n].detach()[None]]).requires_grad_(True) for n, p in stacked.items()}
            adam.resize(torch.arange(members.size), AdamSettings([configs[i] for i in [*members, new]], STEPS, CPU), 1)
            members = np.append(members, new)
            changed = True
        if t % 16 == 0 or changed:
            adam.load_block(t - starts[members], min(16 - t % 16, STEPS - t))
            loaded = t
        grads = [gradients(base, generator) for _ in configs]  # one set per member, whether it trains or not
        for i, (model, optimizer, scheduler) in enumerate(zip(alone, optimizers, schedulers)):
            if i not in members or t - starts[i] >= STEPS:
                continue
            for p, g in zip(model.parameters(), grads[i]):
                p.grad = g.clone()
            optimizer.step()
            scheduler.step()
        adam.step(list(stacked.values()), [torch.stack([grads[i][j] for i in members]) for j in range(len(names))], t - loaded)
        for row, i in enumerate(members):
            for p, (name, q) in zip(stacked.values(), alone[i].named_parameters()):
                gap = ((p[row] - q).abs() / q.abs().clamp(min=1e-12)).max().item()
                worst[i] = max(worst[i], gap)
    return worst, members


@pytest.mark.parametrize("no_decay", [False, True], ids=["all-decayed", "no-decay-groups"])
def test_each_member_steps_as_torch_optim_steps_it_alone(no_decay):
    worst, _ = train_both(CONFIGS, no_decay=no_decay)
    assert (worst <= RTOL).all(), worst


def test_a_member_cut_out_of_the_stacks_leaves_the_others_on_their_own_schedules():
    worst, members = train_both(CONFIGS, drop=(21, 1))  # mid-block: the loaded tables are loaded anew
    assert members.tolist() == [0, 2]
    assert (worst[members] <= RTOL).all(), worst


def test_a_member_that_joins_later_steps_from_its_own_step_zero_as_torch_optim_steps_it():
    late = dataclasses.replace(CONFIGS[1], schedule="cosine", warmup=0.1)  # its schedule and bias correction start at 0
    worst, members = train_both(CONFIGS[:2], join=(21, late))
    assert members.tolist() == [0, 1, 2]
    assert (worst <= RTOL).all(), worst


def test_a_nan_gradient_stays_in_its_member():
    settings = AdamSettings(CONFIGS[:2], STEPS, CPU)
    w = torch.ones(2, 3, requires_grad=True)
    adam = StackedAdam({"w": w}, settings)
    adam.load_block(0, STEPS)
    adam.step([w], [torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 1.0, 1.0]])], 0)
    assert torch.isfinite(w[0]).all() and torch.isnan(w[1, 0])
    assert torch.isfinite(adam.exp_avg_sq["w"][0]).all()


def test_the_settings_are_checked_up_front_naming_the_bad_value():
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        AdamSettings(CONFIGS, 0, CPU)
    with pytest.raises(ValueError, match="configs is empty"):
        AdamSettings([], 10, CPU)
    with pytest.raises(TypeError, match="configs must be OptimConfig objects, got dict"):
        AdamSettings([{"lr": 1e-3}], 10, CPU)
    with pytest.raises(ValueError, match=r"max_grad_norm=1\.0"):
        AdamSettings([OptimConfig(max_grad_norm=1.0)], 10, CPU)
    with pytest.raises(ValueError, match="differ in no_decay"):
        AdamSettings([OptimConfig(no_decay=True), OptimConfig(no_decay=False)], 10, CPU)


def test_the_state_is_checked_against_the_settings():
    settings = AdamSettings(CONFIGS[:2], 10, CPU)
    with pytest.raises(ValueError, match=r"params\['w'\] of shape \(3, 4\) does not stack the 2 members"):
        StackedAdam({"w": torch.zeros(3, 4)}, settings)
    with pytest.raises(ValueError, match=r"params\['b'\] of shape \(\)"):
        StackedAdam({"b": torch.zeros(())}, settings)
    with pytest.raises(ValueError, match=r"decayed=\[0, 1\] indexes beyond the 1 params"):
        StackedAdam({"w": torch.zeros(2, 4)}, settings, decayed=[0, 1])
    with pytest.raises(TypeError, match="settings must be AdamSettings, got list"):
        StackedAdam({"w": torch.zeros(2, 4)}, CONFIGS[:2])


def test_the_functional_form_checks_its_lists():
    p = [torch.zeros(2, 3), torch.zeros(2, 1)]
    view = [torch.ones(2, 1), torch.ones(2, 1)]
    fixed, per_step = {k: view for k in FIXED}, {k: view for k in PER_STEP}
    good = dict(fixed=fixed, per_step=per_step, decayed=[0, 1], l2=False, decoupled=False)
    lists = [[torch.zeros_like(t) for t in p] for _ in range(4)]
    stacked_adam(p, *lists, **good)  # all consistent: runs
    with pytest.raises(ValueError, match="grads holds 1 entries for 2 params"):
        stacked_adam(p, lists[0][:1], *lists[1:], **good)
    with pytest.raises(ValueError, match="fixed lacks 'eps'"):
        stacked_adam(p, *lists, **{**good, "fixed": {k: view for k in FIXED if k != "eps"}})
    with pytest.raises(ValueError, match=r"per_step\['decay'\] holds 1 entries for 2 params"):
        stacked_adam(p, *lists, **{**good, "per_step": {**per_step, "decay": view[:1]}})
