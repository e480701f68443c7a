"""Train K configurations of one model at once, as one vectorized population.

A tiny model leaves the machine idle: one trial's step is mostly Python and
kernel-launch overhead. Here the K members' parameters are stacked along a
new first dimension (``torch.func.stack_module_state``), one call of
``torch.func.vmap`` over ``functional_call`` computes all K losses and one
backward pass of their sum all K gradients (members share no tensor, so the
gradient of the sum by a member's parameters is that of its own loss), and
an Adam/AdamW written with in-place tensor ops
steps all members together. Every hyperparameter (lr times the schedule
factor, eps, beta1, beta2, weight decay, Adam vs AdamW) is a per-member tensor
of shape ``[K]`` broadcast over each stacked parameter, and the arithmetic is
torch.optim's single-tensor Adam/AdamW, op for op, so a member's loss curve is
the curve :func:`stabsearch.training.trainer.train_trial` gives for the same config and
seed, to float rounding (vmap's batched matmuls sum in another order).

Members are independent. Nothing reduces across members; each member's
losses are read off the device in blocks (16 steps on the CPU, 64 on a GPU,
as :class:`stabsearch.training.trainer.Run` does), and a member that may have
diverged is judged by a ``Run`` itself. A member that diverged is frozen at
the end of that block, the very step where ``train_trial`` would have
stopped it, with the same curve: it is cut out of the stacks (an index
select, no arithmetic on it), so its parameters and Adam state stop
changing, its NaN cannot reach anyone, and it costs nothing afterwards. The
run ends early once every member is frozen. BatchNorm works: its running
statistics are stacked per member and updated by each member's forward.

The vmapped forward runs under :class:`stabsearch.population.rewrites.CheaperBatching`,
which computes a shared-input linear layer as one large matmul and
cross-entropy as a gather. The linear form is faster for some layer shapes
and slower for others, so each population times its gradient both ways on
the first batch (once per shape and process) and keeps the faster; the two
differ in float rounding only.

Where it pays: small dense models, whose single steps are mostly overhead.
On a CPU, vmap turns a convolution over K weight sets into a grouped
convolution with permuted layouts, and a population of CNNs gains little
there (``bench/throughput.py`` measures it). ``stabsearch run`` therefore
times one population step against K sequential ones first
(:func:`measure_population_speed`, decided by :func:`population_pays`) and
trains one trial at a time where the population is not faster.

What a :class:`~stabsearch.training.trainer.TrainResult` from here holds: ``losses``,
``diverged_at``, ``seconds`` (the population's wall time divided by K: the
members share every step), and for a member that did not diverge
``final_eval`` (``evaluate``) and ``dead_layers``, measured on the member's
model rebuilt from its slice of the stacks. ``telemetry`` holds, at the
steps ``train_trial`` samples it, only what the early warning reads of
Adam's state: ``v_over_eps`` and ``eps_share``. ``sharpness`` (the early warning's top
Hessian eigenvalue) is ``None`` unless asked for with ``sharpness=True``;
then one vectorized power iteration gives every member the value
``train_trial`` would have measured.

Example::

    module = load_model_module("objectives/softmax_chance.py")
    if why_not_vectorizable(module, device) is None:
        results = train_population(module, configs, steps=1000, seed=0, device=device)
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, grad, stack_module_state, vjp, vmap
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from stabsearch.population.rewrites import CheaperBatching
from stabsearch.config import OptimConfig, chance_loss
from stabsearch.training.loader import ModelModule
from stabsearch.training.optim import build_optimizer, decay_groups
from stabsearch.schedule import lr_factor
from stabsearch.analysis.stability import StabilityOptions, reference_loss
from stabsearch.training.telemetry import NEAR_EPS, SAMPLE_PER_TENSOR, double_backward_kernels, relu_dead_units
from stabsearch.training.trainer import Deadline, OutOfTime, Run, StopRun, TrainResult, batch_stream, one_line, seed_everything

Params = dict[str, torch.Tensor]


def _block(device: torch.device) -> int:
    """Steps between reads of the losses: ``trainer.Run``'s default, so a frozen member stops where it stops."""
    return Run(OptimConfig(), steps=1, seed=0, device=device).block


class _Bound(torch.nn.Module):
    """``loss(model, batch)`` as a module, so ``functional_call`` can swap in one member's tensors."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[Any, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self._loss(self.model, batch)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one plain forward/backward on the first batch says about the model."""

    trainable: tuple[str, ...]  # parameters that get a gradient (torch.optim skips the others)
    mutable: tuple[str, ...]  # buffers the forward changes in place (BatchNorm statistics): stacked per member


def _plan(bound: _Bound, batch: Any) -> _Plan:
    """Which parameters get gradients and which buffers the forward writes, without touching ``bound``."""
    named = {n: p for n, p in bound.named_parameters() if p.requires_grad}
    params = {n: p.detach().clone().requires_grad_(True) for n, p in named.items()}
    originals = dict(bound.named_buffers())
    buffers = {n: b.detach().clone() for n, b in originals.items()}
    versions = {n: b._version for n, b in buffers.items()}
    loss = functional_call(bound, (params, buffers), (batch,))
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"loss(model, batch) must return a scalar tensor, got {_describe(loss)}")
    grads = torch.autograd.grad(loss.reshape(()), list(params.values()), allow_unused=True) if params else ()
    trainable = tuple(n for n, g in zip(params, grads) if g is not None)
    # Some kernels (BatchNorm's running statistics) write without bumping the version: compare values too.
    mutable = tuple(
        n for n, b in buffers.items() if b._version != versions[n] or not torch.equal(b, originals[n])
    )
    return _Plan(trainable, mutable)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _stack(bound: _Bound, plan: _Plan, k: int) -> tuple[Params, Params]:
    """K copies of the trainable parameters and of the buffers the forward writes, stacked along dim 0.

    Every member starts from the same model (the sequential search trains
    every trial from ``seed_everything(seed); model()``), so the K "models"
    given to ``stack_module_state`` are one model K times.
    """
    params, buffers = stack_module_state([bound] * k)
    return (
        {n: params[n].detach().requires_grad_(True) for n in plan.trainable},
        {n: buffers[n].detach() for n in plan.mutable},
    )


class _Hyper:
    """Per-member settings as ``[K]`` tensors, and the per-step tables of one block of steps."""

    def __init__(self, configs: Sequence[OptimConfig], steps: int, device: torch.device) -> None:
        self.configs = list(configs)
        self.steps = steps
        self.device = device
        f64 = lambda values: np.asarray(values, dtype=np.float64)  # noqa: E731
        self.lr = f64([c.lr for c in configs])
        self.beta1 = f64([c.beta1 for c in configs])
        self.beta2 = f64([c.beta2 for c in configs])
        decoupled = np.array([c.optimizer == "adamw" for c in configs])
        wd = f64([c.weight_decay for c in configs])
        self.decoupled_wd = np.where(decoupled, wd, 0.0)  # AdamW: p *= 1 - lr * wd
        self.l2 = np.where(decoupled, 0.0, wd)  # Adam: g += wd * p
        self.constants = {  # the same at every step
            "one_minus_beta1": 1.0 - self.beta1,
            "beta2": self.beta2,
            "one_minus_beta2": 1.0 - self.beta2,
            "eps": f64([c.eps for c in configs]),
            "l2": self.l2,
        }
        # Members that share a schedule share one column of lr_factor calls.
        self.schedules: dict[tuple[int, str, float], list[int]] = {}
        for i, c in enumerate(configs):
            self.schedules.setdefault((c.warmup_steps(steps), c.schedule, c.min_lr_factor), []).append(i)
        self.use_l2 = bool(np.any(self.l2 != 0))
        self.use_decay = bool(np.any(self.decoupled_wd != 0))

    def block(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """float64 ``[stop - start, K]`` tables of the step size, bias correction and decay of each step.

        The same float64 arithmetic torch.optim does in Python (``LambdaLR``'s
        ``base_lr * factor``, ``lr / (1 - beta1**t)``, ``(1 - beta2**t)**0.5``,
        ``1 - lr * wd``); the cast to the parameter's dtype comes last, as there.
        """
        factor = np.empty((stop - start, len(self.configs)))
        for (warmup, schedule, min_factor), members in self.schedules.items():
            column = [lr_factor(t, self.steps, warmup, schedule, min_factor) for t in range(start, stop)]
            factor[:, members] = np.asarray(column)[:, None]
        lr = self.lr[None, :] * factor
        count = np.arange(start + 1, stop + 1, dtype=np.float64)[:, None]  # Adam's step count after the increment
        return {
            "neg_step_size": -(lr / (1.0 - self.beta1[None, :] ** count)),
            "bias2_sqrt": (1.0 - self.beta2[None, :] ** count) ** 0.5,
            "decay": 1.0 - lr * self.decoupled_wd[None, :],
        }


class _Population:
    """K stacked copies of one model and their Adam states; :meth:`step` trains all of them once."""

    def __init__(self, bound: _Bound, plan: _Plan, hyper: _Hyper) -> None:
        self.bound = bound
        self.hyper = hyper
        self.members = np.arange(len(hyper.configs))  # which config each row of the stacks holds
        self.params, self.buffers = _stack(bound, plan, len(hyper.configs))
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self._scratch()
        self.kinds = [(p.dtype, p.dim()) for p in self.params.values()]
        self.forward = vmap(self._loss, in_dims=(0, 0, None))
        self._constants = self._to_device({k: v[None, :] for k, v in hyper.constants.items()})
        self._fixed = self._columns(self._constants, 0)
        self._table: dict[torch.dtype, dict[str, torch.Tensor]] = {}
        self._table_start = 0
        self.linear_rewrite = True  # see choose_linear_rewrite
        # Rows of the parameter lists that weight decay applies to (all, or all but biases and norms: no_decay).
        self.decayed = _decayed_rows(bound, list(self.params), hyper.configs[0].no_decay)

    def choose_linear_rewrite(self, batch: Any, repeats: int = 3) -> bool:
        """Time the gradients on ``batch`` with and without the one-matmul linear rewrite; keep the faster.

        Which is faster depends on the layer shapes and the device (on one
        CPU thread at K=64: 256 -> 25 inputs gain a third, 8 -> 64 lose a
        tenth), so it is measured, as cuDNN's benchmark mode picks its
        kernels: one warm-up call of each, then ``repeats`` alternating
        calls, best of each. The rewrite must win by 5% to be kept, so a
        near tie stays with vmap's own kernels. The two differ in float
        rounding only. The parameters are not touched, and buffers the
        forward writes (BatchNorm statistics) are put back.
        """
        saved = {n: b.clone() for n, b in self.buffers.items()}

        def on(choice: bool) -> Callable[[], Any]:
            def call() -> Any:
                self.linear_rewrite = choice
                return self.gradients(batch)
            return call

        try:
            best = fastest({False: on(False), True: on(True)}, self.device, repeats)
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    self.buffers[name].copy_(value)
        self.linear_rewrite = best[True] < 0.95 * best[False]
        return self.linear_rewrite

    @property
    def device(self) -> torch.device:
        return self.hyper.device

    def _scratch(self) -> None:
        """Two work tensors per parameter, kept between steps: fresh ones every step cost page faults."""
        self.grads = [torch.empty_like(p) for p in self.params.values()]
        self.denom = [torch.empty_like(p) for p in self.params.values()]

    def _loss(self, params: Params, buffers: Params, batch: Any) -> torch.Tensor:
        return functional_call(self.bound, (params, buffers), (batch,)).reshape(())

    def gradients(self, batch: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each member's gradients (in ``params`` order) and its loss, ``[K]``, on ``batch``.

        One vmapped forward and plain autograd on the sum of the K losses:
        every member's ops touch only its own rows, so ``d sum / d member``
        is the member's own gradient and a NaN stays in its member. On a
        small model this computes the gradients in a third less time than
        ``vmap(grad_and_value(...))``, whose autograd levels cost more than
        the arithmetic. A linear layer's gradient comes out in the layout of
        the batched matmul (transposed); such gradients are copied into
        contiguous work tensors, which the optimizer's passes read much
        faster, and so is one that shares its storage with another (``a +
        b`` hands both the same tensor). The others are this step's own fresh
        tensors and used as they are (the step overwrites them).
        """
        params = list(self.params.values())
        with CheaperBatching(linear=self.linear_rewrite):
            losses = self.forward(self.params, self.buffers, batch)
        grads = torch.autograd.grad(losses.sum(), params, allow_unused=True, materialize_grads=True)
        out, seen = [], set()
        for g, work in zip(grads, self.grads):
            own = g.is_contiguous() and g.untyped_storage().data_ptr() not in seen
            seen.add(g.untyped_storage().data_ptr())
            out.append(g if own else work.copy_(g))
        return out, losses.detach()

    def _to_device(self, arrays: dict[str, np.ndarray]) -> dict[torch.dtype, dict[str, torch.Tensor]]:
        """float64 arrays ``[rows, K]`` as tensors of each parameter dtype, columns of the live members."""
        return {
            dtype: {k: torch.from_numpy(np.ascontiguousarray(v[:, self.members])).to(self.device, dtype) for k, v in arrays.items()}
            for dtype in {dtype for dtype, _ in self.kinds}
        }

    def _columns(self, tables: dict[torch.dtype, dict[str, torch.Tensor]], row: int) -> dict[str, list[torch.Tensor]]:
        """Row ``row`` of each ``[rows, K]`` table, viewed as ``[K, 1, ...]`` for each parameter in turn."""
        views: dict[tuple[str, torch.dtype, int], torch.Tensor] = {}
        out: dict[str, list[torch.Tensor]] = {}
        for dtype, ndim in self.kinds:
            for key, table in tables[dtype].items():
                if (key, dtype, ndim) not in views:
                    views[key, dtype, ndim] = table[row].view((-1,) + (1,) * (ndim - 1))
                out.setdefault(key, []).append(views[key, dtype, ndim])
        return out

    def load_block(self, start: int, stop: int) -> None:
        """Move the per-step tables of steps ``start .. stop - 1`` to the device (once per block)."""
        self._table = self._to_device(self.hyper.block(start, stop))
        self._table_start = start

    def step(self, batch: Any, t: int) -> torch.Tensor:
        """One Adam/AdamW step of every member on ``batch`` (step ``t``, 0-based); returns the ``[K]`` losses.

        torch.optim's single-tensor Adam arithmetic, rounding for rounding,
        on lists of stacked tensors; ``c`` and ``s`` hold each setting as
        ``[K, 1, ...]`` views. At large K the step is memory-bound, so the
        ``out=`` forms (per tensor: the foreach ops have none) write into
        ``denom`` and into the spent gradients instead of copy-then-modify.
        """
        g, losses = self.gradients(batch)
        p, m, v = list(self.params.values()), list(self.exp_avg.values()), list(self.exp_avg_sq.values())
        denom = self.denom
        c, s = self._fixed, self._columns(self._table, t - self._table_start)
        rows = self.decayed
        with torch.no_grad():
            if self.hyper.use_decay and rows:  # AdamW's decoupled decay: p *= 1 - lr_t * wd
                torch._foreach_mul_([p[i] for i in rows], [s["decay"][i] for i in rows])
            if self.hyper.use_l2 and rows:  # Adam's L2: g += wd * p
                torch._foreach_addcmul_([g[i] for i in rows], [p[i] for i in rows], [c["l2"][i] for i in rows])
            torch._foreach_lerp_(m, g, c["one_minus_beta1"])  # m = beta1 * m + (1 - beta1) * g
            torch._foreach_mul_(v, c["beta2"])
            for g_i, w_i, d_i in zip(g, c["one_minus_beta2"], denom):
                torch.mul(g_i, w_i, out=d_i)
            torch._foreach_addcmul_(v, denom, g)  # v = beta2 * v + ((1 - beta2) * g) * g
            for v_i, d_i in zip(v, denom):
                torch.sqrt(v_i, out=d_i)
            torch._foreach_div_(denom, s["bias2_sqrt"])
            torch._foreach_add_(denom, c["eps"])  # denom = sqrt(v) / sqrt(1 - beta2^t) + eps
            for m_i, n_i, g_i in zip(m, s["neg_step_size"], g):
                torch.mul(m_i, n_i, out=g_i)  # the gradient is spent: it holds -lr_t / (1 - beta1^t) * m
            torch._foreach_addcdiv_(p, g, denom)
        return losses

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows of the stacks (the members still training); the others are frozen as they are."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        for state in (self.params, self.buffers, self.exp_avg, self.exp_avg_sq):
            for name in state:
                state[name] = state[name].detach().index_select(0, index)
        self.params = {n: t.requires_grad_(True) for n, t in self.params.items()}
        for tables in (self._constants, self._table):
            for per_dtype in tables.values():
                for key in per_dtype:
                    per_dtype[key] = per_dtype[key].index_select(1, index)
        self._scratch()
        self._fixed = self._columns(self._constants, 0)
        self.members = self.members[rows]

    @torch.no_grad()
    def v_telemetry(self, t: int) -> list[dict[str, float]]:
        """After step ``t``: each row's ``v_over_eps`` and ``eps_share``, sampled as ``adam_telemetry`` samples them.

        A row whose weights or second moments hold a NaN or infinity gets
        ``finite = 0.0``: it diverged, whatever its loss says.
        """
        k = self.members.size
        count = float(t + 1)
        bc2 = torch.as_tensor(1.0 - self.hyper.beta2[self.members] ** count, device=self.device, dtype=torch.float32)
        eps = torch.as_tensor(self.hyper.constants["eps"][self.members], device=self.device, dtype=torch.float32)
        ratios = []
        for v in self.exp_avg_sq.values():
            flat = v.reshape(k, -1)
            stride = max(1, flat.shape[1] // SAMPLE_PER_TENSOR)
            ratios.append((flat[:, ::stride].float() / bc2[:, None]).sqrt() / eps[:, None])
        ratio = torch.cat(ratios, dim=1)
        seen = ratio > 0
        near = (seen & (ratio <= NEAR_EPS)).sum(1).double() / seen.sum(1).clamp(min=1).double()
        median = ratio.median(dim=1).values
        finite = torch.ones(k, dtype=torch.bool, device=self.device)
        for state in (self.params, self.exp_avg_sq):
            for tensor in state.values():
                finite &= torch.isfinite(tensor.detach().reshape(k, -1)).all(dim=1)
        rows = zip(median.tolist(), near.tolist(), finite.tolist())
        return [{"step": t, "v_over_eps": float(m), "eps_share": float(n), "finite": float(f)} for m, n, f in rows]

    def member_state(self, row: int) -> dict[str, torch.Tensor]:
        """One row of the stacks: the parameters and stacked buffers of one member, by name in ``bound``."""
        return {n: t[row].detach() for n, t in {**self.params, **self.buffers}.items()}


_LINEAR_REWRITE: dict[tuple, bool] = {}
"""choose_linear_rewrite's answer for each :func:`_shape_key` met in this process."""


def _shape_key(population: _Population, batch: Any) -> tuple:
    """What the timing depends on: the stacked parameters' shapes and dtypes, the batch's, the device and threads."""
    leaves = tree_leaves(batch)
    return (
        str(population.device),
        torch.get_num_threads(),
        tuple((n, tuple(p.shape), p.dtype) for n, p in population.params.items()),
        tuple((tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__ for t in leaves),
    )


def _pick_linear_rewrite(population: _Population, batch: Any) -> None:
    """Set the population's linear path, timed once per shape and process: a search refills with the same shapes."""
    key = _shape_key(population, batch)
    if key not in _LINEAR_REWRITE:
        _LINEAR_REWRITE[key] = population.choose_linear_rewrite(batch)
    population.linear_rewrite = _LINEAR_REWRITE[key]


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a clock read measures them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastest(calls: dict[Any, Callable[[], Any]], device: torch.device, repeats: int = 3) -> dict[Any, float]:
    """The best wall time of each call, in seconds, as cuDNN's benchmark mode times its kernels.

    One warm-up round of every call (not counted: first calls allocate and
    compile), then ``repeats`` rounds calling each in turn, so a machine that
    slows down mid-way slows all of them alike; the device is synchronised
    around each call.

    Args:
        calls: what to time, by any key.
        device: where the calls queue their work.
        repeats: timed rounds after the warm-up (at least 1).

    Example:
        >>> times = fastest({"sum": lambda: torch.ones(100).sum()}, torch.device("cpu"), repeats=2)
        >>> list(times) == ["sum"] and times["sum"] > 0
        True
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    best = dict.fromkeys(calls, math.inf)
    for round_ in range(repeats + 1):
        for key, call in calls.items():
            _sync(device)
            started = time.perf_counter()
            call()
            _sync(device)
            if round_:  # the first round warms every call up
                best[key] = min(best[key], time.perf_counter() - started)
    return best


class _Watch:
    """``trainer.Run``'s divergence watch over K curves, read in blocks of ``[steps, K]``.

    The verdict is Run's own: a member is checked by a fresh :class:`Run`
    fed its whole curve so far in one block. That finds what Run, fed block
    by block, finds at this block: the earliest run of high values complete
    by now (none was complete before, or the member would be frozen), with
    the same ``L0``, noise estimate and warmup. Only members that can have
    diverged in this block are checked: a non-finite value, or one above
    ``diverge_factor * max(L0, chance)``, the least margin ``divergence_step``
    allows. The others cost one vectorized comparison.
    """

    def __init__(self, configs: Sequence[OptimConfig], steps: int, chance: float | None, options: StabilityOptions) -> None:
        self.configs = list(configs)
        self.steps = steps
        self.options = options
        self.chance = chance
        self.curves = np.full((min(steps, 4096), len(configs)), np.nan)  # grown as needed: steps may be huge
        self.ends = np.full(len(configs), steps)  # length of each member's curve
        self.diverged_at: list[int | None] = [None] * len(configs)
        self.initial = np.full(len(configs), np.inf)  # L0 once `head` values are in; inf before (Run's rule)
        self.count = 0

    def add(self, block: np.ndarray, members: np.ndarray) -> list[int]:
        """Record ``block`` (``[n, len(members)]``) for ``members``; return the rows that diverged in it."""
        start, self.count = self.count, self.count + block.shape[0]
        if self.count > self.curves.shape[0]:
            grown = np.full((min(self.steps, 2 * self.count), self.curves.shape[1]), np.nan)
            grown[:start] = self.curves[:start]
            self.curves = grown
        self.curves[start : self.count, members] = block
        head = self.options.head
        if self.count >= head and start < head:
            for i in members:
                base = reference_loss(self.curves[: self.count, i], head=head, cap=self.options.start_cap)
                self.initial[i] = np.nan_to_num(base, nan=np.inf)
        base = np.fmax(self.initial[members], -np.inf if self.chance is None else self.chance)
        limit = base + (self.options.diverge_factor - 1.0) * np.abs(base)
        suspects = np.flatnonzero((~np.isfinite(block) | (block > limit[None, :])).any(axis=0))
        diverged = []
        for row in suspects.tolist():
            i = int(members[row])
            found = self._run_verdict(i)
            if found is not None:
                self.diverged_at[i], self.ends[i] = found, self.count
                diverged.append(row)
        return diverged

    def _run_verdict(self, i: int) -> int | None:
        run = Run(self.configs[i], steps=self.steps, seed=0, device=torch.device("cpu"), chance_loss=self.chance,
                  options=self.options, block=self.count)
        try:
            for value in self.curves[: self.count, i].tolist():
                run.log(value)
        except StopRun:
            pass
        return run.diverged_at


def _decayed_rows(bound: _Bound, names: list[str], no_decay: bool) -> list[int]:
    """Indices into ``names`` (the bound's trainable parameters) of those weight decay applies to."""
    if not no_decay:
        return list(range(len(names)))
    kept = {id(p) for group in decay_groups(bound.model, 1.0)[:1] for p in group["params"]}
    decayed = {f"model.{n}" for n, p in bound.model.named_parameters() if id(p) in kept}
    return [i for i, n in enumerate(names) if n in decayed]


def why_not_population_configs(configs: Sequence[OptimConfig]) -> str | None:
    """``None`` when one population can train ``configs`` as ``train_trial`` would, else why not (one line).

    The vectorized Adam has no gradient clipping and no mixed precision, and
    trains one weight-decay grouping: configurations with ``max_grad_norm``,
    a precision other than ``"32"``, or differing ``no_decay`` train one at a time.

    Example:
        >>> why_not_population_configs([OptimConfig(max_grad_norm=1.0)])
        'gradient clipping (max_grad_norm=1.0) is not vectorized'
    """
    for c in configs:
        if c.max_grad_norm is not None:
            return f"gradient clipping (max_grad_norm={c.max_grad_norm!r}) is not vectorized"
        if c.precision != "32":
            return f"precision {c.precision} is not vectorized (float32 only)"
    if len({c.no_decay for c in configs}) > 1:
        return "the configurations differ in no_decay"
    return None


def why_not_population_space(space: Any, precision: str) -> str | None:
    """Why a search of ``space`` at ``precision`` cannot train as a population, or ``None`` (see :func:`why_not_population_configs`)."""
    spec = getattr(space, "params", {}).get("max_grad_norm")
    if spec is not None and getattr(spec, "value", "searched") is not None:
        return "the space clips gradients (max_grad_norm), which the population does not vectorize"
    if precision != "32":
        return f"precision {precision} is not vectorized (float32 only)"
    return None


def _check(module: ModelModule, configs: Sequence[OptimConfig], steps: int) -> None:
    if module.train is not None:
        raise ValueError(f"{module.source}: its own train(run) loop cannot be trained as a population")
    if module.model is None or module.batches is None or module.loss is None:
        raise ValueError(f"{module.source}: a population needs model(), batches(seed) and loss(model, batch)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if len(configs) == 0:
        raise ValueError("configs is empty; a population needs at least one member")
    for c in configs:
        if not isinstance(c, OptimConfig):
            raise TypeError(f"configs must be OptimConfig objects, got {type(c).__name__}")
    why = why_not_population_configs(configs)
    if why is not None:
        raise ValueError(f"these configurations cannot train as one population: {why}")


def train_population(
    module: ModelModule,
    configs: Sequence[OptimConfig],
    *,
    steps: int,
    seed: int,
    device: torch.device,
    options: StabilityOptions | None = None,
    sharpness: bool = False,
    deadlines: tuple[Deadline | None, ...] = (),
) -> list[TrainResult]:
    """Train one member per config, all at once, for up to ``steps`` steps; one ``TrainResult`` each, in order.

    Every member starts from the model ``seed_everything(seed); module.model()``
    builds and sees the batches of ``module.batches(seed)``, exactly as
    :func:`~stabsearch.training.trainer.train_trial` with that seed. Check
    :func:`why_not_vectorizable` first: a module it refuses raises here
    (``ValueError`` for a custom loop, the vmap error otherwise). Exceptions
    from user code propagate.

    With ``sharpness`` set, each member that did not diverge also gets the
    top Hessian eigenvalue on the last batch, as ``train_trial(...,
    sharpness=True)`` measures it for the early warning, by one vectorized
    power iteration over all members (``sharpness_seconds`` is its time / K).
    Past one of ``deadlines`` the population stops at the end of a block of
    steps with :class:`~stabsearch.training.trainer.OutOfTime`, as ``train_trial`` does.

    Example:
        >>> from stabsearch import load_model_module
        >>> m = load_model_module("tests/modules/tiny.py")
        >>> runs = train_population(m, [OptimConfig(lr=1e-2), OptimConfig(lr=50.0)], steps=200, seed=0, device=torch.device("cpu"))
        >>> [(r.steps_run, r.diverged_at) for r in runs]  # the second diverged at step 1, seen after a block of 16
        [(200, None), (16, 1)]
    """
    _check(module, configs, steps)
    assert module.model is not None and module.loss is not None
    options = options or StabilityOptions()
    chance = chance_loss(module.classes)
    seed_everything(seed)
    started = time.perf_counter()  # like train_trial: building the model counts, the final evaluations don't
    model = module.model().to(device)
    model.train()
    batches = batch_stream(module, seed, device)
    first = next(batches)
    bound = _Bound(model, module.loss)
    population = _Population(bound, _plan(bound, first), _Hyper(configs, steps, device))
    _pick_linear_rewrite(population, first)
    watch = _Watch(configs, steps, chance, options)
    limits = sorted((d for d in deadlines if d is not None), key=lambda d: d.at)
    block = _block(device)
    every = max(50, steps // 20)  # Run's telemetry_every
    telemetry: list[list[dict[str, float]]] = [[] for _ in configs]
    hidden: dict[int, int] = {}  # row -> step where a sample found non-finite weights in this block
    nonfinite: dict[int, int] = {}  # member -> that step
    batch = first
    pending: list[torch.Tensor] = []
    for t in range(steps):
        if t % block == 0:
            population.load_block(t, min(steps, t + block))
        if t > 0:
            batch = next(batches)
        pending.append(population.step(batch, t))
        if (t + 1) % every == 0:
            for row, (i, sample) in enumerate(zip(population.members.tolist(), population.v_telemetry(t))):
                if not sample.pop("finite"):  # Run.sample_telemetry's rule: a divergence at this step
                    hidden.setdefault(row, t)
                telemetry[i].append(sample)
        if len(pending) == block or t == steps - 1:
            values = torch.stack(pending).float().cpu().numpy().astype(np.float64)  # as Run reads them
            pending = []
            diverged = watch.add(values, population.members)
            for row, step in hidden.items():
                i = int(population.members[row])
                if row not in diverged or watch.diverged_at[i] > step:  # the loss hid it: stop where the sample saw it
                    watch.diverged_at[i], watch.ends[i] = step, step + 1
                    nonfinite[i] = step
                    diverged = sorted({*diverged, row})
            hidden = {}
            if diverged:
                population.keep(np.setdiff1d(np.arange(population.members.size), diverged))
            if population.members.size == 0:
                break
            if limits and time.monotonic() >= limits[0].at:
                raise OutOfTime(limits[0].limit, limits[0].seconds)
    seconds = (time.perf_counter() - started) / len(configs)
    eigenvalues, sharpness_seconds = np.full(population.members.size, np.nan), 0.0
    sharpness_check = "skipped: --no-early-warning"
    if sharpness and population.members.size:
        started = time.perf_counter()
        try:
            with double_backward_kernels():
                eigenvalues, sharpness_check = _sharpness(population, batch, seed), "ran"
        except Exception as exc:  # a probe of ours: never the trial's failure
            sharpness_check = f"failed: {one_line(exc)}"
        sharpness_seconds = (time.perf_counter() - started) / len(configs)
    results = []
    for i in range(len(configs)):
        result = TrainResult(
            losses=watch.curves[: min(watch.ends[i], watch.count), i].copy(),
            diverged_at=watch.diverged_at[i],
            seconds=seconds,
            telemetry=telemetry[i],
        )
        result.checks = {"telemetry": "ran: v_over_eps and eps_share only (a population member)" if telemetry[i] else "skipped: no sample was due"}
        if result.diverged_at is None:
            row = int(np.flatnonzero(population.members == i)[0])
            result.checks.update(_finish(module, bound, population.member_state(row), batch, result))
            result.checks["sharpness"] = sharpness_check
            if sharpness:
                result.sharpness, result.sharpness_seconds = float(eigenvalues[row]), sharpness_seconds
        else:
            result.checks.update(dict.fromkeys(("evaluate", "dead_units", "sharpness"), "skipped: the run diverged"))
            if i in nonfinite:
                result.checks["divergence"] = f"non-finite weights at step {nonfinite[i]}, while the loss was finite"
        results.append(result)
    return results


def _sharpness(population: _Population, batch: Any, seed: int, iters: int = 10, tol: float = 1e-3) -> np.ndarray:
    """Top Hessian eigenvalue of each member's loss on ``batch``, as ``telemetry.hessian_top_eigenvalue`` finds it.

    The same power iteration (start vector drawn from ``seed``, Rayleigh
    quotient, stop once it moves less than ``tol``), each member stopping on
    its own; each iteration is one vmapped Hessian-vector product
    (reverse over reverse, as the double backward there) for all members.
    Eval mode, as train_trial's probe after ``evaluate``.
    """
    bound, buffers = population.bound, population.buffers
    params = {n: p.detach() for n, p in population.params.items()}
    k = population.members.size

    def loss(p: Params, b: Params) -> torch.Tensor:
        return functional_call(bound, (p, b), (batch,)).reshape(())

    def hvp(p: Params, b: Params, v: Params) -> Params:
        _, pullback = vjp(lambda q: grad(loss)(q, b), p)
        return pullback(v)[0]

    def per_member(values: dict[str, torch.Tensor]) -> torch.Tensor:  # sum over each member's own entries
        total = torch.zeros((), device=population.device)
        for t in values.values():
            total = total + t.reshape(k, -1).sum(1)
        return total

    training = bound.training
    bound.eval()
    try:
        finite = torch.isfinite(vmap(loss)(params, buffers)).cpu().numpy()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        start = {n: torch.randn(p.shape[1:], generator=gen).to(p.device, p.dtype) for n, p in params.items()}
        norm = torch.sqrt(sum((v * v).sum() for v in start.values()))
        vec = {n: (v / norm).expand(k, *v.shape).clone() for n, v in start.items()}
        result, estimate, done = np.full(k, np.nan), np.full(k, np.nan), ~finite
        batched = vmap(hvp)
        for _ in range(iters):
            if done.all():
                break
            hv = batched(params, buffers, vec)
            rayleigh = per_member({n: hv[n] * vec[n] for n in hv}).detach()
            hv_norm = torch.sqrt(per_member({n: hv[n] * hv[n] for n in hv})).detach()
            r, h = rayleigh.cpu().double().numpy(), hv_norm.cpu().double().numpy()
            stuck = ~done & (~np.isfinite(r) | (h == 0.0))
            result[stuck] = np.where(np.isfinite(r[stuck]), r[stuck], np.nan)
            moving = ~done & ~stuck
            converged = moving & np.isfinite(estimate) & (np.abs(r - estimate) <= tol * np.abs(estimate))
            result[converged] = r[converged]
            step = torch.as_tensor(moving, device=population.device)
            for n in vec:
                shape = (k,) + (1,) * (vec[n].dim() - 1)
                vec[n] = torch.where(step.view(shape), hv[n].detach() / hv_norm.view(shape), vec[n])
            estimate = np.where(moving & ~converged, r, estimate)
            done = done | stuck | converged
        result[~done] = estimate[~done]
    finally:
        bound.train(training)
    return result


def _finish(module: ModelModule, bound: _Bound, state: dict[str, torch.Tensor], batch: Any, result: TrainResult) -> dict[str, str]:
    """Dead ReLU layers and the held-out loss of one member, on its model rebuilt from the stacks; what ran.

    The base model is that model once the member's trained tensors are
    copied in: the rest (frozen parameters, buffers no forward writes) is the
    same in every member and never changed. ``evaluate`` is user code and
    raises; the dead-unit count is stabsearch's and cannot fail the member.
    """
    targets = {**dict(bound.named_parameters()), **dict(bound.named_buffers())}
    with torch.no_grad():
        for name, tensor in state.items():
            targets[name].copy_(tensor)
    model = bound.model
    model.train()
    assert module.loss is not None
    checks = {"dead_units": "ran", "evaluate": "skipped: the module has no evaluate(model)"}
    try:
        counts = relu_dead_units(model, lambda: module.loss(model, batch))
        result.dead_layers = tuple(name for name, (dead, units) in counts.items() if dead == units)
    except Exception as exc:
        checks["dead_units"] = f"failed: {one_line(exc)}"
    model.eval()
    if module.evaluate is not None:
        with torch.no_grad():
            result.final_eval = float(module.evaluate(model))
        checks["evaluate"] = "ran"
    return checks


@contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Seed freely inside; the caller's Python, numpy and torch random states come back afterwards."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def _one_line(exc: BaseException) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    text = lines[0] if lines else ""
    if len(text) > 200:  # keep whole sentences where there are some
        cut = text.rfind(". ", 0, 200)
        text = text[: cut + 1] if cut > 40 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_HINTS = {
    "random operation": "the model or loss draws random numbers (dropout?), and members could not reproduce train_trial's draws; ",
    "data-dependent control flow": "the model or loss branches on a tensor's value or calls .item(); ",
}


def _hint(exc: BaseException) -> str:
    return next((hint for key, hint in _HINTS.items() if key in str(exc)), "")


def _probe_model(module: ModelModule, device: torch.device) -> tuple[_Bound, _Plan, Any]:
    """A seed-0 model bound to its loss, its plan, and the first batch: what the checks try a step on."""
    seed_everything(0)
    model = module.model().to(device)
    model.train()
    batch = next(batch_stream(module, 0, device))
    bound = _Bound(model, module.loss)
    return bound, _plan(bound, batch), batch


def why_not_vectorizable(module: ModelModule, device: torch.device) -> str | None:
    """``None`` if ``module`` can be trained as a population on ``device``, else a one-line reason.

    Refused: a custom ``train(run)`` loop; a loss that is not a scalar or
    reaches no parameter; anything ``torch.func.vmap`` fails on in one
    vmapped forward and gradient on the first batch (data-dependent control
    flow, ``.item()``, random ops such as dropout, in-place writes it cannot
    batch); and a vmapped loss that differs from the plain one. BatchNorm is
    trained correctly: its running statistics are stacked per member and
    updated in place by each member's own batch statistics. The caller's
    random state is left as it was.

    Example:
        >>> from stabsearch import load_model_module
        >>> why_not_vectorizable(load_model_module("tests/modules/custom_loop.py"), torch.device("cpu"))
        'custom train(run) loop: the population trainer needs model(), batches(seed) and loss(model, batch)'
    """
    if module.train is not None:
        return "custom train(run) loop: the population trainer needs model(), batches(seed) and loss(model, batch)"
    if module.model is None or module.batches is None or module.loss is None:
        return "the module lacks model(), batches(seed) or loss(model, batch)"
    with _own_rng(device):
        try:
            bound, plan, batch = _probe_model(module, device)
            plain = float(functional_call(bound, {n: b.clone() for n, b in bound.named_buffers()}, (batch,)).detach())
        except Exception as exc:  # user code, before any vmap
            return f"one plain training step fails: {_one_line(exc)}"
        if not plan.trainable:
            return "loss(model, batch) reaches no trainable parameter"
        try:
            population = _Population(bound, plan, _Hyper([OptimConfig()] * 2, 1, device))
            _, losses = population.gradients(batch)
            values = losses.cpu().tolist()
        except Exception as exc:  # what vmap could not batch
            return f"torch.func.vmap cannot train it: {_hint(exc)}{_one_line(exc)}"
    if not all(math.isclose(v, plain, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(v) and math.isnan(plain)) for v in values):
        return f"the vmapped loss {values[0]:.6g} differs from the plain loss {plain:.6g}"
    return None


# --------------------------------------------------------------------------- speed


@dataclasses.dataclass(frozen=True)
class PopulationSpeed:
    """Seconds of one population step of ``k`` members, and of ``k`` sequential steps of one trial."""

    k: int
    population: float
    sequential: float

    @property
    def ratio(self) -> float:
        """The population step's time over the ``k`` sequential steps' (below 1: the population is faster)."""
        return self.population / self.sequential

    @property
    def pays(self) -> bool:
        return population_pays(self.population, self.sequential)


def population_pays(population_seconds: float, sequential_seconds: float) -> bool:
    """Whether a population is worth training: its step takes less time than its K members' sequential steps.

    A population that is no faster only costs memory (a K-fold model and
    Adam state), so a tie goes to sequential training.

    Args:
        population_seconds: one step of the K-member population.
        sequential_seconds: K steps of one trial trained alone.

    Example:
        >>> population_pays(0.010, 0.040), population_pays(0.058, 0.041)
        (True, False)
    """
    for name, value in (("population_seconds", population_seconds), ("sequential_seconds", sequential_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return population_seconds < sequential_seconds


def measure_population_speed(module: ModelModule, device: torch.device, k: int, *, steps: int = 2, repeats: int = 3) -> PopulationSpeed:
    """Time one step of a ``k``-member population against ``k`` steps of one trial, on the first batch.

    Each side trains ``steps`` steps per round on the seed-0 model (the
    population on the linear path it would train with, chosen and cached as
    :func:`train_population` does; one trial as the sequential trainer does:
    forward, backward, ``torch.optim`` Adam/AdamW), timed by :func:`fastest`
    (a warm-up round, then the best of ``repeats``). Members alternate Adam
    with L2 and AdamW with decoupled decay, so every branch of the
    population's step runs. The caller's random state is left as it was.

    Args:
        module: a module :func:`why_not_vectorizable` accepts (check it first).
        device: where both would train.
        k: the population size (at least 2).
        steps: steps per timed round on each side.
        repeats: timed rounds after the warm-up.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    _check(module, [OptimConfig()], steps)
    assert module.loss is not None
    configs = [OptimConfig(optimizer="adam", weight_decay=1e-4), OptimConfig(optimizer="adamw", weight_decay=1e-2)]
    with _own_rng(device):
        bound, plan, batch = _probe_model(module, device)
        population = _Population(bound, plan, _Hyper([configs[i % 2] for i in range(k)], steps, device))
        _pick_linear_rewrite(population, batch)
        population.load_block(0, steps)
        model = bound.model  # the population holds its own copies: training this one leaves them alone
        optimizer = build_optimizer(model.parameters(), configs[1])

        def population_steps() -> None:
            for t in range(steps):
                population.step(batch, t)

        def sequential_steps() -> None:
            for _ in range(steps):
                loss = module.loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        best = fastest({"population": population_steps, "sequential": sequential_steps}, device, repeats)
    return PopulationSpeed(k=k, population=best["population"] / steps, sequential=k * best["sequential"] / steps)


# --------------------------------------------------------------------------- memory


@dataclasses.dataclass(frozen=True)
class PopulationMemory:
    """Bytes a population needs: ``shared + k * per_member``, against ``available`` on the device.

    ``measured`` is True when the numbers are the peaks of a 1- and a
    2-member step, False for the CPU's fallback estimate from tensor sizes.
    """

    shared: int
    per_member: int
    available: int
    measured: bool

    def bytes_for(self, k: int) -> int:
        return self.shared + k * self.per_member

    def max_population(self, limit_fraction: float = 0.8) -> int:
        budget = limit_fraction * self.available - self.shared
        return max(0, int(budget // max(1, self.per_member)))


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    return []


def _cpu_available() -> int:
    """Bytes of RAM this process could still use: MemAvailable, capped by a cgroup limit when there is one."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, available)


class LiveBytes(TorchDispatchMode):
    """The CPU's ``max_memory_allocated``: peak bytes of tensor storage that the ops run inside it allocate.

    A dispatch mode sees every op below ``vmap`` and ``grad``, so it counts
    the real, batched tensors. Each new storage counts until the last tensor
    on it is freed; views and in-place results count nothing new.

    Example:
        >>> with LiveBytes() as mode:
        ...     x = torch.ones(1000)
        ...     y = (x * 2).sum()
        >>> mode.peak  # x, and x * 2 while it is summed
        8004
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}  # storage pointer -> [bytes, tensors alive on it]
        self.now = self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del self._live[ptr]
                self.now -= entry[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _leaves([list(args), kwargs or {}])}
        for t in _leaves(out if isinstance(out, (list, tuple)) else [out]):
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if ptr in self._live:
                self._live[ptr][1] += 1
            elif ptr in inputs or size == 0:
                continue  # a view of, or a write into, a tensor made outside
            else:
                self._live[ptr] = [size, 1]
                self.now += size
                self.peak = max(self.peak, self.now)
            weakref.finalize(t, self._release, ptr)
        return out


def _step_peak(bound: _Bound, plan: _Plan, batch: Any, device: torch.device, k: int, linear_rewrite: bool) -> int:
    """Peak bytes allocated while a K-member population (on one linear path) is built and takes two steps."""

    def run() -> None:
        population = _Population(bound, plan, _Hyper([OptimConfig()] * k, 2, device))
        population.linear_rewrite = linear_rewrite
        population.load_block(0, 2)
        population.step(batch, 0)
        population.step(batch, 1)

    if device.type != "cuda":
        with LiveBytes() as mode:
            run()
        return mode.peak
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def population_memory(module: ModelModule, device: torch.device) -> PopulationMemory:
    """How memory grows with K for ``module`` on ``device`` (see :class:`PopulationMemory`).

    Measured: the peak bytes allocated by a 1- and a 2-member population
    taking two steps (``torch.cuda.max_memory_allocated`` on CUDA,
    :class:`LiveBytes` on the CPU); their difference is one member. The base
    model and the batch are already allocated, so they are in neither. Both
    linear paths are measured (the population times them and may take either)
    and the larger member and shared part kept.
    Available: free GPU memory, or MemAvailable within a cgroup limit. Should
    the CPU measurement fail, an estimate from tensor sizes stands in (see
    :func:`_estimate_cpu`).
    """
    if module.model is None or module.batches is None or module.loss is None or module.train is not None:
        raise ValueError(f"{module.source}: not a population module ({why_not_vectorizable(module, device)})")
    with _own_rng(device):
        bound, plan, batch = _probe_model(module, device)
        try:
            paths = [[_step_peak(bound, plan, batch, device, k, rewrite) for k in (1, 2)] for rewrite in (True, False)]
        except Exception:
            if device.type == "cuda":
                raise
            return _estimate_cpu(bound, plan, batch)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        available = torch.cuda.mem_get_info(device)[0]
    else:
        available = _cpu_available()
    members = [(max(1, two - one), one) for one, two in paths]  # (one member, the 1-member peak) per path
    per_member = max(member for member, _ in members)
    shared = max(max(0, one - member) for member, one in members)
    return PopulationMemory(shared=shared, per_member=per_member, available=available, measured=True)


def _estimate_cpu(bound: _Bound, plan: _Plan, batch: Any) -> PopulationMemory:
    """One member: parameters, gradients, two Adam states and two work tensors (6x the trainable bytes),
    stacked buffers, the activations autograd saves (``saved_tensors_hooks``, less the batch and weights)
    and twice the largest of those (the gradients flowing in and out)."""
    named, buffers = dict(bound.named_parameters()), dict(bound.named_buffers())
    trainable = sum(_tensor_bytes(named[n]) for n in plan.trainable)
    stacked_buffers = sum(_tensor_bytes(buffers[n]) for n in plan.mutable)
    known = {t.data_ptr() for t in [*named.values(), *buffers.values(), *_leaves(batch)]}
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in known:
            saved.append(_tensor_bytes(t))
        return t

    params = {n: named[n].detach().clone().requires_grad_(True) for n in plan.trainable}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        functional_call(bound, (params, {n: b.clone() for n, b in buffers.items()}), (batch,))
    per_member = 6 * trainable + stacked_buffers + sum(saved) + 2 * max(saved, default=0)
    return PopulationMemory(shared=0, per_member=per_member, available=_cpu_available(), measured=False)


def max_population(module: ModelModule, device: torch.device, *, limit_fraction: float = 0.8) -> int:
    """The largest K whose population fits in ``limit_fraction`` of the memory available on ``device``.

    Example:
        >>> from stabsearch import load_model_module
        >>> max_population(load_model_module("tests/modules/tiny.py"), torch.device("cpu")) > 1000
        True
    """
    if not (isinstance(limit_fraction, (int, float)) and 0 < limit_fraction <= 1):
        raise ValueError(f"limit_fraction must be in (0, 1], got {limit_fraction!r}")
    return population_memory(module, device).max_population(limit_fraction)
