"""Each step sleeps, so a test can kill the process while a trial runs.

With ``STABSEARCH_TEST_HOLD`` set to a folder, the process's second trial
holds inside ``model()`` (it is RUNNING by then) and writes ``holding`` there,
so that a test kills it when that state shows, not after a guessed time.
"""

import os
import time
from pathlib import Path

import torch

STEPS = 40
SPACE = {"lr": {"low": 1e-3, "high": 1e-2}}
HOLD = os.environ.get("STABSEARCH_TEST_HOLD")
HOLD_SECONDS = 600.0  # then it trains on, should nothing kill it
_built = 0


def model():
    global _built
    _built += 1
    if HOLD and _built == 2:
        Path(HOLD, "holding").write_text(str(os.getpid()))
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.05)
    return torch.nn.Linear(2, 1)


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(8, 2, generator=g)
        yield x, x.sum(1, keepdim=True)


def loss(model, batch):
    time.sleep(0.02)
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)
