"""The report's figures: safe-region maps, loss curves, confirmation runs, verdicts and importances.

Each is a plain ``plotly`` figure, so :mod:`stabsearch.reporting.dashboard`
saves the same ones on the study for optuna-dashboard; :func:`build_figures`
makes them all, keyed by an id that is also a valid optuna-dashboard graph id.
:func:`confirmation_table` is the HTML table of confirmation runs, seed by
seed, that sits under their figure.
Every string a user wrote (parameter values, error text) goes through
:func:`~stabsearch.reporting.style.esc` before it reaches a figure's text.

Example:
    >>> map_pairs([])
    [('lr', 'eps'), ('lr', 'beta2')]
    >>> fig = verdicts_figure([])
    >>> fig.layout.title.text, len(fig.data)
    ('Verdicts', 0)
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial

from stabsearch.reporting.curves import envelope, read_curve
from stabsearch.reporting.instability import BANDWIDTH, instability_probability
from stabsearch.reporting.style import VERDICT_COLORS, esc, fmt, sig
from stabsearch.study.recommend import UNSTABLE, Recommendation
from stabsearch.study.record import TrialRecord
from stabsearch.study.trial_attrs import STUDY_SPACE, is_search

#: Points per side of the grid the instability shading is estimated on.
GRID = 60
KERNEL_NOTE = f"shading: P(unstable), Gaussian kernel estimate in log10 space (bandwidth {BANDWIDTH:g} of each axis)"
MAPS_NOTE = (
    "Each point is one search trial, coloured by its verdict; hover for its settings. The shading beneath is the "
    "estimated probability that a run there goes unstable (spiky, diverged or plateau): a Gaussian kernel estimate "
    f"(Nadaraya-Watson) in log10 space with a bandwidth of {BANDWIDTH:g} of each axis, shrunk towards the study's "
    "overall rate where trials are sparse. Each map averages over the other parameters. The star is the "
    "recommendation, the green bar the stable basin along the learning rate, the dotted line its margin to the "
    "nearest learning rate that went unstable."
)


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
    parts = [f"trial #{r.number} ({esc(r.kind)}): {esc(r.verdict)}"]
    for key in ("optimizer", "lr", "eps", "beta1", "beta2", "weight_decay", "schedule", "warmup"):
        if key in p:
            value = f"{p[key]:.6g}" if key == "beta2" and isinstance(p[key], float) else fmt(p[key])
            parts.append(f"{key}={esc(value)}")
    parts.append(f"score={fmt(r.score)} final loss={fmt(r.final_loss)} spikes={r.spikes}")
    if r.warning_penalty:
        parts.append(f"early-warning penalty +{r.warning_penalty:.3g}: {esc((r.warning or '')[:120])}")
    if r.error:
        parts.append(f"error: {esc(r.error[:120])}")
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
            x=[sig(10**u) if ax.log else float(u) for u in gu], y=[sig(10**v) if ay.log else float(v) for v in gv],
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
            x=[sig(vx) if ax.log else vx for _, vx, _ in group], y=[sig(vy) if ay.log else vy for _, _, vy in group],
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
        name = f"{role}: #{r.number} lr={fmt(lr)}" + (f" seed {r.seed}" if r.kind == "confirm" else "")
        fig.add_trace(go.Scatter(
            x=steps.tolist(), y=[sig(v) for v in losses.tolist()], mode="lines", name=esc(name), legendgroup=str(r.number),
            line={"color": color, "width": 1.6, "dash": "solid" if role in ("best",) or role.startswith("recommended") else dashes[i % 4]},
            hovertemplate=f"#{r.number} ({esc(r.verdict)}) step %{{x}}: loss %{{y:.4g}}<extra></extra>",
        ))
        spikes = list(r.spike_events)
        sx = [s.get("peak_step", s.get("step")) for s in spikes if s.get("peak")]
        sy = [sig(s["peak"]) for s in spikes if s.get("peak")]
        if sx:
            fig.add_trace(go.Scatter(
                x=sx, y=sy, mode="markers", name=f"spikes of #{r.number}", legendgroup=str(r.number), showlegend=False,
                marker={"symbol": "triangle-down", "size": 11, "color": color, "line": {"color": "#000", "width": 1}},
                text=[f"spike at step {s.get('step')}: +{fmt(s.get('size'))} decades, "
                      f"{'recovered' if s.get('recovered') else 'not recovered'}" for s in spikes if s.get("peak")],
                hovertemplate=f"#{r.number}: %{{text}}<extra></extra>",
            ))
        if r.diverged_at is not None:
            finite = [(s, v) for s, v in zip(curve[0].tolist(), curve[1].tolist(), strict=True) if math.isfinite(v) and v > 0 and s <= r.diverged_at]
            if finite:
                fig.add_trace(go.Scatter(
                    x=[finite[-1][0]], y=[sig(finite[-1][1])], mode="markers", showlegend=False, legendgroup=str(r.number),
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
    return f"{_role(r)}#{r.of} lr={fmt(r.params.get('lr'))}"


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
    top = sig(max(finals) * 3) if finals else 1.0
    for verdict, color in VERDICT_COLORS.items():
        group = [r for r in runs if r.verdict == verdict]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[x_of(_candidate_label(r), r.seed) for r in group], y=[sig(r.final_loss) or top for r in group],
            mode="markers+text", name=f"{verdict} ({len(group)})", text=[f"{r.seed}" for r in group],
            textposition="top center", textfont={"size": 9, "color": "#555"},
            marker={"color": color, "size": 11, "symbol": ["circle" if sig(r.final_loss) else "x" for r in group],
                    "line": {"color": "#222", "width": 0.8}},
            customdata=[_hover(r) + f"<br>seed {r.seed}, {r.steps} steps" for r in group], hovertemplate="%{customdata}<extra></extra>",
        ))
    sources = [(label, by_number.get(r.of)) for label, r in {(_candidate_label(r)): r for r in runs if not r.backoff}.items()]
    sources = [(label, src) for label, src in sources if src is not None]
    if sources:
        fig.add_trace(go.Scatter(
            x=[x_of(label, None) for label, _ in sources], y=[sig(src.final_loss) or top for _, src in sources],
            mode="markers", name="its search run", marker={"symbol": "diamond-open", "size": 12, "color": "#333", "line": {"width": 2}},
            customdata=[_hover(src) for _, src in sources], hovertemplate="search run: %{customdata}<extra></extra>",
        ))
    fig.update_yaxes(type="log", title_text="final loss (log); x: no final loss")
    fig.update_xaxes(title_text="configuration (search trial it confirms); numbers: seeds", tickmode="array",
                     tickvals=list(range(len(labels))), ticktext=[esc(x) for x in labels],
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
                 r.verdict, r.spikes, r.unrecovered, fmt(r.final_loss), fmt(r.score), fmt(r.params.get("lr")), fmt(r.params.get("eps"))]
        color = VERDICT_COLORS.get(r.verdict, "#555")
        penalty = (f'<td title="{esc(r.warning or "")}">+{r.warning_penalty:.3g}</td>' if r.warning_penalty else "<td></td>") if penalties else ""
        rows.append("<tr>" + "".join(
            f'<td><span class="dot" style="background:{color}"></span>{esc(c)}</td>' if i == 4 else f"<td>{esc(c)}</td>"
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
    search = [t for t in study.get_trials(deepcopy=False) if is_search(t)
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
    space = study.user_attrs.get(STUDY_SPACE) or {}
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
