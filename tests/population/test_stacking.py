"""What one plain step says to stack: trained parameters, written buffers, and a loss that must be a scalar."""

from __future__ import annotations

import pytest
import torch

from stabsearch.population.stacking import _Bound, _plan, _stack


class Mixed(torch.nn.Module):
    """A BatchNorm (its running statistics are written), a frozen weight, an unused layer and a constant buffer."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.unused = torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4)
        self.frozen = torch.nn.Parameter(torch.ones(4), requires_grad=False)
        self.register_buffer("scale", torch.full((4,), 0.5))

    def forward(self, x):
        return self.bn(self.a(x)) * self.scale * self.frozen


def test_only_what_trains_and_what_the_forward_writes_is_stacked():
    bound = _Bound(Mixed(), lambda model, x: model(x).pow(2).mean())
    before = {n: t.clone() for n, t in bound.state_dict().items()}
    plan = _plan(bound, torch.randn(8, 3))
    assert plan.trainable == ("model.a.weight", "model.a.bias", "model.bn.weight", "model.bn.bias")
    assert set(plan.mutable) == {"model.bn.running_mean", "model.bn.running_var", "model.bn.num_batches_tracked"}
    assert all(torch.equal(t, before[n]) for n, t in bound.state_dict().items())  # the probe wrote nothing back
    params, buffers = _stack(bound, plan, 3)
    assert list(params) == list(plan.trainable) and set(buffers) == set(plan.mutable)
    assert all(p.shape[0] == 3 and p.requires_grad for p in params.values())
    assert torch.equal(params["model.a.weight"][2], bound.model.a.weight)  # every member starts from the model


def test_a_loss_that_is_not_a_scalar_is_refused_naming_what_it_is():
    with pytest.raises(ValueError, match=r"must return a scalar tensor, got a tensor of shape \(8, 4\)"):
        _plan(_Bound(torch.nn.Linear(3, 4), lambda model, x: model(x)), torch.randn(8, 3))
    with pytest.raises(ValueError, match="got tuple"):
        _plan(_Bound(torch.nn.Linear(3, 4), lambda model, x: (model(x).sum(),)), torch.randn(8, 3))
