"""A model module written from scratch: what stabsearch needs from your code.

Run a search on it with::

    stabsearch run examples/my_model.py --trials 20

A model module is an ordinary Python file. stabsearch imports it, and for each
trial it seeds torch, calls ``model()``, draws batches from ``batches(seed)``
and minimises ``loss(model, batch)`` with the optimizer settings it is trying.
Everything below marked "optional" can be left out.
"""

import torch
from torch import nn
from torch.nn import functional as F

# Optional: the default number of optimizer steps per trial (``--steps`` overrides it).
STEPS = 400

# Optional: for classification, the number of balanced classes. stabsearch uses
# ln(CLASSES) as the chance loss, to recognise a run that collapsed to chance.
CLASSES = 3

# Optional: narrow the default search space (DESIGN section 5) for this model.
# Ranges can be narrowed, values fixed, choices restricted. A YAML file passed
# with --space is applied on top of this.
SPACE = {
    "lr": {"low": 1e-4, "high": 1e-1},  # still searched on a log scale
    "optimizer": ["adamw"],  # a single choice fixes it
    "weight_decay": {"low": 1e-5, "high": 1e-2},
}

_DIM = 10


def model() -> nn.Module:
    """A fresh, untrained model. stabsearch has already seeded torch."""
    return nn.Sequential(nn.Linear(_DIM, 32), nn.ReLU(), nn.Linear(32, CLASSES))


def batches(seed: int):
    """Training batches. Yield tensors, or tuples/dicts of tensors.

    Build the data from ``seed`` so that every trial sees the same data in the
    same order: then differences between trials come from the optimizer
    settings alone. stabsearch moves batches to the device. A finite iterable
    (one epoch, as here) is fine: it is called again with the same seed when it
    runs out. Generate data in code or read local files; don't download.
    """
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, _DIM, generator=g) * 2.0
    labels = torch.randint(0, CLASSES, (2048,), generator=g)
    inputs = centers[labels] + torch.randn(2048, _DIM, generator=g)
    order = torch.randperm(2048, generator=g)
    for start in range(0, 2048, 64):
        idx = order[start : start + 64]
        yield inputs[idx], labels[idx]


def loss(model: nn.Module, batch) -> torch.Tensor:
    """A scalar loss tensor for one batch; stabsearch calls backward() on it."""
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def evaluate(model: nn.Module) -> float:
    """Optional: a held-out loss. When present it is the trial's final loss.

    stabsearch calls it under ``torch.no_grad()`` with the model in eval mode.
    """
    g = torch.Generator().manual_seed(10_000)  # data no training batch uses
    centers = torch.randn(CLASSES, _DIM, generator=torch.Generator().manual_seed(0)) * 2.0
    labels = torch.randint(0, CLASSES, (512,), generator=g)
    inputs = centers[labels] + torch.randn(512, _DIM, generator=g)
    device = next(model.parameters()).device
    return F.cross_entropy(model(inputs.to(device)), labels.to(device)).item()
