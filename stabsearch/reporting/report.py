"""The safe-region report: figures from a study, and one self-contained HTML file.

The report answers four questions in this order: what was searched and at
what cost, what the trials turned out to be, what to copy into production,
and where the safe region ends. Its figures are plain ``plotly`` figures, so
:mod:`stabsearch.reporting.dashboard` saves the same ones on the study for
optuna-dashboard.

Safety rules: every string a user wrote (study name, model path, parameter
values, error text) goes through :func:`html.escape` before it reaches the
HTML or a figure's text; plotly's embedded JSON escapes ``<``, ``>`` and
``/``, so nothing in it can close a ``<script>`` tag; the storage appears only
as :attr:`stabsearch.study.storage.Storage.shown`, with its password hidden; and the
file loads nothing from the network (plotly's JavaScript is inline).

The probability of instability under each map is a Gaussian kernel estimate
(Nadaraya-Watson) in log10 space: a weighted share of the nearby trials that
went unstable, shrunk towards the study's overall share where trials are
sparse. It is a 2-D projection: every other parameter is averaged over.

Example:
    >>> import numpy as np
    >>> p = instability_probability(np.array([[0.1, 0.5], [0.9, 0.5]]), np.array([False, True]),
    ...                             np.array([[0.1, 0.5], [0.9, 0.5]]))
    >>> bool(p[0] < 0.5 < p[1])
    True
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import html
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
import plotly.io as pio
from optuna.trial import FrozenTrial

from stabsearch.study.attrs import typed_attr
from stabsearch.study.recommend import UNSTABLE, NothingToRecommend, Recommendation, recommend
from stabsearch.study.records import TrialRecord, study_records

#: One colour per verdict, used by every figure.
VERDICT_COLORS: dict[str, str] = {
    "stable": "#2e9d46",
    "spiky": "#f29d0c",
    "diverged": "#d62728",
    "plateau": "#8e5bc4",
    "slow": "#9fb7cf",
    "failed": "#8a8a8a",
}
VERDICT_ORDER = tuple(VERDICT_COLORS)
#: Kernel bandwidth, as a fraction of each map axis (in log10 units on log axes).
BANDWIDTH = 0.12
#: Pseudo-trials of the overall unstable share mixed into every estimate (shrinks sparse regions).
PRIOR_WEIGHT = 0.5
GRID = 60
#: Loss curves are thinned to a min/max envelope of this many buckets (spikes survive).
CURVE_BUCKETS = 600
KERNEL_NOTE = f"shading: P(unstable), Gaussian kernel estimate in log10 space (bandwidth {BANDWIDTH:g} of each axis)"
MAPS_NOTE = (
    "Each point is one search trial, coloured by its verdict; hover for its settings. The shading beneath is the "
    "estimated probability that a run there goes unstable (spiky, diverged or plateau): a Gaussian kernel estimate "
    f"(Nadaraya-Watson) in log10 space with a bandwidth of {BANDWIDTH:g} of each axis, shrunk towards the study's "
    "overall rate where trials are sparse. Each map averages over the other parameters. The star is the "
    "recommendation, the green bar the stable basin along the learning rate, the dotted line its margin to the "
    "nearest learning rate that went unstable."
)


# ---------------------------------------------------------------------------------------------
# Pure helpers


def safe_filename(name: str) -> str:
    """A file name made from a study name: letters, digits, ``.``, ``_`` and ``-`` only.

    Example:
        >>> safe_filename("my study/<script>")
        'my_study_script'
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:120] or "study"


def default_report_path(study_name: str) -> Path:
    """``studies/<study>.html`` under the current directory.

    A name that is not already a safe file name gets a short hash of itself
    after its cleaned form, so two studies never share a report file.

    Example:
        >>> str(default_report_path("adam-late")), str(default_report_path("a b")) != str(default_report_path("a_b"))
        ('studies/adam-late.html', True)
    """
    cleaned = safe_filename(study_name)
    if cleaned != study_name:
        cleaned += "-" + hashlib.sha1(study_name.encode("utf-8")).hexdigest()[:8]
    return Path("studies") / f"{cleaned}.html"


def instability_probability(
    points: np.ndarray, unstable: np.ndarray, grid: np.ndarray, *, bandwidth: float = BANDWIDTH, prior_weight: float = PRIOR_WEIGHT
) -> np.ndarray:
    """P(unstable) at each ``grid`` point from trials at ``points`` (both ``(n, 2)``, axes scaled to 0..1).

    A Nadaraya-Watson estimate with a Gaussian kernel, plus ``prior_weight``
    pseudo-trials at the overall unstable share, so a region with no trials
    reads as the study's base rate instead of 0 or 1.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    grid = np.asarray(grid, dtype=float).reshape(-1, 2)
    unstable = np.asarray(unstable, dtype=bool).reshape(-1)
    if len(points) != len(unstable):
        raise ValueError(f"points and unstable differ in length: {len(points)} != {len(unstable)}")
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    if len(points) == 0:
        return np.zeros(len(grid))
    base = float(unstable.mean())
    d2 = ((grid[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
    weights = np.exp(-0.5 * d2 / bandwidth**2)
    return (weights @ unstable.astype(float) + prior_weight * base) / (weights.sum(axis=1) + prior_weight)


def envelope(steps: np.ndarray, values: np.ndarray, buckets: int = CURVE_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """Thin a long curve to the min and max of each of ``buckets`` slices, in step order (keeps spikes).

    Example:
        >>> s, v = envelope(np.arange(10), np.arange(10.0), buckets=2)
        >>> s.tolist(), v.tolist()
        ([0, 4, 5, 9], [0.0, 4.0, 5.0, 9.0])
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if len(values) <= 2 * buckets:
        return steps, values
    keep: list[int] = []
    for chunk in np.array_split(np.arange(len(values)), buckets):
        part = values[chunk]
        finite = np.isfinite(part)
        if not finite.any():
            keep.append(int(chunk[0]))
            continue
        masked = np.where(finite, part, np.nan)
        lo, hi = int(chunk[np.nanargmin(masked)]), int(chunk[np.nanargmax(masked)])
        keep.extend(sorted({lo, hi}))
        if not finite.all():  # keep where it broke
            keep.append(int(chunk[np.argmin(finite)]))
    idx = np.unique(np.array(keep))
    return steps[idx], values[idx]


def _sig(value: float, digits: int = 5) -> float | None:
    """Round for compact JSON; non-finite and non-positive (log axes) become gaps."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(f"{value:.{digits}g}")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------
# The written summary


@dataclasses.dataclass(frozen=True)
class Summary:
    """Everything the written part of the report says, with no markup."""

    study: str
    storage: str
    model: str | None
    steps_per_trial: int | None
    searched: list[str]
    search_trials: int
    confirm_runs: int
    unfinished: int
    steps_run: int
    train_seconds: float
    wall_seconds: float | None
    search_verdicts: dict[str, int]
    confirm_verdicts: dict[str, int]
    recommendation: dict[str, Any] | None
    nothing_reason: str | None
    python_code: str | None = None
    #: The best stable search trial, the lowest learning rate that went unstable, the highest that stayed stable.
    best: dict[str, Any] | None = None
    lowest_unstable: dict[str, Any] | None = None
    highest_stable: dict[str, Any] | None = None
    #: Search trials whose score got the early-warning penalty (number, lr, penalty, warning), in number order.
    penalized: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _space_lines(space: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, spec in space.items():
        if isinstance(spec, Mapping) and "low" in spec:
            text = f"{name} {spec['low']:.6g}..{spec['high']:.6g}" + (" (log)" if spec.get("log") else "")
            if spec.get("zero"):
                text += " or 0"
        elif isinstance(spec, (list, tuple)):
            text = f"{name} in {{{', '.join(map(str, spec))}}}"
        else:
            text = f"{name} = {spec} (fixed)"
        lines.append(text)
    return lines


def summarize(study: optuna.Study, records: Sequence[TrialRecord], storage: Any, recommendation: Recommendation | None = None,
              nothing_reason: str | None = None) -> Summary:
    """The facts at the top of the report. ``storage`` is a :class:`~stabsearch.study.storage.Storage`:
    only its ``shown`` URL (password hidden) is used."""
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    finished = [r for r in records if r.state in ("COMPLETE", "PRUNED", "FAIL")]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    search = [r for r in finished if r.kind == "search" and r.params.get("lr") is not None]
    stable = [r for r in search if r.verdict == "stable" and r.score is not None]
    unstable = [r for r in search if r.verdict in UNSTABLE]
    brief = lambda r: {"number": r.number, "lr": float(r.params["lr"]), "verdict": r.verdict,  # noqa: E731
                       "final_loss": r.final_loss, "score": r.score, "penalty": r.warning_penalty, "warning": r.warning}
    code = None
    if recommendation is not None:
        from stabsearch.reporting.export import format_recommendation

        code = format_recommendation(recommendation, "python")
    return Summary(
        study=study.study_name,
        storage=storage.shown,
        model=attrs.get("model"),
        steps_per_trial=attrs.get("steps"),
        searched=_space_lines(attrs.get("space") or {}),
        search_trials=sum(r.kind == "search" for r in finished),
        confirm_runs=sum(r.kind == "confirm" for r in finished),
        unfinished=len(records) - len(finished),
        steps_run=int(sum(r.steps_run or 0 for r in finished)),
        train_seconds=float(sum(typed_attr(t.user_attrs, "seconds", 0.0) for t in trials)),
        wall_seconds=wall,
        search_verdicts=dict(Counter(r.verdict for r in finished if r.kind == "search")),
        confirm_verdicts=dict(Counter(r.verdict for r in finished if r.kind == "confirm")),
        recommendation=recommendation.to_dict() if recommendation is not None else None,
        nothing_reason=nothing_reason,
        python_code=code,
        best=brief(min(stable, key=lambda r: r.score)) if stable else None,
        lowest_unstable=brief(min(unstable, key=lambda r: float(r.params["lr"]))) if unstable else None,
        highest_stable=brief(max(stable, key=lambda r: float(r.params["lr"]))) if stable else None,
        penalized=[brief(r) for r in search if r.warning_penalty > 0],
    )


def _counts(verdicts: Mapping[str, int]) -> list[tuple[str, int]]:
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    return sorted(verdicts.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))


def _settings_line(rec: Mapping[str, Any]) -> str:
    s = rec["schedule"]
    sched = f"{s['name']} schedule, {s['warmup_steps']} warmup steps"
    if "total_steps" in s:
        sched += f" of {s['total_steps']}"
    b1, b2 = rec["betas"]
    return (f"{rec['optimizer']} lr={rec['lr']:.3g} eps={rec['eps']:.3g} betas=({b1:.4g}, {b2:.6g}) "
            f"weight_decay={rec['weight_decay']:.3g}, {sched}")


def _evidence_lines(rec: Mapping[str, Any]) -> list[str]:
    ev = rec["evidence"]
    lines = []
    if ev.get("confirmed"):
        lines.append(
            f"Confirmed: trial #{ev['trial']} re-run on seeds {', '.join(map(str, ev['seeds']))} at {ev['horizon']} steps: "
            f"{ev['divergences']} divergences, {ev['spikes']} spikes, worst final loss {_fmt(ev['final_loss'])}."
        )
    else:
        lines.append(f"Not confirmed on new seeds: the best stable search trial #{ev['trial']} (one seed, {ev['horizon']} steps).")
    if ev.get("rescued_from"):
        lines.append(f"Rescued: every candidate failed confirmation; trial #{ev['trial']} passed once its lr was backed off "
                     f"from {ev['rescued_from']:.3g}.")
    probes = ev.get("edge_probes") or {}
    if probes:
        lines.append("Edge probes (same seeds and horizon): " + ", ".join(f"lr={lr} {outcome}" for lr, outcome in probes.items()) + ".")
    edge = ev.get("nearest_unstable_lr")
    proven = ev.get("proven_margin_decades")
    if edge is None:
        lines.append("No unstable run was seen above this learning rate at similar eps and beta2: the edge is unknown"
                     + (f"; a learning rate {proven:.2f} decades above it passed." if proven else "."))
    else:
        margin = ev.get("margin_decades")
        lines.append(f"Margin: {margin:.2f} decades ({10 ** margin:.1f}x) below lr={edge:.3g}, the nearest lr that went unstable"
                     + (f"; a learning rate {proven:.2f} decades above it passed." if proven else "."))
    basin = ev.get("basin_lr")
    if basin and basin[1] > basin[0]:
        lines.append(f"Stable basin: lr {basin[0]:.3g}..{basin[1]:.3g} ({math.log10(basin[1] / basin[0]):.2f} decades) scored about as well.")
    elif basin:
        lines.append("Stable basin: no other learning rate at similar eps and beta2 scored about as well (narrow or unexplored).")
    if ev.get("at_cliff"):
        lines.append(f"Warning: the best lr ({ev['backed_off_from']:.3g}) sat at the cliff; the recommendation is backed off from it.")
    check = ev.get("backoff_check")
    if check:
        lines.append(f"Back-off check on seeds {', '.join(map(str, check['seeds']))}: "
                     f"{'survived' if check['survived'] else 'did NOT survive'} ({check['divergences']} divergences, {check['spikes']} spikes).")
    return lines


def _summary_lines(s: Summary) -> list[tuple[str, str]]:
    """(label, plain text) pairs shared by the HTML and the markdown."""
    searched = ", ".join(s.searched) if s.searched else "the default space"
    verdicts = "; ".join(
        f"{label}: " + ", ".join(f"{n} {v}" for v, n in _counts(counts))
        for label, counts in (("search", s.search_verdicts), ("confirmation", s.confirm_verdicts)) if counts
    ) or "no finished trials yet"
    compute = (f"{s.search_trials} search trials and {s.confirm_runs} confirmation runs, {s.steps_run:,} training steps, "
               f"{_duration(s.train_seconds)} of training ({_duration(s.wall_seconds)} wall clock)")
    if s.unfinished:
        compute += f"; {s.unfinished} still running or waiting"
    what = f"{s.model or 'model'}" + (f", {s.steps_per_trial} steps per search trial" if s.steps_per_trial else "")
    lines = [("Searched", f"{searched} on {what}"), ("Compute", compute), ("Found", verdicts)]
    if s.best:
        b = s.best
        lines.append(("Best", f"the lowest search score, trial #{b['number']} at lr={b['lr']:.3g}: final loss {_fmt(b['final_loss'])}, "
                              f"score {_fmt(b['score'])}" + (f" (with an early-warning penalty of +{b['penalty']:.3g})" if b.get("penalty") else "")))
    if s.penalized:
        first = s.penalized[0]
        lines.append(("Early warning", f"{len(s.penalized)} search trial(s) scored worse for a predicted later blow-up: "
                      + ", ".join(f"#{p['number']} +{p['penalty']:.3g}" for p in s.penalized[:8])
                      + (", ..." if len(s.penalized) > 8 else "") + f". Why #{first['number']}: {first['warning'] or 'no reason stored'}"))
    if s.lowest_unstable:
        u = s.lowest_unstable
        edge = f"the lowest lr that went unstable was {u['lr']:.3g} (#{u['number']}, {u['verdict']})"
        if s.highest_stable:
            h = s.highest_stable
            edge += f"; the highest that stayed stable {h['lr']:.3g} (#{h['number']})"
            if h["lr"] > u["lr"]:
                edge += ": the edge depends on the other settings too (see the maps)"
        lines.append(("Edge", edge))
    elif s.search_trials:
        lines.append(("Edge", "no search trial went unstable: the searched range may not reach the edge"))
    return lines


def summary_markdown(s: Summary) -> str:
    """The summary as markdown (the study's note in optuna-dashboard). User text is HTML-escaped."""
    out = [f"## stabsearch: {_esc(s.study)}", ""]
    out += [f"- **{label}**: {_esc(text)}" for label, text in _summary_lines(s)]
    out.append("")
    if s.recommendation is not None:
        out.append(f"**Recommended**: `{_esc(_settings_line(s.recommendation))}`")
        out.append("")
        out += [f"- {_esc(line)}" for line in _evidence_lines(s.recommendation)]
    else:
        out.append(f"**No recommendation**: {_esc(s.nothing_reason or 'unknown')}")
    out += ["", f"Storage: `{_esc(s.storage)}`. Full report: `stabsearch report --study {_esc(s.study)}`; "
            "each trial's loss curve is its `curve_artifact` (CSV)."]
    return "\n".join(out) + "\n"


def summary_html(s: Summary) -> str:
    """The summary block of the report; every value is escaped."""
    items = "".join(f"<li><b>{_esc(label)}</b>: {_esc(text)}</li>" for label, text in _summary_lines(s))
    if s.recommendation is not None:
        rec = s.recommendation
        sched = rec["schedule"]
        rows = [
            ("optimizer", rec["optimizer"]), ("lr", f"{rec['lr']:.4g}"), ("eps", f"{rec['eps']:.3g}"),
            ("betas", f"({rec['betas'][0]:.4g}, {rec['betas'][1]:.6g})"), ("weight_decay", f"{rec['weight_decay']:.3g}"),
            ("schedule", f"{sched['name']}, warmup {sched['warmup_steps']} steps" + (f" of {sched['total_steps']}" if "total_steps" in sched else "")),
        ]
        table = "".join(f"<tr><th>{_esc(k)}</th><td><code>{_esc(v)}</code></td></tr>" for k, v in rows)
        evidence = "".join(
            f'<li class="{"warn" if line.startswith("Warning") or "NOT" in line else ""}">{_esc(line)}</li>' for line in _evidence_lines(rec)
        )
        code = f"<details><summary>Python code that builds it</summary><pre>{_esc(s.python_code)}</pre></details>" if s.python_code else ""
        card = (f'<div class="card ok" id="recommendation"><h2>What to copy</h2><table class="settings">{table}</table>'
                f'<ul class="evidence">{evidence}</ul>{code}'
                f'<p class="hint">Also: <code>stabsearch recommend --study {_esc(s.study)} --format yaml|json|toml|python</code></p></div>')
    else:
        card = (f'<div class="card none" id="recommendation"><h2>No recommendation</h2>'
                f"<p>{_esc(s.nothing_reason or 'unknown')}</p></div>")
    return f'<div class="top"><div class="card" id="summary"><h2>Summary</h2><ul>{items}</ul></div>{card}</div>'


# ---------------------------------------------------------------------------------------------
# Figures


@dataclasses.dataclass(frozen=True)
class MapAxis:
    """One axis of a safe-region map."""

    key: str
    title: str
    log: bool
    value: Callable[[Mapping[str, Any]], float | None]
    space_key: str
    complement: bool = False

    def bounds(self, space: Mapping[str, Any], values: np.ndarray) -> tuple[float, float]:
        """Plot range in axis units (log10 on a log axis): the searched range, or the data's."""
        spec = space.get(self.space_key)
        if isinstance(spec, Mapping) and "low" in spec and spec["high"] > spec["low"]:
            lo, hi = (1 - spec["high"], 1 - spec["low"]) if self.complement else (spec["low"], spec["high"])
        elif len(values):
            lo, hi = float(values.min()), float(values.max())
        else:
            lo, hi = (1e-5, 1.0) if self.log else (0.0, 1.0)
        if self.log:
            lo, hi = math.log10(max(lo, 1e-300)), math.log10(max(hi, 1e-300))
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.03 * (hi - lo)
        return lo - pad, hi + pad

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        return np.log10(values) if self.log else values


def _param(name: str, complement: bool = False) -> Callable[[Mapping[str, Any]], float | None]:
    def get(params: Mapping[str, Any]) -> float | None:
        try:
            v = float(params[name])
        except (KeyError, TypeError, ValueError):
            return None
        v = 1 - v if complement else v
        return v if math.isfinite(v) else None

    return get


AXES = {
    "lr": MapAxis("lr", "learning rate", True, _param("lr"), "lr"),
    "eps": MapAxis("eps", "eps", True, _param("eps"), "eps"),
    "beta2": MapAxis("beta2", "1 - beta2", True, _param("beta2", complement=True), "beta2", complement=True),
    "warmup": MapAxis("warmup", "warmup (fraction of the steps)", False, _param("warmup"), "warmup"),
}


def _hover(r: TrialRecord) -> str:
    p = r.params
    parts = [f"trial #{r.number} ({_esc(r.kind)}): {_esc(r.verdict)}"]
    for key in ("optimizer", "lr", "eps", "beta1", "beta2", "weight_decay", "schedule", "warmup"):
        if key in p:
            value = f"{p[key]:.6g}" if key == "beta2" and isinstance(p[key], float) else _fmt(p[key])
            parts.append(f"{key}={_esc(value)}")
    parts.append(f"score={_fmt(r.score)} final loss={_fmt(r.final_loss)} spikes={r.spikes}")
    if r.warning_penalty:
        parts.append(f"early-warning penalty +{r.warning_penalty:.3g}: {_esc((r.warning or '')[:120])}")
    if r.error:
        parts.append(f"error: {_esc(r.error[:120])}")
    return "<br>".join(parts)


def _base_layout(fig: go.Figure, title: str, height: int = 430) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        template="plotly_white", height=height, margin={"l": 60, "r": 20, "t": 48, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0, "font": {"size": 11}},
        hoverlabel={"align": "left"},
    )
    return fig


def safe_region_figure(records: Sequence[TrialRecord], x: str, y: str, space: Mapping[str, Any] | None = None,
                       recommendation: Recommendation | None = None) -> go.Figure:
    """Search trials on ``x`` by ``y`` (keys of :data:`AXES`) coloured by verdict, over P(unstable)."""
    ax, ay = AXES[x], AXES[y]
    space = space or {}
    pts = [(r, ax.value(r.params), ay.value(r.params)) for r in records
           if r.kind == "search" and r.verdict in VERDICT_COLORS]
    pts = [(r, vx, vy) for r, vx, vy in pts if vx is not None and vy is not None and (not ax.log or vx > 0) and (not ay.log or vy > 0)]
    xs = np.array([vx for _, vx, _ in pts], dtype=float)
    ys = np.array([vy for _, _, vy in pts], dtype=float)
    (x0, x1), (y0, y1) = ax.bounds(space, xs), ay.bounds(space, ys)
    fig = go.Figure()
    # a code error, or a run stopped early for being slow, says nothing about stability
    judged = [i for i, (r, _, _) in enumerate(pts) if r.verdict not in ("failed", "slow")]
    gu, gv = np.linspace(x0, x1, GRID), np.linspace(y0, y1, GRID)
    if judged:
        unit = np.column_stack([(ax.to_unit(xs[judged]) - x0) / (x1 - x0), (ay.to_unit(ys[judged]) - y0) / (y1 - y0)])
        mesh = np.stack(np.meshgrid((gu - x0) / (x1 - x0), (gv - y0) / (y1 - y0)), axis=-1).reshape(-1, 2)
        unstable = np.array([pts[i][0].verdict in UNSTABLE for i in judged])
        prob = instability_probability(unit, unstable, mesh).reshape(GRID, GRID)
        fig.add_trace(go.Heatmap(
            x=[_sig(10**u) if ax.log else float(u) for u in gu], y=[_sig(10**v) if ay.log else float(v) for v in gv],
            z=np.round(prob, 3).tolist(), zmin=0, zmax=1, opacity=0.55, name="P(unstable)",
            colorscale=[[0, "#f7fbff"], [0.5, "#fcbba1"], [1, "#cb181d"]],
            colorbar={"title": {"text": "P(unstable)", "side": "right"}, "thickness": 12, "len": 0.8},
            hovertemplate="P(unstable)=%{z:.2f}<extra></extra>",
        ))
    for verdict, color in VERDICT_COLORS.items():
        group = [(r, vx, vy) for r, vx, vy in pts if r.verdict == verdict]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[_sig(vx) if ax.log else vx for _, vx, _ in group], y=[_sig(vy) if ay.log else vy for _, _, vy in group],
            mode="markers", name=f"{verdict} ({len(group)})",
            marker={"color": color, "size": 9, "line": {"color": "#222", "width": 0.8}, "symbol": "x" if verdict == "failed" else "circle"},
            text=[_hover(r) for r, _, _ in group], hovertemplate="%{text}<extra></extra>",
        ))
    if recommendation is not None:
        _mark_recommendation(fig, recommendation, ax, ay)
    fig.update_xaxes(title_text=ax.title + (" (log)" if ax.log else ""), type="log" if ax.log else "linear", range=[x0, x1])
    fig.update_yaxes(title_text=ay.title + (" (log)" if ay.log else ""), type="log" if ay.log else "linear", range=[y0, y1])
    _base_layout(fig, f"Safe region: {ax.key} x {ay.key}", height=480)
    fig.update_layout(
        title={"subtitle": {"text": KERNEL_NOTE if judged else "no judged trials yet", "font": {"size": 10, "color": "#555"}}},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top"},
        margin={"t": 62, "b": 40},
    )
    return fig


def _mark_recommendation(fig: go.Figure, rec: Recommendation, ax: MapAxis, ay: MapAxis) -> None:
    params = rec.config.to_dict()
    rx, ry = ax.value(params), ay.value(params)
    if rx is None or ry is None:
        return
    ev = rec.evidence
    basin = ev.get("basin_lr") or []
    if ax.key == "lr" and len(basin) == 2 and basin[1] > basin[0]:
        fig.add_trace(go.Scatter(x=[basin[0], basin[1]], y=[ry, ry], mode="lines", name="stable basin (lr)",
                                 line={"color": "rgba(46,157,70,0.45)", "width": 12}, hoverinfo="skip"))
    edge = ev.get("nearest_unstable_lr")
    if ax.key == "lr" and edge:
        margin = ev.get("margin_decades")
        fig.add_trace(go.Scatter(x=[rx, edge], y=[ry, ry], mode="lines+markers", name=f"margin {margin:.2f} decades",
                                 line={"color": "#444", "dash": "dot", "width": 2}, marker={"symbol": ["line-ns", "line-ns"], "size": 12, "line": {"width": 2, "color": "#444"}},
                                 hovertemplate=f"nearest unstable lr {edge:.3g}: margin {margin:.2f} decades<extra></extra>"))
    label = "recommended" + (" (backed off)" if ev.get("at_cliff") else "")
    fig.add_trace(go.Scatter(x=[rx], y=[ry], mode="markers", name=label,
                             marker={"symbol": "star", "size": 19, "color": "#ffd400", "line": {"color": "#000", "width": 1.5}},
                             hovertemplate=f"recommended: lr={rec.config.lr:.3g} eps={rec.config.eps:.3g} "
                                           f"beta2={rec.config.beta2:.6g} warmup={rec.config.warmup:.3g}<extra></extra>"))
    if ev.get("backed_off_from") and ax.key == "lr":
        fig.add_trace(go.Scatter(x=[ev["backed_off_from"]], y=[ry], mode="markers", name="best lr (cliff)",
                                 marker={"symbol": "diamond-open", "size": 13, "color": "#000", "line": {"width": 2}},
                                 hovertemplate=f"best lr {ev['backed_off_from']:.3g}<extra></extra>"))


def read_curve(trial: FrozenTrial, artifacts_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, losses) from a trial's curve artifact, or None when it has none or the file is gone."""
    from stabsearch.analysis.loss_log import read_loss_log
    from stabsearch.errors import UsageError

    artifact = trial.user_attrs.get("curve_artifact")
    if not artifact or not re.fullmatch(r"[0-9A-Za-z-]+", str(artifact)):
        return None
    path = Path(artifacts_dir) / str(artifact)
    try:
        log = read_loss_log(path)
    except UsageError:
        return None
    steps = log.steps if log.steps is not None else np.arange(len(log.losses))
    return steps, log.losses


def pick_curves(records: Sequence[TrialRecord], recommendation: Recommendation | None, unstable: int = 3) -> list[tuple[str, TrialRecord]]:
    """(role, record) for the loss-curve figure: the best search trial, the recommended one, a few unstable ones."""
    picks: list[tuple[str, TrialRecord]] = []
    search = [r for r in records if r.kind == "search" and r.state in ("COMPLETE", "PRUNED")]
    stable = [r for r in search if r.verdict == "stable" and r.score is not None]
    if stable:
        picks.append(("best", min(stable, key=lambda r: r.score)))
    if recommendation is not None:
        lr = recommendation.config.lr
        by_number = {r.number: r for r in records}
        backoff = [r for r in records if r.backoff and math.isclose(float(r.params.get("lr", -1)), lr, rel_tol=1e-9)]
        confirm = [r for r in records if r.kind == "confirm" and not r.backoff and r.of == recommendation.evidence.get("trial")]
        runs = backoff or confirm
        chosen = max(runs, key=lambda r: r.score if r.score is not None else math.inf) if runs else by_number.get(recommendation.evidence.get("trial"))
        if chosen is not None:
            picks.append(("recommended, worst seed" if runs else "recommended", chosen))
    ranked = sorted((r for r in search if r.verdict in UNSTABLE), key=lambda r: float(r.params.get("lr", math.inf)))
    chosen_unstable: list[TrialRecord] = []
    for verdict in UNSTABLE:  # one of each kind first, lowest lr first (nearest the edge)
        chosen_unstable += [r for r in ranked if r.verdict == verdict][:1]
    chosen_unstable += [r for r in ranked if r not in chosen_unstable]
    picks += [(r.verdict, r) for r in chosen_unstable[:unstable]]
    return picks


_CURVE_COLORS = {"best": "#1f77b4", "recommended": "#111111", "spiky": VERDICT_COLORS["spiky"],
                 "diverged": VERDICT_COLORS["diverged"], "plateau": VERDICT_COLORS["plateau"]}


def loss_curves_figure(picks: Sequence[tuple[str, TrialRecord]], trials: Mapping[int, FrozenTrial], artifacts_dir: Path) -> go.Figure:
    """Loss curves (log axis) of the picked trials, with their spikes and divergence marked."""
    fig = go.Figure()
    dashes = ["solid", "dash", "dot", "dashdot"]
    missing = []
    for i, (role, r) in enumerate(picks):
        trial = trials.get(r.number)
        curve = read_curve(trial, artifacts_dir) if trial is not None else None
        if curve is None:
            missing.append(r.number)
            continue
        steps, losses = envelope(*curve)
        color = _CURVE_COLORS.get(role.split(",")[0], VERDICT_COLORS.get(r.verdict, "#555"))
        lr = r.params.get("lr")
        name = f"{role}: #{r.number} lr={_fmt(lr)}" + (f" seed {r.seed}" if r.kind == "confirm" else "")
        fig.add_trace(go.Scatter(
            x=steps.tolist(), y=[_sig(v) for v in losses.tolist()], mode="lines", name=_esc(name), legendgroup=str(r.number),
            line={"color": color, "width": 1.6, "dash": "solid" if role in ("best",) or role.startswith("recommended") else dashes[i % 4]},
            hovertemplate=f"#{r.number} ({_esc(r.verdict)}) step %{{x}}: loss %{{y:.4g}}<extra></extra>",
        ))
        spikes = list(r.spike_events)
        sx = [s.get("peak_step", s.get("step")) for s in spikes if s.get("peak")]
        sy = [_sig(s["peak"]) for s in spikes if s.get("peak")]
        if sx:
            fig.add_trace(go.Scatter(
                x=sx, y=sy, mode="markers", name=f"spikes of #{r.number}", legendgroup=str(r.number), showlegend=False,
                marker={"symbol": "triangle-down", "size": 11, "color": color, "line": {"color": "#000", "width": 1}},
                text=[f"spike at step {s.get('step')}: +{_fmt(s.get('size'))} decades, "
                      f"{'recovered' if s.get('recovered') else 'not recovered'}" for s in spikes if s.get("peak")],
                hovertemplate=f"#{r.number}: %{{text}}<extra></extra>",
            ))
        if r.diverged_at is not None:
            finite = [(s, v) for s, v in zip(curve[0].tolist(), curve[1].tolist(), strict=True) if math.isfinite(v) and v > 0 and s <= r.diverged_at]
            if finite:
                fig.add_trace(go.Scatter(
                    x=[finite[-1][0]], y=[_sig(finite[-1][1])], mode="markers", showlegend=False, legendgroup=str(r.number),
                    marker={"symbol": "x", "size": 12, "color": color, "line": {"width": 2}},
                    hovertemplate=f"#{r.number} diverged at step {r.diverged_at}<extra></extra>",
                ))
    fig.update_yaxes(type="log", title_text="loss (log)")
    fig.update_xaxes(title_text="step")
    note = "triangles: spikes (peak); x: where a run diverged"
    if missing:
        note += f"; no curve file for trial(s) {', '.join(f'#{n}' for n in missing)}"
    if not picks:
        note = "no finished trials yet"
    fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=-0.16, xanchor="left", yanchor="top",
                       showarrow=False, font={"size": 10, "color": "#555"})
    _base_layout(fig, "Loss curves: best, recommended and unstable trials", height=470)
    fig.update_layout(margin={"b": 80}, legend={"orientation": "v", "x": 1.0, "xanchor": "right", "y": 1.0, "yanchor": "top",
                                                "bgcolor": "rgba(255,255,255,0.8)"})
    return fig


def _role(r: TrialRecord) -> str:
    """What a confirmation run was for: confirming a candidate, or a probe, rescue or back-off of one."""
    return "probe of " if r.probe else "rescue of " if r.rescue else "back-off of " if r.backoff else ""


def _candidate_label(r: TrialRecord) -> str:
    return f"{_role(r)}#{r.of} lr={_fmt(r.params.get('lr'))}"


def confirmation_figure(records: Sequence[TrialRecord]) -> go.Figure:
    """Each confirmation run's final loss, seed by seed, next to the search run it confirms."""
    by_number = {r.number: r for r in records}
    runs = [r for r in records if r.kind == "confirm" and r.state in ("COMPLETE", "PRUNED", "FAIL")]
    fig = go.Figure()
    labels = list(dict.fromkeys(_candidate_label(r) for r in sorted(runs, key=lambda r: (r.of or 0, r.backoff))))
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    slots = [None, *seeds]  # the search run first, then one slot per seed

    def x_of(label: str, seed: int | None) -> float:
        k = slots.index(seed) if seed in slots else 0
        return labels.index(label) - 0.3 + 0.6 * k / max(1, len(slots) - 1)

    finals = [r.final_loss for r in records if r.final_loss and math.isfinite(r.final_loss) and r.final_loss > 0]
    top = _sig(max(finals) * 3) if finals else 1.0
    for verdict, color in VERDICT_COLORS.items():
        group = [r for r in runs if r.verdict == verdict]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[x_of(_candidate_label(r), r.seed) for r in group], y=[_sig(r.final_loss) or top for r in group],
            mode="markers+text", name=f"{verdict} ({len(group)})", text=[f"{r.seed}" for r in group],
            textposition="top center", textfont={"size": 9, "color": "#555"},
            marker={"color": color, "size": 11, "symbol": ["circle" if _sig(r.final_loss) else "x" for r in group],
                    "line": {"color": "#222", "width": 0.8}},
            customdata=[_hover(r) + f"<br>seed {r.seed}, {r.steps} steps" for r in group], hovertemplate="%{customdata}<extra></extra>",
        ))
    sources = [(label, by_number.get(r.of)) for label, r in {(_candidate_label(r)): r for r in runs if not r.backoff}.items()]
    sources = [(label, src) for label, src in sources if src is not None]
    if sources:
        fig.add_trace(go.Scatter(
            x=[x_of(label, None) for label, _ in sources], y=[_sig(src.final_loss) or top for _, src in sources],
            mode="markers", name="its search run", marker={"symbol": "diamond-open", "size": 12, "color": "#333", "line": {"width": 2}},
            customdata=[_hover(src) for _, src in sources], hovertemplate="search run: %{customdata}<extra></extra>",
        ))
    fig.update_yaxes(type="log", title_text="final loss (log); x: no final loss")
    fig.update_xaxes(title_text="configuration (search trial it confirms); numbers: seeds", tickmode="array",
                     tickvals=list(range(len(labels))), ticktext=[_esc(x) for x in labels],
                     range=[-0.6, max(len(labels), 1) - 0.4], showgrid=False, zeroline=False)
    if not runs:
        fig.add_annotation(text="no confirmation runs yet (stabsearch confirm)", xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False)
    _base_layout(fig, "Confirmation runs: new seeds, longer horizon", height=420)
    return fig


def confirmation_table(records: Sequence[TrialRecord]) -> str:
    """An HTML table of every confirmation run, seed by seed (escaped)."""
    runs = [r for r in records if r.kind == "confirm"]
    if not runs:
        return '<p class="muted">No confirmation runs yet.</p>'
    penalties = any(r.warning_penalty for r in runs)
    head = "".join(f"<th>{h}</th>" for h in ("trial", "confirms", "seed", "steps", "verdict", "spikes", "unrecovered", "final loss", "score", "lr", "eps")
                   + (("early-warning penalty",) if penalties else ()))
    rows = []
    for r in sorted(runs, key=lambda r: (r.of if r.of is not None else -1, r.backoff, r.seed or 0)):
        cells = [f"#{r.number}", _role(r) + (f"#{r.of}" if r.of is not None else "?"), r.seed, r.steps_run or r.steps,
                 r.verdict, r.spikes, r.unrecovered, _fmt(r.final_loss), _fmt(r.score), _fmt(r.params.get("lr")), _fmt(r.params.get("eps"))]
        color = VERDICT_COLORS.get(r.verdict, "#555")
        penalty = (f'<td title="{_esc(r.warning or "")}">+{r.warning_penalty:.3g}</td>' if r.warning_penalty else "<td></td>") if penalties else ""
        rows.append("<tr>" + "".join(
            f'<td><span class="dot" style="background:{color}"></span>{_esc(c)}</td>' if i == 4 else f"<td>{_esc(c)}</td>"
            for i, c in enumerate(cells)) + penalty + "</tr>")
    return f'<table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def verdicts_figure(records: Sequence[TrialRecord]) -> go.Figure:
    """How many search trials and confirmation runs ended in each verdict."""
    fig = go.Figure()
    kinds = ["search", "confirm"]
    for verdict, color in VERDICT_COLORS.items():
        counts = [sum(r.kind == k and r.verdict == verdict for r in records) for k in kinds]
        if any(counts):
            fig.add_trace(go.Bar(x=["search trials", "confirmation runs"], y=counts, name=verdict, marker_color=color,
                                 text=counts, textposition="auto", hovertemplate=f"{verdict}: %{{y}}<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="runs")
    _base_layout(fig, "Verdicts", height=380)
    return fig


def importance_figure(study: optuna.Study) -> go.Figure | None:
    """Optuna's PED-ANOVA parameter importances over the finished search trials, or None with too few."""
    search = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("kind", "search") == "search"
              and t.state == optuna.trial.TrialState.COMPLETE]
    if len(search) < 2:
        return None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(search)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = optuna.visualization.plot_param_importances(
                copy, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target_name="score")
    except (RuntimeError, ValueError, ZeroDivisionError, IndexError, ImportError):
        return None
    _base_layout(fig, "Parameter importances for the score (Optuna PED-ANOVA, finished search trials)", height=380)
    fig.update_layout(showlegend=False)
    return fig


# ---------------------------------------------------------------------------------------------
# The report


@dataclasses.dataclass(frozen=True)
class Report:
    """A built report: its figures (by id), its summary, the markdown note and the HTML page."""

    summary: Summary
    figures: dict[str, go.Figure]
    note_markdown: str
    html: str

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path


def map_pairs(records: Sequence[TrialRecord]) -> list[tuple[str, str]]:
    """The safe-region maps to draw: lr x eps, lr x beta2, and lr x warmup when warmup varied."""
    pairs = [("lr", "eps"), ("lr", "beta2")]
    warmups = {round(float(r.params["warmup"]), 9) for r in records if r.kind == "search" and r.params.get("warmup") is not None}
    if len(warmups) > 1:
        pairs.append(("lr", "warmup"))
    return pairs


def build_figures(study: optuna.Study, records: Sequence[TrialRecord], artifacts_dir: Path,
                  recommendation: Recommendation | None) -> dict[str, go.Figure]:
    """Every figure of the report, keyed by an id that is also a valid optuna-dashboard graph id."""
    space = study.user_attrs.get("space") or {}
    figures: dict[str, go.Figure] = {}
    for x, y in map_pairs(records):
        figures[f"safe-region_{x}-x-{y}"] = safe_region_figure(records, x, y, space, recommendation)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    figures["loss-curves"] = loss_curves_figure(pick_curves(records, recommendation), trials, artifacts_dir)
    figures["confirmation"] = confirmation_figure(records)
    figures["verdicts"] = verdicts_figure(records)
    importance = importance_figure(study)
    if importance is not None:
        figures["param-importances"] = importance
    return figures


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:20px;font-weight:600;word-break:break-all}
header p{margin:4px 0 0;font-size:12px;color:#c4cad6;word-break:break-all}
main{padding:14px 24px 30px;max-width:1500px;margin:0 auto}
h2{font-size:16px;margin:0 0 8px}
section>h2{margin:22px 0 8px}
.top{display:grid;grid-template-columns:1.1fr 1fr;gap:14px}
.card{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.12);font-size:13.5px;min-width:0}
.card ul{margin:0;padding-left:18px}.card li{margin:3px 0;overflow-wrap:anywhere}
.card.ok{border-left:5px solid #2e9d46}.card.none{border-left:5px solid #d62728}
table.settings{border-collapse:collapse;margin-bottom:6px}
table.settings th{text-align:left;font-weight:600;padding:2px 14px 2px 0;color:#4a5263}
table.settings td{padding:2px 0}
code,pre{font-family:"SFMono-Regular",Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f4f5f7;padding:8px;overflow:auto;max-height:360px}
.evidence li.warn{color:#b3261e;font-weight:600}
.hint,.muted{color:#666;font-size:12px}
p.note{color:#4a5263;font-size:12.5px;margin:0 0 8px;max-width:1200px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.fig{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.12);padding:4px;min-width:0}
table.runs{border-collapse:collapse;font-size:12.5px;background:#fff;margin-top:10px;width:100%}
table.runs th,table.runs td{border-bottom:1px solid #e3e5ea;padding:3px 8px;text-align:left}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:5px}
footer{color:#777;font-size:12px;padding:10px 24px 24px}
@media (max-width:1000px){.top,.grid2{grid-template-columns:1fr}}
"""


def _figure_div(fig: go.Figure, div_id: str, first: bool) -> str:
    return pio.to_html(
        fig, full_html=False, include_plotlyjs=first, div_id=div_id, default_width="100%",
        config={"displaylogo": False, "responsive": True},
    )


def render_html(summary: Summary, figures: Mapping[str, go.Figure], records: Sequence[TrialRecord]) -> str:
    """The whole page. Plotly's JavaScript is inlined once, with the first figure."""
    divs: dict[str, str] = {}
    for i, (key, fig) in enumerate(figures.items()):
        divs[key] = f'<div class="fig">{_figure_div(fig, "fig-" + key, first=(i == 0))}</div>'
    maps = [divs[k] for k in figures if k.startswith("safe-region_")]
    rest = {k: v for k, v in divs.items() if not k.startswith("safe-region_")}
    importance = rest.get("param-importances", '<div class="fig"><p class="muted" style="padding:12px">'
                                               "Parameter importances need at least two finished search trials.</p></div>")
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    from stabsearch import __version__

    model = f" &middot; model {_esc(summary.model)}" if summary.model else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stabsearch report: {_esc(summary.study)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>stabsearch report: {_esc(summary.study)}</h1>
<p>storage {_esc(summary.storage)}{model} &middot; generated {_esc(generated)} by stabsearch {_esc(__version__)}</p></header>
<main>
{summary_html(summary)}
<section id="safe-region"><h2>Where the safe region ends</h2>
<p class="note">{_esc(MAPS_NOTE)}</p>
<div class="grid2">{''.join(maps)}</div></section>
<section id="loss-curves"><h2>Loss curves</h2>{rest.get('loss-curves', '')}</section>
<section id="confirmation"><h2>Confirmation, seed by seed</h2>{rest.get('confirmation', '')}{confirmation_table(records)}</section>
<section id="breakdown"><h2>Verdicts and what mattered</h2>
<div class="grid2">{rest.get('verdicts', '')}{importance}</div></section>
</main>
<footer>Every point is one trial; hover for its settings. List them with <code>stabsearch trials --study {_esc(summary.study)}</code>.
Open the study live with <code>stabsearch dashboard</code>.</footer>
</body>
</html>
"""


def build_report(study: optuna.Study, storage: Any, records: Sequence[TrialRecord] | None = None) -> Report:
    """Build the report of ``study``. ``storage`` is the :class:`~stabsearch.study.storage.Storage` it lives in
    (for the curve files and the URL shown with its password hidden)."""
    records = study_records(study) if records is None else list(records)
    try:
        rec: Recommendation | None = recommend(records, study.study_name)
        reason = None
    except NothingToRecommend as exc:
        rec, reason = None, str(exc)
    summary = summarize(study, records, storage, rec, reason)
    figures = build_figures(study, records, Path(storage.artifacts_dir), rec)
    return Report(summary=summary, figures=figures, note_markdown=summary_markdown(summary),
                  html=render_html(summary, figures, records))


def write_report(study: optuna.Study, storage: Any, path: str | Path | None = None) -> tuple[Path, Report]:
    """Build and write the report (default ``studies/<study>.html``); returns the path and the report."""
    report = build_report(study, storage)
    return report.write(path or default_report_path(study.study_name)), report
