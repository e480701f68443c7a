"""A study laid out exactly as the runner stores it, with loss-curve artifacts and no training.

``make_study`` builds one in a second or two, for the report, dashboard and CLI tests.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from stabsearch.config import OptimConfig
from stabsearch.study.space import SearchSpace
from stabsearch.study.storage import Storage, open_storage

XSS = "<script>alert(1)</script>"
CLIFF_LR = 0.03  # the hand-made study is stable below this learning rate


# ---------------------------------------------------------------------------------------------
# A study laid out like the runner's, without training


def _curve(verdict: str, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict], int | None]:
    t = np.arange(steps)
    loss = 2.0 * np.exp(-t / (steps / 6)) + 0.01
    loss = loss * rng.lognormal(0, 0.05, steps)
    spikes, diverged_at = [], None
    if verdict == "spiky":
        at = int(steps * 0.7)
        loss[at:at + 5] *= 40
        spikes = [{"step": at, "peak_step": at + 2, "size": math.log10(40), "before": float(loss[at - 1]),
                   "peak": float(loss[at + 2]), "recovered": True, "recover_steps": 5}]
    elif verdict == "diverged":
        diverged_at = steps // 3
        loss[diverged_at - 5:diverged_at] = np.geomspace(5, 1e6, 5)
        loss = loss[:diverged_at + 1]
        loss[-1] = np.inf
    return loss, spikes, diverged_at


DISTRIBUTIONS = {
    "optimizer": CategoricalDistribution(["adam", "adamw"]), "lr": FloatDistribution(1e-5, 1.0, log=True),
    "eps": FloatDistribution(1e-10, 1e-1, log=True), "beta1": FloatDistribution(0.8, 0.99),
    "one_minus_beta2": FloatDistribution(1e-4, 1e-1, log=True),
    "schedule": CategoricalDistribution(["constant", "cosine", "linear"]), "warmup": FloatDistribution(0.0, 0.1),
}


def add_trial(study: optuna.Study, store: Storage, tmp: Path, config: OptimConfig, verdict: str, *, kind: str = "search",
               seed: int = 0, steps: int = 200, of: int | None = None, rng: np.random.Generator,
               extra: dict | None = None) -> int:
    """Train nothing; store the same attributes and artifact the runner writes, then tell."""
    params = {"optimizer": config.optimizer, "lr": config.lr, "eps": config.eps, "beta1": config.beta1,
              "one_minus_beta2": 1 - config.beta2, "schedule": config.schedule, "warmup": config.warmup}
    loss, spikes, diverged_at = _curve(verdict, steps, rng)
    final = None if diverged_at is not None else float(np.median(loss[-10:]))
    score = math.log10(loss[0] * 1.001) + 1 if final is None else math.log10(final + 1e-3 * loss[0]) + 0.3 * len(spikes)
    attrs = {"kind": kind, "config": config.to_dict(), "seed": seed, "steps": steps, "verdict": verdict, "score": score,
             "final_loss": final, "initial_loss": float(loss[0]), "n_spikes": len(spikes), "late_spikes": len(spikes),
             "unrecovered": 0, "spikes": spikes, "diverged_at": diverged_at, "steps_run": len(loss), "seconds": 0.25}
    if of is not None:
        attrs.update(of=of, backoff=False)
    attrs.update(extra or {})
    template = optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=DISTRIBUTIONS, user_attrs=attrs)
    trial = optuna.Trial(study, study._storage.create_new_trial(study._study_id, template_trial=template))
    path = tmp / f"loss_curve_trial{trial.number}.csv"
    path.write_text("step,loss\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(loss.tolist())))
    artifact = optuna.artifacts.upload_artifact(artifact_store=store.artifacts, file_path=str(path), study_or_trial=trial,
                                                mimetype="text/csv")
    trial.set_user_attr("curve_artifact", artifact)
    if verdict == "stable":
        study.tell(trial, score)
    else:
        trial.report(score, steps)
        study.tell(trial, state=TrialState.PRUNED)
    return trial.number


def make_study(store: Storage, name: str = "synthetic", *, model: str = "tests/modules/tiny.py", all_unstable: bool = False,
               trials: int = 18) -> optuna.Study:
    """A finished search (stable below ``CLIFF_LR``, spiky then diverged above) plus confirmation runs."""
    study = optuna.create_study(study_name=name, storage=store.storage, direction="minimize")
    study.set_user_attr("model", model)
    study.set_user_attr("steps", 200)
    study.set_user_attr("seed", 0)
    study.set_user_attr("space", SearchSpace().to_dict())
    rng = np.random.default_rng(0)
    lrs = np.geomspace(1e-4, 0.8, trials)
    numbers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, lr in enumerate(lrs):
            # eps and beta2 vary within what recommend() calls "similar", so the cliff along lr is one cliff
            config = OptimConfig(optimizer="adamw", lr=float(lr), eps=float(10 ** rng.uniform(-8.9, -7.1)), beta1=0.9,
                                 beta2=float(1 - 10 ** rng.uniform(-3.2, -2.8)), schedule="cosine", warmup=float(rng.uniform(0, 0.1)))
            if all_unstable:
                verdict = "diverged"
            else:
                verdict = "stable" if lr < CLIFF_LR else ("spiky" if lr < 0.15 else "diverged")
            numbers[i] = (add_trial(study, store, Path(tmp), config, verdict, rng=rng), config, verdict)
        stable = [(n, c) for n, c, v in numbers.values() if v == "stable"]
        for n, config in stable[-2:]:  # the two highest stable learning rates, confirmed on two new seeds
            for seed in (1000, 1001):
                add_trial(study, store, Path(tmp), config, "stable", kind="confirm", seed=seed, steps=400, of=n, rng=rng)
    return study


def sqlite_store(root: Path) -> Storage:
    return open_storage(f"sqlite:///{root}/studies/stabsearch.db", create=True)
