"""The training loop hangs at its first step: no step is ever logged, so the trial's own deadline (checked at
each logged step) never fires, however slow the machine, and only the parent's watch for a stalled worker can
end it."""

import time

import torch

STEPS = 40
SPACE = {"lr": {"low": 1e-3, "high": 1e-2}}


def model():
    return torch.nn.Linear(2, 1)


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(8, 2, generator=g)
        yield x, x.sum(1, keepdim=True)


def loss(model, batch):
    time.sleep(3600)  # as a deadlocked data loader or collective would
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
