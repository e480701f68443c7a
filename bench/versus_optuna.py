"""stabsearch against plain Optuna, side by side, with a check neither of them wrote.

For each objective, with the same number of trials, the same steps and the
same search space, it runs:

- **stabsearch** with its defaults: the search (which stops trials slower than
  the median of the finished ones), then confirmation and the backed-off
  recommendation;
- **plain Optuna** as a user would write it: TPE with the median pruner, a bare
  training loop that reports the loss every 5% of the steps (a NaN too) and
  does not look for NaN itself, the objective returning the last loss, and a
  NaN left to become FAIL; its choice is ``study.best_trial``.

Each method's chosen configuration is then trained on 3 new seeds at twice the
search horizon by ``independent_check`` below, a plain torch loop with its own
pass rule (finite throughout; after the first 10% of steps its level, a 9-step
running median, never 10x above its running minimum and above 1e-3 of its first
loss; ending below half its first loss: a run that sits at chance did not
train). The table reports whether the choice passed, its final loss, the
steps spent on trials that diverged (judged alike for both by ``diverged``
below, on each trial's curve as far as it ran: non-finite, or 5 values in a
row above 1.2x its start that it did not come back down from; the last line
also gives the ratio counting runs that came back down; stabsearch's curves
come from its stored artifacts), and the total steps until a passing
configuration was known (stabsearch's include its confirmation runs).

Steps on diverged trials are few and lumpy (one trial that diverges late
costs thousands), so ``--seeds N`` runs both methods, whole, on N seeds
(``--seed`` onwards; each seeds the sampler, the model and the data) and
sums them; the table's choice, its check and the steps until a passing
configuration was known are those of ``--seed``.

    python bench/versus_optuna.py                  # all three objectives, 20 trials
    python bench/versus_optuna.py --seeds 5        # diverged steps summed over seeds 0-4
    python bench/versus_optuna.py --trials 10 --objectives a
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import stabsearch  # noqa: E402
from stabsearch import OptimConfig, SearchSpace, load_model_module  # noqa: E402
from stabsearch.reporting.curves import read_curve  # noqa: E402
from stabsearch.study.trial_attrs import study_records  # noqa: E402
from stabsearch.study.space import sample  # noqa: E402
from stabsearch.study.storage import open_storage  # noqa: E402

OBJECTIVES = {"a": "objectives/adam_late_blowup.py", "b": "objectives/softmax_chance.py", "c": "objectives/broken_lines.py"}
CHECK_SEEDS = (7001, 7002, 7003)


def _batches_forever(module, seed: int):
    while True:
        yield from module.batches(seed)


def _optimizer(params, c: OptimConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=c.weight_decay)


def _lr_at(c: OptimConfig, step: int, total: int) -> float:
    warm = round(c.warmup * total)
    if step < warm:
        return c.lr * (step + 1) / (warm + 1)
    p = min(1.0, (step - warm) / max(1, total - warm))
    factor = {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * p)), "linear": 1.0 - p}[c.schedule]
    return c.lr * factor


def bare_losses(module, c: OptimConfig, steps: int, seed: int, report=None, stop_at_nan: bool = True) -> list[float]:  # noqa: ANN001
    """A bare training loop with the configuration's schedule; stops at the first non-finite loss if asked."""
    torch.manual_seed(seed)
    model = module.model()
    opt = _optimizer(model.parameters(), c)
    data = _batches_forever(module, seed)
    losses: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(c, step, steps)
        loss = module.loss(model, next(data))
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()
        losses.append(value)
        if report is not None:
            report(step, value)
        if stop_at_nan and not math.isfinite(value):
            break
    return losses


def passes(losses: list[float], steps: int) -> bool:
    """The independent pass rule, on the loss level (a 9-step running median: hard batches are not spikes)."""
    if len(losses) < steps or not all(math.isfinite(v) for v in losses):
        return False
    level = [statistics.median(losses[max(0, i - 8): i + 1]) for i in range(len(losses))]
    running, floor = math.inf, 1e-3 * losses[0]
    for i, v in enumerate(level):
        if i >= steps // 10 and v > 10 * running and v > floor:
            return False
        running = min(running, v)
    return statistics.median(losses[-max(1, steps // 20):]) < 0.5 * losses[0]


def independent_check(module, c: OptimConfig, steps: int) -> tuple[bool, float]:  # noqa: ANN001
    """Train on new seeds at twice the horizon: (all seeds pass, median final loss)."""
    ok, finals = True, []
    for seed in CHECK_SEEDS:
        losses = bare_losses(module, c, 2 * steps, seed)
        ok &= passes(losses, 2 * steps)
        finals.append(statistics.median(losses[-max(1, steps // 10):]) if losses else math.nan)
    return ok, statistics.median(finals)


def diverged(losses, recovered_counts: bool = False) -> bool:  # noqa: ANN001
    """The bench's own judgement of a trial's curve, as far as it ran, applied alike to both methods: a
    non-finite loss, or 5 values in a row above 1.2x where it started (the median of its first 5 values)
    that the run did not come back from (the median of its last 5 values is still above that line).
    A run that rose above its start and then trained on to a low loss did not diverge; with
    ``recovered_counts`` it counts too (the stricter rule, also reported). Where a run stopped does not
    matter otherwise: stabsearch stops a diverging run soon after it crosses."""
    values = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in values):
        return True
    if len(values) < 5:
        return False
    limit = 1.2 * statistics.median(values[:5])
    crossed = any(min(values[i : i + 5]) > limit for i in range(len(values) - 4))
    return crossed and (recovered_counts or statistics.median(values[-5:]) > limit)


def run_stabsearch(path: str, trials: int, steps: int, seed: int) -> dict:
    """stabsearch's whole pipeline through its API, with its defaults (on the CPU, as the plain loop runs)."""
    module = load_model_module(str(ROOT / path))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        result = stabsearch.search(module, study="bench", storage=url, trials=trials, steps=steps, seed=seed, device="cpu",
                                   progress=False, report=False, log=lambda line: None)
        store = open_storage(url)
        study = optuna.load_study(study_name="bench", storage=store.storage)
        curves = {t.number: read_curve(t, store.artifacts_dir) for t in study.get_trials(deepcopy=False)}
        records = study_records(study)
    spent = sum(r.steps_run or 0 for r in records)
    lost = sum(r.steps_run or 0 for r in records if curves.get(r.number) is not None and diverged(curves[r.number][1]))
    strict = sum(r.steps_run or 0 for r in records if curves.get(r.number) is not None and diverged(curves[r.number][1], True))
    config = result.recommendation.config if result.recommendation is not None else None
    return {"config": config, "diverged_steps": lost, "strict_diverged_steps": strict, "total_steps": spent, "module": module,
            "diverged_trials": sum(1 for c in curves.values() if c is not None and diverged(c[1]))}


def run_plain_optuna(path: str, trials: int, steps: int, seed: int) -> dict:
    module = load_model_module(str(ROOT / path))
    space = SearchSpace().override(module.space, source="module")
    spent: list[tuple[int, int, bool]] = []  # (trial number, steps run, diverged)
    strict: list[int] = []  # steps of the trials the stricter rule calls diverged

    def objective(trial: optuna.Trial) -> float:
        c = sample(space, trial)
        every = max(1, steps // 20)
        losses: list[float] = []

        def report(step: int, value: float) -> None:
            losses.append(value)
            if step % every == 0:
                trial.report(value, step)  # a NaN too: the median pruner reads each trial's best value
                if trial.should_prune():
                    raise optuna.TrialPruned()

        try:
            bare_losses(module, c, steps, seed, report=report, stop_at_nan=False)
        finally:
            spent.append((trial.number, len(losses), diverged(losses)))
            strict.append(len(losses) if diverged(losses, recovered_counts=True) else 0)
        return losses[-1]  # NaN becomes FAIL, as it does for users

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=trials)
    try:
        best = study.best_trial
        config = sample(space, optuna.trial.FixedTrial(best.params))
        until = sum(n for number, n, _ in spent if number <= best.number)
    except ValueError:
        config, until = None, None
    return {"config": config, "diverged_steps": sum(n for _, n, d in spent if d), "total_steps": sum(n for _, n, _ in spent),
            "until": until, "module": module, "diverged_trials": sum(d for _, _, d in spent), "strict_diverged_steps": sum(strict)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="abc", help="which of a, b, c [default: abc]")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="sampler and training seed of the table's run [default: 0]")
    parser.add_argument("--seeds", type=int, default=1, help="sum the diverged steps over this many seeds [default: 1]")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    torch.set_num_threads(1)
    rows = []
    for key in args.objectives:
        path = OBJECTIVES[key]
        steps = load_model_module(str(ROOT / path)).steps or 1000
        started = time.perf_counter()
        ours = run_stabsearch(path, args.trials, steps, args.seed)
        plain = run_plain_optuna(path, args.trials, steps, args.seed)
        for name, res, method in (("stabsearch", ours, run_stabsearch), ("plain optuna", plain, run_plain_optuna)):
            ok, final = independent_check(res["module"], res["config"], steps) if res["config"] else (False, math.nan)
            until = res.get("until", res["total_steps"]) if ok else None
            per_seed = [res] + [method(path, args.trials, steps, s) for s in range(args.seed + 1, args.seed + args.seeds)]
            lost_steps = sum(r["diverged_steps"] for r in per_seed)
            strict_steps = sum(r["strict_diverged_steps"] for r in per_seed)
            lost = f"{lost_steps} ({sum(r['diverged_trials'] for r in per_seed)})"
            if args.seeds > 1:
                print(f"# {Path(path).stem} {name}: diverged steps per seed {[r['diverged_steps'] for r in per_seed]}, "
                      f"counting recovered runs {[r['strict_diverged_steps'] for r in per_seed]}", file=sys.stderr)
            rows.append((Path(path).stem, name, ok, final, lost, until, res["config"], lost_steps, strict_steps))
        print(f"# {Path(path).stem}: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    print(f"{'objective':<18} {'method':<13} {'passes':>6} {'final loss':>11} {'diverged steps (trials)':>24} {'steps to pass':>14}  chosen lr / eps")
    for obj, name, ok, final, div, until, c, _, _ in rows:
        chosen = f"{c.lr:.2e} / {c.eps:.1e}" if c else "none"
        print(f"{obj:<18} {name:<13} {'yes' if ok else 'NO':>6} {final:>11.3g} {div:>24} {until if until is not None else 'never':>14}  {chosen}")
    ours = [r for r in rows if r[1] == "stabsearch"]
    plain = [r for r in rows if r[1] == "plain optuna"]
    share = lambda rs: sum(r[2] for r in rs) / len(rs)  # noqa: E731
    ratio = sum(r[7] for r in ours) / max(1, sum(r[7] for r in plain))
    strict = sum(r[8] for r in ours) / max(1, sum(r[8] for r in plain))
    print(f"share passing: stabsearch {share(ours):.2f}, plain optuna {share(plain):.2f}; "
          f"diverged steps stabsearch/plain = {ratio:.2f}, counting runs that recovered {strict:.2f} "
          f"({sum(r[8] for r in ours)}/{sum(r[8] for r in plain)}) "
          f"(trials={args.trials}, seeds {args.seed}-{args.seed + args.seeds - 1}, "
          f"check seeds {list(CHECK_SEEDS)} at 2x the steps)")


if __name__ == "__main__":
    main()
