"""A module with its own loop: gradient accumulation over two micro-batches."""

import torch

STEPS = 50
SEEN = {"seeds": [], "steps": []}


def train(run):
    SEEN["seeds"].append(run.seed)
    SEEN["steps"].append(run.steps)
    g = torch.Generator().manual_seed(run.seed)
    model = torch.nn.Linear(3, 1).to(run.device)
    optimizer = run.make_optimizer(model)
    for _ in range(run.steps):
        optimizer.zero_grad()
        total = 0.0
        for _ in range(2):
            x = torch.randn(8, 3, generator=g)
            loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)) / 2
            loss.backward()
            total = total + loss.detach()
        optimizer.step()
        run.scheduler.step()
        try:
            run.log(total)
        except Exception:  # a careless user loop: StopRun must still get through
            pass
