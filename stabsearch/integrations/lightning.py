"""Lightning under stabsearch: ``fit(run, module, train_dataloaders=...)`` is a whole ``train(run)``.

Example (a model module)::

    from stabsearch.integrations.lightning import fit

    def train(run):
        fit(run, LitModel(), train_dataloaders=loader(run.seed))

    def evaluate(module):          # gets the LightningModule
        return held_out_loss(module)

What :func:`fit` overrides: the module's ``configure_optimizers`` (the
trial's optimizer, with its decay groups, and its per-step scheduler, for
this call only); ``max_steps`` (the trial's budget, ``max_epochs=-1``); the
accelerator and devices (the trial's device); ``precision`` and gradient
clipping when the trial's configuration sets them. It keeps a trial quiet:
no logger, checkpoints, progress bar, model summary or device banner unless
the user's keyword arguments ask for them. What it records: every optimizer
step's loss (``training_step``'s), read off the device in blocks; fp16 steps
the GradScaler skipped, counted and not logged; and, when the user's own
arguments clip gradients or pick a precision the configuration left alone,
that value as the trial's ``max_grad_norm`` or ``precision``.
"""

from __future__ import annotations

import contextlib
import logging
import types
from collections.abc import Iterator
from typing import Any

import torch

from stabsearch.integrations import missing, same_device
from stabsearch.training.trainer import Run, StopRun

try:
    import lightning.pytorch as pl
except ImportError as exc:  # the extra is not installed
    raise missing("lightning", exc) from None

#: stabsearch's precisions as Lightning's, and back (Lightning's older spellings included).
PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
_FROM_LIGHTNING = {"32": "32", "32-true": "32", "bf16-mixed": "bf16", "16-mixed": "fp16", "16": "fp16", "bf16": "bf16"}
#: Trainer arguments that would print or write for every trial; a user's own values win.
QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
#: Trainer arguments that are the trial's: the user's values are replaced.
FORCED = ("max_steps", "max_epochs", "accelerator", "devices")


class StabilityCallback(pl.Callback):
    """Hands every optimizer step's loss to ``run.log`` and stops the Trainer when the run diverged.

    The loss is ``training_step``'s output (a tensor, or a dict's ``"loss"``),
    averaged over the micro-batches of gradient accumulation. It stays on the
    device: ``run.log`` reads losses in blocks, so there is no host sync per
    step. When ``run.log`` ends the run (divergence, or a time limit), the
    callback sets ``trainer.should_stop`` and keeps the reason in ``stop``
    (a :class:`~stabsearch.training.trainer.StopRun`); :func:`fit` raises it once
    ``trainer.fit`` has returned. With fp16, a step the GradScaler skipped
    is counted (``run.skip()``), not logged.

    Args:
        run: the trial's :class:`~stabsearch.training.trainer.Run`.

    Example::

        trainer = lightning.Trainer(max_steps=run.steps, callbacks=[StabilityCallback(run)])
    """

    def __init__(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"StabilityCallback(run): expected a stabsearch Run, got {type(run).__name__}")
        self.run = run
        self.stop: StopRun | None = None
        self._micro: list[torch.Tensor] = []
        self._steps_seen = 0
        self._scale: float | None = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._scale = scaler.get_scale() if scaler is not None else None  # fp16 only: the scaler syncs anyway

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.stop is not None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._micro.append(loss.detach())
        self.run.last_batch = batch
        if trainer.global_step == self._steps_seen:  # accumulating: no optimizer step yet
            return
        self._steps_seen = trainer.global_step
        micro, self._micro = self._micro, []
        try:
            if self._skipped(trainer):
                self.run.skip()
            elif micro:
                self.run.log(micro[0] if len(micro) == 1 else torch.stack(micro).mean())
        except StopRun as stop:
            self.stop = stop
            trainer.should_stop = True

    def _skipped(self, trainer: pl.Trainer) -> bool:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        before, self._scale = self._scale, None
        return scaler is not None and before is not None and scaler.get_scale() < before


def fit(
    run: Run,
    module: pl.LightningModule,
    *,
    datamodule: pl.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """Fit ``module`` for the trial: its optimizer and schedule, ``run.steps`` steps on ``run.device``, quietly.

    See the module's docstring for what is overridden and recorded. User
    code errors propagate (the trial fails); a divergence ends ``fit`` with
    :class:`~stabsearch.training.trainer.StopRun`, which ``train_trial`` expects.

    Args:
        run: the trial's :class:`~stabsearch.training.trainer.Run`.
        module: the LightningModule to train (``training_step`` returns the loss).
        datamodule, train_dataloaders, val_dataloaders: as ``lightning.Trainer.fit`` takes them.
        trainer_kwargs: more ``lightning.Trainer`` arguments (``callbacks``,
            ``gradient_clip_val``, ``precision``, ``accumulate_grad_batches``, ...).

    Returns:
        The ``lightning.Trainer`` that ran.

    Example::

        def train(run):
            fit(run, LitModel(), train_dataloaders=loader(run.seed))
    """
    if not isinstance(module, pl.LightningModule):
        raise TypeError(f"fit(run, module): expected a lightning LightningModule, got {type(module).__name__}")
    kwargs = {**QUIET, **trainer_kwargs, **_placement(run)}
    kwargs.update(_precision(run, trainer_kwargs.get("precision")))
    kwargs.update(_clipping(run, trainer_kwargs.get("gradient_clip_val"), trainer_kwargs.get("gradient_clip_algorithm")))
    callback = StabilityCallback(run)
    kwargs["callbacks"] = [callback, *(trainer_kwargs.get("callbacks") or [])]
    with quiet(), _trial_optimizer(run, module):
        trainer = pl.Trainer(**kwargs)
        trainer.fit(module, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders, datamodule=datamodule)
    _back_to(run, module)
    if callback.stop is not None:
        raise callback.stop
    return trainer


def _placement(run: Run) -> dict[str, Any]:
    """The trial's budget and device as Trainer arguments."""
    device = run.device
    if device.type == "cuda":
        where = {"accelerator": "gpu", "devices": [device.index or 0]}
    else:
        where = {"accelerator": device.type, "devices": 1}
    return {"max_steps": run.steps, "max_epochs": -1, **where}


def _precision(run: Run, asked: Any) -> dict[str, Any]:
    """Lightning's ``precision``: the configuration's, or the user's (recorded on the trial)."""
    if run.config.precision != "32" or asked is None:
        return {"precision": PRECISION[run.config.precision]}
    ours = _FROM_LIGHTNING.get(str(asked))
    if ours is None:
        raise ValueError(f"precision={asked!r}: stabsearch trains and records 32-true, bf16-mixed or 16-mixed only")
    run.used(precision=ours)
    return {"precision": asked}


def _clipping(run: Run, value: Any, algorithm: Any) -> dict[str, Any]:
    """Lightning's gradient clipping: the configuration's ``max_grad_norm``, or the user's (recorded on the trial)."""
    if run.config.max_grad_norm is not None:
        return {"gradient_clip_val": run.config.max_grad_norm, "gradient_clip_algorithm": "norm"}
    if value is None or value == 0:
        return {}
    if algorithm not in (None, "norm"):
        raise ValueError(f"gradient_clip_algorithm={algorithm!r}: stabsearch records clipping by norm only (max_grad_norm)")
    run.used(max_grad_norm=float(value))
    return {}


@contextlib.contextmanager
def _trial_optimizer(run: Run, module: pl.LightningModule) -> Iterator[None]:
    """The trial's optimizer and step-wise scheduler in place of ``module.configure_optimizers``, for one fit."""

    def configure_optimizers(self: pl.LightningModule) -> dict[str, Any]:
        optimizer = run.make_optimizer(self)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": run.scheduler, "interval": "step", "frequency": 1}}

    had = "configure_optimizers" in vars(module)
    saved = vars(module).get("configure_optimizers")
    module.configure_optimizers = types.MethodType(configure_optimizers, module)
    run.watch(module, lambda: _loss_of(module, run.last_batch))
    try:
        yield
    finally:
        if had:
            module.configure_optimizers = saved
        else:
            del module.configure_optimizers


def _loss_of(module: pl.LightningModule, batch: Any) -> torch.Tensor:
    """``training_step``'s loss on ``batch``, for stabsearch's probes after training."""
    out = module.training_step(batch, 0)
    return out["loss"] if isinstance(out, dict) else out


def _back_to(run: Run, module: pl.LightningModule) -> None:
    """Lightning's teardown moves the model and optimizer to the CPU; the probes and ``evaluate`` run on the trial's device."""
    if same_device(run.device, "cpu"):
        return
    module.to(run.device)
    if run.optimizer is not None:
        for state in run.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    state[key] = value.to(run.device)


_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's info lines (device banners, tips, "max_steps reached") silenced; its warnings still show."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
