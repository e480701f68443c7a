"""Hugging Face ``transformers.Trainer`` under stabsearch: ``train(run, model=..., train_dataset=...)`` is a whole ``train(run)``.

Example (a model module)::

    from stabsearch.integrations.transformers import train as hf_train

    def train(run):
        hf_train(run, model=TinyModel(), train_dataset=dataset(run.seed))

    def evaluate(model):           # gets the model that was trained
        return held_out_loss(model)

What :func:`train` overrides in the user's ``TrainingArguments``, and why:

- ``max_steps`` (the trial's budget), ``seed`` (the trial's seed) and
  ``use_cpu`` (the trial's device): they are the trial's, not the script's.
- The optimizer and scheduler: the trial's, passed as ``optimizers=``
  (``learning_rate``, ``adam_*`` and ``weight_decay`` are set to the trial's
  too, so what Trainer logs is what trained). With ``no_decay`` the
  decay groups leave out biases and norm weights, as Trainer's own do.
- ``logging_nan_inf_filter`` is forced off: with it on, Trainer replaces a
  NaN or inf loss by the mean of the previous ones, so a run that
  diverged would look like one that trained, and it costs a host sync per step.
- ``max_grad_norm``, ``bf16`` and ``fp16`` when the trial's configuration
  sets them. Otherwise the user's own values stay and are recorded as the
  trial's ``max_grad_norm`` and ``precision``; with no ``args`` at all,
  clipping is off (Trainer's default of 1.0 is not silently applied).
- Quiet: no progress bar or log printer, and, where the user's args leave
  them at Trainer's defaults, no logging (``logging_strategy="no"``), no
  checkpoints (``save_strategy="no"``), no reporting and no output directory
  left behind (a temporary one).

What it records: every optimizer step's loss, summed over the
micro-batches of gradient accumulation (``training_step``'s returns, which
Trainer scales by the accumulation), kept on the device and read in
blocks by ``run.log``; fp16 steps the GradScaler skipped, counted and not logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

from stabsearch.integrations import missing, same_device
from stabsearch.training.trainer import Run, StopRun

try:
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
except ImportError as exc:  # the extra is not installed
    raise missing("transformers", exc) from None

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
#: Fields that print or write for every trial, and their quiet values; a user's non-default value wins.
QUIET = {"logging_strategy": "no", "save_strategy": "no", "report_to": "none", "push_to_hub": False}


class StabilityCallback(TrainerCallback):
    """Hands every optimizer step's loss to ``run.log`` and stops the Trainer when the run diverged.

    Inside :func:`train` the per-step loss comes from ``training_step``
    (no host sync per step). On a Trainer of the user's own, the callback
    reads the logged ``loss`` instead, which needs ``logging_steps=1`` and
    ``logging_nan_inf_filter=False`` (it says so if they are not set). When
    ``run.log`` ends the run (divergence, or a time limit) the callback sets
    ``control.should_training_stop`` and keeps the reason in ``stop``;
    :func:`train` raises it once ``trainer.train()`` has returned.

    Args:
        run: the trial's :class:`~stabsearch.training.trainer.Run`.
    """

    def __init__(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"StabilityCallback(run): expected a stabsearch Run, got {type(run).__name__}")
        self.run = run
        self.stop: StopRun | None = None
        self.trainer: Trainer | None = None  # set by train(): losses come from its training_step
        self._step_loss: torch.Tensor | None = None

    def add(self, loss: torch.Tensor) -> None:
        """One micro-batch's (detached) loss, as ``training_step`` returns it."""
        loss = loss.detach()
        self._step_loss = loss if self._step_loss is None else self._step_loss + loss

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None:
            if args.logging_nan_inf_filter:
                raise ValueError("StabilityCallback: set logging_nan_inf_filter=False (it turns a NaN loss into the mean of "
                                 "the last ones), or train with stabsearch.integrations.transformers.train")
            if args.logging_strategy != "steps" or args.logging_steps != 1:
                raise ValueError("StabilityCallback on your own Trainer reads the logged loss: set logging_steps=1, "
                                 "or train with stabsearch.integrations.transformers.train")

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None or self.stop is not None:
            return
        loss, self._step_loss = self._step_loss, None
        if self.trainer.accelerator.optimizer_step_was_skipped:
            self._call(control, self.run.skip)
        elif loss is not None:
            self._call(control, lambda: self.run.log(loss))

    def on_log(self, args: TrainingArguments, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.trainer is None and self.stop is None and logs and "loss" in logs:
            self._call(control, lambda: self.run.log(float(logs["loss"])))

    def _call(self, control: Any, log: Any) -> None:
        try:
            log()
        except StopRun as stop:
            self.stop = stop
            control.should_training_stop = True


class StabilityTrainer(Trainer):
    """``transformers.Trainer`` whose every micro-batch loss also goes to a :class:`StabilityCallback`."""

    def __init__(self, *args: Any, stability: StabilityCallback, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stability = stability
        stability.trainer = self

    def training_step(self, model: torch.nn.Module, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.stability.add(loss)
        self.stability.run.last_batch = inputs
        return loss


def train(
    run: Run,
    *,
    model: torch.nn.Module,
    args: TrainingArguments | None = None,
    train_dataset: Any,
    eval_dataset: Any = None,
    data_collator: Any = None,
    **trainer_kwargs: Any,
) -> Trainer:
    """Train ``model`` with ``transformers.Trainer`` for the trial; see the module's docstring for what is overridden.

    User code errors propagate (the trial fails); a divergence ends ``train``
    with :class:`~stabsearch.training.trainer.StopRun`, which ``train_trial`` expects.

    Args:
        run: the trial's :class:`~stabsearch.training.trainer.Run`.
        model: the model; its ``forward`` returns the loss as Trainer expects
            (``outputs["loss"]`` or ``outputs[0]``), or pass ``compute_loss_func``.
        args: the user's ``TrainingArguments`` (default: Trainer's defaults, without clipping).
        train_dataset, eval_dataset, data_collator: as ``transformers.Trainer`` takes them.
        trainer_kwargs: more ``transformers.Trainer`` arguments (``callbacks``, ``compute_loss_func``, ...).

    Returns:
        The ``transformers.Trainer`` that ran.

    Example::

        def train(run):
            hf_train(run, model=TinyModel(), args=TrainingArguments(max_grad_norm=1.0), train_dataset=data(run.seed))
    """
    if "optimizers" in trainer_kwargs or "optimizer_cls_and_kwargs" in trainer_kwargs:
        raise ValueError("train(run, ...): the optimizer is the trial's; do not pass optimizers=")
    model = model.to(run.device)
    optimizer = run.make_optimizer(model)
    with tempfile.TemporaryDirectory(prefix="stabsearch-hf-") as scratch:
        arguments = trial_arguments(run, args, scratch)
        callback = StabilityCallback(run)
        callbacks = [callback, *(trainer_kwargs.pop("callbacks", None) or [])]
        trainer = StabilityTrainer(
            model=model, args=arguments, train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=data_collator,
            optimizers=(optimizer, run.scheduler), callbacks=callbacks, stability=callback, **trainer_kwargs,
        )
        if not same_device(arguments.device, run.device):
            raise ValueError(f"transformers.Trainer trains on {arguments.device}, the trial on {run.device}: "
                             "give each worker one GPU (CUDA_VISIBLE_DEVICES)")
        for quiet in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(quiet)
        run.watch(model, lambda: trainer.compute_loss(model, trainer._prepare_inputs(run.last_batch)))
        with _quiet():
            trainer.train()
    if callback.stop is not None:
        raise callback.stop
    return trainer


def trial_arguments(run: Run, args: TrainingArguments | None, output_dir: str) -> TrainingArguments:
    """The user's ``args`` (or defaults) with the trial's settings, quiet, and the NaN filter off.

    Records on ``run`` the clipping and precision the user's args decide.

    Args:
        run: the trial's run.
        args: the user's arguments, or ``None``.
        output_dir: where Trainer may write when the user's args name no directory of their own.
    """
    c = run.config
    changes: dict[str, Any] = {
        "max_steps": run.steps, "seed": run.seed, "use_cpu": run.device.type == "cpu", "logging_nan_inf_filter": False,
        "disable_tqdm": True, "learning_rate": c.lr, "adam_beta1": c.beta1, "adam_beta2": c.beta2,
        "adam_epsilon": c.eps, "weight_decay": c.weight_decay,
    }
    user = args if args is not None else TrainingArguments(output_dir=output_dir)
    for name, value in QUIET.items():
        if args is None or _at_default(user, name):
            changes[name] = value
    if args is None or user.output_dir in (None, "trainer_output", "tmp_trainer"):
        changes["output_dir"] = output_dir
    changes.update(_clipping(run, user, given=args is not None))
    changes.update(_precision(run, user))
    return dataclasses.replace(user, **changes)


def _at_default(args: TrainingArguments, name: str) -> bool:
    value = getattr(args, name)
    default = _DEFAULTS.get(name)
    if name == "report_to":
        return value in ("none", [], None, ["none"])
    return value == default or str(getattr(value, "value", value)) == str(default)


def _clipping(run: Run, args: TrainingArguments, *, given: bool) -> dict[str, Any]:
    """Trainer's ``max_grad_norm``: the configuration's; else the user's, recorded; else off."""
    if run.config.max_grad_norm is not None:
        return {"max_grad_norm": run.config.max_grad_norm}
    if given and args.max_grad_norm and args.max_grad_norm > 0:
        run.used(max_grad_norm=float(args.max_grad_norm))
        return {}
    return {"max_grad_norm": 0.0}


def _precision(run: Run, args: TrainingArguments) -> dict[str, Any]:
    """Trainer's ``bf16``/``fp16``: the configuration's; else the user's, recorded."""
    if run.config.precision != "32":
        return {"bf16": run.config.precision == "bf16", "fp16": run.config.precision == "fp16"}
    if args.bf16 or args.fp16:
        run.used(precision="bf16" if args.bf16 else "fp16")
    return {}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' own info and warning lines at error level for one trial."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
