"""The search space: defaults, overrides from SPACE and YAML, and sampling."""

from __future__ import annotations

import optuna
import pytest

from stabsearch import OptimConfig, SearchSpace, UsageError
from stabsearch.study.space import Choice, Fixed, Range, load_space_file, sample


def test_defaults_follow_the_design():
    p = SearchSpace().params
    assert p["lr"] == Range(1e-5, 1.0, log=True)
    assert p["eps"] == Range(1e-10, 1e-1, log=True)
    assert p["beta1"] == Range(0.8, 0.99)
    assert p["beta2"] == Range(0.9, 0.9999, log=True)
    assert p["weight_decay"] == Range(1e-6, 1e-1, log=True, zero=True)
    assert p["schedule"] == Choice(("constant", "cosine", "linear"))
    assert p["optimizer"] == Choice(("adam", "adamw"))
    assert p["warmup"] == Range(0.0, 0.1)


def test_yaml_overrides_narrow_fix_and_restrict(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("lr: {low: 1e-4, high: 1e-2}\neps: 1e-8\noptimizer: [adamw]\nschedule: [constant, cosine]\nweight_decay: 0\n")
    space = SearchSpace().override(load_space_file(f), source="space file")
    p = space.params
    assert p["lr"] == Range(1e-4, 1e-2, log=True)  # narrowed, still log
    assert p["eps"] == Fixed(1e-8)  # YAML reads 1e-8 as a string; it is accepted as a number
    assert p["optimizer"] == Fixed("adamw")
    assert p["schedule"] == Choice(("constant", "cosine"))
    assert p["weight_decay"] == Fixed(0.0)


def test_module_space_then_file_space_apply_in_order():
    space = SearchSpace().override({"lr": {"high": 0.1}}, source="m").override({"lr": {"low": 1e-3}}, source="f")
    assert space.params["lr"] == Range(1e-3, 0.1, log=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"lr": {"low": 1e-1, "high": 1e-4}}, "space: lr: low 0.1 is above high 0.0001"),
        ({"momentum": 0.9}, "unknown parameter 'momentum'"),
        ({"optimizer": ["sgd"]}, "'sgd' is not one of adam, adamw"),
        ({"beta2": 1.0}, "space: beta2: 1.0 is outside [0, 1)"),
        ({"lr": -1}, "space: lr: -1.0 is outside (0, inf)"),
        ({"lr": "fast"}, "expected a number, got 'fast'"),
        ({"lr": {"low": 1e-4, "step": 2}}, "unknown keys ['step']"),
        ({"schedule": []}, "the list of choices is empty"),
        ({"warmup": 0.9}, "warmup: 0.9 is outside [0, 0.5]"),
        ({"lr": {"log": "yes"}}, "lr.log: expected true or false"),
    ],
)
def test_bad_overrides_name_the_parameter(override, message):
    with pytest.raises(UsageError) as err:
        SearchSpace().override(override, source="space")
    assert message in str(err.value)


def test_bad_space_files(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_space_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1e-3\n")
    with pytest.raises(UsageError, match=r"bad\.yaml: line \d+"):
        load_space_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- lr\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        load_space_file(listy)


def test_sampling_stays_inside_the_overridden_space():
    space = SearchSpace().override({"lr": {"low": 1e-4, "high": 1e-3}, "beta2": {"low": 0.99, "high": 0.999}, "optimizer": ["adamw"]}, source="t")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_zero_wd = False
    for _ in range(40):
        trial = study.ask()
        config = sample(space, trial)
        assert isinstance(config, OptimConfig)
        assert 1e-4 <= config.lr <= 1e-3 and 0.99 <= config.beta2 <= 0.999
        assert config.optimizer == "adamw" and "optimizer" not in trial.params
        assert "one_minus_beta2" in trial.params  # beta2 is searched as 1 - beta2 on a log scale
        seen_zero_wd |= config.weight_decay == 0.0
        study.tell(trial, 0.0)
    assert seen_zero_wd
