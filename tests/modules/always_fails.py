"""Its loss raises on the third call, in every trial: a run of it has no trial that trains."""

import torch

STEPS = 40
_calls = {"n": 0}


def model():
    return torch.nn.Linear(2, 1)


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(8, 2, generator=g)
        yield x, x.sum(1, keepdim=True)


def loss(model, batch):
    x, y = batch
    _calls["n"] += 1
    if _calls["n"] % 3 == 0:
        raise ValueError(f"shapes do not match at call {_calls['n']}")
    return torch.nn.functional.mse_loss(model(x), y)
