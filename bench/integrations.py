"""stabsearch's framework helpers against the same framework's plain fit/train of the same steps.

For Lightning: ``lightning.Trainer(...).fit(module)`` with the module's own
``configure_optimizers`` (Adam and a per-step LambdaLR), against
``stabsearch.integrations.lightning.fit(run, module)``. For Hugging Face:
``transformers.Trainer(...).train()`` with the same Adam passed as
``optimizers=``, against ``stabsearch.integrations.transformers.train(run,
...)``. Both sides build their Trainer inside the timed region, are equally
quiet (no logger, checkpoints or progress bar) and train the same model,
data, seed and steps, and both curves must end at about the same loss, which is checked.
Runs alternate (plain, helper, plain, helper, ...) so machine noise hits both alike;
the table gives median seconds and their ratio (goal: <= 1.10).

    python bench/integrations.py                      # both frameworks, 300 steps, 5 repeats
    python bench/integrations.py --steps 500 --repeats 7
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stabsearch import OptimConfig  # noqa: E402
from stabsearch.training.optim import build_optimizer, build_scheduler  # noqa: E402
from stabsearch.training.trainer import Run, seed_everything  # noqa: E402

CONFIG = OptimConfig(optimizer="adam", lr=1e-3, schedule="cosine", warmup=0.05)
WIDTH = 256


def dataset(seed: int, n: int = 4096) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    return torch.utils.data.TensorDataset(x, torch.sin(x[:, :8].sum(1, keepdim=True)))


def network() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(32, WIDTH), torch.nn.GELU(), torch.nn.Linear(WIDTH, WIDTH), torch.nn.GELU(),
                               torch.nn.Linear(WIDTH, 1))


# ----------------------------------------------------------------------------------------------- lightning


@functools.cache
def lightning_module_class():
    import lightning.pytorch as pl

    class Lit(pl.LightningModule):
        def __init__(self, steps: int) -> None:
            super().__init__()
            self.net, self.steps = network(), steps

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):  # the plain run's: the trial's optimizer and schedule, written by hand
            optimizer = build_optimizer(self.parameters(), CONFIG)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": build_scheduler(optimizer, CONFIG, self.steps), "interval": "step"}}

    return Lit


def lightning_loader(seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset(seed), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))


def lightning_plain(steps: int, seed: int) -> float:
    import lightning.pytorch as pl

    seed_everything(seed)
    module = lightning_module_class()(steps)
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=lightning_loader(seed))
    return _last_loss(module, seed)


def lightning_helper(steps: int, seed: int) -> float:
    from stabsearch.integrations.lightning import fit

    seed_everything(seed)
    module = lightning_module_class()(steps)
    run = Run(CONFIG, steps=steps, seed=seed, device=torch.device("cpu"))
    fit(run, module, train_dataloaders=lightning_loader(seed))
    return _last_loss(module, seed)


def _last_loss(module: torch.nn.Module, seed: int) -> float:
    x, y = dataset(seed).tensors
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(module.net(x), y))


# ----------------------------------------------------------------------------------------------- transformers


class HFNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = network()

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class HFData(torch.utils.data.Dataset):
    def __init__(self, seed: int) -> None:
        self.x, self.y = dataset(seed).tensors

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def hf_plain(steps: int, seed: int) -> float:
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    seed_everything(seed)
    model = HFNet()
    optimizer = build_optimizer(model.parameters(), CONFIG)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, seed=seed, use_cpu=True, per_device_train_batch_size=64,
                                 save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, max_grad_norm=0.0)
        trainer = Trainer(model=model, args=args, train_dataset=HFData(seed),
                          optimizers=(optimizer, build_scheduler(optimizer, CONFIG, steps)))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return _last_loss(model, seed)


def hf_helper(steps: int, seed: int) -> float:
    from transformers import TrainingArguments

    from stabsearch.integrations.transformers import train

    seed_everything(seed)
    model = HFNet()
    run = Run(CONFIG, steps=steps, seed=seed, device=torch.device("cpu"))
    with tempfile.TemporaryDirectory() as out:
        train(run, model=model, args=TrainingArguments(output_dir=out, per_device_train_batch_size=64), train_dataset=HFData(seed))
    return _last_loss(model, seed)


# ----------------------------------------------------------------------------------------------- the table

PAIRS = {"lightning": (lightning_plain, lightning_helper), "transformers": (hf_plain, hf_helper)}


def timed(call, steps: int, seed: int) -> tuple[float, float]:
    started = time.perf_counter()
    loss = call(steps, seed)
    return time.perf_counter() - started, loss


def measure(name: str, steps: int, repeats: int, seed: int) -> dict[str, float]:
    plain, helper = PAIRS[name]
    timed(plain, 5, seed), timed(helper, 5, seed)  # imports and first-call costs out of the timings
    times: dict[str, list[float]] = {"plain": [], "helper": []}
    losses: dict[str, float] = {}
    for _ in range(repeats):
        for side, call in (("plain", plain), ("helper", helper)):
            seconds, losses[side] = timed(call, steps, seed)
            times[side].append(seconds)
    if abs(losses["plain"] - losses["helper"]) > 0.05 * max(abs(losses["plain"]), 1e-3):
        raise SystemExit(f"{name}: the two runs trained differently (final loss {losses['plain']:.4g} vs {losses['helper']:.4g})")
    p, h = statistics.median(times["plain"]), statistics.median(times["helper"])
    return {"plain": p, "helper": h, "ratio": h / p, "loss": losses["helper"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(PAIRS), default=None)
    opts = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import lightning.pytorch  # noqa: F401  (it sets its logger's level on import)

    for name in ("lightning.pytorch", "lightning.fabric"):  # the plain side as quiet as the helper
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore")
    print(f"{opts.steps} steps, {opts.repeats} interleaved repeats, median seconds, on {torch.get_num_threads()} thread(s)")
    print(f"{'framework':<14}{'plain':>10}{'helper':>10}{'ratio':>8}  goal <= 1.10")
    worst = 0.0
    for name in [opts.only] if opts.only else list(PAIRS):
        row = measure(name, opts.steps, opts.repeats, opts.seed)
        worst = max(worst, row["ratio"])
        print(f"{name:<14}{row['plain']:>10.3f}{row['helper']:>10.3f}{row['ratio']:>8.3f}  {'ok' if row['ratio'] <= 1.10 else 'OVER'}")
    sys.exit(0 if worst <= 1.10 else 1)


if __name__ == "__main__":
    main()
