"""A model whose data loader deletes the study database in the working directory (user code gone wrong)."""

import os

import torch

STEPS = 60


def model():
    return torch.nn.Linear(2, 1)


def batches(seed):
    if os.path.exists("studies/stabsearch.db"):
        os.remove("studies/stabsearch.db")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 2, generator=g)
    yield x, x.sum(1, keepdim=True)


def loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
