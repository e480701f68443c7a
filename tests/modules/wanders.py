"""A model whose data loader changes the working directory, as careless user code does."""

import os

import torch

STEPS = 60
ELSEWHERE = os.environ.get("STABSEARCH_TEST_ELSEWHERE", "/")


def model():
    return torch.nn.Linear(2, 1)


def batches(seed):
    os.chdir(ELSEWHERE)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 2, generator=g)
    yield x, x.sum(1, keepdim=True)


def loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
