"""`stabsearch analyze FILE`: reading loss logs and the diagnosis a person acts on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stabsearch.analysis.loss_log import read_loss_log
from stabsearch.analysis.diagnosis import RunFacts, diagnose
from stabsearch.analysis.verdict import analyze


def write_csv(path, losses, steps=None):
    steps = range(len(losses)) if steps is None else steps
    path.write_text("step,loss\n" + "".join(f"{s},{float(v)!r}\n" for s, v in zip(steps, losses)))
    return path


def decaying(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.exp(-np.arange(n) / 300.0) * rng.lognormal(0, 0.1, n) + 1e-4


def test_csv_and_plain_logs(tmp_path):
    log = read_loss_log(write_csv(tmp_path / "a.csv", [3.0, 2.0, 1.0], steps=[10, 20, 30]))
    assert log.losses.tolist() == [3.0, 2.0, 1.0] and log.steps.tolist() == [10, 20, 30]
    plain = tmp_path / "b.txt"
    plain.write_text("2.5\n1.5\nnan\ninf\n")
    log = read_loss_log(plain)
    assert log.steps is None and log.losses[:2].tolist() == [2.5, 1.5] and math.isnan(log.losses[2])
    extra = tmp_path / "c.csv"
    extra.write_text("epoch,Loss,acc\n0,1.0,0.1\n1,0.5,0.2\n")
    assert read_loss_log(extra).losses.tolist() == [1.0, 0.5]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty"),
        ("step,acc\n0,1\n", "no 'loss' column (columns: step, acc)"),
        ("step,loss\n0,1.0\n1,abc\n", "line 3: 'abc' is not a number"),
        ("step,loss\n5,1.0\n3,0.5\n", "'step' column must hold increasing whole numbers"),
    ],
)
def test_bad_logs_get_one_line(tmp_path, cli, text, message):
    f = tmp_path / "log.csv"
    f.write_text(text)
    r = cli("analyze", f)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1


def test_missing_log(cli):
    r = cli("analyze", "no_such_log.csv")
    assert r.code == 2 and r.err.strip() == "stabsearch: error: no_such_log.csv: no such file"


def test_late_spikes_with_small_eps_name_the_cause_and_a_value(tmp_path, cli):
    x = decaying()
    x[1500:1504] *= 300.0
    r = cli("analyze", write_csv(tmp_path / "s.csv", x), "--eps", "1e-8", "--format", "json")
    out = json.loads(r.out)
    assert r.code == 0 and out["verdict"] == "spiky"
    assert out["spikes"][0]["step"] == 1500 and out["spikes"][0]["recovered"]
    assert any("second moment collapsing" in a and "raise eps to at least 1e-06" in a for a in out["diagnosis"])
    text = cli("analyze", tmp_path / "s.csv", "--eps", "1e-8").out
    assert "spiky" in text and "step 1500" in text and "likely cause" in text


def test_collapse_to_chance_points_to_the_learning_rate(tmp_path, cli):
    rng = np.random.default_rng(1)
    x = np.full(1000, math.log(6)) * (1 + 0.005 * rng.standard_normal(1000))
    x[:20] = np.linspace(3.0, math.log(6), 20)
    out = json.loads(cli("analyze", write_csv(tmp_path / "p.csv", x), "--classes", "6", "--format", "json").out)
    assert out["verdict"] == "plateau"
    assert "too high a learning rate" in out["diagnosis"][0]


def test_eps_advice_uses_the_sharpness_when_known():
    x = decaying()
    x[1500:1504] *= 300.0
    advice = diagnose(analyze(x), RunFacts(lr=1e-3, eps=1e-8, sharpness=380.0))
    assert any("raise eps to at least 0.01" in a for a in advice)


def test_early_and_late_divergence_read_differently():
    early = np.concatenate([[1.0, 0.9], [np.nan]])
    late = decaying()
    late[1800] = np.inf
    assert "far too high" in diagnose(analyze(early))[0]
    assert "diverged late (step 1800)" in diagnose(analyze(late))[0]


def test_the_start_loss_shown_is_the_first_value_not_a_median_lifted_by_the_explosion(tmp_path, cli):
    # A GPT-2 at lr 0.62: 4.47 before the first update, then 49 and a plateau at 27.8 (6x the start).
    x = np.r_[4.47, 49.0, np.full(300, 27.8) * np.random.default_rng(3).lognormal(0.0, 0.02, 300)]
    path = write_csv(tmp_path / "g.csv", x)
    out = json.loads(cli("analyze", path, "--format", "json").out)
    assert out["initial_loss"] == 4.47 and out["reference_loss"] <= 2 * 4.47
    assert out["verdict"] == "diverged" and out["diverged_at"] == 1
    text = cli("analyze", path).out
    assert "start loss 4.47 (the first value)" in text and "far too high" in text


def test_slow_and_collapsed_runs_get_opposite_advice(tmp_path, cli):
    rng = np.random.default_rng(4)
    slow = np.linspace(2.31, 2.28, 1000) * rng.lognormal(0.0, 0.004, 1000)  # digits at lr 2.7e-5
    collapsed = np.r_[1.86, 12.9, 4.2, 1.885 * rng.lognormal(0.0, 0.01, 997)]  # 6 classes, 3-7% above ln 6
    for classes in ([], ["--classes", "10"]):
        out = json.loads(cli("analyze", write_csv(tmp_path / "s.csv", slow), "--format", "json", *classes).out)
        assert (out["verdict"], out["cause"]) == ("slow", "too_slow")
        assert "raise the learning rate" in out["diagnosis"][0] and "no sign of instability" in out["diagnosis"][0]
    for classes, cause in (([], "no_progress"), (["--classes", "6"], "chance")):
        out = json.loads(cli("analyze", write_csv(tmp_path / "c.csv", collapsed), "--format", "json", *classes).out)
        assert (out["verdict"], out["cause"]) == ("plateau", cause)
        assert "raise the learning rate" not in out["diagnosis"][0]
