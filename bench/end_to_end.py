"""A whole ``stabsearch run`` (search and confirmation), one trial at a time against ``--population K``.

Each run is the command a user types, in its own process, with default
settings (the median stop, the early warning, confirmation of the best 3 on
3 new seeds at twice the steps, edge probes and the back-off check) and the
same ``--trials``, ``--steps`` and ``--seed`` on both sides; only
``--population`` differs. The runs alternate (sequential, population,
sequential, ...) so a busy machine slows both alike, and with ``--repeats`` >
1 the table shows medians. For each it reports the wall time from start to
exit and the ratio; the steps trained (every trial, search and
confirmation) and those of the search; how many search trials the median
rule stopped; the steps of the search trials that diverged by the rule of
``bench/versus_optuna.py``; the best search score; and whether the
recommendation passes the independent check of ``bench/versus_optuna.py``
(a plain torch loop on 3 new seeds at twice the horizon, with its own pass
rule), and whether both sides recommend the same. ``stages`` splits the
wall time by the trials' own start and end times: start-up until the first
trial, the search, the confirmation, and the report and exit after it.

    OMP_NUM_THREADS=1 python bench/end_to_end.py                     # (b) and (a), 64 trials of 400 steps, K=32
    OMP_NUM_THREADS=1 python bench/end_to_end.py --objectives b --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

OBJECTIVES = {"a": "objectives/adam_late_blowup.py", "b": "objectives/softmax_chance.py", "c": "objectives/broken_lines.py"}


def run_once(path: str, population: int, args: argparse.Namespace, tmp: Path, tag: str) -> dict:
    """One ``stabsearch run`` in a fresh process; what it did, read back from its study."""
    import optuna

    from stabsearch.reporting.curves import read_curve
    from stabsearch.study.recommend import recommend
    from stabsearch.study.storage import open_storage
    from stabsearch.study.trial_attrs import study_records
    from versus_optuna import diverged

    url = f"sqlite:///{tmp / tag}.db"
    command = [sys.executable, "-m", "stabsearch", "run", str(ROOT / path), "--study", tag, "--storage", url,
               "--trials", str(args.trials), "--steps", str(args.steps), "--seed", str(args.seed), "--no-progress"]
    if population > 1:
        command += ["--population", str(population)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    started = time.time()
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr.strip()}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    store = open_storage(url)
    study = optuna.load_study(study_name=tag, storage=store.storage)
    trials = study.get_trials(deepcopy=False)
    search = [t for t in trials if t.user_attrs.get("kind", "search") == "search"]
    confirm = [t for t in trials if t.user_attrs.get("kind") == "confirm"]
    span = lambda ts: (min(t.datetime_start.timestamp() for t in ts), max(t.datetime_complete.timestamp() for t in ts))  # noqa: E731
    s0, s1 = span(search)
    c1 = span(confirm)[1] if confirm else s1
    records = study_records(study)
    try:
        config = recommend(records, tag).config
    except Exception:  # nothing to recommend: the check fails
        config = None
    curves = {t.number: read_curve(t, store.artifacts_dir) for t in search}
    scores = [t.value for t in search if t.state == optuna.trial.TrialState.COMPLETE]
    steps_of = lambda ts: sum(int(t.user_attrs.get("steps_run") or 0) for t in ts)  # noqa: E731
    return {
        "wall": ended - started,
        "stages": {"start-up": s0 - started, "search": s1 - s0, "confirm": c1 - s1, "report+exit": ended - c1},
        "steps": steps_of(trials),
        "search_steps": steps_of(search),
        "diverged_steps": steps_of([t for t in search if curves[t.number] is not None and diverged(curves[t.number][1])]),
        "best": min(scores) if scores else math.nan,
        "config": config,
        "slow": sum("stopped_slow_at" in t.user_attrs for t in search),
        "notice": [line for line in done.stderr.splitlines() if "--population" in line],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="ba", help="which of a, b, c [default: ba]")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--population", type=int, default=32, help="K [default: 32]")
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats; the table shows medians")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run [default: 1]")
    args = parser.parse_args()
    if args.trials < 1 or args.steps < 1 or args.population < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--trials, --steps, --repeats and --threads must be positive, --population at least 2")
    if any(key not in OBJECTIVES for key in args.objectives):
        parser.error(f"--objectives: each of {''.join(OBJECTIVES)}, got {args.objectives!r}")
    import torch

    from stabsearch import load_model_module
    from versus_optuna import independent_check

    torch.set_num_threads(args.threads)
    print(f"trials={args.trials} steps={args.steps} seed={args.seed} threads={args.threads} repeats={args.repeats}; "
          f"stabsearch run with default settings, sequential vs --population {args.population}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.objectives:
            path = OBJECTIVES[key]
            module = load_model_module(str(ROOT / path))
            runs: dict[int, list[dict]] = {1: [], args.population: []}
            for r in range(args.repeats):
                for k in runs:
                    runs[k].append(run_once(path, k, args, Path(tmp), f"{key}{k}r{r}"))
                    print(f"# {Path(path).stem} K={k} repeat {r}: {runs[k][-1]['wall']:.1f}s", file=sys.stderr)
            checks = {k: independent_check(module, rs[0]["config"], args.steps) if rs[0]["config"] is not None else (False, math.nan)
                      for k, rs in runs.items()}
            rows.append((Path(path).stem, runs, checks))
    median = statistics.median
    print(f"\n{'objective':<18} {'mode':<14} {'wall s':>7} {'x seq':>6} {'steps':>8} {'search steps':>13} {'slow':>5} "
          f"{'diverged steps':>15} {'best score':>11} {'check':>6} {'final loss':>11}  chosen lr / eps")
    for name, runs, checks in rows:
        seq_wall = median(r["wall"] for r in runs[1])
        for k, rs in runs.items():
            wall = median(r["wall"] for r in rs)
            ok, final = checks[k]
            c = rs[0]["config"]
            chosen = f"{c.lr:.2e} / {c.eps:.1e}" if c else "none"
            mode = "sequential" if k == 1 else f"population {k}"
            print(f"{name:<18} {mode:<14} {wall:>7.1f} {seq_wall / wall:>6.2f} {median(r['steps'] for r in rs):>8.0f} "
                  f"{median(r['search_steps'] for r in rs):>13.0f} {median(r['slow'] for r in rs):>5.0f} "
                  f"{median(r['diverged_steps'] for r in rs):>15.0f} {median(r['best'] for r in rs):>11.3f} "
                  f"{'yes' if ok else 'NO':>6} {final:>11.3g}  {chosen}")
        a, b = runs[1][0]["config"], runs[max(runs)][0]["config"]
        same = "the same" if a == b else ("different, equally good (both pass the check)" if checks[1][0] and checks[max(runs)][0]
                                          else "different, and not both pass the check")
        print(f"{'':<18} recommendation: {same}")
        for k, rs in runs.items():
            stages = ", ".join(f"{s} {median(r['stages'][s] for r in rs):.1f}s" for s in rs[0]["stages"])
            notice = f" ({rs[0]['notice'][0]})" if rs[0]["notice"] else ""
            print(f"{'':<18} stages, {'sequential' if k == 1 else f'population {k}'}: {stages}{notice}")


if __name__ == "__main__":
    main()
