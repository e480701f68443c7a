"""Sends Ctrl-C (KeyboardInterrupt) in the middle of the third trial."""

import torch

STEPS = 40
SPACE = {"lr": 1e-3}
_calls = {"n": 0}


def model():
    return torch.nn.Linear(2, 1)


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(8, 2, generator=g)
        yield x, x.sum(1, keepdim=True)


def loss(model, batch):
    _calls["n"] += 1
    if _calls["n"] == 2 * STEPS + 10:
        raise KeyboardInterrupt
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
