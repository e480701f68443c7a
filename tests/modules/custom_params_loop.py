"""A custom loop that gives make_optimizer the parameters, not the model: stabsearch cannot see the model
unless the loop calls ``run.watch`` (set ``WATCH = True``)."""

import torch

STEPS = 100
WATCH = False


def _data(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    return x, torch.sin(x.sum(1, keepdim=True))


def train(run):
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(run.device)
    optimizer = run.make_optimizer(model.parameters())
    x, y = (t.to(run.device) for t in _data(run.seed))
    if WATCH:
        run.watch(model, lambda: torch.nn.functional.mse_loss(model(x), y))
    for _ in range(run.steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.scheduler.step()
        run.log(loss)


def evaluate(model):
    x, y = _data(10_000)
    device = next(model.parameters()).device
    return float(torch.nn.functional.mse_loss(model(x.to(device)), y.to(device)))
