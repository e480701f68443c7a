"""A model module built inside a test, as ``load_model_module`` would return it."""

from __future__ import annotations

import types

import torch

from stabsearch.training.loader import ModelModule


def make_module(model, loss, batches=None, evaluate=None, classes=None, train=None) -> ModelModule:
    """A model module built in the test, as load_model_module would return it."""
    return ModelModule(
        name="inline", source="inline.py", module=types.ModuleType("inline"), model=model,
        batches=batches or classification_batches, loss=loss, evaluate=evaluate, train=train,
        steps=None, space=None, classes=classes,
    )


def classification_batches(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(8):  # finite: restarted like trainer.batch_stream does
        x = torch.randn(32, 6, generator=g)
        yield x, (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
