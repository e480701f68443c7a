"""A tampered study cannot run code through an export, nor crash a command.

Anyone who can write the shared database can store any JSON under a trial's
attributes. These tests store hostile values through Optuna (strings holding a
newline and a line of Python where numbers, strings and the configuration
belong), run ``recommend`` in every format, execute the Python output in an
empty folder and check that nothing ran, and that YAML, TOML and JSON still
parse to the same fields.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import optuna
import pytest
import yaml

from tests.support import module_path
from stabsearch.config import OptimConfig
from stabsearch.reporting.export import FORMATS, format_recommendation
from stabsearch.study.records import trial_record
from stabsearch.study.recommend import Recommendation

CODE = "\nimport os; open('PWNED', 'w')"
CODE_CR = "\rimport os; open('PWNED_CR', 'w')"


def _trials(db: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


def _copy_tampered(db: Path, source: str, target: str, tamper) -> None:  # noqa: ANN001
    """Copy study ``source`` to ``target`` through Optuna, each trial's user attributes passed through ``tamper``."""
    src = optuna.load_study(study_name=source, storage=f"sqlite:///{db}")
    dst = optuna.create_study(study_name=target, storage=f"sqlite:///{db}", direction=src.direction)
    for key, value in src.user_attrs.items():
        dst.set_user_attr(key, value)
    for t in src.get_trials():
        dst.add_trial(optuna.trial.create_trial(
            state=t.state, params=t.params, distributions=t.distributions, value=t.value if t.values else None,
            intermediate_values=t.intermediate_values, user_attrs=tamper(t, dict(t.user_attrs)),
        ))


def _exec_in(folder: Path, code: str, monkeypatch) -> None:  # noqa: ANN001
    folder.mkdir()
    monkeypatch.chdir(folder)
    exec(compile(code, str(folder / "recommended.py"), "exec"), {"__name__": "__main__"})  # noqa: S102
    assert sorted(p.name for p in folder.iterdir()) == [], "the exported code wrote a file"


def _parsed(outputs: dict[str, str]) -> dict[str, dict]:
    return {"json": json.loads(outputs["json"]), "yaml": yaml.safe_load(outputs["yaml"]),
            "toml": tomllib.loads(outputs["toml"])}


def _without_none(value):  # noqa: ANN001, ANN202
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value if v is not None]
    return value


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A real study: 4 search trials and the best 1 confirmed on 2 seeds."""
    from stabsearch.cli import main

    folder = tmp_path_factory.mktemp("searched")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        try:
            main(["run", module_path("tiny"), "--trials", "4", "--steps", "40", "--confirm", "1", "--seeds", "2",
                  "--no-progress"])
        except SystemExit as exc:
            assert exc.code in (0, None)
    return folder / "studies" / "stabsearch.db"


def _code_lines(python: str) -> list[str]:
    return [line for line in python.splitlines() if not line.lstrip().startswith("#")]


def _recommend_all(cli, db: Path, study: str) -> dict[str, str]:  # noqa: ANN001
    outputs = {}
    for fmt in FORMATS:
        r = cli("recommend", "--storage", f"sqlite:///{db}", "--study", study, "--format", fmt)
        assert r.code == 0 and "Traceback" not in r.err, (fmt, r.err)
        outputs[fmt] = r.out
    return outputs


def test_a_hostile_final_loss_never_becomes_code(searched, cli, tmp_path, monkeypatch):
    def tamper(t, attrs):  # noqa: ANN001, ANN202
        if "final_loss" in attrs:
            attrs["final_loss"] = f"{attrs['final_loss']}{CODE}"
        return attrs

    _copy_tampered(searched, "tiny", "loss-tampered", tamper)
    code = _recommend_all(cli, searched, "loss-tampered")["python"]
    _exec_in(tmp_path / "run", code, monkeypatch)
    assert not [line for line in _code_lines(code) if "PWNED" in line]


def test_a_study_tampered_everywhere_still_recommends_the_same_settings(searched, cli, tmp_path, monkeypatch):
    clean = _recommend_all(cli, searched, "tiny")
    chosen = json.loads(clean["json"])["evidence"]["trial"]
    numbers = ["final_loss", "initial_loss", "score", "n_spikes", "late_spikes", "unrecovered", "seed", "steps",
               "steps_run", "diverged_at", "spikes", "seconds"]

    def tamper(t, attrs):  # noqa: ANN001, ANN202
        for key in numbers:
            attrs[key] = f"{attrs.get(key)}{CODE}" if t.number % 2 else [f"1{CODE_CR}"]
        for key in ("failure", "warning", "error"):
            attrs[key] = f"boom{CODE}"
        if t.number != chosen and attrs.get("kind") == "search":  # leave the chosen configuration readable
            attrs["config"] = {**attrs["config"], "lr": f"{attrs['config']['lr']}{CODE}", "eps": True}
        return attrs

    _copy_tampered(searched, "tiny", "tampered", tamper)
    records = [trial_record(t) for t in _trials(searched, "tampered")]
    assert all("final_loss" in r.unreadable and r.final_loss is None and r.spikes == 0 for r in records)
    fields = ("lr", "eps", "beta1", "beta2", "weight_decay", "warmup", "min_lr_factor")
    assert all(type(r.params[k]) is float for r in records for k in fields if k in r.params)
    unreadable = [r for r in records if "config" in r.unreadable]
    assert unreadable and all(r.verdict == "failed" and r.params == {} for r in unreadable)
    assert all(r.failure == "unreadable stored configuration" for r in unreadable)
    hostile = _recommend_all(cli, searched, "tampered")
    assert not [line for line in _code_lines(hostile["python"]) if "PWNED" in line]
    _exec_in(tmp_path / "run", hostile["python"], monkeypatch)

    before, after = _parsed(clean), _parsed(hostile)
    for parsed in (before, after):  # the three formats carry the same fields
        assert _without_none(parsed["json"]) == parsed["toml"]
        assert parsed["json"] == parsed["yaml"]
    assert set(after["json"]) == set(before["json"])
    assert set(after["json"]["evidence"]) == set(before["json"]["evidence"])
    for key in ("optimizer", "lr", "eps", "betas", "weight_decay"):
        assert after["json"][key] == before["json"][key], key
    assert after["json"]["schedule"]["name"] == before["json"]["schedule"]["name"]  # its length was in `steps`
    for key in ("trial", "confirmed", "worst_score", "search_score"):
        assert after["json"]["evidence"][key] == before["json"]["evidence"][key], key

    listed = cli("trials", "--storage", f"sqlite:///{searched}", "--study", "tampered", "--format", "json")
    assert listed.code == 0 and "Traceback" not in listed.err
    assert all(row["final_loss"] is None and "final_loss" in row["unreadable"] for row in json.loads(listed.out))
    report = cli("report", "--storage", f"sqlite:///{searched}", "--study", "tampered", "--output", tmp_path / "r.html")
    assert report.code == 0 and "Traceback" not in report.err, report.err


@pytest.mark.parametrize("study", ["plain", f"name{CODE}", f"name{CODE_CR}", "quote'\"\\"])
def test_no_value_of_a_recommendation_can_end_a_comment(study, tmp_path, monkeypatch):
    evidence = {"trial": 1, "final_loss": f"0.1{CODE}", "seeds": [f"1{CODE_CR}"], f"key{CODE}": math.nan,
                "edge_probes": {f"3e-3{CODE}": f"failed{CODE_CR}"}}
    rec = Recommendation(study=study, config=OptimConfig(lr=1e-3), total_steps=100, evidence=evidence)
    outputs = {fmt: format_recommendation(rec, fmt) for fmt in FORMATS}
    _exec_in(tmp_path / "run", outputs["python"], monkeypatch)
    parsed = _parsed(outputs)
    assert parsed["json"]["study"] == parsed["yaml"]["study"] == parsed["toml"]["study"] == study
    assert parsed["json"]["evidence"]["final_loss"] == parsed["toml"]["evidence"]["final_loss"] == f"0.1{CODE}"
    assert parsed["json"]["evidence"][f"key{CODE}"] is None  # NaN: JSON has none, so null


def test_the_attribute_examples_run():
    import doctest

    from stabsearch.study import attrs

    failures, tried = doctest.testmod(attrs)
    assert failures == 0 and tried >= 2


def test_a_configuration_with_clipping_precision_and_decay_groups_reads_back_whole():
    from stabsearch.study.attrs import config

    stored = {"optimizer": "adamw", "lr": 1e-3, "eps": 1e-8, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01,
              "schedule": "cosine", "warmup": 0.05, "min_lr_factor": 0.0, "max_grad_norm": None, "precision": "bf16",
              "no_decay": True}
    assert config(stored) == stored
    assert config({**stored, "max_grad_norm": 1.0})["max_grad_norm"] == 1.0
    assert config({**stored, "no_decay": "yes"}) is not stored and not isinstance(config({**stored, "no_decay": "yes"}), dict)
