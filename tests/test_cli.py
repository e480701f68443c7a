"""The command line a user walks: run, trials, recommend, studies, and every bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support import module_path, snapshot
from stabsearch.cli import main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def test_run_trials_recommend(workdir, cli):
    r = cli("run", module_path("tiny"), "--trials", "6", "--no-progress")
    assert r.code == 0, r.err
    assert (workdir / "studies" / "stabsearch.db").exists()

    r = cli("trials", "--format", "json")
    everything = json.loads(r.out)
    rows = [t for t in everything if t["kind"] == "search"]
    confirms = [t for t in everything if t["kind"] == "confirm"]
    assert [t["number"] for t in rows] == list(range(6))
    # The 3 best search trials were re-run on 3 new seeds at twice the steps.
    assert len(confirms) >= 9 and {t["seed"] for t in confirms} >= {1000, 1001, 1002}
    assert all(t["steps"] == 240 for t in confirms)
    # Candidates: the best finished search trials, those that learned too slowly (slow) after every other.
    assert {t["of"] for t in confirms if not t["backoff"]} == {
        t["number"] for t in sorted((t for t in rows if t["state"] == "COMPLETE"),
                                    key=lambda t: (t["verdict"] == "slow", t["score"]))[:3]
    }
    for t in rows:
        assert set(t) >= {"number", "state", "verdict", "score", "final_loss", "spikes", "params"}
        assert t["verdict"] in {"stable", "spiky", "diverged", "plateau", "slow", "failed"}
        assert set(t["params"]) >= {"lr", "eps", "beta1", "beta2", "weight_decay", "schedule", "warmup", "optimizer"}
        # Unstable trials end PRUNED, and so do slow ones the median rule stopped; a slow run that ran to the
        # end is an honest bad score and ends COMPLETE.
        assert t["verdict"] in ({"spiky", "diverged", "plateau", "slow"} if t["state"] == "PRUNED" else {"stable", "slow"})
        assert t["state"] != "FAIL"

    as_json = json.loads(cli("recommend", "--format", "json").out)
    as_yaml = yaml.safe_load(cli("recommend", "--format", "yaml").out)
    as_toml = tomllib.loads(cli("recommend", "--format", "toml").out)
    for key in ("optimizer", "lr", "eps", "betas", "weight_decay", "schedule"):
        assert as_yaml[key] == as_json[key] == as_toml[key], key
    assert as_json["evidence"]["confirmed"] and as_json["evidence"]["seeds"] == [1000, 1001, 1002]
    source = rows[as_json["evidence"]["trial"]]
    assert as_json["eps"] == source["params"]["eps"] and as_json["lr"] <= source["params"]["lr"]

    csv_out = cli("trials", "--format", "csv").out.splitlines()
    assert csv_out[0].startswith("number,kind,state,verdict") and len(csv_out) == len(everything) + 1
    assert "verdict" in cli("trials").out
    assert "tiny" in cli("studies").out


def test_recommend_python_builds_the_same_optimizer(workdir, cli, tmp_path):
    assert cli("run", module_path("tiny"), "--trials", "4", "--no-progress", "--confirm", "0").code == 0
    values = json.loads(cli("recommend", "--format", "json").out)
    code = cli("recommend", "--format", "python").out
    script = tmp_path / "rec.py"
    script.write_text(code + "\nimport json\ng = optimizer.param_groups[0]\n"
                      "print(json.dumps({'cls': type(optimizer).__name__, 'lr': g['initial_lr'], 'eps': g['eps'], "
                      "'betas': list(g['betas']), 'wd': g['weight_decay'], 'sched': type(scheduler).__name__}))\n"
                      .replace("\nimport json", "\noptimizer, scheduler = build_optimizer(__import__('torch').nn.Linear(3, 2))\nimport json", 1))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    built = json.loads(out.strip().splitlines()[-1])
    assert built["cls"] == {"adam": "Adam", "adamw": "AdamW"}[values["optimizer"]]
    assert built["lr"] == values["lr"] and built["eps"] == values["eps"]
    assert built["betas"] == values["betas"] and built["wd"] == values["weight_decay"]
    assert built["sched"] == "LambdaLR"
    assert code.startswith("# Optimizer settings recommended by stabsearch") and "margin_decades" in code


def test_resume_reaches_the_requested_count_without_touching_old_trials(workdir, cli):
    assert cli("run", module_path("tiny"), "--trials", "3", "--no-progress", "--confirm", "0").code == 0
    first = json.loads(cli("trials", "--format", "json").out)
    assert cli("run", module_path("tiny"), "--trials", "5", "--no-progress", "--confirm", "0").code == 0
    second = json.loads(cli("trials", "--format", "json").out)
    assert len(second) == 5 and second[:3] == first
    # New trials are not replays of the first ones (the sampler is re-seeded past them).
    assert {t["params"]["lr"] for t in second[3:]}.isdisjoint({t["params"]["lr"] for t in first})
    r = cli("run", module_path("tiny"), "--trials", "5", "--no-progress", "--confirm", "0")
    assert r.code == 0 and len(json.loads(cli("trials", "--format", "json").out)) == 5


def test_user_code_error_fails_only_that_trial(workdir, cli):
    r = cli("run", module_path("flaky"), "--trials", "4", "--no-progress", "--confirm", "0")
    assert r.code == 0, r.err
    rows = json.loads(cli("trials", "--format", "json").out)
    failed = [t for t in rows if t["state"] == "FAIL"]
    assert failed and all(t["failure"] == "user-code error" and "boom from user code" in t["error"] for t in failed)
    assert sum(t["state"] != "FAIL" for t in rows) >= 1 and len(rows) == 4
    # The first error is told in one line with the command that shows it; the later ones only in the count.
    first = failed[0]["number"]
    told = [line for line in r.err.splitlines() if re.match(r"trial \d+ failed: ", line)]
    assert told == [f"trial {first} failed: ValueError: boom from user code (see: stabsearch trials --show {first} --study flaky)"]
    assert "every trial" not in r.err

    import optuna

    study = optuna.load_study(study_name="flaky", storage="sqlite:///studies/stabsearch.db")
    trace = study.trials[failed[0]["number"]].user_attrs["traceback"]
    assert "Traceback" in trace and "flaky.py" in trace


def test_a_run_whose_every_trial_failed_says_so_and_exits_1(workdir, cli):
    r = cli("run", module_path("always_fails"), "--trials", "3", "--no-progress")
    assert r.code == 1, r.err
    told = [line for line in r.err.splitlines() if " failed: " in line]
    assert told == ["trial 0 failed: ValueError: shapes do not match at call 3 (see: stabsearch trials --show 0 --study always_fails)"]
    assert "every trial this run trained failed (3 of 3)" in r.err and "Traceback" not in r.err
    assert "confirming" not in r.err and not (workdir / "studies" / "always_fails.html").exists()
    # The command it names shows the whole traceback, down to the user's line.
    shown = cli("trials", "--show", "0", "--study", "always_fails")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0] == "trial 0" and re.match(r"\s+state:\s+FAIL, verdict failed$", lines[1])
    assert any(re.match(r"\s+failure:\s+user-code error$", line) for line in lines)
    assert any(re.match(r"\s+error:\s+ValueError: shapes do not match at call 3$", line) for line in lines)
    assert "traceback:" in shown.out and 'always_fails.py", line' in shown.out and "in loss" in shown.out
    # Resuming trains nothing new: the failures count toward --trials, so nothing is said about them again.
    again = cli("run", module_path("always_fails"), "--trials", "3", "--no-progress", "--confirm", "0")
    assert again.code == 0 and " failed: " not in again.err.replace("(3 failed)", "")


@pytest.mark.slow
def test_workers_tell_the_first_error_too(workdir, cli):
    r = cli("run", module_path("always_fails"), "--trials", "2", "--workers", "2", "--no-progress")
    assert r.code == 1, r.err
    told = [line for line in r.err.splitlines() if " failed: " in line]
    assert len(told) == 1 and re.fullmatch(r"trial (\d) failed: ValueError: shapes do not match at call 3 "
                                           r"\(see: stabsearch trials --show \1 --study always_fails\)", told[0]), r.err
    assert "every trial this run trained failed (2 of 2)" in r.err


def test_trials_show_and_json_give_the_curve_file_and_the_warning(workdir, cli):
    assert cli("run", module_path("tiny"), "--trials", "2", "--no-progress", "--confirm", "0").code == 0
    rows = json.loads(cli("trials", "--format", "json").out)
    for row in rows:
        assert row["state"] == "COMPLETE" and isinstance(row["warning"], str) and row["warning"]
        assert isinstance(row["warning_penalty"], float) and isinstance(row["checks"], dict)
        path = row["curve_file"]
        assert os.path.isabs(path) and os.path.isfile(path) and path.endswith(row["curve_artifact"])
        analyzed = cli("analyze", path, "--format", "json")  # the file a user can open: analyze reads it back
        assert analyzed.code == 0 and json.loads(analyzed.out)["final_loss"] == pytest.approx(row["final_loss"], rel=1e-6)
    r = cli("trials", "--show", "1")
    assert r.code == 0 and r.err == ""
    text = r.out
    facts = dict(re.match(r"\s+([a-z ]+):\s+(.*)$", line).groups() for line in text.splitlines()[1:])
    assert facts["state"] == "COMPLETE, verdict " + rows[1]["verdict"] and facts["kind"] == "search"
    assert facts["seed"] == "0" and facts["steps"] == str(rows[1]["steps"])
    assert f"lr={rows[1]['params']['lr']:.6g}" in facts["settings"] and f"eps={rows[1]['params']['eps']:.6g}" in facts["settings"]
    assert facts["score"] == f"{rows[1]['score']:.4g}" and facts["final loss"] == f"{rows[1]['final_loss']:.4g}"
    assert facts["early warning"].endswith(rows[1]["warning"]) and "penalty" in facts["early warning"]
    assert facts["curve"].startswith(rows[1]["curve_file"] + " ")
    assert "error" not in facts and "traceback" not in text
    as_json = json.loads(cli("trials", "--show", "1", "--format", "json").out)
    assert {k: as_json[k] for k in rows[1]} == rows[1] and as_json["traceback"] is None


def test_trials_show_a_missing_trial_is_one_line(workdir, cli):
    assert cli("run", module_path("tiny"), "--trials", "2", "--no-progress", "--confirm", "0").code == 0
    r = cli("trials", "--show", "7")
    assert r.code == 2 and r.out == ""
    assert r.err == "stabsearch: error: --show 7: study 'tiny' has no trial 7 (its trials are numbered 0 to 1)\n"


def _penalised_study(root, *, penalty: float):
    from stabsearch.config import OptimConfig
    from tests.support.studies import add_trial, make_study, sqlite_store

    store = sqlite_store(root)
    study = make_study(store, trials=4)
    attrs = {"predicted_unstable": penalty > 0, "warning": "lr/eps = 2.3e+04 exceeds 24.7/lambda_max = 7.29: will blow up once v collapses",
             "warning_penalty": penalty, "checks": {"evaluate": "ran", "sharpness": "skipped: the module gives no probe"}}
    with tempfile.TemporaryDirectory() as tmp:
        number = add_trial(study, store, Path(tmp), OptimConfig(lr=3e-3, eps=1e-9), "stable", rng=np.random.default_rng(0), extra=attrs)
    return number


def test_the_trials_table_shows_a_penalty_column_only_when_a_trial_has_one(workdir, cli):
    number = _penalised_study(workdir, penalty=1.0)
    lines = cli("trials").out.splitlines()
    header = lines[0].split()
    assert "penalty" in header and header[-1] == "warning"
    row = next(line for line in lines[1:] if line.split()[0] == str(number))
    assert row.split()[header.index("penalty")] == "+1" and row.rstrip().endswith("will blow up once v collapses")
    others = [line for line in lines[1:] if line.split()[0] != str(number)]
    assert others and not any("+1" in line.split() or "lambda_max" in line for line in others)
    shown = " ".join(cli("trials", "--show", str(number)).out.split())
    assert "early warning: penalty +1 (decades added to the score): lr/eps = 2.3e+04" in shown
    assert "checks: evaluate ran; sharpness skipped: the module gives no probe" in shown
    csv_header = cli("trials", "--format", "csv").out.splitlines()[0].split(",")
    assert "penalty" in csv_header and "warning" in csv_header


def test_no_penalty_column_without_a_penalty(workdir, cli):
    _penalised_study(workdir, penalty=0.0)
    out = cli("trials").out
    header = out.splitlines()[0].split()
    assert "penalty" not in header and "warning" not in header and "lambda_max" not in out


def _population_sizes(name: str) -> list:
    import optuna

    study = optuna.load_study(study_name=name, storage="sqlite:///studies/stabsearch.db")
    return [t.user_attrs.get("population") for t in study.trials]


def _timed(monkeypatch, population: float, sequential: float) -> list:
    from stabsearch.population import speed as pop

    calls = []

    def fake(module, device, k, **kwargs):
        calls.append(k)
        return pop.PopulationSpeed(k=k, population=population, sequential=sequential)

    monkeypatch.setattr(pop, "measure_population_speed", fake)
    return calls


def test_a_population_slower_than_sequential_falls_back_with_the_ratio(workdir, cli, monkeypatch):
    calls = _timed(monkeypatch, population=0.014, sequential=0.010)
    r = cli("run", module_path("tiny"), "--trials", "4", "--population", "4", "--no-progress", "--confirm", "0")
    assert r.code == 0, r.err
    assert calls == [4]
    assert ("--population 4: training one trial at a time instead (a population step took 1.4x the time of 4 sequential steps; "
            "--force-population keeps it)") in r.err.splitlines()
    assert _population_sizes("tiny") == [None] * 4  # trained one at a time


def test_a_faster_population_is_kept_and_a_forced_one_is_not_timed(workdir, cli, monkeypatch):
    calls = _timed(monkeypatch, population=0.005, sequential=0.010)
    r = cli("run", module_path("tiny"), "--study", "fast", "--trials", "4", "--population", "4", "--no-progress", "--confirm", "0")
    assert r.code == 0 and calls == [4] and "instead" not in r.err, r.err
    assert _population_sizes("fast") == [4] * 4

    calls = _timed(monkeypatch, population=0.030, sequential=0.010)
    r = cli("run", module_path("tiny"), "--study", "forced", "--trials", "4", "--population", "4", "--force-population",
            "--no-progress", "--confirm", "0")
    assert r.code == 0 and calls == [] and "instead" not in r.err, r.err
    assert _population_sizes("forced") == [4] * 4


def test_ctrl_c_leaves_nothing_running_and_resume_reruns_it(workdir, cli):
    r = cli("run", module_path("interrupt"), "--trials", "4", "--no-progress", "--confirm", "0")
    assert r.code == 130
    rows = json.loads(cli("trials", "--format", "json").out)
    assert [t["state"] for t in rows] == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]
    assert rows[2]["failure"] == "interrupted"
    assert rows[3]["params"] == {} or rows[3]["verdict"] == "waiting"

    r = cli("run", module_path("interrupt"), "--trials", "4", "--no-progress", "--confirm", "0")
    assert r.code == 0, r.err
    rows = json.loads(cli("trials", "--format", "json").out)
    assert not [t for t in rows if t["state"] in ("RUNNING", "WAITING")]
    assert sum(t["state"] == "COMPLETE" for t in rows) == 4
    assert rows[3]["params"] == rows[2]["params"]  # the interrupted configuration ran again


def test_custom_train_loop(workdir, cli):
    r = cli("run", module_path("custom_loop"), "--trials", "2", "--steps", "30", "--seed", "7", "--no-progress", "--confirm", "0")
    assert r.code == 0, r.err
    rows = json.loads(cli("trials", "--format", "json").out)
    assert all(t["verdict"] in ("stable", "spiky", "diverged") for t in rows)
    assert all(t["steps_run"] <= 30 for t in rows)


def test_timeout_stops_starting_trials(workdir, cli):
    r = cli("run", module_path("tiny"), "--trials", "500", "--timeout", "1", "--no-progress", "--confirm", "0")
    assert r.code == 0 and "timeout reached" in r.err
    assert 1 <= len(json.loads(cli("trials", "--format", "json").out)) < 500


@pytest.fixture(scope="module")
def study_template(tmp_path_factory):
    """One small stored study, made once and copied into each bad-input test."""
    home = tmp_path_factory.mktemp("template")
    old = os.getcwd()
    os.chdir(home)
    try:
        main(["run", module_path("tiny"), "--trials", "2", "--no-progress", "--confirm", "0"])
    finally:
        os.chdir(old)
    return home / "studies"


@pytest.fixture
def existing_study(workdir, study_template):
    shutil.copytree(study_template, workdir / "studies")
    db = workdir / "studies" / "stabsearch.db"
    return db, snapshot(db)


def _write(path, text):
    path.write_text(text)
    return str(path)


BAD_INPUTS = {
    "missing model file": lambda d: ["run", "no_such_model.py"],
    "syntax error": lambda d: ["run", _write(d / "broken.py", "def model(:\n")],
    "import error": lambda d: ["run", _write(d / "imports.py", "import no_such_package_xyz\n")],
    "missing loss": lambda d: ["run", _write(d / "noloss.py", "def model(): pass\ndef batches(seed): pass\n")],
    "unknown module name": lambda d: ["run", "no_such_module_xyz"],
    "steps 0": lambda d: ["run", module_path("tiny"), "--steps", "0"],
    "negative steps": lambda d: ["run", module_path("tiny"), "--steps", "-5"],
    "negative trials": lambda d: ["run", module_path("tiny"), "--trials", "-1"],
    "zero timeout": lambda d: ["run", module_path("tiny"), "--timeout", "0"],
    "bad device": lambda d: ["run", module_path("tiny"), "--device", "tpu"],
    "unknown trials format": lambda d: ["trials", "--format", "xml"],
    "unknown recommend format": lambda d: ["recommend", "--format", "docx"],
    "unknown study for trials": lambda d: ["trials", "--study", "nope"],
    "unknown study for recommend": lambda d: ["recommend", "--study", "nope"],
    "unopenable storage": lambda d: ["trials", "--storage", "sqlite:///" + str(d / "missing" / "x.db")],
    "bad storage URL": lambda d: ["run", module_path("tiny"), "--storage", "notadb://what"],
    "corrupt storage file": lambda d: ["trials", "--storage", "sqlite:///" + _write(d / "corrupt.db", "this is not sqlite" * 100)],
    "inverted space range": lambda d: ["run", module_path("tiny"), "--space", _write(d / "s.yaml", "lr: {low: 1e-1, high: 1e-4}\n")],
    "unknown space parameter": lambda d: ["run", module_path("tiny"), "--space", _write(d / "s2.yaml", "momentum: 0.9\n")],
    "bad space YAML": lambda d: ["run", module_path("tiny"), "--space", _write(d / "s3.yaml", "lr: [1e-3\n")],
    "missing space file": lambda d: ["run", module_path("tiny"), "--space", str(d / "none.yaml")],
    "bad space choice": lambda d: ["run", module_path("tiny"), "--space", _write(d / "s4.yaml", "optimizer: [sgd]\n")],
    "storage path is a directory": lambda d: ["trials", "--storage", f"sqlite:///{d}"],
    "corrupt journal file": lambda d: ["trials", "--storage", "journal:" + _write(d / "j.log", "{not json\n")],
    "zero workers": lambda d: ["run", module_path("tiny"), "--workers", "0"],
    "zero heartbeat": lambda d: ["run", module_path("tiny"), "--heartbeat", "0"],
    "zero stress": lambda d: ["run", module_path("tiny"), "--stress", "0"],
    "zero seeds": lambda d: ["confirm", module_path("tiny"), "--seeds", "0"],
    "confirm of an unknown study": lambda d: ["confirm", module_path("tiny"), "--study", "nope"],
    "analyze a missing log": lambda d: ["analyze", str(d / "none.csv")],
    "module raising at import": lambda d: ["run", _write(d / "raises.py", "raise RuntimeError('no GPU here')\n")],
    "non-callable loss": lambda d: ["run", _write(d / "nc.py", "def model(): pass\ndef batches(s): pass\nloss = 3\n")],
    "show a trial that is not there": lambda d: ["trials", "--show", "99"],
    "show a negative trial": lambda d: ["trials", "--show", "-1"],
    "show as csv": lambda d: ["trials", "--show", "0", "--format", "csv"],
    "force population without one": lambda d: ["run", module_path("tiny"), "--force-population"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(existing_study, cli, workdir, case):
    db, before = existing_study
    r = cli(*BAD_INPUTS[case](workdir))
    assert r.code == 2, (case, r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stabsearch: error:"), r.err
    assert "Traceback" not in r.err and r.out == ""
    assert snapshot(db) == before


def test_bad_input_through_the_real_console_script(workdir):
    r = subprocess.run([sys.executable, "-m", "stabsearch", "run", "missing.py"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == "stabsearch: error: missing.py: no such file\n"
    assert not (workdir / "studies").exists()  # no study was created
