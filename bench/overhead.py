"""stabsearch's trainer against a bare PyTorch loop: same module, steps, seed and settings.

The bare loop is what a user writes by hand: build the model and Adam, step,
and keep each loss with ``loss.item()``. stabsearch's loop adds seeding, the
scheduler, block reads of the losses and the divergence watch. Runs alternate
(bare, ours, bare, ours, ...) so that machine noise hits both alike, and the
table reports median times and their ratio. Both loops must produce the same
loss curve, which is checked, so the comparison is like for like.

    python bench/overhead.py                       # objective (b), the goal of <= 1.05
    python bench/overhead.py --all --repeats 7     # every objective
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stabsearch import OptimConfig, load_model_module, train_trial  # noqa: E402
from stabsearch.training.trainer import seed_everything  # noqa: E402

OBJECTIVES = {
    "b": "objectives/softmax_chance.py",
    "a": "objectives/adam_late_blowup.py",
    "c": "objectives/broken_lines.py",
}


def bare_loop(module, config: OptimConfig, steps: int, seed: int) -> list[float]:
    """The loop a user would write by hand."""
    seed_everything(seed)
    model = module.model()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps)
    losses: list[float] = []
    data = module.batches(seed)
    for _ in range(steps):
        try:
            batch = next(data)
        except StopIteration:
            data = module.batches(seed)
            batch = next(data)
        loss = module.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def measure(path: str, steps: int | None, repeats: int) -> dict:
    module = load_model_module(str(ROOT / path))
    steps = steps or module.steps or 1000
    settings = dict(getattr(module.module, "STABLE", {}))
    config = OptimConfig.from_dict({**settings, "optimizer": "adam", "weight_decay": 0.0})
    cpu = torch.device("cpu")
    bare_times, ours_times = [], []
    bare_curve = ours_curve = None
    for _ in range(repeats):
        start = time.perf_counter()
        bare_curve = bare_loop(module, config, steps, seed=0)
        bare_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        ours_curve = train_trial(module, config, steps=steps, seed=0, device=cpu).losses
        ours_times.append(time.perf_counter() - start)
    same = np.allclose(np.asarray(bare_curve, dtype=np.float64), ours_curve, rtol=1e-6, atol=0)
    bare, ours = statistics.median(bare_times), statistics.median(ours_times)
    return {"objective": Path(path).stem, "steps": steps, "bare_s": bare, "ours_s": ours, "ratio": ours / bare, "same_curve": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every objective, not just (b)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run [default: the module's STEPS]")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keys = ["b", "a", "c"] if args.all else ["b"]
    rows = [measure(OBJECTIVES[k], args.steps, args.repeats) for k in keys]
    print(f"{'objective':<20} {'steps':>6} {'bare loop s':>12} {'stabsearch s':>13} {'ratio':>7}  same curve")
    for r in rows:
        print(f"{r['objective']:<20} {r['steps']:>6} {r['bare_s']:>12.3f} {r['ours_s']:>13.3f} {r['ratio']:>7.3f}  {r['same_curve']}")
    print(f"(median of {args.repeats} alternating runs each, torch threads={args.threads}, device=cpu)")


if __name__ == "__main__":
    main()
