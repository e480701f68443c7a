"""A tiny regression the tests search over: stable at small lr, unstable at large ones."""

import torch

STEPS = 120


def model():
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    for _ in range(4):  # finite: the trainer restarts it
        yield x, y


def loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
