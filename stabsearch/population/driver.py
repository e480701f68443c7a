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
(:class:`~stabsearch.population.curve.MemberCurve`). A member that
diverged is frozen at the end of that block, the very step where
``train_trial`` would have stopped it, with the same curve: it is cut out of the stacks (an index
select, no arithmetic on it), so its parameters and Adam state stop
changing, its NaN cannot reach anyone, and it costs nothing afterwards. The
run ends early once every member is frozen. BatchNorm works: its running
statistics are stacked per member and updated by each member's forward.
:func:`train_population` trains K configurations from one start to one end;
:class:`~stabsearch.population.trainer.PopulationTrainer`, which it runs on,
also takes members that come and go, each on its own seed and horizon.

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

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, vmap

from stabsearch.analysis.options import StabilityOptions
from stabsearch.config import OptimConfig
from stabsearch.population.adam import AdamSettings, StackedAdam, _decayed_rows, check_settings
from stabsearch.population.rewrites import CheaperBatching
from stabsearch.population.stacking import Params, _Bound, _Plan, _stack
from stabsearch.population.timing import fastest
from stabsearch.training.loader import ModelModule
from stabsearch.training.telemetry import NEAR_EPS, SAMPLE_PER_TENSOR, relu_dead_units
from stabsearch.training.trainer import Deadline, Run, TrainResult, one_line


def _block(device: torch.device) -> int:
    """Steps between reads of the losses: ``trainer.Run``'s default, so a frozen member stops where it stops."""
    return Run(OptimConfig(), steps=1, seed=0, device=device).block


class _Population:
    """K stacked models and their Adam state; :meth:`step` trains all of them once.

    Rows are members. Built from ``states`` (one dict of trainable
    parameters and written buffers per member), else K copies of
    ``bound``'s own. :meth:`resize` drops rows and appends new ones (fresh
    Adam state) between blocks of steps.
    """

    def __init__(self, bound: _Bound, plan: _Plan, settings: AdamSettings, states: Sequence[Params] | None = None) -> None:
        self.bound = bound
        self.plan = plan
        self.settings = settings
        self.members = np.arange(len(settings.configs))  # row j holds settings.configs[j]
        if states is None:
            self.params, self.buffers = _stack(bound, plan, len(settings.configs))
        else:
            self.params = {n: torch.stack([s[n] for s in states]).detach().requires_grad_(True) for n in plan.trainable}
            self.buffers = {n: torch.stack([s[n] for s in states]).detach() for n in plan.mutable}
        # Weight decay applies to all parameters, or to all but biases and norms (no_decay).
        decayed = _decayed_rows(bound, list(self.params), settings.configs[0].no_decay)
        self.adam = StackedAdam(self.params, settings, decayed)
        self.grads = [torch.empty_like(p) for p in self.params.values()]  # see gradients
        self.forward = vmap(self._loss, in_dims=(0, 0, None))
        self._forwards: dict[str, Callable[..., torch.Tensor]] = {}  # by the in_dims of stacked batches
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

    def gradients(self, batch: Any, in_dims: Any = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each member's gradients (in ``params`` order) and its loss, ``[K]``, on ``batch``.

        ``in_dims`` is ``None`` for one batch all members share, else vmap's
        ``in_dims`` of a batch stacked per member
        (:func:`~stabsearch.population.stacking.stack_batches`).

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
        forward = self.forward if in_dims is None else self._batched_forward(in_dims)
        with CheaperBatching(linear=self.linear_rewrite):
            losses = forward(self.params, self.buffers, batch)
        grads = torch.autograd.grad(losses.sum(), params, allow_unused=True, materialize_grads=True)
        out, seen = [], set()
        for g, work in zip(grads, self.grads):
            own = g.is_contiguous() and g.untyped_storage().data_ptr() not in seen
            seen.add(g.untyped_storage().data_ptr())
            out.append(g if own else work.copy_(g))
        return out, losses.detach()

    def _batched_forward(self, in_dims: Any) -> Callable[..., torch.Tensor]:
        key = repr(in_dims)
        if key not in self._forwards:
            self._forwards[key] = vmap(self._loss, in_dims=(0, 0, in_dims))
        return self._forwards[key]

    def load_block(self, starts: int | Sequence[int] | np.ndarray, n: int) -> None:
        """Move the per-step tables of the next ``n`` steps to the device (once per block); row ``j`` is at step ``starts[j]``."""
        self.adam.load_block(starts, n)

    def step(self, batch: Any, i: int, in_dims: Any = None) -> torch.Tensor:
        """One Adam/AdamW step of every member on ``batch`` (step ``i`` of the loaded block); returns the ``[K]`` losses."""
        grads, losses = self.gradients(batch, in_dims)
        self.adam.step(list(self.params.values()), grads, i)
        return losses

    def resize(self, keep: Sequence[int] | np.ndarray, settings: AdamSettings, states: Sequence[Params] = ()) -> None:
        """Keep rows ``keep`` as they are, then append one row per new state, with a fresh Adam state.

        ``settings`` describes the rows after the change, in order. A row
        dropped is frozen as it was: no arithmetic touches it again.
        """
        index = torch.as_tensor(np.asarray(keep, dtype=np.int64), dtype=torch.long, device=self.device)
        for stacks, names in ((self.params, self.plan.trainable), (self.buffers, self.plan.mutable)):
            for name in names:
                kept = stacks[name].detach().index_select(0, index)
                stacks[name] = torch.cat([kept, *(s[name].detach().to(kept.device)[None] for s in states)]) if states else kept
        self.params = {n: t.requires_grad_(True) for n, t in self.params.items()}
        self.adam.resize(index, settings, len(states))
        self.settings = settings
        self.grads = [torch.empty_like(p) for p in self.params.values()]
        self.members = np.arange(len(settings.configs))

    @torch.no_grad()
    def v_telemetry(self, rows: Sequence[int] | np.ndarray, counts: Sequence[int] | np.ndarray) -> list[dict[str, float]]:
        """Each of ``rows``' ``v_over_eps`` and ``eps_share`` after its step ``counts[j] - 1``, sampled as
        ``adam_telemetry`` samples them.

        A row whose weights or second moments hold a NaN or infinity gets
        ``finite = 0.0``: it diverged, whatever its loss says.
        """
        rows = np.asarray(rows, dtype=np.int64)
        k = rows.size
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        every = k == self.members.size and bool(np.all(rows == np.arange(k)))
        pick = (lambda t: t) if every else (lambda t: t.index_select(0, index))  # noqa: E731
        count = np.asarray(counts, dtype=np.float64)
        bc2 = torch.as_tensor(1.0 - self.settings.beta2[rows] ** count, device=self.device, dtype=torch.float32)
        eps = torch.as_tensor(self.settings.constants["eps"][rows], device=self.device, dtype=torch.float32)
        ratios = []
        for v in self.adam.exp_avg_sq.values():
            flat = pick(v).reshape(k, -1)
            stride = max(1, flat.shape[1] // SAMPLE_PER_TENSOR)
            ratios.append((flat[:, ::stride].float() / bc2[:, None]).sqrt() / eps[:, None])
        ratio = torch.cat(ratios, dim=1)
        seen = ratio > 0
        near = (seen & (ratio <= NEAR_EPS)).sum(1).double() / seen.sum(1).clamp(min=1).double()
        median = ratio.median(dim=1).values
        finite = torch.ones(k, dtype=torch.bool, device=self.device)
        for state in (self.params, self.adam.exp_avg_sq):
            for tensor in state.values():
                finite &= torch.isfinite(pick(tensor.detach()).reshape(k, -1)).all(dim=1)
        out = zip(count.tolist(), median.tolist(), near.tolist(), finite.tolist())
        return [{"step": int(c) - 1, "v_over_eps": float(m), "eps_share": float(n), "finite": float(f)} for c, m, n, f in out]

    def member_state(self, row: int) -> dict[str, torch.Tensor]:
        """One row of the stacks: the parameters and stacked buffers of one member, by name in ``bound``."""
        return {n: t[row].detach() for n, t in {**self.params, **self.buffers}.items()}


def _check(module: ModelModule, configs: Sequence[OptimConfig], steps: int) -> None:
    """Raise, naming what is wrong, unless ``module`` and ``configs`` can train as one population."""
    _check_module(module)
    check_settings(configs, steps)


def _check_module(module: ModelModule) -> None:
    """Raise ``ValueError`` unless ``module`` has the parts a population trains (not its own loop)."""
    if module.train is not None:
        raise ValueError(f"{module.source}: its own train(run) loop cannot be trained as a population")
    if module.model is None or module.batches is None or module.loss is None:
        raise ValueError(f"{module.source}: a population needs model(), batches(seed) and loss(model, batch)")


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
    from stabsearch.population.trainer import PopulationTrainer

    _check(module, configs, steps)
    trainer = PopulationTrainer(module, device=device, options=options, sharpness=sharpness, deadlines=deadlines)
    for i, config in enumerate(configs):
        trainer.add(config, steps=steps, seed=seed, key=i)
    results: dict[int, TrainResult] = {}
    while len(trainer):
        for i, result in trainer.advance():
            if isinstance(result, BaseException):
                raise result
            results[i] = result
    return [results[i] for i in range(len(configs))]


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
