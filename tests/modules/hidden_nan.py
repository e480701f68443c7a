"""A loop whose weights go NaN at step 60 while the loss it logs stays finite (``nan_to_num``, as some code does)."""

import torch

STEPS = 200


def train(run):
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(run.device)
    optimizer = run.make_optimizer(model)
    g = torch.Generator().manual_seed(run.seed)
    x = torch.randn(64, 4, generator=g).to(run.device)
    y = torch.sin(x.sum(1, keepdim=True))
    for step in range(run.steps):
        if step == 60:
            with torch.no_grad():
                model[0].weight[0, 0] = float("nan")  # an overflow somewhere in the model
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.scheduler.step()
        run.log(torch.nan_to_num(loss.detach(), nan=0.0))
