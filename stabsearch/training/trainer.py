"""Train one trial: seed, build, step, and watch every step's loss in memory.

The loop itself is :func:`default_loop`, short enough to read on one screen.
A model module's own ``train(run)`` replaces it; both talk to a :class:`Run`,
which builds the optimizer and scheduler, holds the step budget and takes each
step's loss. ``Run.log`` keeps losses on the device and reads them in blocks,
so a GPU is not synchronised every step, and ends the loop at once (by raising
:class:`StopRun`) when the curve has diverged. Nothing here knows about Optuna.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from stabsearch.config import OptimConfig, chance_loss
from stabsearch.training.device import move_to
from stabsearch.training.loader import ModelModule
from stabsearch.training.optim import build_optimizer, build_scheduler
from stabsearch.analysis.divergence import divergence_noise, divergence_step, reference_loss
from stabsearch.analysis.options import StabilityOptions
from stabsearch.training.telemetry import adam_preconditioner, adam_telemetry, hessian_top_eigenvalue, relu_dead_units

ProgressCallback = Callable[[int, float], None]

#: fp16: this many steps in a row skipped by the GradScaler (its scale halved each time) are a divergence.
MAX_SKIPS_IN_ROW = 24
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StopRun(BaseException):
    """Ends a training loop from inside ``Run.log``.

    A ``BaseException`` so that a user loop's ``except Exception`` does not
    swallow it and train on after divergence.
    """


class OutOfTime(StopRun):
    """A time limit ended the run at a logged step: ``limit`` is ``"study"`` (``--timeout``) or ``"trial"``.

    ``train_trial`` lets it through, so the caller ends the trial (re-queued
    for the study's limit, failed as "timed out" for the trial's) instead
    of analysing a curve that was cut short.
    """

    def __init__(self, limit: str, seconds: float) -> None:
        super().__init__(f"{limit} time limit of {seconds:g}s reached")
        self.limit = limit
        self.seconds = seconds


@dataclasses.dataclass(frozen=True)
class Deadline:
    """A point on ``time.monotonic()`` at which a run stops, and which limit it is."""

    at: float
    limit: str  # "study" or "trial"
    seconds: float

    @classmethod
    def after(cls, seconds: float | None, limit: str) -> Deadline | None:
        return None if seconds is None else cls(time.monotonic() + seconds, limit, seconds)


@dataclasses.dataclass
class TrainResult:
    """What one training run produced, as plain numbers."""

    losses: np.ndarray
    diverged_at: int | None
    seconds: float
    final_eval: float | None = None
    dead_layers: tuple[str, ...] = ()
    telemetry: list[dict[str, float]] = dataclasses.field(default_factory=list)
    sharpness: float | None = None
    sharpness_seconds: float = 0.0
    #: Top eigenvalue of ``P^-1 H`` with Adam's preconditioner ``P = sqrt(v_hat) + eps`` (the early warning's report).
    preconditioned_sharpness: float | None = None
    #: What each check stabsearch adds did: ``"ran"``, ``"skipped: <why>"`` or ``"failed: <error>"``.
    checks: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The configuration the run trained with, when it is not the one asked for (``Run.used``), else ``None``.
    config: OptimConfig | None = None
    #: fp16: optimizer steps the GradScaler skipped for non-finite gradients (not in ``losses``).
    skipped_steps: int = 0

    @property
    def steps_run(self) -> int:
        return int(self.losses.size)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Run:
    """The handle a training loop gets: config, device, budget, and a loss log.

    Example (a custom loop in a model module)::

        def train(run):
            model = MyNet().to(run.device)
            optimizer = run.make_optimizer(model)   # also tells the run which model it trains
            for step in range(run.steps):
                batch = ...
                run.watch(model, lambda: my_loss(model, batch))   # optional: enables the probes below
                loss = my_loss(model, batch)
                loss.backward(); optimizer.step(); run.scheduler.step()
                optimizer.zero_grad()
                run.log(loss)      # raises StopRun once the run has diverged

    Besides the loss curve, stabsearch checks a run with what the loop
    tells it: Adam's telemetry needs the optimizer from ``make_optimizer``;
    ``evaluate(model)`` needs the model (``make_optimizer(model)`` with a
    Module, or ``watch(model)``); the dead-unit count and the sharpness probe
    of the early warning also need a loss on the current batch
    (``watch(model, loss_fn)``). Which checks ran, and why the others did
    not, is stored on the trial (``checks``).
    """

    def __init__(
        self,
        config: OptimConfig,
        *,
        steps: int,
        seed: int,
        device: torch.device,
        chance_loss: float | None = None,
        options: StabilityOptions | None = None,
        block: int | None = None,
        on_progress: ProgressCallback | None = None,
        progress_every: int | None = None,
        telemetry_every: int | None = None,
        deadlines: tuple[Deadline, ...] = (),
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.config = config
        self.steps = steps
        self.seed = seed
        self.device = device
        self.chance_loss = chance_loss
        self.warmup_steps = config.warmup_steps(steps)
        self.options = options or StabilityOptions()
        self.block = block or (64 if device.type == "cuda" else 16)
        self.on_progress = on_progress
        self.progress_every = progress_every or max(1, steps // 20)
        self.telemetry_every = telemetry_every or max(50, steps // 20)  # ~1% of a tiny model's steps
        self.telemetry: list[dict[str, float]] = []
        self.model: torch.nn.Module | None = None
        self.last_batch: Any = None
        self.probe: Callable[[], Any] | None = None  # the loss on the current batch: see watch()
        self.checks: dict[str, str] = {}
        self.deadlines = tuple(sorted((d for d in deadlines if d is not None), key=lambda d: d.at))
        self.optimizer: torch.optim.Optimizer | None = None
        self._scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.diverged_at: int | None = None
        self._pending: list[Any] = []
        self._count = 0
        self._losses: list[float] = []
        self._initial = math.nan
        self._noise: list[float] = []  # divergence_noise of the first `window` values, as they come in
        self.skipped_steps = 0
        self._skips_in_row = 0
        self.scaler: torch.amp.GradScaler | None = None

    #: Steps logged by every run of this process; a worker's heartbeat reports whether it moved.
    logged = 0

    @staticmethod
    def steps_logged() -> int:
        """How many steps every run of this process has logged so far."""
        return Run.logged

    def make_optimizer(self, model_or_params: torch.nn.Module | Any, *, scheduler: bool = True) -> torch.optim.Optimizer:
        """Build the configured optimizer, and ``self.scheduler`` unless told not to, for a model or its parameters."""
        if isinstance(model_or_params, torch.nn.Module):
            self.model = model_or_params
        elif self.config.no_decay and self.config.weight_decay > 0:  # no names to group by: every parameter decays
            self.used(no_decay=False)
        self.optimizer = build_optimizer(model_or_params, self.config)
        self._scheduler = build_scheduler(self.optimizer, self.config, self.steps) if scheduler else None
        return self.optimizer

    def used(self, **changes: Any) -> None:
        """Record that the run trains with these settings instead of the configured ones (stored on the trial).

        An integration calls it when the framework's own arguments decide a
        setting, for example gradient clipping from ``TrainingArguments.max_grad_norm``.

        Args:
            changes: ``OptimConfig`` fields and the values the run uses.

        Example:
            >>> run = Run(OptimConfig(), steps=10, seed=0, device=torch.device("cpu"))
            >>> run.used(max_grad_norm=1.0); run.config.max_grad_norm
            1.0
        """
        self.config = dataclasses.replace(self.config, **changes)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's precision context: ``torch.autocast`` for bf16 and fp16, nothing for 32."""
        dtype = _AUTOCAST.get(self.config.precision)
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def clip(self, params: Iterable[torch.Tensor] | torch.nn.Module) -> None:
        """Clip the gradients' total norm to ``config.max_grad_norm`` (no host sync); nothing when it is ``None``."""
        if self.config.max_grad_norm is not None:
            params = params.parameters() if isinstance(params, torch.nn.Module) else params
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)

    def backward_step(self, loss: torch.Tensor, model: torch.nn.Module | None = None) -> bool:
        """``loss.backward()``, clipping and ``optimizer.step()`` at the run's precision; ``False`` if fp16's scaler skipped the step.

        fp16 scales the loss with a ``GradScaler`` and unscales before
        clipping; a step it skips (non-finite gradients) is counted with
        :meth:`skip`, not logged. Call ``make_optimizer`` first.
        """
        assert self.optimizer is not None, "call run.make_optimizer(model) first"
        params = (model or self.model or _Params(self.optimizer)).parameters()
        if self.config.precision != "fp16":
            loss.backward()
            self.clip(params)
            self.optimizer.step()
            return True
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type)
        self.scaler.scale(loss).backward()
        if self.config.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            self.clip(params)
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() < before:
            self.skip()
            return False
        self._skips_in_row = 0
        return True

    def skip(self) -> None:
        """Count an optimizer step that fp16's GradScaler skipped; it is no loss value, and ``log`` is not called for it.

        ``MAX_SKIPS_IN_ROW`` skips in a row (the scale halved each time, the
        gradients still not finite) are a divergence at this step: the curve
        ends with NaN there and :class:`StopRun` is raised.
        """
        self.skipped_steps += 1
        self._skips_in_row += 1
        self._note_skips()
        if self._skips_in_row >= MAX_SKIPS_IN_ROW:
            self.flush()
            at = len(self._losses)
            self.checks["divergence"] = f"fp16: the GradScaler skipped {self._skips_in_row} steps in a row (non-finite gradients) at step {at}"
            self._pending.append(math.nan)
            try:
                self.flush()
            except StopRun:
                pass
            self.diverged_at = at if self.diverged_at is None else self.diverged_at
            raise StopRun("diverged")

    def _note_skips(self) -> None:
        self.checks["skipped_steps"] = f"fp16: the GradScaler skipped {self.skipped_steps} steps (non-finite gradients); they are not in the curve"

    def watch(self, model: torch.nn.Module, loss_fn: Callable[[], Any] | None = None) -> None:
        """Tell the run which model it trains and, optionally, how to compute the loss on the current batch.

        ``loss_fn()`` takes no arguments and returns the loss of the model on
        the batch of the step being trained (a closure over it); call
        ``watch`` again whenever the batch changes, or give a closure that
        reads the current batch. The dead-unit count (in the telemetry and
        at the end) and the early warning's sharpness probe call it, after
        training, on the last batch. Without it those checks are skipped,
        and the trial says so.
        """
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"run.watch(model): expected a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"run.watch(model, loss_fn): loss_fn must be callable, got {type(loss_fn).__name__}")
        self.model = model
        if loss_fn is not None:
            self.probe = loss_fn

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """The configured schedule as a ``LambdaLR`` (call ``make_optimizer`` first)."""
        if self._scheduler is None:
            raise RuntimeError("call run.make_optimizer(model) before using run.scheduler")
        return self._scheduler

    def log(self, loss: torch.Tensor | float) -> None:
        """Record one step's loss; raises :class:`StopRun` when the run diverged or overran its budget."""
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        self._pending.append(loss)
        self._count += 1
        Run.logged += 1
        if self._count % self.telemetry_every == 0 and self.optimizer is not None and "telemetry" not in self.checks:
            self.sample_telemetry()
        if len(self._pending) >= self.block:
            self.flush()
        if len(self._losses) + len(self._pending) > self.steps:
            raise StopRun("step budget spent")
        if self.deadlines and time.monotonic() >= self.deadlines[0].at:
            self.flush()
            raise OutOfTime(self.deadlines[0].limit, self.deadlines[0].seconds)

    def sample_telemetry(self) -> None:
        """Record Adam's internals (and dead ReLU units, when a probe is set) at this step.

        A sample that fails stops the telemetry of this run, with the reason
        in ``checks``; the run itself goes on. A non-finite weight, gradient
        norm or telemetry value is a divergence at this step, even while the
        loss looks finite (a loss passed through ``nan_to_num``, say).
        """
        assert self.optimizer is not None
        try:
            values = adam_telemetry(self.optimizer)
            if values and self.model is not None and self.probe is not None:
                counts = relu_dead_units(self.model, self.probe)
                if counts:
                    values["dead_fraction"] = sum(d for d, _ in counts.values()) / sum(n for _, n in counts.values())
            broken = _nonfinite(values) or nonfinite_weights(self.optimizer)
        except Exception as exc:  # a check of ours: never the trial's failure
            self.checks["telemetry"] = f"failed: {one_line(exc)}"
            return
        if values:
            self.telemetry.append({"step": self._count - 1, **values})
        if broken:
            self.flush()
            if self.diverged_at is None:
                self.diverged_at = self._count - 1
                self.checks["divergence"] = f"{broken} at step {self._count - 1}, while the loss was finite"
            raise StopRun("diverged")

    def flush(self) -> None:
        """Read the pending block of losses off the device and check it for divergence."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if all(isinstance(v, torch.Tensor) for v in pending):
            values = torch.stack([v.reshape(()) for v in pending]).float().tolist()
        else:
            values = [float(v) for v in pending]
        start = len(self._losses)
        self._losses.extend(values)
        if math.isnan(self._initial) and len(self._losses) >= self.options.head:
            self._initial = reference_loss(self._losses, head=self.options.head, cap=self.options.start_cap)
        self._check_divergence(start)  # first: a block that diverged is not also a progress report
        self._report_progress(start)

    def _report_progress(self, start: int) -> None:
        if self.on_progress is None:
            return
        end = len(self._losses)
        mark = (end // self.progress_every) * self.progress_every
        if mark > start and mark > 0:
            recent = [v for v in self._losses[max(0, mark - self.block) : mark] if math.isfinite(v)]
            if recent:
                self.on_progress(mark, float(np.median(recent)))

    def _check_divergence(self, start: int) -> None:
        if self.diverged_at is not None:
            raise StopRun("diverged")
        run = self.options.diverge_run
        # Within the first `window` values the noise estimate is still coming in, and a run that completed
        # before it was known is judged once it is: check from the start, as analyze does on the whole curve.
        lo = 0 if start <= self.options.window else max(0, start - (run - 1))
        tail = self._losses[lo:]
        initial = self._initial if not math.isnan(self._initial) else math.inf
        found = divergence_step(
            tail,
            initial=initial,
            chance_loss=self.chance_loss,
            warmup=max(0, self.warmup_steps - lo),
            run=run,
            factor=self.options.diverge_factor,
            noise=self._divergence_noise(lo),
            sigmas=self.options.diverge_sigmas,
        )
        if found is not None:
            self.diverged_at = lo + found
            raise StopRun("diverged")

    def _divergence_noise(self, lo: int) -> np.ndarray:
        """``divergence_noise`` of the curve so far at indices ``lo..``, as ``analyze`` computes it on the
        whole curve: the values of the first ``window`` indices are computed once, as they come in, and
        every later index has the value of index ``window - 1``."""
        w, n = self.options.window, len(self._losses)
        known = len(self._noise)
        if known < min(n, w):
            self._noise.extend(divergence_noise(self._losses[:w], window=w, start=known, stop=min(n, w)).tolist())
        return np.asarray(self._noise)[np.minimum(np.arange(lo, n), w - 1)]

    @property
    def losses(self) -> np.ndarray:
        return np.asarray(self._losses, dtype=np.float64)


class _Params:
    """The parameters an optimizer trains, with a ``parameters()`` like a module's."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def batch_stream(module: ModelModule, seed: int, device: torch.device) -> Iterator[Any]:
    """The module's batches forever, on ``device`` (:func:`~stabsearch.training.device.move_to`): a finite iterable
    is restarted with the same seed."""
    assert module.batches is not None
    move = device.type != "cpu"
    while True:
        empty = True
        for batch in module.batches(seed):
            empty = False
            yield move_to(batch, device) if move else batch
        if empty:
            raise ValueError("batches(seed) yielded no batches")


def default_loop(module: ModelModule, run: Run) -> None:
    """The training loop for modules without ``train(run)``."""
    assert module.model is not None and module.loss is not None
    model = module.model().to(run.device)
    model.train()
    # A constant schedule without warmup never changes the learning rate: skip its per-step cost.
    step_schedule = run.config.schedule != "constant" or run.warmup_steps > 0
    optimizer = run.make_optimizer(model, scheduler=step_schedule)
    scheduler = run.scheduler if step_schedule else None
    run.watch(model, lambda: module.loss(model, run.last_batch))
    batches = batch_stream(module, run.seed, run.device)
    for _ in range(run.steps):
        batch = next(batches)
        run.last_batch = batch
        with run.autocast():  # bf16/fp16 (--precision); nothing at 32
            loss = module.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        if not run.backward_step(loss, model):  # backward, clip to max_grad_norm, step; False: fp16 skipped it
            continue
        if scheduler is not None:
            scheduler.step()
        run.log(loss)


def train_trial(
    module: ModelModule,
    config: OptimConfig,
    *,
    steps: int,
    seed: int,
    device: torch.device,
    options: StabilityOptions | None = None,
    on_progress: ProgressCallback | None = None,
    progress_every: int | None = None,
    sharpness: bool = True,
    deadlines: tuple[Deadline | None, ...] = (),
) -> TrainResult:
    """Train ``module`` with ``config`` for up to ``steps`` steps and return the loss curve.

    After a run that did not diverge, it measures the held-out loss
    (``evaluate``), the dead ReLU layers and, when ``sharpness`` is set, the
    top Hessian eigenvalue on the last batch and Adam's preconditioned one
    (for the early warning). Those probes are stabsearch's own: one that
    cannot run leaves the result as it is and says why in ``result.checks``.
    ``on_progress(step, loss)`` hears the median loss of the last block at each
    multiple of ``progress_every`` steps (default: a twentieth of ``steps``).
    A run past one of its ``deadlines`` stops at its next logged step with
    :class:`OutOfTime`, which propagates. Exceptions from user code
    propagate; the caller decides what a failure means.
    """
    chance = chance_loss(module.classes)
    seed_everything(seed)
    run = Run(config, steps=steps, seed=seed, device=device, chance_loss=chance, options=options, on_progress=on_progress,
              progress_every=progress_every, deadlines=tuple(d for d in deadlines if d is not None))
    started = time.perf_counter()
    try:
        if module.train is not None:
            module.train(run)
        else:
            default_loop(module, run)
        run.flush()
    except OutOfTime:
        raise
    except StopRun:
        pass
    seconds = time.perf_counter() - started
    result = TrainResult(losses=run.losses, diverged_at=run.diverged_at, seconds=seconds, telemetry=run.telemetry,
                         config=run.config if run.config != config else None, skipped_steps=run.skipped_steps)
    result.checks = _after_training(module, run, result, sharpness=sharpness, seed=seed)
    return result


def _after_training(module: ModelModule, run: Run, result: TrainResult, *, sharpness: bool, seed: int) -> dict[str, str]:
    """The held-out loss and stabsearch's own probes of a trained run; what each did, by name.

    ``evaluate`` is user code: its errors propagate and fail the trial. The
    probes are stabsearch's: one that cannot run is recorded as failed, and
    the trial keeps its result.
    """
    checks = {"telemetry": run.checks.get("telemetry") or ("ran" if run.telemetry else _why_no_telemetry(run))}
    if run.diverged_at is None and run.optimizer is not None and result.steps_run:
        broken = nonfinite_weights(run.optimizer)
        if broken:  # the loss stayed finite to the end, the weights did not
            run.diverged_at = result.diverged_at = result.steps_run - 1
            run.checks["divergence"] = f"{broken} at the end of the run, while the loss was finite"
    for key in ("divergence", "skipped_steps"):
        if key in run.checks:
            checks[key] = run.checks[key]
    model = run.model
    if run.diverged_at is not None:
        return {**checks, **dict.fromkeys(("evaluate", "dead_units", "sharpness"), "skipped: the run diverged")}
    if model is None:
        why = "skipped: the loop never gave stabsearch its model (run.make_optimizer(model) or run.watch(model))"
        return {**checks, **dict.fromkeys(("evaluate", "dead_units", "sharpness"), why)}
    no_probe = "skipped: no loss on the last batch (run.watch(model, loss_fn))"
    checks["dead_units"] = no_probe
    if run.probe is not None:
        checks["dead_units"] = _attempt(lambda: _dead_layers(model, run.probe, result))
    model.eval()
    checks["evaluate"] = "skipped: the module has no evaluate(model)"
    if module.evaluate is not None:
        with torch.no_grad():
            result.final_eval = float(module.evaluate(model))
        checks["evaluate"] = "ran"
    checks["sharpness"] = "skipped: --no-early-warning" if not sharpness else no_probe
    if sharpness and run.probe is not None:
        checks["sharpness"] = _attempt(lambda: _sharpness(model, run, result, seed))
    return checks


def _nonfinite(values: dict[str, float]) -> str:
    """Names of the telemetry values that are NaN or infinite (``update_ratio`` is inf for all-zero weights)."""
    bad = [k for k, v in values.items() if not math.isfinite(v) and not (k == "update_ratio" and v == math.inf)]
    return f"non-finite {', '.join(bad)}" if bad else ""


@torch.no_grad()
def nonfinite_weights(optimizer: torch.optim.Optimizer) -> str:
    """``"non-finite weights"`` when a parameter the optimizer trains holds NaN or inf, else ``""``; one device read."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return ""
    finite = torch.stack([torch.isfinite(p).all() for p in params]).all()
    return "" if bool(finite) else "non-finite weights"


def _why_no_telemetry(run: Run) -> str:
    if run.optimizer is None:
        return "skipped: the loop built its own optimizer (run.make_optimizer gives stabsearch Adam's state)"
    return "skipped: no sample was due" if run.losses.size < run.telemetry_every else "skipped: not an Adam-family optimizer"


def _attempt(check: Callable[[], None]) -> str:
    """Run one of stabsearch's checks: ``"ran"``, or ``"failed: <error>"`` without raising."""
    try:
        check()
    except Exception as exc:
        return f"failed: {one_line(exc)}"
    return "ran"


def _dead_layers(model: torch.nn.Module, probe: Callable[[], Any], result: TrainResult) -> None:
    counts = relu_dead_units(model, probe)
    result.dead_layers = tuple(name for name, (dead, units) in counts.items() if dead == units)


def _sharpness(model: torch.nn.Module, run: Run, result: TrainResult, seed: int) -> None:
    """The top Hessian eigenvalue on the last batch and, for Adam, the preconditioned one."""
    assert run.probe is not None
    started = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    result.sharpness = hessian_top_eigenvalue(run.probe, params, seed=seed)
    scale = adam_preconditioner(run.optimizer, params) if run.optimizer is not None else None
    if scale is not None:
        result.preconditioned_sharpness = hessian_top_eigenvalue(run.probe, params, seed=seed, scale=scale)
    result.sharpness_seconds = time.perf_counter() - started


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
