"""Adam/AdamW over K members' stacked parameters, each member with its own settings.

Every hyperparameter (lr times the schedule factor, eps, beta1, beta2, weight
decay, Adam vs AdamW) is a per-member tensor of shape ``[K]``, viewed as
``[K, 1, ...]`` and broadcast over each stacked parameter, and the arithmetic
is torch.optim's single-tensor Adam/AdamW, op for op, so a member's update is
the one ``torch.optim.Adam`` or ``AdamW`` makes for its config, to float
rounding.

- :class:`AdamSettings`: the members' settings as float64 arrays, and the
  per-step tables (step size, bias correction, decay) of a block of steps;
- :func:`stacked_adam`: one step, the functional form;
- :class:`StackedAdam`: the members' Adam state, the tables on the device, and
  :meth:`StackedAdam.step` (which calls :func:`stacked_adam`);
- :func:`why_not_population_configs`, :func:`why_not_population_space`: what it
  does not vectorize (gradient clipping, mixed precision, differing ``no_decay``).

Example:
    >>> w = torch.zeros(2, 3, requires_grad=True)  # two members' copies of one weight
    >>> adam = StackedAdam({"w": w}, AdamSettings([OptimConfig(lr=0.1), OptimConfig(lr=0.2)], steps=1, device=torch.device("cpu")))
    >>> adam.load_block(0, 1)
    >>> adam.step([w], [torch.ones(2, 3)], 0)
    >>> [round(x, 6) for x in w[:, 0].tolist()]  # Adam's first step moves each weight by about its lr
    [-0.1, -0.2]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stabsearch.config import OptimConfig
from stabsearch.population.stacking import Params, _Bound
from stabsearch.schedule import lr_factor
from stabsearch.training.optim import decay_groups

FIXED = ("one_minus_beta1", "beta2", "one_minus_beta2", "eps", "l2")
"""The settings :func:`stacked_adam` reads that are the same at every step."""

PER_STEP = ("neg_step_size", "bias2_sqrt", "decay")
"""The settings that change with the step: ``-lr_t / (1 - beta1^t)``, ``sqrt(1 - beta2^t)`` and ``1 - lr_t * wd``."""


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


def check_steps(steps: int) -> None:
    """Raise ``ValueError`` unless ``steps`` is an integer >= 1 (a run's horizon)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def check_settings(configs: Sequence[OptimConfig], steps: int | Sequence[int]) -> None:
    """Raise ``ValueError`` or ``TypeError``, naming the bad value, unless ``configs`` can train together,
    for ``steps`` steps (one horizon for all, or one per member).

    Example:
        >>> check_settings([OptimConfig()], steps=0)
        Traceback (most recent call last):
        ...
        ValueError: steps must be an integer >= 1, got 0
    """
    if isinstance(steps, (list, tuple)):
        if len(steps) != len(configs):
            raise ValueError(f"steps holds {len(steps)} horizons for {len(configs)} configs")
        for s in steps:
            check_steps(s)
    else:
        check_steps(steps)
    if len(configs) == 0:
        raise ValueError("configs is empty; a population needs at least one member")
    for c in configs:
        if not isinstance(c, OptimConfig):
            raise TypeError(f"configs must be OptimConfig objects, got {type(c).__name__}")
    why = why_not_population_configs(configs)
    if why is not None:
        raise ValueError(f"these configurations cannot train as one population: {why}")


class AdamSettings:
    """Per-member settings as ``[K]`` float64 arrays, and the per-step tables of a block of steps.

    Each member has its own horizon and its own step count: a member that
    joined a running population later is at an earlier step of its schedule.

    Args:
        configs: one per member, in the order of the stacks' rows (see :func:`check_settings`).
        steps: the run's horizon, which the lr schedules and warmups are fractions of; one for all
            members, or one per member.
        device: where the tables go.
    """

    def __init__(self, configs: Sequence[OptimConfig], steps: int | Sequence[int], device: torch.device) -> None:
        steps = list(steps) if isinstance(steps, (list, tuple)) else steps
        check_settings(configs, steps)
        self.configs = list(configs)
        self.horizons = list(steps) if isinstance(steps, list) else [steps] * len(self.configs)
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
        self.schedules = [(h, c.warmup_steps(h), c.schedule, c.min_lr_factor) for c, h in zip(self.configs, self.horizons)]
        self.use_l2 = bool(np.any(self.l2 != 0))
        self.use_decay = bool(np.any(self.decoupled_wd != 0))

    def block(self, starts: int | Sequence[int] | np.ndarray, n: int) -> dict[str, np.ndarray]:
        """float64 ``[n, K]`` tables of the step size, bias correction and decay of ``n`` steps.

        Member ``j`` takes its steps ``starts[j] .. starts[j] + n - 1`` (0-based;
        an int: every member at that step). The same float64 arithmetic
        torch.optim does in Python (``LambdaLR``'s ``base_lr * factor``,
        ``lr / (1 - beta1**t)``, ``(1 - beta2**t)**0.5``, ``1 - lr * wd``); the
        cast to the parameter's dtype comes last, as there.

        Example:
            >>> settings = AdamSettings([OptimConfig(lr=0.1, beta1=0.5)] * 2, steps=10, device=torch.device("cpu"))
            >>> np.round(settings.block([0, 1], 2)["neg_step_size"], 6).tolist()  # -lr / (1 - beta1^t): t = 1, 2 and 2, 3
            [[-0.2, -0.133333], [-0.133333, -0.114286]]
        """
        k = len(self.configs)
        starts = np.broadcast_to(np.asarray(starts, dtype=np.int64), (k,))
        factor = np.empty((n, k))
        columns: dict[tuple[tuple[int, int, str, float], int], list[int]] = {}  # one lr_factor column per schedule and step
        for j, (key, start) in enumerate(zip(self.schedules, starts.tolist())):
            columns.setdefault((key, start), []).append(j)
        for ((horizon, warmup, schedule, min_factor), start), members in columns.items():
            column = [lr_factor(t, horizon, warmup, schedule, min_factor) for t in range(start, start + n)]
            factor[:, members] = np.asarray(column)[:, None]
        lr = self.lr[None, :] * factor
        count = (starts[None, :] + np.arange(1, n + 1)[:, None]).astype(np.float64)  # Adam's step count after the increment
        return {
            "neg_step_size": -(lr / (1.0 - self.beta1[None, :] ** count)),
            "bias2_sqrt": (1.0 - self.beta2[None, :] ** count) ** 0.5,
            "decay": 1.0 - lr * self.decoupled_wd[None, :],
        }


def _check_lists(params: list[torch.Tensor], lists: dict[str, list[Any]]) -> None:
    for name, values in lists.items():
        if len(values) != len(params):
            raise ValueError(f"{name} holds {len(values)} entries for {len(params)} params")


def stacked_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    denoms: list[torch.Tensor],
    *,
    fixed: dict[str, list[torch.Tensor]],
    per_step: dict[str, list[torch.Tensor]],
    decayed: Sequence[int],
    l2: bool,
    decoupled: bool,
) -> None:
    """One Adam/AdamW step of every member, in place: torch.optim's single-tensor arithmetic, rounding for rounding.

    At large K the step is memory-bound, so the ``out=`` forms (per tensor:
    the foreach ops have none) write into ``denoms`` and into the spent
    gradients instead of copy-then-modify. ``grads`` is overwritten.

    Args:
        params: the stacked parameters, ``[K, ...]`` each, updated in place.
        grads: their gradients, same shapes; used up as work space.
        exp_avgs: Adam's first moments, same shapes, updated in place.
        exp_avg_sqs: Adam's second moments, same shapes, updated in place.
        denoms: work tensors, same shapes.
        fixed: for each key of :data:`FIXED`, one ``[K, 1, ...]`` view per parameter.
        per_step: for each key of :data:`PER_STEP`, one ``[K, 1, ...]`` view per parameter, of this step.
        decayed: indices into ``params`` of those weight decay applies to.
        l2: whether some member is Adam with weight decay (``g += wd * p``).
        decoupled: whether some member is AdamW with weight decay (``p *= 1 - lr_t * wd``).
    """
    _check_lists(params, {"grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs, "denoms": denoms})
    for label, table, keys in (("fixed", fixed, FIXED), ("per_step", per_step, PER_STEP)):
        missing = [key for key in keys if key not in table]
        if missing:
            raise ValueError(f"{label} lacks {', '.join(map(repr, missing))}")
        _check_lists(params, {f"{label}[{key!r}]": table[key] for key in keys})
    p, g, m, v, c, s, rows = params, grads, exp_avgs, exp_avg_sqs, fixed, per_step, decayed
    with torch.no_grad():
        if decoupled and rows:  # AdamW's decoupled decay: p *= 1 - lr_t * wd
            torch._foreach_mul_([p[i] for i in rows], [s["decay"][i] for i in rows])
        if l2 and rows:  # Adam's L2: g += wd * p
            torch._foreach_addcmul_([g[i] for i in rows], [p[i] for i in rows], [c["l2"][i] for i in rows])
        torch._foreach_lerp_(m, g, c["one_minus_beta1"])  # m = beta1 * m + (1 - beta1) * g
        torch._foreach_mul_(v, c["beta2"])
        for g_i, w_i, d_i in zip(g, c["one_minus_beta2"], denoms):
            torch.mul(g_i, w_i, out=d_i)
        torch._foreach_addcmul_(v, denoms, g)  # v = beta2 * v + ((1 - beta2) * g) * g
        for v_i, d_i in zip(v, denoms):
            torch.sqrt(v_i, out=d_i)
        torch._foreach_div_(denoms, s["bias2_sqrt"])
        torch._foreach_add_(denoms, c["eps"])  # denom = sqrt(v) / sqrt(1 - beta2^t) + eps
        for m_i, n_i, g_i in zip(m, s["neg_step_size"], g):
            torch.mul(m_i, n_i, out=g_i)  # the gradient is spent: it holds -lr_t / (1 - beta1^t) * m
        torch._foreach_addcdiv_(p, g, denoms)


def _decayed_rows(bound: _Bound, names: list[str], no_decay: bool) -> list[int]:
    """Indices into ``names`` (the bound's trainable parameters) of those weight decay applies to."""
    if not no_decay:
        return list(range(len(names)))
    kept = {id(p) for group in decay_groups(bound.model, 1.0)[:1] for p in group["params"]}
    decayed = {f"model.{n}" for n, p in bound.model.named_parameters() if id(p) in kept}
    return [i for i, n in enumerate(names) if n in decayed]


class StackedAdam:
    """The Adam state of K stacked members and their settings on the device; :meth:`step` steps them all.

    Members come and go between blocks of steps: :meth:`resize` keeps some
    rows and appends new ones with a fresh Adam state.

    Args:
        params: the stacked parameters by name, ``[K, ...]`` each, K the number of ``settings.configs``.
        settings: the members' settings.
        decayed: indices into ``params`` of those weight decay applies to; all of them by default.
    """

    def __init__(self, params: Params, settings: AdamSettings, decayed: Sequence[int] | None = None) -> None:
        if not isinstance(settings, AdamSettings):
            raise TypeError(f"settings must be AdamSettings, got {type(settings).__name__}")
        self._check_rows(params, settings)
        self.decayed = list(range(len(params))) if decayed is None else list(decayed)
        if any(not 0 <= i < len(params) for i in self.decayed):
            raise ValueError(f"decayed={self.decayed!r} indexes beyond the {len(params)} params")
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.kinds = [(p.dtype, p.dim()) for p in params.values()]
        self._use(settings)

    @staticmethod
    def _check_rows(params: Params, settings: AdamSettings) -> None:
        k = len(settings.configs)
        for name, p in params.items():
            if p.dim() == 0 or p.shape[0] != k:
                raise ValueError(f"params[{name!r}] of shape {tuple(p.shape)} does not stack the {k} members of settings")

    def _use(self, settings: AdamSettings) -> None:
        self.settings = settings
        self.denom = [torch.empty_like(v) for v in self.exp_avg.values()]  # work tensors: fresh ones every step cost page faults
        self._fixed = self._columns(self._to_device({key: v[None, :] for key, v in settings.constants.items()}), 0)
        self._table: dict[torch.dtype, dict[str, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return self.settings.device

    def _to_device(self, arrays: dict[str, np.ndarray]) -> dict[torch.dtype, dict[str, torch.Tensor]]:
        """float64 arrays ``[rows, K]`` as tensors of each parameter dtype."""
        return {
            dtype: {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device, dtype) for k, v in arrays.items()}
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

    def load_block(self, starts: int | Sequence[int] | np.ndarray, n: int) -> None:
        """Move the per-step tables of the next ``n`` steps to the device (once per block); row ``j`` is at step ``starts[j]``."""
        self._table = self._to_device(self.settings.block(starts, n))

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], i: int) -> None:
        """Step ``i`` of the loaded block for every member: :func:`stacked_adam` on this state."""
        stacked_adam(
            params, grads, list(self.exp_avg.values()), list(self.exp_avg_sq.values()), self.denom,
            fixed=self._fixed, per_step=self._columns(self._table, i),
            decayed=self.decayed, l2=self.settings.use_l2, decoupled=self.settings.use_decay,
        )

    def resize(self, keep: torch.Tensor, settings: AdamSettings, joining: int = 0) -> None:
        """Keep the rows ``keep`` (a long tensor on the device) as they are, then append ``joining`` rows of fresh
        (zero) state; ``settings`` describes the rows after the change, in order. Load a block before the next step."""
        if not isinstance(settings, AdamSettings):
            raise TypeError(f"settings must be AdamSettings, got {type(settings).__name__}")
        if len(settings.configs) != keep.numel() + joining:
            raise ValueError(f"settings hold {len(settings.configs)} members for {keep.numel()} kept and {joining} joining")
        for state in (self.exp_avg, self.exp_avg_sq):
            for name in state:
                kept = state[name].detach().index_select(0, keep)
                state[name] = torch.cat([kept, kept.new_zeros((joining, *kept.shape[1:]))]) if joining else kept
        self._use(settings)
