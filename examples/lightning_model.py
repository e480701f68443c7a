"""A LightningModule searched by stabsearch: `stabsearch run examples/lightning_model.py --trials 20`.

`train(run)` is one line: stabsearch's `fit` builds the `lightning.Trainer`
(the trial's optimizer and schedule in place of `configure_optimizers`,
`max_steps=run.steps`, the trial's device and precision, no logger,
checkpoints or progress bar) and hands every step's loss to the search.
"""

import lightning.pytorch as pl
import torch

from stabsearch.integrations.lightning import fit

STEPS = 300
NAN_AT = None  # a step from which training_step returns NaN (the tests set it), None: never


class LitRegression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.LayerNorm(32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if NAN_AT is not None and self.global_step >= NAN_AT:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):  # what the script uses on its own; stabsearch puts the trial's in its place
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(seed: int, n: int = 512) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return torch.utils.data.TensorDataset(x, torch.sin(x[:, :4].sum(1, keepdim=True)) + 0.1 * x[:, 4:5])


def loader(seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(data(seed), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))


def train(run):
    fit(run, LitRegression(), train_dataloaders=loader(run.seed))


def evaluate(module: LitRegression) -> float:
    x, y = data(10_000, 256).tensors
    x, y = x.to(module.device), y.to(module.device)
    return float(torch.nn.functional.mse_loss(module.net(x), y))
