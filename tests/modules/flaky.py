"""Raises inside user code when the learning rate is above 1e-2: that trial must FAIL alone."""

import torch

STEPS = 60
SPACE = {"lr": {"low": 1e-4, "high": 1.0}}


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.layer(x)


def model():
    return Net()


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(16, 2, generator=g)
        yield x, x.sum(1, keepdim=True)


_calls = {"n": 0}


def loss(model, batch):
    x, y = batch
    _calls["n"] += 1
    if _calls["n"] % 150 == 7:
        raise ValueError("boom from user code")
    return torch.nn.functional.mse_loss(model(x), y)
