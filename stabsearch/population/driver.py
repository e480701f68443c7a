"""Train K configurations of one model at once, as one vectorized population.

A tiny model leaves the machine idle: one trial's step is mostly Python and
kernel-launch overhead. Here the K members' parameters are stacked along a
new first dimension (``torch.func.stack_module_state``), one call of
``torch.func.vmap`` over ``functional_call`` computes all K losses and one
backward pass of their sum all K gradients (members share no tensor, so the
gradient of the sum by a member's parameters is that of its own loss), and
:class:`~stabsearch.population.adam.StackedAdam`, an Adam/AdamW written with
in-place tensor ops whose every setting is a per-member tensor, steps all
members together, op for op as torch.optim, so a member's loss curve is
the curve :func:`stabsearch.training.trainer.train_trial` gives for the same config and
seed, to float rounding (vmap's batched matmuls sum in another order).

Members are independent. Nothing reduces across members; each member's
losses are read off the device in blocks (16 steps on the CPU, 64 on a GPU,
as :class:`stabsearch.training.trainer.Run` does), and a member that may have
diverged is judged by a ``Run`` itself
(:class:`~stabsearch.population.divergence.DivergenceWatch`). A member that
diverged is frozen at the end of that block, the very step where
``train_trial`` would have stopped it, with the same curve: it is cut out of the stacks (an index
select, no arithmetic on it), so its parameters and Adam state stop
changing, its NaN cannot reach anyone, and it costs nothing afterwards. The
run ends early once every member is frozen. BatchNorm works: its running
statistics are stacked per member and updated by each member's forward.

The vmapped forward runs under :class:`stabsearch.population.rewrites.CheaperBatching`,
which computes a shared-input linear layer as one large matmul and
cross-entropy as a gather. The linear form is faster for some layer shapes
and slower for others, so each population times its gradient both ways on
the first batch (once per shape and process, :mod:`~stabsearch.population.timing`)
and keeps the faster; the two differ in float rounding only.

Where it pays: small dense models, whose single steps are mostly overhead.
On a CPU, vmap turns a convolution over K weight sets into a grouped
convolution with permuted layouts, and a population of CNNs gains little
there (``bench/throughput.py`` measures it). ``stabsearch run`` therefore
times one population step against K sequential ones first
(:mod:`~stabsearch.population.speed`) and
trains one trial at a time where the population is not faster.

What a :class:`~stabsearch.training.trainer.TrainResult` from here holds: ``losses``,
``diverged_at``, ``seconds`` (the population's wall time divided by K: the
members share every step), and for a member that did not diverge
``final_eval`` (``evaluate``) and ``dead_layers``, measured on the member's
model rebuilt from its slice of the stacks. ``telemetry`` holds, at the
steps ``train_trial`` samples it, only what the early warning reads of
Adam's state: ``v_over_eps`` and ``eps_share``. ``sharpness`` (the early warning's top
Hessian eigenvalue) is ``None`` unless asked for with ``sharpness=True``;
then one vectorized power iteration (:mod:`~stabsearch.population.sharpness`)
gives every member the value ``train_trial`` would have measured.

Example::

    module = load_model_module("objectives/softmax_chance.py")
    if why_not_vectorizable(module, device) is None:
        results = train_population(module, configs, steps=1000, seed=0, device=device)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, vmap

from stabsearch.analysis.options import StabilityOptions
from stabsearch.config import OptimConfig, chance_loss
from stabsearch.population.adam import AdamSettings, StackedAdam, _decayed_rows, check_settings
from stabsearch.population.divergence import DivergenceWatch
from stabsearch.population.rewrites import CheaperBatching
from stabsearch.population.sharpness import SharpnessProbe, probe_sharpness
from stabsearch.population.stacking import Params, _Bound, _Plan, _plan, _stack
from stabsearch.population.timing import _pick_linear_rewrite, fastest
from stabsearch.training.loader import ModelModule
from stabsearch.training.telemetry import NEAR_EPS, SAMPLE_PER_TENSOR, relu_dead_units
from stabsearch.training.trainer import Deadline, OutOfTime, Run, TrainResult, batch_stream, one_line, seed_everything


def _block(device: torch.device) -> int:
    """Steps between reads of the losses: ``trainer.Run``'s default, so a frozen member stops where it stops."""
    return Run(OptimConfig(), steps=1, seed=0, device=device).block


class _Population:
    """K stacked copies of one model and their Adam state; :meth:`step` trains all of them once."""

    def __init__(self, bound: _Bound, plan: _Plan, settings: AdamSettings) -> None:
        self.bound = bound
        self.settings = settings
        self.members = np.arange(len(settings.configs))  # which config each row of the stacks holds
        self.params, self.buffers = _stack(bound, plan, len(settings.configs))
        # Weight decay applies to all parameters, or to all but biases and norms (no_decay).
        decayed = _decayed_rows(bound, list(self.params), settings.configs[0].no_decay)
        self.adam = StackedAdam(self.params, settings, decayed)
        self.grads = [torch.empty_like(p) for p in self.params.values()]  # see gradients
        self.forward = vmap(self._loss, in_dims=(0, 0, None))
        self.linear_rewrite = True  # see choose_linear_rewrite

    def choose_linear_rewrite(self, batch: Any, repeats: int = 3) -> bool:
        """Time the gradients on ``batch`` with and without the one-matmul linear rewrite; keep the faster.

        Which is faster depends on the layer shapes and the device, so it is
        measured, as cuDNN's benchmark mode picks its kernels
        (:func:`~stabsearch.population.timing.fastest`): one warm-up call of
        each, then ``repeats`` alternating calls, best of each. The rewrite
        must win by 5% to be kept, so a near tie stays with vmap's own kernels. The two differ in float
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
        return self.settings.device

    def _loss(self, params: Params, buffers: Params, batch: Any) -> torch.Tensor:
        return functional_call(self.bound, (params, buffers), (batch,)).reshape(())

    def gradients(self, batch: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each member's gradients (in ``params`` order) and its loss, ``[K]``, on ``batch``.

        One vmapped forward and plain autograd on the sum of the K losses:
        every member's ops touch only its own rows, so ``d sum / d member``
        is the member's own gradient and a NaN stays in its member. On a
        small model this is faster than ``vmap(grad_and_value(...))``, whose
        autograd levels cost more than the arithmetic. A linear layer's
        gradient comes out in the layout of the batched matmul (transposed);
        such gradients are copied into contiguous work tensors (kept between
        steps: fresh ones every step cost page faults), which the optimizer's
        passes read much faster, and so is one that shares its storage with
        another (``a + b`` hands both the same tensor). The others are this
        step's own fresh tensors and used as they are (the step overwrites them).
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

    def load_block(self, start: int, stop: int) -> None:
        """Move the per-step tables of steps ``start .. stop - 1`` to the device (once per block)."""
        self.adam.load_block(start, stop, self.members)

    def step(self, batch: Any, t: int) -> torch.Tensor:
        """One Adam/AdamW step of every member on ``batch`` (step ``t``, 0-based); returns the ``[K]`` losses."""
        grads, losses = self.gradients(batch)
        self.adam.step(list(self.params.values()), grads, t)
        return losses

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows of the stacks (the members still training); the others are frozen as they are."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        for state in (self.params, self.buffers):
            for name in state:
                state[name] = state[name].detach().index_select(0, index)
        self.params = {n: t.requires_grad_(True) for n, t in self.params.items()}
        self.adam.keep(index)
        self.grads = [torch.empty_like(p) for p in self.params.values()]
        self.members = self.members[rows]

    @torch.no_grad()
    def v_telemetry(self, t: int) -> list[dict[str, float]]:
        """After step ``t``: each row's ``v_over_eps`` and ``eps_share``, sampled as ``adam_telemetry`` samples them.

        A row whose weights or second moments hold a NaN or infinity gets
        ``finite = 0.0``: it diverged, whatever its loss says.
        """
        k = self.members.size
        count = float(t + 1)
        bc2 = torch.as_tensor(1.0 - self.settings.beta2[self.members] ** count, device=self.device, dtype=torch.float32)
        eps = torch.as_tensor(self.settings.constants["eps"][self.members], device=self.device, dtype=torch.float32)
        ratios = []
        for v in self.adam.exp_avg_sq.values():
            flat = v.reshape(k, -1)
            stride = max(1, flat.shape[1] // SAMPLE_PER_TENSOR)
            ratios.append((flat[:, ::stride].float() / bc2[:, None]).sqrt() / eps[:, None])
        ratio = torch.cat(ratios, dim=1)
        seen = ratio > 0
        near = (seen & (ratio <= NEAR_EPS)).sum(1).double() / seen.sum(1).clamp(min=1).double()
        median = ratio.median(dim=1).values
        finite = torch.ones(k, dtype=torch.bool, device=self.device)
        for state in (self.params, self.adam.exp_avg_sq):
            for tensor in state.values():
                finite &= torch.isfinite(tensor.detach().reshape(k, -1)).all(dim=1)
        rows = zip(median.tolist(), near.tolist(), finite.tolist())
        return [{"step": t, "v_over_eps": float(m), "eps_share": float(n), "finite": float(f)} for m, n, f in rows]

    def member_state(self, row: int) -> dict[str, torch.Tensor]:
        """One row of the stacks: the parameters and stacked buffers of one member, by name in ``bound``."""
        return {n: t[row].detach() for n, t in {**self.params, **self.buffers}.items()}


def _check(module: ModelModule, configs: Sequence[OptimConfig], steps: int) -> None:
    """Raise, naming what is wrong, unless ``module`` and ``configs`` can train as one population."""
    if module.train is not None:
        raise ValueError(f"{module.source}: its own train(run) loop cannot be trained as a population")
    if module.model is None or module.batches is None or module.loss is None:
        raise ValueError(f"{module.source}: a population needs model(), batches(seed) and loss(model, batch)")
    check_settings(configs, steps)


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
    :func:`~stabsearch.population.vectorizable.why_not_vectorizable` first:
    a module it refuses raises here (``ValueError`` for a custom loop, the
    vmap error otherwise). Exceptions
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
    population = _Population(bound, _plan(bound, first), AdamSettings(configs, steps, device))
    _pick_linear_rewrite(population, first)
    watch = DivergenceWatch(configs, steps, chance, options)
    limits = sorted((d for d in deadlines if d is not None), key=lambda d: d.at)
    block, every = _block(device), max(50, steps // 20)  # Run's block and telemetry_every
    telemetry: list[list[dict[str, float]]] = [[] for _ in configs]
    hidden: dict[int, int] = {}  # row -> step where a sample found non-finite weights in this block
    batch, pending = first, []
    for t in range(steps):
        if t % block == 0:
            population.load_block(t, min(steps, t + block))
        if t > 0:
            batch = next(batches)
        pending.append(population.step(batch, t))
        if (t + 1) % every == 0:
            _sample(population, t, telemetry, hidden)
        if len(pending) == block or t == steps - 1:
            _end_block(population, watch, pending, hidden)
            pending, hidden = [], {}
            if population.members.size == 0:
                break
            if limits and time.monotonic() >= limits[0].at:
                raise OutOfTime(limits[0].limit, limits[0].seconds)
    seconds = (time.perf_counter() - started) / len(configs)
    probe = probe_sharpness(population, batch, seed, wanted=sharpness, share=len(configs))
    return [_result(module, population, watch, i, telemetry[i], batch, seconds, probe) for i in range(len(configs))]


def _sample(population: _Population, t: int, telemetry: list[list[dict[str, float]]], hidden: dict[int, int]) -> None:
    """Append each member's sample of Adam's state after step ``t``; note the rows whose weights are non-finite."""
    for row, (i, sample) in enumerate(zip(population.members.tolist(), population.v_telemetry(t))):
        if not sample.pop("finite"):  # Run.sample_telemetry's rule: a divergence at this step
            hidden.setdefault(row, t)
        telemetry[i].append(sample)


def _end_block(population: _Population, watch: DivergenceWatch, pending: list[torch.Tensor], hidden: dict[int, int]) -> None:
    """Read the block's losses off the device, as Run reads them, and cut the members that diverged out of the stacks."""
    values = torch.stack(pending).float().cpu().numpy().astype(np.float64)
    diverged = watch.add_nonfinite(hidden, population.members, watch.add(values, population.members))
    if diverged:
        population.keep(np.setdiff1d(np.arange(population.members.size), diverged))


def _result(module: ModelModule, population: _Population, watch: DivergenceWatch, i: int,
            telemetry: list[dict[str, float]], batch: Any, seconds: float, probe: SharpnessProbe) -> TrainResult:
    """Member ``i``'s ``TrainResult``; a member still training is finished on its model rebuilt from the stacks."""
    result = TrainResult(losses=watch.curve(i), diverged_at=watch.diverged_at[i], seconds=seconds, telemetry=telemetry)
    result.checks = {"telemetry": "ran: v_over_eps and eps_share only (a population member)" if telemetry else "skipped: no sample was due"}
    if result.diverged_at is None:
        row = int(np.flatnonzero(population.members == i)[0])
        result.checks.update(_finish(module, population.bound, population.member_state(row), batch, result))
        result.checks["sharpness"] = probe.check
        if probe.wanted:
            result.sharpness, result.sharpness_seconds = float(probe.values[row]), probe.seconds
    else:
        result.checks.update(dict.fromkeys(("evaluate", "dead_units", "sharpness"), "skipped: the run diverged"))
        if i in watch.nonfinite:
            result.checks["divergence"] = f"non-finite weights at step {watch.nonfinite[i]}, while the loss was finite"
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
