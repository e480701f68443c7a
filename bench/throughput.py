"""Trial-steps per second: one trial at a time (train_trial) against populations of K (train_population).

Each measurement runs in its own Python process, so that its peak memory can
be read (``resource.getrusage`` maxrss growth over a warmed-up baseline on
the CPU, ``torch.cuda.max_memory_allocated`` on a GPU) and so that no run
inherits another's caches. Each process warms up first (a few steps of the
same mode: vmap's first call costs about two seconds of one-time setup; a
population also takes 5 steps at the measured K, as a search that refills
its population reuses the kernels set up for that shape), then times its run. Sequential training trains ``--seq-trials`` configs one
after another with ``train_trial`` (without the sharpness probe, which is
not training); a population trains K configs drawn around the objective's
STABLE setting. Both count the steps actually run (a member that diverges
stops early in both). With ``--repeats`` > 1 the modes alternate and the
table shows medians. ``x seq`` is the ratio of wall-clock rates; ``x seq
(cpu)`` the ratio of rates per second of process CPU time, which a busy
machine disturbs less.

    python bench/throughput.py                                # every objective, CPU, 200 steps
    python bench/throughput.py --objectives b --sizes 8,64,256 --repeats 3
    python bench/throughput.py --objectives tests/modules/tiny.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OBJECTIVES = {
    "a": "objectives/adam_late_blowup.py",
    "b": "objectives/softmax_chance.py",
    "c": "objectives/broken_lines.py",
}


def configs_around(module, count: int, seed: int = 0) -> list:
    """``count`` configurations near the module's STABLE setting: lr within 10x below to 2x above, some AdamW."""
    from stabsearch import OptimConfig

    stable = OptimConfig.from_dict(dict(getattr(module.module, "STABLE", {}) or {}))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        adamw = bool(rng.random() < 0.3)
        out.append(
            OptimConfig(
                optimizer="adamw" if adamw else "adam",
                lr=float(stable.lr * 10 ** rng.uniform(-1.0, 0.3)),
                eps=stable.eps,
                beta1=stable.beta1,
                beta2=float(rng.choice([0.99, 0.999])),
                weight_decay=float(rng.choice([0.0, 0.01])) if adamw else 0.0,
                schedule=str(rng.choice(["constant", "cosine"])),
                warmup=float(rng.choice([0.0, 0.05])),
            )
        )
    return out


def child(spec: dict) -> dict:
    """One measurement, in a fresh process: warm up, then time and take peak memory."""
    import torch

    from stabsearch import load_model_module, train_trial
    from stabsearch.training.device import resolve_device
    from stabsearch.population.driver import train_population
    from stabsearch.population.memory import population_memory

    torch.set_num_threads(spec["threads"])
    device = resolve_device(spec["device"])
    module = load_model_module(spec["path"])
    steps, k = spec["steps"], spec["k"]
    configs = configs_around(module, max(k, spec["seq_trials"]))
    if k == 0:  # sequential
        train_trial(module, configs[0], steps=5, seed=0, device=device, sharpness=False)
    else:
        train_population(module, configs[:2], steps=5, seed=0, device=device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if k:  # a few steps at the measured size too: kernels (oneDNN's convolutions) are set up per shape, once
        train_population(module, configs[:k], steps=5, seed=0, device=device)
    wall, cpu = time.perf_counter(), time.process_time()
    if k == 0:
        results = [train_trial(module, c, steps=steps, seed=0, device=device, sharpness=False) for c in configs[: spec["seq_trials"]]]
    else:
        results = train_population(module, configs[:k], steps=steps, seed=0, device=device)
    if cuda:
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    trial_steps = sum(r.steps_run for r in results)
    estimate = population_memory(module, device).bytes_for(max(1, k))
    return {
        "estimate_bytes": estimate,
        "trial_steps": trial_steps,
        "wall": wall,
        "cpu": cpu,
        "peak_bytes": max(0, peak),
        "diverged": sum(r.diverged_at is not None for r in results),
        "members": len(results),
    }


def measure(path: str, k: int, args: argparse.Namespace) -> dict:
    spec = {"path": path, "k": k, "steps": args.steps, "device": args.device, "threads": args.threads, "seq_trials": args.seq_trials}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{path} k={k} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto [default: cpu]")
    parser.add_argument("--steps", type=int, default=200, help="steps per trial [default: 200]")
    parser.add_argument("--sizes", default="8,32,64,128,256", help="population sizes, comma-separated")
    parser.add_argument("--objectives", default="b,a,c", help="a, b, c or paths to model modules, comma-separated")
    parser.add_argument("--seq-trials", type=int, default=4, help="trials the sequential baseline trains [default: 4]")
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats; the table shows medians")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads [default: 1]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.steps < 1 or args.repeats < 1 or args.seq_trials < 1:
        parser.error("--sizes, --steps, --repeats and --seq-trials must be positive")
    print(f"device={args.device} steps={args.steps} threads={args.threads} repeats={args.repeats} "
          f"sequential={args.seq_trials} trials one at a time")
    for key in [s.strip() for s in args.objectives.split(",") if s.strip()]:
        path = OBJECTIVES.get(key, key)
        if not (ROOT / path).is_file() and not Path(path).is_file():
            print(f"\n{path}: missing, skipped")
            continue
        runs: dict[int, list[dict]] = {k: [] for k in [0, *sizes]}
        for _ in range(args.repeats):
            for k in runs:
                runs[k].append(measure(path, k, args))
        print(f"\n{Path(path).stem}")
        print(f"{'mode':<15} {'trial-steps/s':>14} {'x seq':>7} {'x seq (cpu)':>12} {'peak MB':>9} {'MB/member':>10} "
              f"{'planned MB':>12} {'diverged':>9}")
        rate = lambda rs, key: statistics.median(r["trial_steps"] / r[key] for r in rs)  # noqa: E731
        seq_wall, seq_cpu = rate(runs[0], "wall"), rate(runs[0], "cpu")
        for k, rs in runs.items():
            wall, cpu = rate(rs, "wall"), rate(rs, "cpu")
            peak = statistics.median(r["peak_bytes"] for r in rs) / 2**20
            members = rs[0]["members"]
            name = "sequential" if k == 0 else f"population {k}"
            per = peak / (1 if k == 0 else k)
            estimate = rs[0]["estimate_bytes"] / 2**20
            print(f"{name:<15} {wall:>14,.0f} {wall / seq_wall:>7.1f} {cpu / seq_cpu:>12.1f} {peak:>9.1f} {per:>10.2f} "
                  f"{estimate:>12.1f} {rs[0]['diverged']:>5}/{members:<4}")
    print("\npeak MB: growth of the process's peak over its warmed-up baseline (CPU: maxrss; CUDA: max_memory_allocated);")
    print("planned MB: population_memory(...).bytes_for(K), the tensor bytes max_population plans with (K=1 for sequential).")


if __name__ == "__main__":
    main()
