"""A model whose default budget never ends: only a time limit stops its trials."""

import torch

STEPS = 10**9


def model():
    return torch.nn.Linear(2, 1)


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 2, generator=g)
    yield x, x.sum(1, keepdim=True)


def loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
