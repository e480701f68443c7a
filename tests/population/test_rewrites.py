"""CheaperBatching: its rewrites of a shared-input linear layer and of cross-entropy give vmap's values and gradients."""

import contextlib

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from stabsearch.population import rewrites
from stabsearch.population.rewrites import CheaperBatching

K = 5
F = torch.nn.functional


def count_rewrites(monkeypatch, name: str) -> list:
    """Record each call of ``rewrites.<name>``, the function a rewrite computes with."""
    calls, rewrite = [], getattr(rewrites, name)

    def counted(*args):
        calls.append(args)
        return rewrite(*args)

    monkeypatch.setattr(rewrites, name, counted)
    return calls


def assert_same(got, want, rtol=1e-5, atol=1e-6):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True)


# ---- linear ------------------------------------------------------------------------------------------------


def linear_members(bias: bool) -> tuple[torch.nn.Module, dict, dict]:
    torch.manual_seed(0)
    nets = [torch.nn.Linear(7, 3, bias=bias) for _ in range(K)]
    params, buffers = stack_module_state(nets)
    return nets[0], params, buffers


def linear_losses_and_grads(x: torch.Tensor, bias: bool, rewrite: bool, x_batched: bool = False):
    base, params, buffers = linear_members(bias)

    def loss(p, b, xi):
        return functional_call(base, (p, b), (xi,)).square().sum()

    with CheaperBatching() if rewrite else contextlib.nullcontext():
        out = vmap(loss, in_dims=(0, 0, 0 if x_batched else None))(params, buffers, x)
    grads = torch.autograd.grad(out.sum(), list(params.values()))
    return [out.detach()], [g.detach() for g in grads]


@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 4, 7)], ids=["1-d", "2-d", "3-d"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_a_shared_input_gives_vmaps_losses_and_gradients(shape, bias, monkeypatch):
    calls = count_rewrites(monkeypatch, "_linear")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    plain, plain_grads = linear_losses_and_grads(x, bias, rewrite=False)
    assert calls == []
    rewritten, rewritten_grads = linear_losses_and_grads(x, bias, rewrite=True)
    assert len(calls) == 1  # the rewrite ran, once for the one layer
    assert_same(rewritten, plain)
    assert len(rewritten_grads) == (2 if bias else 1)
    assert_same(rewritten_grads, plain_grads)
    # every member has its own loss: the rewrite did not mix the K weight matrices
    assert len(set(rewritten[0].tolist())) == K


def test_a_per_member_input_is_left_to_vmap(monkeypatch):
    calls = count_rewrites(monkeypatch, "_linear")
    x = torch.randn(K, 4, 7, generator=torch.Generator().manual_seed(2))
    plain, plain_grads = linear_losses_and_grads(x, True, rewrite=False, x_batched=True)
    rewritten, rewritten_grads = linear_losses_and_grads(x, True, rewrite=True, x_batched=True)
    assert_same(rewritten + rewritten_grads, plain + plain_grads, rtol=0, atol=0)
    assert calls == []


def test_outside_vmap_linear_is_untouched(monkeypatch):
    calls = count_rewrites(monkeypatch, "_linear")
    torch.manual_seed(3)
    layer, x = torch.nn.Linear(7, 3), torch.randn(4, 7)
    with CheaperBatching():
        inside = layer(x)
    assert torch.equal(inside, layer(x)) and calls == []


# ---- cross-entropy -----------------------------------------------------------------------------------------


def ce_losses_and_grads(loss, classes: int, target: torch.Tensor, rewrite: bool):
    """``loss(logits, target)`` of K members' logits ``[K, n, classes]``, and its gradient by the logits."""
    logits = (3 * torch.randn(K, len(target), classes, generator=torch.Generator().manual_seed(4))).requires_grad_(True)
    with CheaperBatching() if rewrite else contextlib.nullcontext():
        out = vmap(loss, in_dims=(0, None))(logits, target)
    (grad,) = torch.autograd.grad(out.nansum(), [logits])
    return [out.detach()], [grad]


def targets(classes: int, n: int = 12, ignored: int = 0) -> torch.Tensor:
    target = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(5))
    target[:ignored] = -100
    return target


@pytest.mark.parametrize("classes", [2, 6, 31, 32, 100], ids=lambda c: f"{c}-classes")  # both softmax layouts
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignored", [0, 3], ids=["all-kept", "3-ignored"])
def test_cross_entropy_gives_vmaps_losses_and_gradients(classes, reduction, ignored, monkeypatch):
    calls = count_rewrites(monkeypatch, "_cross_entropy")
    target = targets(classes, ignored=ignored)
    loss = lambda z, y: F.cross_entropy(z, y, reduction=reduction)  # noqa: E731
    plain = ce_losses_and_grads(loss, classes, target, rewrite=False)
    rewritten = ce_losses_and_grads(loss, classes, target, rewrite=True)
    assert len(calls) == 1
    assert_same(rewritten[0] + rewritten[1], plain[0] + plain[1])
    if ignored:  # an ignored target adds nothing and gets no gradient
        assert bool((rewritten[1][0][:, :ignored] == 0).all())


def test_cross_entropy_with_every_target_ignored_is_nan_as_plain():
    target = torch.full((4,), -100)
    for reduction, nan in (("mean", True), ("sum", False)):
        loss = lambda z, y: F.cross_entropy(z, y, reduction=reduction)  # noqa: E731, B023
        (rewritten,), _ = ce_losses_and_grads(loss, 6, target, rewrite=True)
        (plain,), _ = ce_losses_and_grads(loss, 6, target, rewrite=False)
        assert bool(rewritten.isnan().all()) is nan and bool(plain.isnan().all()) is nan
        assert_same([rewritten], [plain])


def test_cross_entropy_through_the_module_and_with_a_custom_ignore_index(monkeypatch):
    calls = count_rewrites(monkeypatch, "_cross_entropy")
    target = targets(6, ignored=2)
    target[target == -100] = 5  # class 5 is the one ignored
    loss = torch.nn.CrossEntropyLoss(ignore_index=5)
    rewritten, plain = (ce_losses_and_grads(lambda z, y: loss(z, y), 6, target, rewrite=r) for r in (True, False))
    assert len(calls) == 1
    assert_same(rewritten[0] + rewritten[1], plain[0] + plain[1])


@pytest.mark.parametrize(
    "loss",
    [
        lambda z, y: F.cross_entropy(z, y, weight=torch.arange(1.0, 7.0)),
        lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1),
        lambda z, y: F.cross_entropy(z, F.one_hot(y, 6).float()),  # class probabilities
        lambda z, y: F.cross_entropy(z.T[None], y[None]),  # [1, C, n]: the K-dimensional form
    ],
    ids=["weights", "smoothing", "probabilities", "3-d"],
)
def test_cross_entropy_forms_the_rewrite_does_not_cover_run_as_they_are(loss, monkeypatch):
    calls = count_rewrites(monkeypatch, "_cross_entropy")
    target = targets(6)
    rewritten = ce_losses_and_grads(loss, 6, target, rewrite=True)
    plain = ce_losses_and_grads(loss, 6, target, rewrite=False)
    assert calls == []
    assert_same(rewritten[0] + rewritten[1], plain[0] + plain[1], rtol=0, atol=0)


def test_a_target_of_another_length_raises_as_plain_cross_entropy_does(monkeypatch):
    calls = count_rewrites(monkeypatch, "_cross_entropy")
    logits, target = torch.randn(K, 5, 6), torch.zeros(3, dtype=torch.long)
    errors = []
    for mode in (CheaperBatching(), contextlib.nullcontext()):
        with pytest.raises((ValueError, RuntimeError)) as raised, mode:
            vmap(F.cross_entropy, in_dims=(0, None))(logits, target)
        errors.append(str(raised.value))
    assert calls == [] and errors[0] == errors[1] and "batch_size" in errors[0]


def test_under_autocast_linear_is_left_to_vmap(monkeypatch):
    # autocast casts F.linear's bias with its matmul; the rewrite's separate `+ bias` would not
    calls = count_rewrites(monkeypatch, "_linear")
    x = torch.randn(4, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, _ = linear_losses_and_grads(x, True, rewrite=False)
        rewritten, _ = linear_losses_and_grads(x, True, rewrite=True)
    assert calls == [] and rewritten[0].dtype == plain[0].dtype
    assert torch.equal(rewritten[0], plain[0])
