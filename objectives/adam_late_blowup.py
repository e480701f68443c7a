"""Adam's late blow-up: the loss falls to almost zero, then spikes many steps later.

The model is a small ReLU MLP (8 -> 64 -> 64 -> 4) that fits a four-task
regression: 32 points whose targets come from a fixed random teacher network,
standardised per task. The inputs are fed unnormalised, at ten times unit
scale, and the output layer starts at zero. Training is full batch, so there is
no gradient noise and the loss can fall to the float32 floor (about 1e-15).

What goes wrong (FAILING: Adam, lr 1e-3, eps 1e-8, betas (0.9, 0.999), the
torch defaults): by step ~600 the loss is at 1e-15. The gradients are now
tiny, and Adam's second moment ``v`` decays towards them (beta2 = 0.999, so
``sqrt(v)`` shrinks by e every 2000 steps). Each weight's effective step
``lr / (sqrt(v) + eps)`` grows until, in the sharpest direction (the first
layer, made sharp by the unnormalised inputs), it passes the stability limit
``lr_eff * lambda_max < 38`` for beta1 = 0.9. The error along that direction
then grows step by step, ``m`` reacts a hundred times faster than ``v``, and
``m / (sqrt(v) + eps)`` throws the weights out: the loss jumps by twelve decades, from ~1e-15 to 4e-3 .. 1e-2
times the initial loss. Then it comes back down, and the cycle repeats every
few hundred to a thousand steps. Measured on seeds 0..4: the first spike
comes at step 1720-1980 of ``STEPS = 3000``, so always in the second half,
and the largest is 4e-3 .. 1e-2 times the initial loss.

What avoids it (STABLE: the same lr 1e-3 with eps 1e-2): once ``sqrt(v)`` is
below eps, Adam is momentum SGD with step ``lr / eps = 0.1``. That stays below
the stability limit, so ``v`` can collapse and nothing happens. The loss still
reaches 4e-14 .. 3e-11 of its initial value by STEPS and ~5e-15 by 5 x STEPS,
and no spike shows on seeds 0..4 over 5 x STEPS (it never rises by more than
5e-15 of the initial loss).

Settings that look fine at STEPS and fail only later (for checks on a longer
horizon than the search ran):

- lr 5e-4, eps 1e-8: a lower lr only delays the blow-up. The first spike
  comes at step 3200-5300 (seeds 0..4), after STEPS but before 5 x STEPS.
- lr 1e-3, eps 1e-3: an eps that is too small for this curvature. The first
  spike comes at step 4100-10300 (seeds 0..4). ``lr / eps = 1`` is still above
  ``38 / lambda_max``.

The map over lr x eps (seed 0; 'late' means a first spike after STEPS but
before 5 x STEPS; spikes counted with the robust rule of DESIGN.md section 6):

    lr \\ eps  1e-10   1e-8    1e-6    1e-4    1e-3    1e-2    1e-1
    1e-4      stable  stable  stable  stable  stable  stable  stable (slow)
    3e-4      stable  stable  stable  stable  stable  stable  stable (slow)
    1e-3      spiky   spiky   spiky   spiky   late    stable  stable (slow)
    3e-3      spiky   spiky   spiky   spiky   spiky   stable  stable
    1e-2      spiky   spiky   spiky   spiky   spiky   spiky   stable

At lr <= 3e-4 with a small eps the loss still creeps up late in the run, from
1e-12 .. 1e-15 at STEPS to 1e-8 .. 2e-6 at 5 x STEPS. That stays under the
absolute floor of the spike rule (1e-3 times the initial loss) and counts as
harmless.

How this maps to the original forum thread: a four-task regression network
trains well with Adam for 200k batches, then "the loss explodes". The asker
had lr 1e-4 and eps 1e-4, saw the same with the default eps, and saw it break
sooner at lr 1e-3. The accepted answer says that ``v`` becomes tiny near the
optimum and ``m / (sqrt(v) + eps)`` explodes once the gradients grow again,
and that eps should be raised from 1e-8 to 1e-3 .. 1e-1. Here too a higher lr
breaks sooner, a lower lr only postpones the blow-up, an eps of 1e-3 is not
enough at lr 1e-3, and eps 1e-2 fixes it. The step counts are smaller because
the problem is full batch and tiny.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

N_POINTS = 32
IN_FEATURES = 8
TASKS = 4
HIDDEN = 64
TEACHER_HIDDEN = 16
INPUT_SCALE = 10.0  # raw, unnormalised features: this is what makes the first layer sharp

STEPS = 3000

FAILING = {"optimizer": "adam", "lr": 1e-3, "eps": 1e-8, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0}
STABLE = {"optimizer": "adam", "lr": 1e-3, "eps": 1e-2, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0}


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_POINTS, IN_FEATURES, generator=g)
    w1 = torch.randn(IN_FEATURES, TEACHER_HIDDEN, generator=g) / math.sqrt(IN_FEATURES)
    w2 = torch.randn(TEACHER_HIDDEN, TASKS, generator=g) / math.sqrt(TEACHER_HIDDEN)
    y = torch.tanh(x @ w1) @ w2
    y = (y - y.mean(0)) / y.std(0)
    return INPUT_SCALE * x, y


def model() -> torch.nn.Module:
    """A 8 -> 64 -> 64 -> 4 ReLU MLP whose output layer starts at zero."""
    net = torch.nn.Sequential(
        torch.nn.Linear(IN_FEATURES, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, TASKS),
    )
    torch.nn.init.zeros_(net[-1].weight)
    torch.nn.init.zeros_(net[-1].bias)
    return net


def batches(seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The full batch (inputs, targets), again and again."""
    batch = _data(seed)
    while True:
        yield batch


def loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
