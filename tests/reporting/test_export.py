"""`stabsearch.reporting.export`: every format reads back as the recommendation it was written from.

The torch-side checks (the Python and Lightning exports build the trial's optimizer, the hf export builds
``TrainingArguments``) are in tests/training/test_settings.py, and a study tampered end to end in
tests/study/test_tampered_study.py; these tests read each format back with its own parser.
"""

from __future__ import annotations

import ast
import json
import math
import tomllib

import pytest
import yaml

from stabsearch.config import OptimConfig
from stabsearch.reporting.export import FORMATS, format_recommendation, hf_fields
from stabsearch.schedule import lr_factor
from stabsearch.study.recommend import Recommendation

EVIDENCE = {"trial": 7, "confirmed": True, "seeds": [1000, 1001], "horizon": 400, "margin_decades": 0.42,
            "basin_lr": [0.0003, 0.002], "edge_probes": {"0.006": "diverged"}, "final_loss": 0.125}
CONFIGS = {
    "adam constant": OptimConfig(optimizer="adam", lr=1e-3),
    "adamw cosine clipped bf16": OptimConfig(optimizer="adamw", lr=2e-3, eps=1e-7, beta1=0.85, beta2=0.995,
                                             weight_decay=0.01, schedule="cosine", warmup=0.05, min_lr_factor=0.1,
                                             max_grad_norm=1.0, precision="bf16"),
    "adam linear fp16": OptimConfig(optimizer="adam", lr=5e-4, schedule="linear", warmup=0.1, precision="fp16"),
}


def rec(config: OptimConfig, study: str = "s", evidence: dict | None = None) -> Recommendation:
    return Recommendation(study, config, 400, dict(EVIDENCE if evidence is None else evidence))


def without_none(value):  # noqa: ANN001, ANN201
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value if v is not None]
    return value


def code_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def evidence_comments(text: str) -> dict[str, object]:
    """The ``#   key: value`` lines of an export's header, each value read back as JSON."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#   "):
            key, _, value = line[4:].partition(": ")
            found[key] = json.loads(value)
    return found


@pytest.mark.parametrize("name", CONFIGS)
def test_json_yaml_and_toml_read_back_as_the_recommendation(name):
    r = rec(CONFIGS[name])
    expected = r.to_dict()
    as_json = json.loads(format_recommendation(r, "json"))
    assert as_json == expected
    assert yaml.safe_load(format_recommendation(r, "yaml")) == expected
    assert tomllib.loads(format_recommendation(r, "toml")) == without_none(expected)
    assert as_json["betas"] == [r.config.beta1, r.config.beta2] and as_json["precision"] == r.config.precision


def test_non_finite_numbers_are_null_and_toml_leaves_them_out():
    r = rec(CONFIGS["adam constant"], evidence={"trial": 1, "final_loss": math.nan, "worst_score": -math.inf,
                                                "seeds": [1, math.inf]})
    as_json = json.loads(format_recommendation(r, "json"))  # strict JSON: no NaN or Infinity tokens
    assert as_json["evidence"] == {"trial": 1, "final_loss": None, "worst_score": None, "seeds": [1, None]}
    assert yaml.safe_load(format_recommendation(r, "yaml"))["evidence"] == as_json["evidence"]
    assert tomllib.loads(format_recommendation(r, "toml"))["evidence"] == {"trial": 1, "seeds": [1]}
    assert "max_grad_norm" not in tomllib.loads(format_recommendation(r, "toml"))  # None: no clipping


@pytest.mark.parametrize("name", CONFIGS)
def test_python_export_compiles_and_its_values_are_the_recommendation(name):
    r = rec(CONFIGS[name])
    c = r.config
    text = format_recommendation(r, "python")
    tree = ast.parse(text)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"lr_factor", "build_optimizer"} <= defined
    namespace: dict = {}
    exec(compile(tree, "recommended.py", "exec"), namespace)  # noqa: S102 (imports torch, builds nothing)
    assert namespace["TOTAL_STEPS"] == r.total_steps
    assert namespace["MAX_GRAD_NORM"] == c.max_grad_norm and namespace["PRECISION"] == c.precision
    warmup = round(c.warmup * r.total_steps)
    for step in (0, 1, warmup, 150, 399, 450):
        assert namespace["lr_factor"](step, r.total_steps, warmup, c.schedule, c.min_lr_factor) == \
            lr_factor(step, r.total_steps, warmup, c.schedule, c.min_lr_factor)
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).startswith("torch.optim.Adam"))
    assert ast.unparse(call.func) == {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}[c.optimizer]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert kwargs == {"lr": c.lr, "betas": (c.beta1, c.beta2), "eps": c.eps, "weight_decay": c.weight_decay}
    assert evidence_comments(text) == EVIDENCE


def test_hf_export_is_training_arguments_fields_under_comments():
    r = rec(CONFIGS["adamw cosine clipped bf16"])
    c = r.config
    text = format_recommendation(r, "hf")
    fields = json.loads("\n".join(code_of(text)))
    assert fields == hf_fields(r)[0]
    assert fields["learning_rate"] == c.lr and fields["adam_epsilon"] == c.eps
    assert (fields["adam_beta1"], fields["adam_beta2"]) == (c.beta1, c.beta2)
    assert fields["weight_decay"] == c.weight_decay and fields["max_grad_norm"] == c.max_grad_norm
    assert (fields["bf16"], fields["fp16"]) == (True, False) and fields["optim"] == "adamw_torch"
    assert fields["lr_scheduler_type"] == "cosine_with_min_lr" and fields["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1}
    assert fields["warmup_steps"] == c.warmup
    assert evidence_comments(text) == EVIDENCE
    unclipped, _ = hf_fields(rec(CONFIGS["adam linear fp16"]))
    assert unclipped["max_grad_norm"] == 0.0  # off: Trainer's default would clip at 1.0
    assert (unclipped["bf16"], unclipped["fp16"]) == (False, True) and unclipped["lr_scheduler_type"] == "linear"


def test_hf_export_says_where_trainer_differs():
    _, notes = hf_fields(rec(OptimConfig(optimizer="adam", lr=1e-3, weight_decay=1e-4)))
    assert sum("NO TRAINER EQUIVALENT" in n for n in notes) == 2
    text = format_recommendation(rec(OptimConfig(optimizer="adam", lr=1e-3, weight_decay=1e-4)), "hf")
    assert all(f"# NOTE: {n}" in text for n in notes)
    _, none = hf_fields(rec(CONFIGS["adam constant"]))
    assert none == []  # constant, no warmup, no decay: Trainer reproduces it exactly


@pytest.mark.parametrize(("name", "trainer"), [
    ("adam constant", {"precision": "32-true"}),
    ("adamw cosine clipped bf16", {"precision": "bf16-mixed", "gradient_clip_val": 1.0, "gradient_clip_algorithm": "norm"}),
    ("adam linear fp16", {"precision": "16-mixed"}),
])
def test_lightning_export_names_the_trainer_arguments_and_configure_optimizers(name, trainer):
    r = rec(CONFIGS[name])
    text = format_recommendation(r, "lightning")
    tree = ast.parse(text)
    method = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "configure_optimizers")
    assert [a.arg for a in method.args.args] == ["self"]
    namespace: dict = {}
    exec(compile(tree, "lightning_export.py", "exec"), namespace)  # noqa: S102
    assert namespace["TRAINER_KWARGS"] == trainer and namespace["TOTAL_STEPS"] == r.total_steps
    assert evidence_comments(text) == EVIDENCE


ODD = ["yes", "null", "1e3", "- item", "key: value", "# not a comment", "'\"\\", "line\nbreak", "cr\rreturn",
       "\u2028sep", "tab\there", "é ü 中"]


@pytest.mark.parametrize("odd", ODD)
def test_an_odd_string_reads_back_as_the_same_string_everywhere(odd):
    r = rec(CONFIGS["adam constant"], study=odd, evidence={"trial": 1, odd: odd, "note": [odd]})
    for parsed in (json.loads(format_recommendation(r, "json")), yaml.safe_load(format_recommendation(r, "yaml")),
                   tomllib.loads(format_recommendation(r, "toml"))):
        assert parsed["study"] == odd and parsed["evidence"][odd] == odd and parsed["evidence"]["note"] == [odd]
    plain = rec(CONFIGS["adam constant"], study="plain", evidence={"trial": 1, "odd": "odd", "note": ["odd"]})
    for fmt in ("python", "hf", "lightning"):
        text = format_recommendation(r, fmt)
        assert code_of(text) == code_of(format_recommendation(plain, fmt)), fmt  # not one line of code changed
        header = text.splitlines()[0]
        assert header.startswith("# ") and json.dumps(odd) in header, fmt  # the study name, quoted, in the comment
        if fmt == "hf":
            assert json.loads("\n".join(code_of(text))) == hf_fields(r)[0]
        else:
            compile(text, f"{fmt}_export.py", "exec")


def test_an_unknown_format_is_refused_naming_the_formats():
    with pytest.raises(ValueError, match="unknown format 'xml'; expected one of yaml, json, toml, python, hf, lightning"):
        format_recommendation(rec(CONFIGS["adam constant"]), "xml")
    assert FORMATS == ("yaml", "json", "toml", "python", "hf", "lightning")
