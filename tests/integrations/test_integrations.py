"""Lightning and Hugging Face Trainer through the one-line helpers, with real Trainers on tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from tests.support import ROOT
from stabsearch import OptimConfig, load_model_module, train_trial
from stabsearch.training.trainer import Run

pl = pytest.importorskip("lightning.pytorch")
transformers = pytest.importorskip("transformers")

CPU = torch.device("cpu")
EXAMPLES = ROOT / "examples"


def module_file(tmp_path, example: str, **overrides) -> str:
    """A model module that is ``examples/<example>.py`` with some of its globals changed."""
    source = (EXAMPLES / f"{example}.py").read_text()
    lines = "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    path = tmp_path / f"{example}_{abs(hash(lines)) % 10**6}.py"
    path.write_text(f"{source}\n\n{lines}\n")
    return str(path)


def search(tmp_path, path: str, *, trials: int, steps: int, space: dict | None = None, **settings):
    """Run a small search of ``path`` and return its trial records (in order)."""
    from stabsearch import SearchSpace
    from stabsearch.study.records import study_records
    from stabsearch.study.runner import SearchSettings, run_search
    from stabsearch.study.storage import open_storage

    import optuna

    module = load_model_module(path)
    space = SearchSpace().override(space or {"lr": {"low": 1e-3, "high": 1e-2}, "warmup": 0.0}, source="test")
    store = open_storage(f"sqlite:///{tmp_path}/s.db", create=True)
    config = SearchSettings(trials=trials, steps=steps, seed=0, progress=False, device=CPU, early_warning=False,
                            stop_slow=False, **settings)
    run_search(module, space, store, "s", config)
    return study_records(optuna.load_study(study_name="s", storage=store.storage)), store


# ----------------------------------------------------------------------------------------------- lightning


def test_lightning_fit_trains_the_trial_optimizer_for_the_trial_steps(tmp_path):
    module = load_model_module(module_file(tmp_path, "lightning_model"))
    config = OptimConfig(optimizer="adamw", lr=3e-3, weight_decay=0.1, no_decay=True, schedule="cosine")
    seen = {}
    evaluate = module.evaluate
    module = module.__class__(**{**vars(module), "evaluate": lambda m: seen.setdefault("model", m) and evaluate(m)})
    result = train_trial(module, config, steps=40, seed=0, device=CPU, sharpness=False)
    assert result.steps_run == 40 and result.diverged_at is None
    assert np.all(np.isfinite(result.losses)) and result.losses[-5:].mean() < result.losses[:5].mean()
    assert isinstance(seen["model"], pl.LightningModule) and result.final_eval is not None
    assert result.config is None  # nothing in the user's arguments changed the configuration
    assert result.checks["telemetry"] == "skipped: no sample was due"  # make_optimizer was ours, 40 < 50 steps


def test_lightning_uses_trial_optimizer_groups_and_scheduler_and_restores_configure_optimizers():
    from stabsearch.integrations.lightning import fit

    example = load_model_module(str(EXAMPLES / "lightning_model.py"))
    lit = example.module.LitRegression()
    run = Run(OptimConfig(optimizer="adamw", lr=1e-2, weight_decay=0.1, no_decay=True, schedule="linear"), steps=12, seed=0, device=CPU)
    trainer = fit(run, lit, train_dataloaders=example.module.loader(0))
    optimizer = trainer.optimizers[0]
    assert optimizer is run.optimizer and type(optimizer) is torch.optim.AdamW
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 4]  # the two weights; biases and LayerNorm out
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 - 12 / 12), abs=1e-12)  # linear decay ran per step
    assert "configure_optimizers" not in vars(lit)  # the module's own method is back
    assert isinstance(lit.configure_optimizers(), torch.optim.SGD)
    assert trainer.logger is None and not trainer.checkpoint_callbacks and not trainer.progress_bar_callback


def test_lightning_nan_ends_the_trial_diverged_at_its_step(tmp_path):
    module = load_model_module(module_file(tmp_path, "lightning_model", NAN_AT=30))
    result = train_trial(module, OptimConfig(lr=1e-3), steps=100, seed=0, device=CPU, sharpness=False)
    assert result.diverged_at == 30
    assert result.steps_run < 100  # stopped through trainer.should_stop at the end of the block that saw it


def test_lightning_user_clipping_is_recorded_and_the_trial_clipping_is_applied():
    from stabsearch.integrations.lightning import fit

    example = load_model_module(str(EXAMPLES / "lightning_model.py")).module
    run = Run(OptimConfig(lr=1e-3), steps=3, seed=0, device=CPU)
    trainer = fit(run, example.LitRegression(), train_dataloaders=example.loader(0), gradient_clip_val=0.5)
    assert run.config.max_grad_norm == 0.5 and trainer.gradient_clip_val == 0.5
    run = Run(OptimConfig(lr=1e-3, max_grad_norm=2.0), steps=3, seed=0, device=CPU)
    trainer = fit(run, example.LitRegression(), train_dataloaders=example.loader(0), gradient_clip_val=0.5)
    assert trainer.gradient_clip_val == 2.0 and trainer.gradient_clip_algorithm == "norm" and run.config.max_grad_norm == 2.0
    with pytest.raises(ValueError, match="gradient_clip_algorithm='value'"):
        fit(Run(OptimConfig(), steps=3, seed=0, device=CPU), example.LitRegression(), train_dataloaders=example.loader(0),
            gradient_clip_val=0.5, gradient_clip_algorithm="value")


def test_lightning_bf16_trains_under_autocast_on_cpu():
    from stabsearch.integrations.lightning import fit

    example = load_model_module(str(EXAMPLES / "lightning_model.py")).module
    lit = example.LitRegression()
    dtypes = []
    lit.net[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    run = Run(OptimConfig(lr=1e-3, precision="bf16"), steps=4, seed=0, device=CPU)
    trainer = fit(run, lit, train_dataloaders=example.loader(0))
    assert trainer.precision == "bf16-mixed" and torch.bfloat16 in dtypes
    run.flush()
    assert run.losses.size == 4 and np.all(np.isfinite(run.losses))


@pytest.mark.slow
def test_a_lightning_search_prints_no_banner_per_trial(tmp_path):
    path = module_file(tmp_path, "lightning_model", STEPS=20)
    proc = subprocess.run(
        [sys.executable, "-m", "stabsearch", "run", path, "--trials", "3", "--confirm", "0", "--no-progress",
         "--storage", f"sqlite:///{tmp_path}/s.db", "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**_env(), "PYTHONWARNINGS": "ignore"},
    )
    text = proc.stdout + proc.stderr
    assert "3/3 trials finished" in text, text[-2000:]
    for banner in ("GPU available", "TPU available", "Tip:", "max_steps=20` reached", "| Name"):
        assert text.count(banner) <= 1, (banner, text[-2000:])


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------------------------- transformers


def test_trainer_helper_trains_the_trial_optimizer_quietly(tmp_path, monkeypatch, capsys):
    from stabsearch.integrations.transformers import train

    monkeypatch.chdir(tmp_path)
    example = load_model_module(str(EXAMPLES / "hf_trainer_model.py")).module
    run = Run(OptimConfig(optimizer="adamw", lr=1e-2, weight_decay=0.1, no_decay=True), steps=20, seed=3, device=CPU)
    trainer = train(run, model=example.TinyRegressor(), train_dataset=example.Regression(0))
    run.flush()
    assert trainer.optimizer.optimizer is run.optimizer or trainer.optimizer is run.optimizer
    assert trainer.args.max_steps == 20 and trainer.args.seed == 3 and trainer.args.max_grad_norm == 0.0
    assert not trainer.args.logging_nan_inf_filter
    assert run.losses.size == 20 and run.config.max_grad_norm is None
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no output directory left behind
    out = capsys.readouterr()
    assert "train_runtime" not in out.out + out.err and "it/s" not in out.err


def test_trainer_nan_at_step_60_with_default_arguments_is_diverged_at_60(tmp_path):
    path = module_file(tmp_path, "hf_trainer_model", NAN_AT=60, ARGS={})
    records, _ = search(tmp_path, path, trials=1, steps=100)
    (trial,) = records
    assert trial.verdict == "diverged" and trial.state == "PRUNED"
    assert 59 <= trial.diverged_at <= 61
    assert trial.final_loss != 0.0


def test_trainer_user_clipping_reaches_recommend_json_and_hf(tmp_path, cli):
    from transformers import TrainingArguments

    path = module_file(tmp_path, "hf_trainer_model")  # ARGS: max_grad_norm=1.0
    records, store = search(tmp_path, path, trials=2, steps=30)
    assert [r.params["max_grad_norm"] for r in records] == [1.0, 1.0]
    storage = f"sqlite:///{tmp_path}/s.db"
    done = cli("recommend", "--study", "s", "--storage", storage, "--format", "json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["max_grad_norm"] == 1.0
    hf = cli("recommend", "--study", "s", "--storage", storage, "--format", "hf")
    assert hf.code == 0, hf.err
    fields = json.loads("\n".join(line for line in hf.out.splitlines() if not line.startswith("#")))
    assert fields["max_grad_norm"] == 1.0
    args = TrainingArguments(output_dir=str(tmp_path / "out"), **fields)
    assert args.max_grad_norm == 1.0 and args.learning_rate == json.loads(done.out)["lr"]


def test_trainer_callback_on_a_plain_trainer_refuses_the_nan_filter():
    from transformers import Trainer, TrainingArguments

    from stabsearch.integrations.transformers import StabilityCallback

    example = load_model_module(str(EXAMPLES / "hf_trainer_model.py")).module
    run = Run(OptimConfig(), steps=5, seed=0, device=CPU)
    trainer = Trainer(model=example.TinyRegressor(), args=TrainingArguments(max_steps=5, use_cpu=True, save_strategy="no"),
                      train_dataset=example.Regression(0), callbacks=[StabilityCallback(run)])
    with pytest.raises(ValueError, match="logging_nan_inf_filter=False"):
        trainer.train()


def test_trainer_bf16_from_the_configuration_and_from_user_args(tmp_path):
    from transformers import TrainingArguments

    from stabsearch.integrations.transformers import train

    example = load_model_module(str(EXAMPLES / "hf_trainer_model.py")).module
    run = Run(OptimConfig(precision="bf16"), steps=3, seed=0, device=CPU)
    assert train(run, model=example.TinyRegressor(), train_dataset=example.Regression(0)).args.bf16
    run = Run(OptimConfig(), steps=3, seed=0, device=CPU)
    train(run, model=example.TinyRegressor(), args=TrainingArguments(bf16=True, use_cpu=True, output_dir=str(tmp_path)), train_dataset=example.Regression(0))
    assert run.config.precision == "bf16"


# ----------------------------------------------------------------------------------------------- packaging


def test_import_stabsearch_needs_neither_framework():
    code = "import sys, stabsearch, stabsearch.cli; print(any(m.split('.')[0] in ('lightning', 'transformers') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("framework", ["lightning", "transformers"])
def test_a_missing_extra_is_one_clear_import_error(framework, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == framework or m == f"stabsearch.integrations.{framework}"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, framework, None)  # import of it fails, as when it is not installed
    with pytest.raises(ImportError) as info:
        __import__(f"stabsearch.integrations.{framework}")
    message = str(info.value)
    assert f'pip install "stabsearch[{framework}]"' in message and "\n" not in message
