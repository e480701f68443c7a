"""The ready model modules in objectives/: they obey the contract, and each one
fails with its FAILING settings and trains with its STABLE settings, in a plain
PyTorch loop with nothing of stabsearch in it.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.support import ROOT
from tests.support.plain_loop import train_plain

NAMES = ["adam_late_blowup", "softmax_chance", "broken_lines"]
SETTING_KEYS = {"optimizer", "lr", "eps", "beta1", "beta2", "weight_decay"}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




def objective(name: str) -> ModuleType:
    return _load(ROOT / "objectives" / f"{name}.py", f"_objective_{name}")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster, and it is what the docstrings measured."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def max_rise(losses: list[float]) -> float:
    """The largest amount by which a loss rose above 1.15 x the best loss before it."""
    best, worst = math.inf, -math.inf
    for value in losses:
        if best < math.inf:
            worst = max(worst, value - 1.15 * best)
        best = min(best, value)
    return worst


def final(losses: list[float]) -> float:
    """Median of the last 5% of the losses (docs/design.md, Score)."""
    tail = sorted(losses[-max(1, len(losses) // 20) :])
    return tail[len(tail) // 2]


def biggest_jump(losses: list[float], start: int, factor: float) -> tuple[float, int | None]:
    """Largest rise L_t - min(L_<t) over t >= start among the rises that are at least
    ``factor`` times that minimum, with its step; a non-finite loss counts as infinite."""
    best_before = min(losses[:start])
    jump, step = 0.0, None
    for t in range(start, len(losses)):
        value = losses[t] if math.isfinite(losses[t]) else math.inf
        if value >= factor * best_before and value - best_before > jump:
            jump, step = value - best_before, t
        best_before = min(best_before, value)
    return jump, step


# --- the contract -------------------------------------------------------------------------


def _batch_tensors(batch) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, dict):
        return list(batch.values())
    return list(batch)


@pytest.mark.parametrize("name", NAMES)
def test_module_obeys_the_model_module_contract(name):
    mod = objective(name)
    assert mod.__doc__ and "FAILING" in mod.__doc__ and "STABLE" in mod.__doc__
    for attr in ("model", "batches", "loss"):
        assert callable(getattr(mod, attr)), f"{name}.{attr} is not callable"
    assert isinstance(mod.STEPS, int) and mod.STEPS > 0
    for settings in (mod.FAILING, mod.STABLE):
        assert set(settings) == SETTING_KEYS
        assert settings["optimizer"] in ("adam", "adamw")
        assert settings["lr"] > 0 and settings["eps"] > 0 and settings["weight_decay"] >= 0
        assert 0 <= settings["beta1"] < 1 and 0 <= settings["beta2"] < 1
    assert mod.FAILING != mod.STABLE

    torch.manual_seed(0)
    net = mod.model()
    assert isinstance(net, torch.nn.Module)
    torch.manual_seed(0)
    again = mod.model()
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b), "model() is not determined by the torch seed"

    batch = next(iter(mod.batches(0)))
    value = mod.loss(net, batch)
    assert isinstance(value, torch.Tensor) and value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert any(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_batches_are_deterministic_given_the_seed(name):
    mod = objective(name)

    def first(seed: int, n: int = 3) -> list[list[torch.Tensor]]:
        it = iter(mod.batches(seed))
        return [_batch_tensors(next(it)) for _ in range(n)]

    one, two, other = first(3), first(3), first(4)
    for a, b in zip(one, two):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(one[0], other[0])), "the seed does not change the data"


def test_classification_modules_say_their_classes():
    assert objective("softmax_chance").CLASSES == 6
    assert not hasattr(objective("adam_late_blowup"), "CLASSES")  # regression: no chance level


# --- (a) Adam's late blow-up ----------------------------------------------------------------


def test_adam_late_blowup_spikes_in_the_second_half_with_small_eps():
    mod = objective("adam_late_blowup")
    losses = train_plain(mod, mod.FAILING, mod.STEPS, seed=0)
    l0, half = losses[0], mod.STEPS // 2
    assert min(losses[:half]) < 1e-9 * l0, "the loss should first fall to almost zero"
    jump, step = biggest_jump(losses, half, factor=100.0)
    # a spike that the absolute floor of the spike rule (1e-3 x L0) cannot dismiss
    assert jump > 1e-3 * l0, f"no spike in the second half (largest rise {jump / l0:.1e} x L0)"
    assert step is not None and step >= half


def test_adam_late_blowup_large_eps_never_spikes_even_at_5x_steps():
    mod = objective("adam_late_blowup")
    losses = train_plain(mod, mod.STABLE, 5 * mod.STEPS, seed=0)
    l0 = losses[0]
    assert all(math.isfinite(v) for v in losses)
    assert max_rise(losses[: mod.STEPS]) < 1e-6 * l0
    assert max_rise(losses) < 1e-6 * l0, "a rise above 1.15 x the best loss so far"
    assert losses[mod.STEPS - 1] < 1e-9 * l0, "STABLE should still reach a low loss within STEPS"


@pytest.mark.parametrize("seed", range(3))
def test_adam_late_blowup_lower_lr_only_delays_the_blowup(seed):
    # lr 5e-4 (half of FAILING's): quiet through STEPS, blowing up soon after. The run is chaotic: the
    # height of its first spikes depends on the last bits of the kernels' rounding. Measured on seeds 0..4
    # with ATEN_CPU_CAPABILITY=avx2 and =default: the rise before STEPS stays under 4.8e-14 x L0, the first
    # 100x rise comes at step 3102-3317, and the largest jump by step 4000 is 3.7e-4 .. 2.3e-3 x L0. So a
    # jump above 1e-4 x L0 (ten decades above the 1e-15 floor it sat at) is asserted, not above 1e-3.
    mod = objective("adam_late_blowup")
    settings = dict(mod.FAILING, lr=5e-4)
    losses = train_plain(mod, settings, 4000, seed=seed)
    l0 = losses[0]
    assert max_rise(losses[: mod.STEPS]) < 1e-6 * l0
    jump, step = biggest_jump(losses, mod.STEPS, factor=100.0)
    assert jump > 1e-4 * l0 and step is not None and step > mod.STEPS, (jump / l0, step)


# --- (b) softmax MLP stuck at chance ---------------------------------------------------------


def _relu_outputs(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    return outs + [logits]


def _sample(mod: ModuleType, seed: int, n_batches: int = 34) -> torch.Tensor:
    it = iter(mod.batches(seed))
    return torch.cat([next(it)[0] for _ in range(n_batches)])


@pytest.mark.parametrize("seed", range(5))
def test_softmax_chance_high_lr_sticks_at_chance_with_a_dead_layer(seed):
    mod = objective("softmax_chance")
    losses, net = train_plain(mod, mod.FAILING, mod.STEPS, seed=seed, return_model=True)
    chance = math.log(mod.CLASSES)
    assert abs(final(losses) - chance) < 0.02 * chance, f"final loss {final(losses):.3f}, ln 6 = {chance:.3f}"
    *hidden, logits = _relu_outputs(net, _sample(mod, seed))
    dead = [bool((h <= 0).all()) for h in hidden]
    assert any(dead), "no hidden ReLU layer is completely dead"
    assert logits.argmax(1).unique().numel() == 1, "it should predict one class for every input"


@pytest.mark.parametrize("seed", range(5))
def test_softmax_chance_ten_times_lower_lr_trains(seed):
    mod = objective("softmax_chance")
    assert mod.STABLE["lr"] == pytest.approx(mod.FAILING["lr"] / 10)
    losses, net = train_plain(mod, mod.STABLE, mod.STEPS, seed=seed, return_model=True)
    assert final(losses) < 0.5 * math.log(mod.CLASSES)
    *hidden, _ = _relu_outputs(net, _sample(mod, seed))
    assert not any(bool((h <= 0).all()) for h in hidden)


# --- (c) broken lines: long decrease, then jumps ---------------------------------------------


def test_broken_lines_loss_falls_then_jumps_with_small_eps():
    mod = objective("broken_lines")
    losses = train_plain(mod, mod.FAILING, mod.STEPS, seed=0)
    l0, half = losses[0], mod.STEPS // 2
    assert min(losses[: mod.STEPS // 4]) < 1e-9 * l0, "the loss should first fall to almost zero"
    jump, step = biggest_jump(losses, half, factor=1e6)
    assert jump > 1e-4 * l0, f"no jump in the second half (largest rise {jump / l0:.1e} x L0)"


def test_broken_lines_large_eps_keeps_decreasing():
    mod = objective("broken_lines")
    losses = train_plain(mod, mod.STABLE, mod.STEPS, seed=0)
    l0 = losses[0]
    assert max_rise(losses) < 1e-6 * l0, "a rise above 1.15 x the best loss so far"
    assert final(losses) < 1e-9 * l0
