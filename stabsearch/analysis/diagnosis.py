"""Turn an :class:`~stabsearch.analysis.verdict.Analysis` into advice a person can act on.

Pure: the analysis and what is known of the run (learning rate, eps, beta1,
sharpness, dead layers) in, sentences out. The causes are the README's classic
instabilities; the eps bound is Adam's eps-dominated stability rule
``lr / eps < (2 + 2*beta1) / ((1 - beta1) * lambda_max)`` (the README's "Inside Adam").
"""

from __future__ import annotations

import dataclasses
import math

from stabsearch.analysis.early_warning import eps_floor
from stabsearch.analysis.verdict import Analysis


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What is known of the run beyond its loss curve (all optional)."""

    lr: float | None = None
    eps: float | None = None
    beta1: float = 0.9
    sharpness: float | None = None  # top Hessian eigenvalue, lambda_max
    dead_layers: tuple[str, ...] = ()


def _eps_advice(facts: RunFacts) -> str:
    if facts.lr is not None and facts.sharpness:
        return f"raise eps to at least {eps_floor(facts.lr, facts.sharpness, facts.beta1):.2g}"
    if facts.eps is not None:
        return f"raise eps to at least {max(100 * facts.eps, 1e-6):.0e} (100x or more; 1e-4 to 1e-1 is the usual fix)"
    return "raise eps to 1e-6 or more (1e-4 to 1e-1 is the usual fix)"


def _num(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _end(analysis: Analysis) -> float:
    """The level the run ended at, as the progress was measured (``initial * (1 - progress)``)."""
    return analysis.initial_loss * (1.0 - analysis.progress)


def _plateau_advice(analysis: Analysis, facts: RunFacts) -> str:
    """What a collapsed (or untrained) run says, by the rule that found it."""
    cause = analysis.cause
    start, end = _num(analysis.initial_loss), _num(_end(analysis))
    if cause == "dead_layer" or facts.dead_layers:
        dead = f" (dead ReLU layer: {', '.join(facts.dead_layers)})" if facts.dead_layers else ""
        return (
            f"collapsed: a hidden layer is dead{dead}, so the output no longer depends on the input; too high a "
            "learning rate killed it early on; lower the learning rate about 10x"
        )
    if cause == "chance":
        return (
            f"stuck at or above the chance loss {analysis.chance_loss:.4g} (ln K; the loss ended at {end}): the model "
            "predicts the class prior; too high a learning rate collapsed it early on; lower the learning rate "
            "about 10x (a loss that never moved from its start can also mean a learning rate far too small: "
            "compare a run 10x higher)"
        )
    if cause == "rebound":
        return (
            f"the loss exploded in the first steps and fell back no lower than its start ({start} -> {end}): "
            "the learning rate is far too high and collapsed the model; cut it 10x or add warmup"
        )
    return (
        f"the run did not train: the loss ended no lower than its start ({start} -> {end}) and is not falling. "
        "Either the model collapsed at once (a learning rate too high) or the learning rate is far too small to "
        "move it; runs at 10x lower and 10x higher tell which (pass --classes K to test for chance)"
    )


def diagnose(analysis: Analysis, facts: RunFacts | None = None) -> list[str]:
    """Likely causes and fixes, most important first.

    Args:
        analysis: what :func:`~stabsearch.analysis.verdict.analyze` found on the curve.
        facts: what is known of the run (learning rate, eps, beta1, sharpness); default none.

    Example:
        >>> from stabsearch.analysis.verdict import analyze
        >>> diagnose(analyze([2.31 - 3e-5 * i for i in range(1000)]))[0][:48]
        'learning too slowly: the loss is only 1.1% below'
        >>> diagnose(analyze([1.0] * 50 + [0.5] * 50))[0]
        'no instability found: the loss trained without late spikes or divergence'
    """
    facts = facts or RunFacts()
    n = max(1, analysis.steps)
    small_eps = facts.eps is None or facts.eps < 1e-5
    advice: list[str] = []
    if analysis.verdict == "diverged":
        at = analysis.diverged_at or 0
        trained = math.isfinite(analysis.best_loss) and analysis.best_loss <= 0.1 * analysis.initial_loss
        if not trained:
            advice.append(
                f"diverged at step {at} before the loss fell a decade: the learning rate is far too high "
                "for this model; cut it 10x or add warmup"
            )
        else:
            advice.append(
                f"diverged late (step {at}) after training well: Adam's second moment collapsed near the optimum, "
                f"so m/(sqrt(v)+eps) blew up; {_eps_advice(facts)}, or lower the learning rate"
            )
    elif analysis.verdict == "plateau":
        advice.append(_plateau_advice(analysis, facts))
    elif analysis.verdict == "slow" and analysis.cause == "no_clear_progress":
        advice.append(
            f"no clear progress: the loss ended at {_num(_end(analysis))} from {_num(analysis.initial_loss)}, within "
            "the mini-batch noise of its start, and is not measurably falling; nothing points to a collapse, so the "
            "learning rate is likely too small (or the run too short to tell): raise it or train longer. This is no "
            "sign of instability"
        )
    elif analysis.verdict == "slow":
        advice.append(
            f"learning too slowly: the loss is only {max(analysis.progress, 0.0):.1%} below its start "
            f"({_num(analysis.initial_loss)} -> {_num(_end(analysis))}) and still falling; raise the learning rate "
            "(about 3-10x) or train longer. This is no sign of instability"
        )
    late = [s for s in analysis.spikes if s.step >= n // 2] if analysis.spikes else []
    if late:
        big = max(late, key=lambda s: s.size)
        cause = (
            f"{_eps_advice(facts)} or cut the learning rate"
            if small_eps
            else "eps is already large, so cut the learning rate or add a decaying schedule"
        )
        advice.append(
            f"{len(late)} late spike(s), the largest {big.size:.2g} decades at step {big.step}: "
            f"the pattern of Adam's second moment collapsing; {cause}"
        )
    unrecovered = [s for s in analysis.spikes if not s.recovered]
    if unrecovered and analysis.verdict != "diverged":
        advice.append(
            f"the loss never came back after the spike at step {unrecovered[0].step}: "
            "the run jumped to a worse region; lower the learning rate"
        )
    if (
        analysis.verdict != "diverged"
        and math.isfinite(analysis.final_loss)
        and math.isfinite(analysis.best_loss)
        and analysis.best_loss > 0
        and analysis.final_loss > 1.5 * analysis.best_loss
    ):
        advice.append(
            f"the loss rose from its best {analysis.best_loss:.3g} to {analysis.final_loss:.3g} late in the run: "
            "a slow drift up; use a decaying schedule or a lower learning rate"
        )
    if not advice:
        advice.append("no instability found: the loss trained without late spikes or divergence")
    return advice


def format_text(analysis: Analysis, advice: list[str], source: str = "") -> str:
    """A short report for the terminal.

    Args:
        analysis: what :func:`~stabsearch.analysis.verdict.analyze` found on the curve.
        advice: the sentences of :func:`diagnose`.
        source: where the curve came from (a file name), printed first.

    Example:
        >>> from stabsearch.analysis.verdict import analyze
        >>> result = analyze([1.0] * 50 + [0.5] * 50)
        >>> print(format_text(result, diagnose(result), source="run.csv").splitlines()[0])
        run.csv: stable
    """
    fmt = _num
    p = analysis.progress
    progress = "n/a" if not math.isfinite(p) else f"{abs(p):.1%} {'below' if p >= 0 else 'above'} the start"
    lines = [
        f"{source + ': ' if source else ''}{analysis.verdict}",
        f"  values: {analysis.steps}, start loss {fmt(analysis.initial_loss)} (the first value), "
        f"final loss {fmt(analysis.final_loss)}, best (second half) {fmt(analysis.best_loss)}",
        f"  progress: {progress} (the end level: the median of the last quarter)",
        f"  score: {fmt(analysis.score)}",
        f"  divergence: {'step ' + str(analysis.diverged_at) if analysis.diverged_at is not None else 'none'}",
        f"  spikes: {len(analysis.spikes)}",
    ]
    for s in analysis.spikes[:20]:
        back = f"recovered after {s.recover_steps} steps" if s.recovered else "not recovered"
        lines.append(f"    step {s.step}: +{s.size:.2f} decades ({fmt(s.before)} -> {fmt(s.peak)}), {back}")
    if len(analysis.spikes) > 20:
        lines.append(f"    ... {len(analysis.spikes) - 20} more")
    lines.append("likely cause:")
    lines += [f"  - {a}" for a in advice]
    return "\n".join(lines)
