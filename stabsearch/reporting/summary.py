"""The written part of the report: what was searched and at what cost, what came out, what to copy.

:func:`summarize` gathers the facts from a study into a :class:`Summary`;
:func:`summary_html` writes them as the page's top block and
:func:`summary_markdown` as the study's note in optuna-dashboard. Both escape
every value. The storage appears only as
:attr:`stabsearch.study.storage.Storage.shown`, with its password hidden.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stabsearch.reporting.style import VERDICT_ORDER, duration, esc, fmt
from stabsearch.study.recommend import UNSTABLE, Recommendation
from stabsearch.study.record import TrialRecord
from stabsearch.study.trial_attrs import SECONDS, STUDY_MODEL, STUDY_SPACE, STUDY_STEPS, typed_attr

if TYPE_CHECKING:
    import optuna


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
        model=attrs.get(STUDY_MODEL),
        steps_per_trial=attrs.get(STUDY_STEPS),
        searched=_space_lines(attrs.get(STUDY_SPACE) or {}),
        search_trials=sum(r.kind == "search" for r in finished),
        confirm_runs=sum(r.kind == "confirm" for r in finished),
        unfinished=len(records) - len(finished),
        steps_run=int(sum(r.steps_run or 0 for r in finished)),
        train_seconds=float(sum(typed_attr(t.user_attrs, SECONDS, 0.0) for t in trials)),
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
            f"{ev['divergences']} divergences, {ev['spikes']} spikes, worst final loss {fmt(ev['final_loss'])}."
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
               f"{duration(s.train_seconds)} of training ({duration(s.wall_seconds)} wall clock)")
    if s.unfinished:
        compute += f"; {s.unfinished} still running or waiting"
    what = f"{s.model or 'model'}" + (f", {s.steps_per_trial} steps per search trial" if s.steps_per_trial else "")
    lines = [("Searched", f"{searched} on {what}"), ("Compute", compute), ("Found", verdicts)]
    if s.best:
        b = s.best
        lines.append(("Best", f"the lowest search score, trial #{b['number']} at lr={b['lr']:.3g}: final loss {fmt(b['final_loss'])}, "
                              f"score {fmt(b['score'])}" + (f" (with an early-warning penalty of +{b['penalty']:.3g})" if b.get("penalty") else "")))
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
    out = [f"## stabsearch: {esc(s.study)}", ""]
    out += [f"- **{label}**: {esc(text)}" for label, text in _summary_lines(s)]
    out.append("")
    if s.recommendation is not None:
        out.append(f"**Recommended**: `{esc(_settings_line(s.recommendation))}`")
        out.append("")
        out += [f"- {esc(line)}" for line in _evidence_lines(s.recommendation)]
    else:
        out.append(f"**No recommendation**: {esc(s.nothing_reason or 'unknown')}")
    out += ["", f"Storage: `{esc(s.storage)}`. Full report: `stabsearch report --study {esc(s.study)}`; "
            "each trial's loss curve is its `curve_artifact` (CSV)."]
    return "\n".join(out) + "\n"


def summary_html(s: Summary) -> str:
    """The summary block of the report; every value is escaped."""
    items = "".join(f"<li><b>{esc(label)}</b>: {esc(text)}</li>" for label, text in _summary_lines(s))
    if s.recommendation is not None:
        rec = s.recommendation
        sched = rec["schedule"]
        rows = [
            ("optimizer", rec["optimizer"]), ("lr", f"{rec['lr']:.4g}"), ("eps", f"{rec['eps']:.3g}"),
            ("betas", f"({rec['betas'][0]:.4g}, {rec['betas'][1]:.6g})"), ("weight_decay", f"{rec['weight_decay']:.3g}"),
            ("schedule", f"{sched['name']}, warmup {sched['warmup_steps']} steps" + (f" of {sched['total_steps']}" if "total_steps" in sched else "")),
        ]
        table = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>" for k, v in rows)
        evidence = "".join(
            f'<li class="{"warn" if line.startswith("Warning") or "NOT" in line else ""}">{esc(line)}</li>' for line in _evidence_lines(rec)
        )
        code = f"<details><summary>Python code that builds it</summary><pre>{esc(s.python_code)}</pre></details>" if s.python_code else ""
        card = (f'<div class="card ok" id="recommendation"><h2>What to copy</h2><table class="settings">{table}</table>'
                f'<ul class="evidence">{evidence}</ul>{code}'
                f'<p class="hint">Also: <code>stabsearch recommend --study {esc(s.study)} --format yaml|json|toml|python</code></p></div>')
    else:
        card = (f'<div class="card none" id="recommendation"><h2>No recommendation</h2>'
                f"<p>{esc(s.nothing_reason or 'unknown')}</p></div>")
    return f'<div class="top"><div class="card" id="summary"><h2>Summary</h2><ul>{items}</ul></div>{card}</div>'

