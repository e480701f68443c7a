"""SharedInputLinear: the one-matmul rewrite of a shared-input linear layer gives vmap's values and gradients."""

import contextlib

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from stabsearch import batching
from stabsearch.batching import SharedInputLinear

K = 5


def members(bias: bool) -> tuple[torch.nn.Module, dict, dict]:
    torch.manual_seed(0)
    nets = [torch.nn.Linear(7, 3, bias=bias) for _ in range(K)]
    params, buffers = stack_module_state(nets)
    return nets[0], params, buffers


def losses_and_grads(x: torch.Tensor, bias: bool, rewrite: bool, x_batched: bool = False):
    base, params, buffers = members(bias)

    def loss(p, b, xi):
        return functional_call(base, (p, b), (xi,)).square().sum()

    in_x = 0 if x_batched else None
    with SharedInputLinear() if rewrite else contextlib.nullcontext():
        out = vmap(loss, in_dims=(0, 0, in_x))(params, buffers, x)
    grads = torch.autograd.grad(out.sum(), list(params.values()))
    return out.detach(), [g.detach() for g in grads]


def count_rewrites(monkeypatch) -> list:
    calls, rewrite = [], batching._linear

    def counted(*args):
        calls.append(args)
        return rewrite(*args)

    monkeypatch.setattr(batching, "_linear", counted)
    return calls


@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 4, 7)], ids=["1-d", "2-d", "3-d"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_a_shared_input_gives_vmaps_losses_and_gradients(shape, bias, monkeypatch):
    calls = count_rewrites(monkeypatch)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    plain, plain_grads = losses_and_grads(x, bias, rewrite=False)
    assert calls == []
    rewritten, rewritten_grads = losses_and_grads(x, bias, rewrite=True)
    assert len(calls) == 1  # the rewrite ran, once for the one layer
    torch.testing.assert_close(rewritten, plain, rtol=1e-5, atol=1e-6)
    assert len(rewritten_grads) == len(plain_grads) == (2 if bias else 1)
    for got, want in zip(rewritten_grads, plain_grads):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # every member has its own loss: the rewrite did not mix the K weight matrices
    assert len(set(rewritten.tolist())) == K


def test_a_per_member_input_is_left_to_vmap(monkeypatch):
    calls = count_rewrites(monkeypatch)
    x = torch.randn(K, 4, 7, generator=torch.Generator().manual_seed(2))
    plain, plain_grads = losses_and_grads(x, True, rewrite=False, x_batched=True)
    rewritten, rewritten_grads = losses_and_grads(x, True, rewrite=True, x_batched=True)
    torch.testing.assert_close(rewritten, plain)
    for got, want in zip(rewritten_grads, plain_grads):
        torch.testing.assert_close(got, want)
    assert calls == []


def test_outside_vmap_linear_is_untouched(monkeypatch):
    calls = count_rewrites(monkeypatch)
    torch.manual_seed(3)
    layer, x = torch.nn.Linear(7, 3), torch.randn(4, 7)
    with SharedInputLinear():
        inside = layer(x)
    assert torch.equal(inside, layer(x)) and calls == []
