"""Gradient clipping, mixed precision and decay groups as settings: trained, stored, exported."""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
import torch

from tests.support import module_path
from stabsearch import OptimConfig, SearchSpace, load_model_module, train_trial
from stabsearch.errors import UsageError
from stabsearch.reporting.export import format_recommendation, hf_fields
from stabsearch.training.optim import decay_groups
from stabsearch.population.driver import why_not_population_space
from stabsearch.study.recommend import Recommendation

CPU = torch.device("cpu")
TINY = load_model_module(module_path("tiny"))


def with_loss(loss, **attrs):
    """TINY with another loss(model, batch)."""
    return dataclasses.replace(TINY, loss=loss, **attrs)


def test_default_loop_clips_as_clip_grad_norm_does():
    config = OptimConfig(lr=0.05, max_grad_norm=0.05)
    clipped = train_trial(TINY, config, steps=30, seed=0, device=CPU, sharpness=False)
    torch.manual_seed(0)
    from stabsearch.training.trainer import seed_everything

    seed_everything(0)
    model = TINY.model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    batches = list(TINY.batches(0))
    by_hand = []
    for step in range(30):
        loss = TINY.loss(model, batches[step % len(batches)])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        opt.step()
        by_hand.append(float(loss.detach()))
    assert np.allclose(clipped.losses, by_hand, rtol=1e-5, atol=1e-6)
    free = train_trial(TINY, dataclasses.replace(config, max_grad_norm=None), steps=30, seed=0, device=CPU, sharpness=False)
    assert not np.allclose(free.losses, by_hand, rtol=1e-3)


def test_max_grad_norm_is_searched_and_stored(tmp_path):
    import optuna

    from stabsearch.study.records import study_records
    from stabsearch.study.runner import SearchSettings, run_search
    from stabsearch.study.storage import open_storage

    space = SearchSpace().override({"max_grad_norm": {"low": 0.1, "high": 10}, "warmup": 0.0}, source="test")
    store = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    run_search(TINY, space, store, "s", SearchSettings(trials=3, steps=20, progress=False, device=CPU, early_warning=False))
    records = study_records(optuna.load_study(study_name="s", storage=store.storage))
    norms = [r.params["max_grad_norm"] for r in records]
    assert all(0.1 <= n <= 10 for n in norms) and len(set(norms)) == 3
    assert all(r.params["no_decay"] is True and r.params["precision"] == "32" for r in records)


def test_space_max_grad_norm_overrides():
    space = SearchSpace()
    assert space.params["max_grad_norm"].value is None  # off by default
    assert space.override({"max_grad_norm": 1.0}, source="t").params["max_grad_norm"].value == 1.0
    assert space.override({"max_grad_norm": [None, 1.0]}, source="t").params["max_grad_norm"].choices == (None, 1.0)
    with pytest.raises(UsageError, match=r"t: max_grad_norm: -1.0 is outside \(0, inf\)"):
        space.override({"max_grad_norm": -1}, source="t")
    assert why_not_population_space(space.override({"max_grad_norm": {"low": 1, "high": 2}}, source="t"), "32")
    assert why_not_population_space(space, "bf16") and why_not_population_space(space, "32") is None


def test_bf16_autocast_runs_in_the_default_loop_on_cpu():
    dtypes = []

    def loss(model, batch):
        x, y = batch
        out = model(x)
        dtypes.append(out.dtype)
        return torch.nn.functional.mse_loss(out.float(), y)

    result = train_trial(with_loss(loss), OptimConfig(lr=1e-2, precision="bf16"), steps=40, seed=0, device=CPU, sharpness=False)
    assert torch.bfloat16 in dtypes and result.steps_run == 40 and np.all(np.isfinite(result.losses))
    plain = train_trial(TINY, OptimConfig(lr=1e-2), steps=40, seed=0, device=CPU, sharpness=False)
    assert abs(result.losses[-1] - plain.losses[-1]) < 0.1 * plain.losses[0]  # the same training, at bf16's precision


def _overflowing(steps: set[int] | None):
    """TINY's loss, infinite on the given forward passes (all when ``None``): the scaler must skip those steps."""
    calls = []

    def loss(model, batch):
        calls.append(1)
        value = TINY.loss(model, batch)
        return value * float("inf") if steps is None or len(calls) - 1 in steps else value

    return loss


def test_fp16_scaler_skipped_steps_are_counted_not_logged():
    result = train_trial(with_loss(_overflowing({5, 6, 7})), OptimConfig(lr=1e-2, precision="fp16"), steps=40, seed=0,
                         device=CPU, sharpness=False)
    assert result.skipped_steps >= 3 and result.steps_run == 40 - result.skipped_steps
    assert result.diverged_at is None and np.all(np.isfinite(result.losses))
    assert "skipped" in result.checks["skipped_steps"]


def test_fp16_overflow_on_every_step_is_a_divergence():
    from stabsearch.analysis.stability import analyze

    result = train_trial(with_loss(_overflowing(None)), OptimConfig(lr=1e-2, precision="fp16"), steps=60, seed=0,
                         device=CPU, sharpness=False)
    assert result.diverged_at == 0 and "24 steps in a row" in result.checks["divergence"]
    assert analyze(result.losses, diverged_at=result.diverged_at).verdict == "diverged"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs a CUDA device; none here")
def test_fp16_with_grad_scaler_on_cuda():
    result = train_trial(TINY, OptimConfig(lr=1e-2, precision="fp16"), steps=60, seed=0, device=torch.device("cuda"),
                         sharpness=False)
    assert result.diverged_at is None and np.all(np.isfinite(result.losses))
    assert result.steps_run + result.skipped_steps == 60 and result.losses[-5:].mean() < result.losses[:5].mean()


def test_fp16_on_cpu_is_refused_by_run(cli, workdir):
    done = cli("run", module_path("tiny"), "--precision", "fp16", "--device", "cpu", "--trials", "1")
    assert done.code == 2 and "needs a CUDA device" in done.err and "Traceback" not in done.err
    assert not (workdir / "studies").exists()


def test_module_precision_and_no_decay_are_checked(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(open(module_path("tiny")).read() + "\nPRECISION = 'fp8'\n")
    with pytest.raises(UsageError, match="PRECISION must be one of 32, bf16, fp16, got 'fp8'"):
        load_model_module(str(bad))
    bad.write_text(open(module_path("tiny")).read() + "\nNO_DECAY = 'yes'\n")
    with pytest.raises(UsageError, match="NO_DECAY must be True or False"):
        load_model_module(str(bad))


def test_decay_groups_leave_out_biases_and_norms():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1, bias=False))
    decay, rest = decay_groups(net, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3]), torch.Size([1, 4])]
    assert len(rest["params"]) == 5 and rest["weight_decay"] == 0.0
    params = train_trial(TINY, OptimConfig(weight_decay=0.1, no_decay=True), steps=3, seed=0, device=CPU, sharpness=False)
    assert params.config is None  # the default loop grouped as asked


# ----------------------------------------------------------------------------------------------- exports

CONFIGS = [
    OptimConfig(optimizer="adamw", lr=2e-3, weight_decay=0.01, no_decay=True, schedule="cosine", warmup=0.05,
                min_lr_factor=0.1, max_grad_norm=1.0, precision="bf16"),
    OptimConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="linear", min_lr_factor=0.2),
    OptimConfig(optimizer="adamw", lr=1e-3, schedule="linear"),
    OptimConfig(optimizer="adam", lr=1e-3, weight_decay=1e-4),
]


def rec(config: OptimConfig) -> Recommendation:
    return Recommendation("s", config, 200, {"trial": 1, "worst_score": -1.5})


@pytest.mark.parametrize("config", CONFIGS)
def test_python_export_builds_the_trial_optimizer_with_its_groups(config):
    namespace: dict = {}
    exec(format_recommendation(rec(config), "python"), namespace)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    exported, _ = namespace["build_optimizer"](model)
    from stabsearch.training.optim import build_optimizer

    trial = build_optimizer(model, config)
    assert type(exported) is type(trial)
    for mine, theirs in zip(exported.param_groups, trial.param_groups, strict=True):
        assert [id(p) for p in mine["params"]] == [id(p) for p in theirs["params"]]
        assert {k: v for k, v in mine.items() if k not in ("params", "lr", "initial_lr")} == \
            {k: v for k, v in theirs.items() if k not in ("params", "lr")}
        assert mine["initial_lr"] == theirs["lr"]  # the scheduler has set this step's lr from it
    assert namespace["MAX_GRAD_NORM"] == config.max_grad_norm and namespace["PRECISION"] == config.precision


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_lightning_export_returns_the_trial_optimizer_when_bound(config):
    pl = pytest.importorskip("lightning.pytorch")
    from stabsearch.training.optim import build_optimizer, build_scheduler

    namespace: dict = {}
    exec(compile(format_recommendation(rec(config), "lightning"), "lightning_export", "exec"), namespace)

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))

    lit = Lit()
    out = types.MethodType(namespace["configure_optimizers"], lit)()
    optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
    trial = build_optimizer(lit, config)
    assert type(optimizer) is type(trial) and out["lr_scheduler"]["interval"] == "step"
    for mine, theirs in zip(optimizer.param_groups, trial.param_groups, strict=True):
        assert [id(p) for p in mine["params"]] == [id(p) for p in theirs["params"]]
        assert {k: v for k, v in mine.items() if k not in ("params", "lr", "initial_lr")} == \
            {k: v for k, v in theirs.items() if k not in ("params", "lr")}
        assert mine["initial_lr"] == theirs["lr"]
    reference = build_scheduler(trial, config, 200)
    for _ in range(150):
        scheduler.step(), reference.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(trial.param_groups[0]["lr"], rel=1e-12)
    kwargs = namespace["TRAINER_KWARGS"]
    assert kwargs["precision"] == {"32": "32-true", "bf16": "bf16-mixed"}[config.precision]
    assert kwargs.get("gradient_clip_val") == config.max_grad_norm


@pytest.mark.parametrize("config", CONFIGS)
def test_hf_export_constructs_training_arguments(config, tmp_path):
    transformers = pytest.importorskip("transformers")
    text = format_recommendation(rec(config), "hf")
    fields = json.loads("\n".join(line for line in text.splitlines() if not line.startswith("#")))
    cpu = {"use_cpu": True} if config.precision == "bf16" else {}
    args = transformers.TrainingArguments(output_dir=str(tmp_path), **fields, **cpu)
    assert args.learning_rate == config.lr and args.adam_epsilon == config.eps
    assert args.max_grad_norm == (config.max_grad_norm or 0.0) and args.bf16 == (config.precision == "bf16")
    assert '"trial": 1' not in text and "#   trial: 1" in text  # the evidence is comments


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_hf_export_maps_schedules_exactly_or_says_it_cannot():
    transformers = pytest.importorskip("transformers")
    from transformers.optimization import get_scheduler

    from stabsearch.training.optim import build_scheduler

    for config in CONFIGS[:3]:
        fields, _ = hf_fields(rec(config))
        model = torch.nn.Linear(2, 1)
        ours = torch.optim.SGD(model.parameters(), lr=config.lr)
        theirs = torch.optim.SGD(model.parameters(), lr=config.lr)
        a = build_scheduler(ours, dataclasses.replace(config, warmup=0.0), 200)
        b = get_scheduler(fields["lr_scheduler_type"], theirs, num_warmup_steps=0, num_training_steps=200,
                          scheduler_specific_kwargs=fields.get("lr_scheduler_kwargs"))
        for _ in range(199):
            a.step(), b.step()
            assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
    _, notes = hf_fields(rec(CONFIGS[3]))  # Adam with L2 decay, every parameter decayed
    assert sum("NO TRAINER EQUIVALENT" in n for n in notes) == 2
