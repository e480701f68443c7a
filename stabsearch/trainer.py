"""Train one trial: seed, build, step, and watch every step's loss in memory.

The loop itself is :func:`default_loop`, short enough to read on one screen.
A model module's own ``train(run)`` replaces it; both talk to a :class:`Run`,
which builds the optimizer and scheduler, holds the step budget and takes each
step's loss. ``Run.log`` keeps losses on the device and reads them in blocks,
so a GPU is not synchronised every step, and ends the loop at once (by raising
:class:`StopRun`) when the curve has diverged. Nothing here knows about Optuna.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from stabsearch.config import OptimConfig
from stabsearch.loader import ModelModule
from stabsearch.optim import build_optimizer, build_scheduler
from stabsearch.stability import StabilityOptions, divergence_noise, divergence_step, reference_loss
from stabsearch.telemetry import adam_telemetry, hessian_top_eigenvalue, relu_dead_units

ProgressCallback = Callable[[int, float], None]


class StopRun(BaseException):
    """Ends a training loop from inside ``Run.log``.

    A ``BaseException`` so that a user loop's ``except Exception`` does not
    swallow it and train on after divergence.
    """


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
            optimizer = run.make_optimizer(model)
            for step in range(run.steps):
                loss = ...
                loss.backward(); optimizer.step(); run.scheduler.step()
                optimizer.zero_grad()
                run.log(loss)      # raises StopRun once the run has diverged
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
        self.probe: Callable[[], Any] | None = None  # one forward on the current batch, for dead-unit counts
        self.optimizer: torch.optim.Optimizer | None = None
        self._scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.diverged_at: int | None = None
        self._pending: list[Any] = []
        self._count = 0
        self._losses: list[float] = []
        self._initial = math.nan
        self._noise: list[float] = []  # divergence_noise of the first `window` values, as they come in

    def make_optimizer(self, model_or_params: torch.nn.Module | Any, *, scheduler: bool = True) -> torch.optim.Optimizer:
        """Build the configured optimizer, and ``self.scheduler`` unless told not to, for a model or its parameters."""
        if isinstance(model_or_params, torch.nn.Module):
            self.model = model_or_params
            model_or_params = model_or_params.parameters()
        self.optimizer = build_optimizer(model_or_params, self.config)
        self._scheduler = build_scheduler(self.optimizer, self.config, self.steps) if scheduler else None
        return self.optimizer

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
        if self._count % self.telemetry_every == 0 and self.optimizer is not None:
            self.sample_telemetry()
        if len(self._pending) >= self.block:
            self.flush()
        if len(self._losses) + len(self._pending) > self.steps:
            raise StopRun("step budget spent")

    def sample_telemetry(self) -> None:
        """Record Adam's internals (and dead ReLU units, when a probe is set) at this step."""
        assert self.optimizer is not None
        values = adam_telemetry(self.optimizer)
        if not values:
            return
        if self.model is not None and self.probe is not None:
            counts = relu_dead_units(self.model, self.probe)
            if counts:
                values["dead_fraction"] = sum(d for d, _ in counts.values()) / sum(n for _, n in counts.values())
        self.telemetry.append({"step": self._count - 1, **values})

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


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_move(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def batch_stream(module: ModelModule, seed: int, device: torch.device) -> Iterator[Any]:
    """The module's batches forever: a finite iterable is restarted with the same seed."""
    assert module.batches is not None
    move = device.type != "cpu"
    while True:
        empty = True
        for batch in module.batches(seed):
            empty = False
            yield _move(batch, device) if move else batch
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
    run.probe = lambda: module.loss(model, run.last_batch)
    batches = batch_stream(module, run.seed, run.device)
    for _ in range(run.steps):
        batch = next(batches)
        run.last_batch = batch
        loss = module.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
) -> TrainResult:
    """Train ``module`` with ``config`` for up to ``steps`` steps and return the loss curve.

    After a run that did not diverge, it measures the held-out loss
    (``evaluate``), the dead ReLU layers and, when ``sharpness`` is set, the
    top Hessian eigenvalue on the last batch (for the early warning).
    ``on_progress(step, loss)`` hears the median loss of the last block at each
    multiple of ``progress_every`` steps (default: a twentieth of ``steps``).
    Exceptions from user code propagate; the caller decides what a failure means.
    """
    chance = math.log(module.classes) if module.classes else None
    seed_everything(seed)
    run = Run(config, steps=steps, seed=seed, device=device, chance_loss=chance, options=options, on_progress=on_progress,
              progress_every=progress_every)
    started = time.perf_counter()
    try:
        if module.train is not None:
            module.train(run)
        else:
            default_loop(module, run)
        run.flush()
    except StopRun:
        pass
    seconds = time.perf_counter() - started
    result = TrainResult(losses=run.losses, diverged_at=run.diverged_at, seconds=seconds, telemetry=run.telemetry)
    model = run.model
    if model is None or run.diverged_at is not None:
        return result
    if run.probe is not None:
        counts = relu_dead_units(model, run.probe)
        result.dead_layers = tuple(name for name, (dead, units) in counts.items() if dead == units)
    model.eval()
    if module.evaluate is not None:
        with torch.no_grad():
            result.final_eval = float(module.evaluate(model))
    if sharpness and run.probe is not None:
        started = time.perf_counter()
        params = [p for p in model.parameters() if p.requires_grad]
        result.sharpness = hessian_top_eigenvalue(run.probe, params, seed=seed)
        result.sharpness_seconds = time.perf_counter() - started
    return result
