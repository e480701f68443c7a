"""A population whose members come and go: :class:`PopulationTrainer`.

:func:`~stabsearch.population.driver.train_population` trains K
configurations from one start to one end. A search wants more: a member that
diverged, finished, or was stopped by the median rule leaves at once, and a
newly asked trial takes its slot, from its own step 0, with its own horizon,
seed and schedule, while the others train on. Each member sees the batches of
its own seed at its own step (:class:`~stabsearch.population.streams.BatchStream`):
members at the same step of the same seed share one batch, otherwise the
batches are stacked and vmapped (``in_dims=0``). A member's result is the
:class:`~stabsearch.training.trainer.TrainResult` ``train_trial`` gives for
its config and seed, to float rounding.

Example:
    >>> from stabsearch import load_model_module
    >>> trainer = PopulationTrainer(load_model_module("tests/modules/tiny.py"), device=torch.device("cpu"))
    >>> trainer.add(OptimConfig(lr=1e-2), steps=64, seed=0, key="a")
    >>> trainer.add(OptimConfig(lr=50.0), steps=64, seed=0, key="b")
    >>> while len(trainer):
    ...     for key, result in trainer.advance():
    ...         print(key, result.steps_run, result.diverged_at)
    b 16 1
    a 64 None
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stabsearch.analysis.options import StabilityOptions
from stabsearch.config import OptimConfig, chance_loss
from stabsearch.population.adam import AdamSettings, check_steps
from stabsearch.population.curve import MemberCurve
from stabsearch.population.driver import _block, _check_module, _finish, _Population
from stabsearch.population.sharpness import probe_sharpness
from stabsearch.population.stacking import Params, _Bound, _Plan, _plan, stack_batches
from stabsearch.population.streams import BatchStream, RngState, own_rng, rng_state
from stabsearch.population.timing import _pick_linear_rewrite
from stabsearch.training.loader import ModelModule
from stabsearch.training.trainer import Deadline, OutOfTime, Run, StopRun, TrainResult, batch_stream, seed_everything

Result = TrainResult | BaseException
"""What a member leaves with: its result, or the exception its ``evaluate`` raised."""


@dataclasses.dataclass(eq=False)
class _Member:
    key: Any
    config: OptimConfig
    steps: int
    seed: int
    stream: BatchStream
    curve: MemberCurve
    on_progress: Callable[[int, float], None] | None
    progress_every: int
    telemetry_every: int
    telemetry: list[dict[str, float]] = dataclasses.field(default_factory=list)
    hidden: int | None = None  # a sample saw non-finite weights at this step, in the current block
    nonfinite: int | None = None
    seconds: float = 0.0
    last_batch: Any = None


class PopulationTrainer:
    """Members join with their own config, horizon and seed, and leave when they diverge, finish, or their
    ``on_progress`` stops them.

    :meth:`add` queues a member; :meth:`advance` brings queued members in
    (their models built as ``seed_everything(seed); module.model()`` builds
    them, their Adam state fresh, their step count at 0), trains every member
    up to its next read of the losses (16 steps on the CPU, 64 on a GPU, as
    ``trainer.Run`` reads them; fewer where a member's horizon ends first) and
    returns the members that left, each with its result.

    ``on_progress(step, loss)`` hears a member's reports as
    ``train_trial(..., on_progress=...)`` does (the median loss of the last
    block at each multiple of ``progress_every``); raising
    :class:`~stabsearch.training.trainer.StopRun` there stops the member,
    which leaves with its curve so far and its final checks, as a stopped
    ``train_trial`` does.

    Every member must build the same frozen parameters and constant buffers
    (those are shared, not stacked); :func:`seeds_share_frozen_state` checks
    it for a set of seeds. Called past one of ``deadlines``, :meth:`advance`
    raises :class:`~stabsearch.training.trainer.OutOfTime` before it trains
    another block; the members still training are the caller's to end (:attr:`keys`).

    Args:
        module: a model module with ``model()``, ``batches(seed)`` and ``loss(model, batch)``.
        device: where the members train.
        options: the thresholds a member's divergence is judged by.
        sharpness: measure each member's top Hessian eigenvalue as it leaves (the early warning).
        deadlines: time limits of the whole population.
    """

    def __init__(self, module: ModelModule, *, device: torch.device, options: StabilityOptions | None = None,
                 sharpness: bool = False, deadlines: tuple[Deadline | None, ...] = ()) -> None:
        _check_module(module)
        self.module = module
        self.device = device
        self.options = options or StabilityOptions()
        self.chance = chance_loss(module.classes)
        self.sharpness = sharpness
        self.limits = sorted((d for d in deadlines if d is not None), key=lambda d: d.at)
        self.block = _block(device)
        self.rows: list[_Member] = []  # one per row of the stacks, in order
        self.joining: list[_Member] = []
        self.population: _Population | None = None
        self.bound: _Bound | None = None
        self.plan: _Plan | None = None
        self.frozen: Params = {}  # what every member shares: frozen parameters, constant buffers
        self.inits: dict[int, tuple[Params, RngState]] = {}  # seed -> (initial trained state, rng after model())
        self.streams: dict[int, BatchStream] = {}  # seed -> the stream new members of it join
        self.probe_batch: Any = None  # the first seed's first batch: what the linear path is timed on
        self.steps_trained = 0

    def __len__(self) -> int:
        return len(self.rows) + len(self.joining)

    @property
    def keys(self) -> list[Any]:
        """The members not yet returned by :meth:`advance`."""
        return [m.key for m in (*self.rows, *self.joining)]

    def add(self, config: OptimConfig, *, steps: int, seed: int, key: Any = None,
            on_progress: Callable[[int, float], None] | None = None, progress_every: int | None = None) -> None:
        """Queue a member: it joins at the next :meth:`advance`, at its step 0.

        Raises ``ValueError`` if ``seed``'s model has other frozen parameters than the population's.
        """
        if not isinstance(config, OptimConfig):
            raise TypeError(f"config must be an OptimConfig, got {type(config).__name__}")
        check_steps(steps)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.joining.append(_Member(
            key=key, config=config, steps=steps, seed=seed, stream=self._stream(seed),
            curve=MemberCurve(config, steps, self.chance, self.options), on_progress=on_progress,
            progress_every=progress_every or max(1, steps // 20), telemetry_every=max(50, steps // 20),
        ))

    def drop(self, key: Any) -> None:
        """Take the member ``key`` out without a result (its trial ended otherwise: timed out, failed)."""
        self.joining = [m for m in self.joining if m.key != key]
        rows = {j for j, m in enumerate(self.rows) if m.key == key}
        if rows:
            self._change(rows)

    def _stream(self, seed: int) -> BatchStream:
        if seed not in self.inits:
            self.inits[seed] = self._build(seed)
        stream = self.streams.get(seed)
        if stream is None or stream.base > 0:
            stream = self.streams[seed] = BatchStream(self.module, seed, self.device, self.inits[seed][1])
        return stream

    def _build(self, seed: int) -> tuple[Params, RngState]:
        """The seed's initial model (its trained state) and the random state ``model()`` left, as ``train_trial`` sees it."""
        assert self.module.model is not None and self.module.loss is not None
        BatchStream.release()
        with own_rng(self.device):
            seed_everything(seed)
            model = self.module.model().to(self.device)
            model.train()
            rng = rng_state(self.device)
            bound = _Bound(model, self.module.loss)
            named = {**dict(bound.named_parameters()), **dict(bound.named_buffers())}
            if self.bound is None:
                self.bound = bound
                self.probe_batch = next(batch_stream(self.module, seed, self.device))
                self.plan = _plan(bound, self.probe_batch)
                shared = {*self.plan.trainable, *self.plan.mutable}
                self.frozen = {n: t.detach().clone() for n, t in named.items() if n not in shared}
            for name, tensor in self.frozen.items():
                if not torch.equal(named[name], tensor):
                    raise ValueError(f"seed {seed} builds another {name!r} than the population's: frozen parameters "
                                     "and constant buffers must be the same for every seed of a population")
            assert self.plan is not None
            state = {n: named[n].detach().clone() for n in (*self.plan.trainable, *self.plan.mutable)}
        return state, rng

    def _change(self, leaving: set[int]) -> None:
        """Drop the rows in ``leaving`` and bring the queued members in, in one change of the stacks."""
        if not leaving and not self.joining:
            return
        keep = [r for r in range(len(self.rows)) if r not in leaving]
        members = [self.rows[r] for r in keep] + self.joining
        self.rows, joining, self.joining = members, self.joining, []
        if not members:
            self.population = None
            return
        settings = AdamSettings([m.config for m in members], [m.steps for m in members], self.device)
        states = [self.inits[m.seed][0] for m in joining]
        if self.population is None:
            assert self.bound is not None and self.plan is not None
            self.population = _Population(self.bound, self.plan, settings, states)
        else:
            self.population.resize(keep, settings, states)
        _pick_linear_rewrite(self.population, self.probe_batch)

    def advance(self) -> list[tuple[Any, Result]]:
        """Bring queued members in, train up to the next read of the losses, and return the members that left.

        A member's result is an exception where its ``evaluate`` raised (the
        others are unharmed). Exceptions from the model or loss propagate.
        """
        self._change(set())
        if not self.rows:
            return []
        if self.limits and time.monotonic() >= self.limits[0].at:  # before the block: what left was already returned
            raise OutOfTime(self.limits[0].limit, self.limits[0].seconds)
        assert self.population is not None
        started = time.perf_counter()
        rows = self.rows
        starts = np.asarray([m.curve.count for m in rows], dtype=np.int64)
        n = min(min(self.block - s % self.block, m.steps - s) for s, m in zip(starts.tolist(), rows))
        every = np.asarray([m.telemetry_every for m in rows], dtype=np.int64)
        self.population.load_block(starts, n)
        pending = []
        try:
            for i in range(n):
                batches = [m.stream.draw(s + i) for m, s in zip(rows, starts.tolist())]
                if all(b is batches[0] for b in batches):
                    pending.append(self.population.step(batches[0], i))
                else:
                    stacked, in_dims = stack_batches(batches)
                    pending.append(self.population.step(stacked, i, in_dims))
                due = np.flatnonzero((starts + i + 1) % every == 0)
                if due.size:
                    self._sample(due, starts[due] + i + 1)
        finally:
            BatchStream.release()
        for m, b in zip(rows, batches):
            m.last_batch = b
        values = torch.stack(pending).float().cpu().numpy().astype(np.float64)  # as Run reads them
        self.steps_trained += n * len(rows)
        Run.logged += n * len(rows)  # what a worker's heartbeat reads as progress
        seconds = (time.perf_counter() - started) / len(rows)
        results = self._leave([j for j, m in enumerate(rows) if self._after_block(m, values[:, j], seconds)])
        for stream in self.streams.values():
            stream.forget_below(min((m.curve.count for m in self.rows if m.stream is stream), default=0))
        return results

    def _sample(self, due: np.ndarray, counts: np.ndarray) -> None:
        """Sample Adam's state of the rows ``due``; a sample with non-finite weights marks a divergence (Run's rule)."""
        assert self.population is not None
        for j, sample in zip(due.tolist(), self.population.v_telemetry(due, counts)):
            if not sample.pop("finite") and self.rows[j].hidden is None:
                self.rows[j].hidden = sample["step"]
            self.rows[j].telemetry.append(sample)

    def _after_block(self, m: _Member, values: np.ndarray, seconds: float) -> bool:
        """Record a member's block; at its read of the losses, Run's checks in Run's order. True if the member leaves."""
        start = m.curve.flushed
        m.curve.extend(values)
        m.seconds += seconds
        if m.hidden is not None:  # Run flushes at the sample and stops: a divergence at that step at the latest
            m.curve.cut(m.hidden + 1)
            found = m.curve.flush()
            if found is None or found > m.hidden:
                m.curve.diverged_at, m.nonfinite = m.hidden, m.hidden
            return True
        if m.curve.count % self.block and m.curve.count < m.steps:
            return False
        if m.curve.flush() is not None:
            return True
        report = m.curve.progress(self.block, m.progress_every, start) if m.on_progress is not None else None
        if report is not None:
            try:
                m.on_progress(*report)
            except StopRun:
                return True
        return m.curve.count >= m.steps

    def _leave(self, leaving: list[int]) -> list[tuple[Any, Result]]:
        """Results of the members in rows ``leaving``: final checks on those that did not diverge, then out of the stacks."""
        if not leaving:
            return []
        assert self.population is not None
        members = [self.rows[j] for j in leaving]
        trained = [(j, m) for j, m in zip(leaving, members) if m.curve.diverged_at is None]
        with own_rng(self.device):
            probe = probe_sharpness(self.population, [j for j, _ in trained], [m.last_batch for _, m in trained],
                                    [m.seed for _, m in trained], wanted=self.sharpness)
        eigenvalues = {j: float(v) for (j, _), v in zip(trained, probe.values.tolist())}
        out: list[tuple[Any, Result]] = []
        for j, m in zip(leaving, members):
            result = TrainResult(losses=m.curve.losses, diverged_at=m.curve.diverged_at, seconds=m.seconds, telemetry=m.telemetry)
            result.checks = {"telemetry": "ran: v_over_eps and eps_share only (a population member)" if m.telemetry else "skipped: no sample was due"}
            if result.diverged_at is None:
                try:
                    with own_rng(self.device):
                        result.checks.update(_finish(self.module, self.population.bound, self.population.member_state(j), m.last_batch, result))
                except Exception as exc:  # evaluate(model) is user code: this member fails, the others go on
                    out.append((m.key, exc))
                    continue
                finally:
                    self.population.bound.train()  # the members still training run the forward in train mode
                result.checks["sharpness"] = probe.check
                if probe.wanted:
                    result.sharpness, result.sharpness_seconds = eigenvalues[j], probe.seconds
            else:
                result.checks.update(dict.fromkeys(("evaluate", "dead_units", "sharpness"), "skipped: the run diverged"))
                if m.nonfinite is not None:
                    result.checks["divergence"] = f"non-finite weights at step {m.nonfinite}, while the loss was finite"
            out.append((m.key, result))
        self._change(set(leaving))
        return out


def seeds_share_frozen_state(module: ModelModule, seeds: Sequence[int], device: torch.device) -> bool:
    """Whether the models of these seeds have the same frozen parameters and constant buffers (one population can train them)."""
    trainer = PopulationTrainer(module, device=device)
    try:
        for seed in dict.fromkeys(seeds):
            trainer._stream(seed)
    except ValueError:
        return False
    return True
