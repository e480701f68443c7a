"""A model module with its own training loop: gradient accumulation and clipping.

Run it with::

    stabsearch run examples/custom_loop.py --trials 10

When a module defines ``train(run)``, stabsearch calls it instead of its own
loop, and ``model``, ``batches`` and ``loss`` are not needed. The ``run``
object hands over what the trial is testing:

- ``run.config``: the sampled settings (lr, eps, betas, weight decay, schedule);
- ``run.make_optimizer(model)``: builds that optimizer, and ``run.scheduler``;
- ``run.device``, ``run.steps`` (the step budget) and ``run.seed``;
- ``run.log(loss)``: call it once per optimizer step. It keeps the loss on the
  device, reads losses in blocks, and stops your loop (by raising ``StopRun``,
  which ``except Exception`` does not catch) as soon as the run has diverged;
- ``run.watch(model, loss_fn)``: optional, tells stabsearch the model (for
  ``evaluate``; ``make_optimizer(model)`` does that too) and a zero-argument
  function giving the loss on the current batch, for the dead-unit count and
  the early warning's sharpness probe. Without it those checks are skipped,
  and ``stabsearch trials --show N`` says so.
"""

import torch
from torch import nn
from torch.nn import functional as F

STEPS = 300
ACCUMULATE = 4  # micro-batches per optimizer step


def _data(seed: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(8, 1, generator=g)
    while True:
        x = torch.randn(16, 8, generator=g)
        y = torch.tanh(x @ weight) + 0.05 * torch.randn(16, 1, generator=g)
        yield x.to(device), y.to(device)


def train(run) -> None:
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)).to(run.device)
    optimizer = run.make_optimizer(model)  # Adam/AdamW with the trial's settings
    data = _data(run.seed, run.device)
    batch = None
    run.watch(model, lambda: F.mse_loss(model(batch[0]), batch[1]))  # the probes read the latest micro-batch
    for _ in range(run.steps):
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=run.device)
        for _ in range(ACCUMULATE):
            batch = x, y = next(data)
            loss = F.mse_loss(model(x), y) / ACCUMULATE
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        run.scheduler.step()
        run.log(total)  # the loss of the whole step, still on the device
