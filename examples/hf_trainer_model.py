"""A model trained with `transformers.Trainer`, searched by stabsearch: `stabsearch run examples/hf_trainer_model.py`.

`train(run)` is one line: stabsearch's `train` builds the Trainer from the
script's `TrainingArguments` with the trial's optimizer, schedule, steps,
seed and device, `logging_nan_inf_filter` off (a NaN is a divergence, never
a zero), no checkpoints and no printing, and hands every step's loss to the search.
"""

import torch
from transformers import TrainingArguments

from stabsearch.integrations.transformers import train as hf_train

STEPS = 300
NAN_AT = None  # a forward pass from which the training loss is NaN (the tests set it), None: never
#: The script's own arguments: Trainer's defaults except the batch size and clipping, which the trial records.
ARGS = dict(per_device_train_batch_size=32, max_grad_norm=1.0)


class TinyRegressor(torch.nn.Module):
    """A model in Trainer's convention: forward(**batch) returns a dict with the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.LayerNorm(32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        self.calls = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.net(x)
        result = {"logits": out}
        if labels is not None:
            loss = torch.nn.functional.mse_loss(out, labels)
            if self.training:
                self.calls += 1
                if NAN_AT is not None and self.calls > NAN_AT:
                    loss = loss * float("nan")
            result["loss"] = loss
        return result


class Regression(torch.utils.data.Dataset):
    def __init__(self, seed: int, n: int = 512) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.sin(self.x[:, :4].sum(1, keepdim=True)) + 0.1 * self.x[:, 4:5]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def train(run):
    hf_train(run, model=TinyRegressor(), args=TrainingArguments(**ARGS), train_dataset=Regression(run.seed))


def evaluate(model: TinyRegressor) -> float:
    data = Regression(10_000, 256)
    device = next(model.parameters()).device
    return float(model(data.x.to(device), data.y.to(device))["loss"])
