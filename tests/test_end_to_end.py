"""The paths a user walks on the ready objectives, end to end (slow; CI runs them)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.support import independent
from tests.support import OBJECTIVES
from stabsearch import OptimConfig, load_model_module, train_trial
from stabsearch.study.runner import early_warning

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow


def stabsearch(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "stabsearch", *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_readme_search_on_objective_a_and_its_recommendation_holds_on_new_seeds(tmp_path):
    path = OBJECTIVES / "adam_late_blowup.py"
    stabsearch("run", path, "--trials", 20, "--no-progress", cwd=tmp_path)
    rows = json.loads(stabsearch("trials", "--format", "json", cwd=tmp_path))
    search = [t for t in rows if t["kind"] == "search"]
    assert len(search) == 20 and all(t["verdict"] for t in search)
    for t in search:
        assert t["state"] != "FAIL"
        assert (t["state"] == "PRUNED") == (t["verdict"] in ("spiky", "diverged", "plateau", "slow")), t

    rec = json.loads(stabsearch("recommend", "--format", "json", cwd=tmp_path))
    assert rec["evidence"]["confirmed"]
    module = load_model_module(str(path))
    steps = 2 * module.steps
    for seed in (9001, 9002, 9003):  # new seeds, twice the horizon, our own loop
        losses, _ = independent.train(module, rec, steps, seed)
        assert independent.spiked_or_diverged(losses, steps) is None, (seed, rec)


def test_objective_b_recommended_lr_doubled_still_trains(tmp_path):
    path = OBJECTIVES / "softmax_chance.py"
    stabsearch("run", path, "--trials", 20, "--no-progress", cwd=tmp_path)
    rec = json.loads(stabsearch("recommend", "--format", "json", cwd=tmp_path))
    doubled = {**rec, "lr": 2 * rec["lr"]}
    module = load_model_module(str(path))
    steps = rec["schedule"].get("total_steps", module.steps)  # the recommended schedule, warmup included
    for seed in (11, 12, 13):
        losses, model = independent.train(module, doubled, steps, seed)
        final = float(np.median(losses[-max(1, len(losses) // 20):]))
        assert final < 0.5 * math.log(6), (seed, final, doubled["lr"])


# Configurations that all look fine at the search horizon of objective (a): no spike and a final
# loss under 1e-9 after STEPS steps. Three blow up before 5 x STEPS (eps too small for the
# curvature, or a lower lr that only delays it); four never do (eps large enough). The early
# warning, measured at STEPS, must tell them apart.
LOOK_ALIKE = [
    {"lr": 5e-4, "eps": 1e-8},
    {"lr": 7e-4, "eps": 1e-8},
    {"lr": 1e-3, "eps": 1e-3},
    {"lr": 1e-3, "eps": 1e-2},
    {"lr": 2e-3, "eps": 1e-2},
    {"lr": 3e-3, "eps": 1e-2},
    {"lr": 1e-3, "eps": 3e-2},
]


# A blow-up here jumps from the ~1e-15 floor to 8.8e-4 .. 2.9e-3 x L0, and where it lands in that range is
# chaos: one kernel's rounding put lr 5e-4's peak at 1.1e-3, another's at 8.8e-4, on either side of the
# 1e-3 floor of independent.spiked_or_diverged. Measured with ATEN_CPU_CAPABILITY=avx2 and =default, seed 0:
# the three blow-ups peak at >= 8.8e-4 x L0, the four others never rise 10x above 6.1e-14 x L0. A floor of
# 1e-6 x L0 sits three decades below the one and seven above the other. (The early warning's ratio is
# >= 3.49 on the blow-ups and <= 0.681 on the others, on both.)
BLOWUP_FLOOR = 1e-6


def _late_configs():
    return load_model_module(str(OBJECTIVES / "adam_late_blowup.py")), LOOK_ALIKE


def test_early_warning_calls_the_late_blowups_at_five_times_the_horizon():
    module, configs = _late_configs()
    assert len(configs) >= 6
    cpu = torch.device("cpu")
    steps = module.steps
    finals, calls, truths = [], [], []  # finals: what the search horizon shows
    for settings in configs:
        config = OptimConfig(**settings)
        short = train_trial(module, config, steps=steps, seed=0, device=cpu)
        assert short.diverged_at is None
        finals.append(float(np.median(short.losses[-steps // 20:])))
        calls.append(early_warning(short, config, steps).predicted_unstable)
        rec = {"optimizer": config.optimizer, "lr": config.lr, "eps": config.eps, "betas": [config.beta1, config.beta2],
               "weight_decay": config.weight_decay, "schedule": {"name": "constant", "warmup_fraction": 0.0}}
        long, _ = independent.train(module, rec, 5 * steps, seed=0)
        truths.append(independent.spiked_or_diverged(long, 5 * steps, floor=BLOWUP_FLOOR) is not None)
    assert any(truths) and not all(truths), "the set must hold both kinds"
    assert max(finals) < 1e-9 * float(short.losses[0]), finals  # all look equally good at the horizon
    assert calls == truths, list(zip(configs, calls, truths))
