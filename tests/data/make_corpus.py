"""Rebuild the labelled loss-curve corpus in ``tests/data/corpus/``.

    python tests/data/make_corpus.py              # every curve
    python tests/data/make_corpus.py --hand-only  # only the hand-made curves (no training)

Each curve is one CSV (``step,loss``) and one entry of ``corpus/labels.json``::

    {"verdict": "stable" | "spiky" | "diverged" | "plateau" | "slow",
     "events": [true spike steps],          # where each true spike starts
     "diverged_at": step or null,
     "classes": K or null,                  # pass as --classes K
     "warmup": N,                           # pass as --warmup N (steps)
     "recipe": "how it was made",
     "source": "hand-made" | "objective",
     "dead_layers": [names]}                # objective runs only: hidden ReLU layers the trainer
                                            # found completely dead at the end of the run

Two kinds of curve:

* **hand-made** (``HAND_MADE``): a smooth trend times multiplicative mini-batch
  noise, drawn from ``numpy.random.default_rng(seed)`` with a fixed seed, plus
  injected events. The labels are *by construction*: an event's step is the
  step where the injected spike starts, and ``diverged_at`` is the first
  non-finite value or where the noise-free curve rises above its starting
  loss (docs/design.md, Diverged: a loss above L0 is divergence; ``crossing``).
  Values are written with 7 significant digits and the functions return
  exactly the rounded values, so ``tests/test_corpus.py`` can check that
  regenerating a hand-made curve gives the stored file byte for byte.
* **objective** (``OBJECTIVE_RUNS``): real runs of the model modules in
  ``objectives/`` trained with stabsearch's own trainer (``train_trial``, on
  CPU, one thread, fixed seed; float32 losses written with 9 significant
  digits, which round-trips float32). Their labels come from the transparent
  rule of ``label_run`` (``run_events``, ``run_divergence``), which is
  independent of stabsearch's spike detector, and were checked by eye on
  plots. They may differ across machines by float noise, so the test only
  checks that the stored file loads and matches its label, and that the rule
  applied to the stored file gives the label.

The labels say what a careful engineer would call the curve, not what
stabsearch's detector happens to find; ``bench/detectors.py`` measures the
detectors against them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
LABELS = CORPUS / "labels.json"
ROOT = HERE.parent.parent

HAND_DIGITS = 7  # significant digits of hand-made values
RUN_DIGITS = 9  # significant digits of trained (float32) values: exact round trip

L0 = 2.3  # starting loss of most hand-made curves (about ln 10)


# --------------------------------------------------------------------------- shared pieces


@dataclasses.dataclass
class Curve:
    name: str
    losses: np.ndarray
    steps: np.ndarray
    label: dict

    def csv(self, digits: int) -> str:
        return csv_text(self.steps, self.losses, digits)


def csv_text(steps: np.ndarray, losses: np.ndarray, digits: int) -> str:
    """The file's text: a ``step,loss`` header and one row per logged value."""
    rows = ["step,loss"]
    rows += [f"{int(s)},{float(v):.{digits}g}" for s, v in zip(steps, losses)]
    return "\n".join(rows) + "\n"


def rounded(x: np.ndarray, digits: int = HAND_DIGITS) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits, exactly as the CSV stores it."""
    return np.array([float(f"{float(v):.{digits}g}") for v in x], dtype=np.float64)


def crossing(noiseless: np.ndarray, steps: np.ndarray, start: float) -> int:
    """Step where the noise-free curve first rises above ``start`` (its own starting value).

    The true divergence step of a hand-made curve that rises past its start:
    The rule of docs/design.md (a loss above L0) applied to the curve without its noise.
    """
    above = np.flatnonzero(np.asarray(noiseless) > start)
    return int(steps[above[0]])


def label(verdict: str, events: list[int], recipe: str, *, diverged_at: int | None = None, classes: int | None = None,
          warmup: int = 0, source: str = "hand-made") -> dict:
    return {
        "verdict": verdict,
        "events": [int(e) for e in events],
        "diverged_at": None if diverged_at is None else int(diverged_at),
        "classes": classes,
        "warmup": int(warmup),
        "recipe": recipe,
        "source": source,
    }


def exp_trend(n: int, *, start: float = L0, floor: float = 0.05, tau: float = 300.0) -> np.ndarray:
    """``(start - floor) * exp(-t / tau) + floor``."""
    t = np.arange(n, dtype=np.float64)
    return (start - floor) * np.exp(-t / tau) + floor


def lognormal(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Multiplicative mini-batch noise with median 1: ``exp(sigma * N(0, 1))``."""
    return np.exp(sigma * rng.standard_normal(n))


def spike(n: int, at: int, factor: float, *, tau: float = 6.0, settle: float = 1.0) -> np.ndarray:
    """A multiplier that jumps to ``factor`` at ``at`` and relaxes to ``settle``.

    ``log m(t) = log(settle) + (log(factor) - log(settle)) * exp(-(t - at) / tau)``
    for ``t >= at``, 1 before. ``settle=1`` is a spike that recovers (within
    1.15x after ``tau * ln(ln(factor) / ln(1.15))`` steps); ``settle > 1`` one
    that lands on a raised level and never recovers.
    """
    t = np.arange(n, dtype=np.float64)
    m = np.ones(n)
    after = t >= at
    m[after] = np.exp(math.log(settle) + (math.log(factor) - math.log(settle)) * np.exp(-(t[after] - at) / tau))
    return m


def steps_of(n: int, every: int = 1) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * every


# --------------------------------------------------------------------------- hand-made curves
#
# Every function builds one curve from its own seeded generator. The recipe
# string repeats the parameters so that labels.json alone tells how to make it.


def clean_lognormal_030() -> Curve:
    rng = np.random.default_rng(101)
    n = 3000
    x = rounded(exp_trend(n, tau=300) * lognormal(rng, n, 0.3))
    return Curve("clean_lognormal_030", x, steps_of(n), label(
        "stable", [], "2.25*exp(-t/300)+0.05 times lognormal noise sigma=0.3 (seed 101); no event"))


def clean_lognormal_040() -> Curve:
    rng = np.random.default_rng(102)
    n = 3000
    t = np.arange(n, dtype=np.float64)
    trend = 2.28 / (1 + t / 50) ** 0.7 + 0.02
    x = rounded(trend * lognormal(rng, n, 0.4))
    return Curve("clean_lognormal_040", x, steps_of(n), label(
        "stable", [], "power law 2.28/(1+t/50)^0.7+0.02 times lognormal noise sigma=0.4 (seed 102); no event"))


def clean_lognormal_050() -> Curve:
    rng = np.random.default_rng(103)
    n = 3000
    x = rounded(exp_trend(n, floor=0.3, tau=400) * lognormal(rng, n, 0.5))
    return Curve("clean_lognormal_050", x, steps_of(n), label(
        "stable", [], "2.0*exp(-t/400)+0.3 (a hard task, high floor) times lognormal noise sigma=0.5 (seed 103); no event"))


def clean_student_t() -> Curve:
    rng = np.random.default_rng(104)
    n = 3000
    noise = np.exp(0.15 * rng.standard_t(3, n))
    x = rounded(exp_trend(n, tau=250) * noise)
    return Curve("clean_student_t", x, steps_of(n), label(
        "stable", [], "2.25*exp(-t/250)+0.05 times exp(0.15*T) with T Student-t, 3 degrees of freedom "
        "(heavy-tailed mini-batch noise, seed 104); no event: the outliers are noise draws, not a change in the run"))


def clean_tiny_drift() -> Curve:
    rng = np.random.default_rng(105)
    n = 3000
    t = np.arange(n, dtype=np.float64)
    converge = np.geomspace(L0, 1e-10, 400)
    # Drift: log10(loss) wanders between -12 and -9 (two slow sines), plus lognormal noise sigma=0.3
    log10 = -10.5 + 1.0 * np.sin(t / 170) + 0.35 * np.sin(t / 47 + 1.0)
    drift = 10.0 ** log10 * lognormal(rng, n, 0.3)
    drift = np.clip(drift, 1e-12, 1e-9)
    x = rounded(np.concatenate([converge, drift[400:]]))
    return Curve("clean_tiny_drift", x, steps_of(n), label(
        "stable", [], "geometric fall from 2.3 to 1e-10 over 400 steps, then 10^(-10.5+sin(t/170)+0.35 sin(t/47+1)) "
        "times lognormal sigma=0.3 (seed 105), clipped to [1e-12, 1e-9]: a converged run wiggling near zero; no event"))


def clean_lr_drops() -> Curve:
    rng = np.random.default_rng(106)
    n = 3000
    t = np.arange(n, dtype=np.float64)
    trend = exp_trend(n, floor=0.4, tau=200)
    trend = trend * np.where(t >= 1000, 0.5, 1.0) * np.where(t >= 2000, 0.5, 1.0)
    x = rounded(trend * lognormal(rng, n, 0.2))
    return Curve("clean_lr_drops", x, steps_of(n), label(
        "stable", [], "1.9*exp(-t/200)+0.4, halved at steps 1000 and 2000 (step learning-rate drops), times lognormal "
        "sigma=0.2 (seed 106); sudden drops are not spikes; no event"))


def clean_logged_every_10() -> Curve:
    rng = np.random.default_rng(107)
    n = 3000
    x = rounded(exp_trend(n, tau=300) * lognormal(rng, n, 0.3))
    return Curve("clean_logged_every_10", x, steps_of(n, 10), label(
        "stable", [], "steps 0,10,...,29990: 2.25*exp(-i/300)+0.05 (i the row) times lognormal sigma=0.3 (seed 107); no event"))


def clean_warmup_bump() -> Curve:
    rng = np.random.default_rng(108)
    n = 3000
    t = np.arange(n, dtype=np.float64)
    bump = 1 + 0.1 * np.exp(-((t - 40) / 20) ** 2)  # a smooth 10% rise while the learning rate warms up
    x = rounded(exp_trend(n, tau=300) * bump * lognormal(rng, n, 0.1))
    return Curve("clean_warmup_bump", x, steps_of(n), label(
        "stable", [], "2.25*exp(-t/300)+0.05 times a smooth 10% Gaussian bump at step 40 (width 20) during a 300-step "
        "warmup, times lognormal sigma=0.1 (seed 108); a slow wiggle is not a spike; no event", warmup=300))


def clean_classes10() -> Curve:
    rng = np.random.default_rng(109)
    n = 3000
    x = rounded(exp_trend(n, start=math.log(10), floor=0.4, tau=500) * lognormal(rng, n, 0.15))
    return Curve("clean_classes10", x, steps_of(n), label(
        "stable", [], "10-class run that learns: (ln 10-0.4)*exp(-t/500)+0.4 times lognormal sigma=0.15 (seed 109); "
        "not at chance; no event", classes=10))


def spiky_late_recovering() -> Curve:
    rng = np.random.default_rng(201)
    n = 3000
    m = spike(n, 1800, 50.0, tau=8) * spike(n, 2500, 200.0, tau=1.5)
    x = rounded(exp_trend(n, tau=300) * m * lognormal(rng, n, 0.3))
    return Curve("spiky_late_recovering", x, steps_of(n), label(
        "spiky", [1800, 2500], "2.25*exp(-t/300)+0.05 times lognormal sigma=0.3 (seed 201), with two late spikes that "
        "recover: x50 at step 1800 (relaxing with time constant 8 steps) and x200 at step 2500 (time constant 1.5)"))


def spiky_late_unrecovered() -> Curve:
    rng = np.random.default_rng(202)
    n = 3000
    m = spike(n, 2200, 40.0, tau=10, settle=8.0)
    x = rounded(exp_trend(n, tau=300) * m * lognormal(rng, n, 0.2))
    return Curve("spiky_late_unrecovered", x, steps_of(n), label(
        "spiky", [2200], "2.25*exp(-t/300)+0.05 times lognormal sigma=0.2 (seed 202); at step 2200 a x40 spike that "
        "settles on a level 8x the old one (about 0.4, below the starting loss: not divergence) and never recovers"))


def spiky_late_mixed() -> Curve:
    rng = np.random.default_rng(203)
    n = 3000
    m = spike(n, 1600, 100.0, tau=5) * spike(n, 2400, 30.0, tau=15, settle=5.0)
    x = rounded(exp_trend(n, floor=0.03, tau=250) * m * lognormal(rng, n, 0.35))
    return Curve("spiky_late_mixed", x, steps_of(n), label(
        "spiky", [1600, 2400], "2.27*exp(-t/250)+0.03 times lognormal sigma=0.35 (seed 203); x100 spike at 1600 that "
        "recovers (time constant 5), x30 spike at 2400 that settles 5x higher and never recovers"))


def spiky_moderate() -> Curve:
    rng = np.random.default_rng(204)
    n = 3000
    m = spike(n, 1700, 10.0, tau=4) * spike(n, 2300, 10.0, tau=4) * spike(n, 2800, 10.0, tau=4)
    x = rounded(exp_trend(n, tau=300) * m * lognormal(rng, n, 0.3))
    return Curve("spiky_moderate", x, steps_of(n), label(
        "spiky", [1700, 2300, 2800], "2.25*exp(-t/300)+0.05 times lognormal sigma=0.3 (seed 204), with three moderate "
        "late spikes of x10 (time constant 4 steps) at 1700, 2300, 2800: 7.7 noise sigmas each, plain to see on a plot"))


def spiky_early_unrecovered() -> Curve:
    rng = np.random.default_rng(205)
    n = 3000
    m = spike(n, 900, 20.0, tau=10, settle=5.0)
    x = rounded(exp_trend(n, tau=200) * m * lognormal(rng, n, 0.2))
    return Curve("spiky_early_unrecovered", x, steps_of(n), label(
        "spiky", [900], "2.25*exp(-t/200)+0.05 times lognormal sigma=0.2 (seed 205); at step 900 (first half) a x20 "
        "spike that settles 5x higher and never recovers: spiky because unrecovered"))


def spike_after_warmup() -> Curve:
    rng = np.random.default_rng(206)
    n = 3000
    t = np.arange(n, dtype=np.float64)
    trend = 1.5 * np.exp(-t / 60) + 0.5 * np.exp(-t / 1000) + 0.05
    m = spike(n, 230, 4.0, tau=6)
    x = rounded(trend * m * lognormal(rng, n, 0.1))
    return Curve("spike_after_warmup", x, steps_of(n), label(
        "stable", [230], "1.5*exp(-t/60)+0.5*exp(-t/1000)+0.05 times lognormal sigma=0.1 (seed 206), warmup 200 steps; "
        "at step 230, right after warmup, a x4 spike (to about 2, below the 2.3 start) that recovers (time constant "
        "6): an event in the first half that recovers, so the verdict stays stable", warmup=200))


def slow_late_rise() -> Curve:
    rng = np.random.default_rng(301)
    n = 3000
    t = np.arange(n, dtype=np.float64)
    rise = np.where(t >= 1500, 12.0 ** ((t - 1500) / 1500), 1.0)  # x12 over the second half
    x = rounded(exp_trend(n, tau=250) * rise * lognormal(rng, n, 0.2))
    return Curve("slow_late_rise", x, steps_of(n), label(
        "stable", [], "2.25*exp(-t/250)+0.05 times lognormal sigma=0.2 (seed 301), times 12^((t-1500)/1500) from step "
        "1500: the loss creeps up 12x (to about 0.6, below the 2.3 start) over the second half. Not a spike event "
        "(no sudden rise), not divergence (never above L0), not a plateau: per docs/design.md the verdict is stable and the "
        "score's late-rise term (final loss against the best of the second half) is what penalises it"))


def slow_rise_to_divergence() -> Curve:
    rng = np.random.default_rng(302)
    n = 3000
    t = np.arange(n, dtype=np.float64)
    rise = np.where(t >= 1000, 100.0 ** ((t - 1000) / 2000), 1.0)
    noiseless = exp_trend(n, floor=0.1, tau=200) * rise
    x = rounded(noiseless * lognormal(rng, n, 0.1))
    st = steps_of(n)
    return Curve("slow_rise_to_divergence", x, st, label(
        "diverged", [], "2.2*exp(-t/200)+0.1 times lognormal sigma=0.1 (seed 302), times 100^((t-1000)/2000) from step "
        "1000: a slow rise that passes the starting loss; diverged_at is where the noise-free curve rises above its "
        "start (2.3), the rule of docs/design.md without the noise; no spike event", diverged_at=crossing(noiseless, st, L0)))


def diverged_nan() -> Curve:
    rng = np.random.default_rng(401)
    n = 1416  # the log ends 16 values after the NaN, like the trainer's block
    x = exp_trend(n, tau=300) * lognormal(rng, n, 0.3)
    x[1400:] = np.nan
    x = rounded(x)
    return Curve("diverged_nan", x, steps_of(n), label(
        "diverged", [], "2.25*exp(-t/300)+0.05 times lognormal sigma=0.3 (seed 401), NaN from step 1400 to the end "
        "(16 values)", diverged_at=1400))


def diverged_inf_blowup() -> Curve:
    rng = np.random.default_rng(402)
    n = 1760
    noiseless = exp_trend(n, tau=300)
    noiseless[1700:] *= 10.0 ** np.arange(n - 1700, dtype=np.float64)  # x10 per step from step 1700 ...
    x = noiseless * lognormal(rng, n, 0.2)
    x[x > np.finfo(np.float32).max] = np.inf  # ... until it overflows float32
    x = rounded(x)
    st = steps_of(n)
    return Curve("diverged_inf_blowup", x, st, label(
        "diverged", [], "2.25*exp(-t/300)+0.05 times lognormal sigma=0.2 (seed 402); from step 1700 the loss grows "
        "10x per step until it overflows float32 (inf); diverged_at is where the noise-free curve rises above its "
        "start (2.3), two steps after the blow-up starts", diverged_at=crossing(noiseless, st, L0)))


def diverged_inf_sudden() -> Curve:
    rng = np.random.default_rng(403)
    n = 2116
    x = exp_trend(n, tau=300) * lognormal(rng, n, 0.3)
    x[2100:] = np.inf
    x = rounded(x)
    return Curve("diverged_inf_sudden", x, steps_of(n), label(
        "diverged", [], "2.25*exp(-t/300)+0.05 times lognormal sigma=0.3 (seed 403), inf from step 2100 (an "
        "overflow with no warning) to the end", diverged_at=2100))


def diverged_early() -> Curve:
    rng = np.random.default_rng(404)
    n = 160
    t = np.arange(n, dtype=np.float64)
    noiseless = L0 * np.exp(t / 25)  # too high a learning rate: up from the first step
    x = noiseless * lognormal(rng, n, 0.1)
    x[150:] = np.nan
    x = rounded(x)
    st = steps_of(n)
    return Curve("diverged_early", x, st, label(
        "diverged", [], "2.3*exp(t/25) times lognormal sigma=0.1 (seed 404), NaN from step 150: too high a learning "
        "rate, the loss rises from the first step; diverged_at is where the noise-free curve rises above its start "
        "(step 1)", diverged_at=crossing(noiseless, st, L0)))


def plateau_chance6() -> Curve:
    rng = np.random.default_rng(501)
    n = 3000
    chance = math.log(6)
    trend = chance + 0.3 * np.exp(-np.arange(n) / 15.0)
    x = rounded(trend * lognormal(rng, n, 0.003))
    return Curve("plateau_chance6", x, steps_of(n), label(
        "plateau", [], "6 classes: ln 6 + 0.3*exp(-t/15) times lognormal sigma=0.003 (seed 501): the output collapses "
        "to the class prior within 50 steps and stays at chance (ln 6 = 1.792); no event", classes=6))


def plateau_after_collapse() -> Curve:
    rng = np.random.default_rng(502)
    n = 3000
    chance = math.log(6)
    t = np.arange(n, dtype=np.float64)
    learn = exp_trend(n, start=chance, floor=0.6, tau=150) * lognormal(rng, n, 0.1)
    dead = chance * lognormal(np.random.default_rng(503), n, 0.003)
    x = rounded(np.where(t < 800, learn, dead))
    return Curve("plateau_after_collapse", x, steps_of(n), label(
        "plateau", [800], "6 classes: learns from ln 6 towards 0.6 ((ln 6-0.6)*exp(-t/150)+0.6, lognormal sigma=0.1, "
        "seed 502), then at step 800 jumps back to chance ln 6 (lognormal sigma=0.003, seed 503) and stays: a sudden "
        "rise that never recovers, labelled an event at 800; verdict plateau", classes=6))


def explosion_head(rest: np.ndarray, start: float, burst: list[float]) -> np.ndarray:
    """``start`` (the loss before the first update), then the ``burst`` values, then ``rest``."""
    return np.concatenate([[start], burst, rest])


def diverged_explode_then_high() -> Curve:
    rng = np.random.default_rng(601)
    n = 1000
    noiseless = explosion_head(np.full(n - 2, 27.8), 4.4, [49.0])
    x = rounded(noiseless * lognormal(rng, n, 0.02))
    st = steps_of(n)
    return Curve("diverged_explode_then_high", x, st, label(
        "diverged", [], "a GPT-2 at too high a learning rate: 4.4 (the loss before the first update), 49 at step 1, "
        "then 27.8 to the end, all times lognormal sigma=0.02 (seed 601); the run never comes back below 6x its "
        "start. diverged_at is where the noise-free curve rises above its start (step 1); the jump has no history "
        "and is the divergence itself, not a spike event", diverged_at=crossing(noiseless, st, 4.4)))


def plateau_explode_back_to_start() -> Curve:
    rng = np.random.default_rng(602)
    n = 1000
    noiseless = explosion_head(np.full(n - 6, 2.34), 2.32, [4324.0, 2000.0, 700.0, 49.0, 3.6])
    x = rounded(noiseless * lognormal(rng, n, 0.012))
    return Curve("plateau_explode_back_to_start", x, steps_of(n), label(
        "plateau", [], "a 10-class classifier at lr 1: 2.32 (before the first update), then 4324, 2000, 700, 49, 3.6 "
        "at steps 1-5, then 2.34 to the end (2.29-2.41 with the noise), all times lognormal sigma=0.012 (seed 602): "
        "the explosion fell back to chance (ln 10 = 2.303) and the run ends no lower than it started. Collapse "
        "(plateau), also without --classes; the 4 exploded values are too few for divergence (5 in a row) and the "
        "burst has no history: part of the collapse, not a spike event", classes=10))


def plateau_chance6_after_explosion() -> Curve:
    rng = np.random.default_rng(603)
    n = 1000
    noiseless = explosion_head(np.full(n - 3, 1.885), 1.86, [12.9, 4.2])
    x = rounded(noiseless * lognormal(rng, n, 0.01))
    return Curve("plateau_chance6_after_explosion", x, steps_of(n), label(
        "plateau", [], "a 6-class softmax that collapsed: 1.86 (before the first update), 12.9 and 4.2 at steps 1-2, "
        "then 1.885 to the end (1.85-1.92 with the noise, 3-7% above ln 6 = 1.792), all times lognormal sigma=0.01 "
        "(seed 603): stuck above chance, never below it. Plateau with --classes 6 (one-sided chance test) and "
        "without (it ends no lower than it started); no spike event", classes=6))


def plateau_flat_start() -> Curve:
    rng = np.random.default_rng(604)
    n = 1000
    x = rounded(np.full(n, 2.3) * lognormal(rng, n, 0.01))
    return Curve("plateau_flat_start", x, steps_of(n), label(
        "plateau", [], "2.3 to the end times lognormal sigma=0.01 (seed 604): the loss never moves from its start. "
        "Not trained (plateau, by the no-progress rule): from the loss alone a model that collapsed at once and a "
        "learning rate far too small to move it look the same; no event"))


def slow_digits() -> Curve:
    rng = np.random.default_rng(605)
    n = 1000
    x = rounded(np.linspace(2.31, 2.28, n) * lognormal(rng, n, 0.006))
    return Curve("slow_digits", x, steps_of(n), label(
        "slow", [], "a 10-class digits classifier at lr 2.7e-5: a straight fall from 2.31 to 2.28 over 1000 steps "
        "(1.3%) times lognormal sigma=0.006 (seed 605): still falling steadily, just far too slowly. Slow, not a "
        "collapse: it is below chance (ln 10 = 2.303) by its end and falling; no event", classes=10))


def slow_regression_crawl() -> Curve:
    rng = np.random.default_rng(606)
    n = 3000
    x = rounded(np.geomspace(0.969, 0.960, n) * lognormal(rng, n, 0.002))
    return Curve("slow_regression_crawl", x, steps_of(n), label(
        "slow", [], "a regression at lr 1e-7: a geometric fall from 0.969 to 0.960 over 3000 steps (0.9%) times "
        "lognormal sigma=0.002 (seed 606): still falling, far too slowly; no event"))


def clean_finetune_small_gain() -> Curve:
    rng = np.random.default_rng(607)
    n = 2000
    x = rounded(exp_trend(n, start=3.0, floor=2.64, tau=150) * lognormal(rng, n, 0.03))
    return Curve("clean_finetune_small_gain", x, steps_of(n), label(
        "stable", [], "a fine-tune that gains 12%: 0.36*exp(-t/150)+2.64 from 3.0, times lognormal sigma=0.03 "
        "(seed 607); it trained and converged, a small gain is no slow run; no event"))


HAND_MADE: dict[str, Callable[[], Curve]] = {
    f.__name__: f
    for f in (
        clean_lognormal_030,
        clean_lognormal_040,
        clean_lognormal_050,
        clean_student_t,
        clean_tiny_drift,
        clean_lr_drops,
        clean_logged_every_10,
        clean_warmup_bump,
        clean_classes10,
        spiky_late_recovering,
        spiky_late_unrecovered,
        spiky_late_mixed,
        spiky_moderate,
        spiky_early_unrecovered,
        spike_after_warmup,
        slow_late_rise,
        slow_rise_to_divergence,
        diverged_nan,
        diverged_inf_blowup,
        diverged_inf_sudden,
        diverged_early,
        plateau_chance6,
        plateau_after_collapse,
        diverged_explode_then_high,
        plateau_explode_back_to_start,
        plateau_chance6_after_explosion,
        plateau_flat_start,
        slow_digits,
        slow_regression_crawl,
        clean_finetune_small_gain,
    )
}


# --------------------------------------------------------------------------- objective runs
#
# Real runs of the objectives/ modules, trained by stabsearch's trainer, and
# labelled by the rule of ``label_run`` (independent of stabsearch's detector).


@dataclasses.dataclass(frozen=True)
class ObjectiveRun:
    module: str  # objectives/<module>.py
    settings: str  # "FAILING" or "STABLE": the module's dict of optimizer settings ...
    seed: int
    overrides: tuple[tuple[str, float], ...] = ()  # ... with these changed (then ``tag`` names the run)
    tag: str = ""
    note: str = ""  # what inspection of the stored curve found, for the recipe
    steps: int | None = None  # default: the module's STEPS

    @property
    def name(self) -> str:
        return f"obj_{self.module}_{self.tag or self.settings.lower()}_s{self.seed}"


OBJECTIVE_RUNS: tuple[ObjectiveRun, ...] = (
    ObjectiveRun("adam_late_blowup", "FAILING", 0, note=(
        "two blow-ups from ~1e-14 to ~1e-3 at 1840 and 2383, both recover; the rise at the very end (to 7e-9 at "
        "step 2999) is under the absolute floor (1e-3 * L0): harmless by the rules of docs/design.md, not an event")),
    ObjectiveRun("adam_late_blowup", "FAILING", 1, note=(
        "blow-ups at 1722 and 2640; an earlier one at 1137 peaks at 2.8e-5, under the absolute floor "
        "(1e-3 * L0 = 1e-3), so by the rules of docs/design.md it is harmless and not labelled, though it is the same mechanism")),
    ObjectiveRun("adam_late_blowup", "STABLE", 0, note="falls smoothly to ~3e-13, no event"),
    ObjectiveRun("adam_late_blowup", "FAILING", 0, overrides=(("lr", 1e-2),), tag="lr1e-2", note=(
        "lr 1e-2: a blow-up every 150-400 steps from step ~240 on, each recovering")),
    ObjectiveRun("softmax_chance", "FAILING", 0, note=(
        "the loss jumps to 12.9 at step 1, then sits at chance (median 1.797, jitter 1.76-1.86) from step ~10: "
        "collapse (plateau); the step-1 jump has no history and is part of the collapse, not labelled an event")),
    ObjectiveRun("softmax_chance", "FAILING", 1, note="collapses to chance within the first steps, as seed 0"),
    ObjectiveRun("softmax_chance", "STABLE", 0, note=(
        "learns to ~1e-3 with heavy mini-batch noise (a spread of about 10x late in the run), no event")),
    ObjectiveRun("softmax_chance", "FAILING", 1, overrides=(("lr", 1.0),), tag="lr1", note=(
        "lr 1.0: the loss explodes at step 1 (1.86 -> 1376 -> 2145 -> 708 -> 49 -> 3.6), falls back, and sits near "
        "chance for the rest of the run (median 1.85, 3% above ln 6: the output bias jitters at this lr) with both "
        "ReLU layers dead: a collapse (plateau, by the dead-layer rule), not divergence (docs/design.md: 5 values in a row "
        "above max(L0, ln K), L0 the median of the first values; the explosion lasts 4). The 1000x jump at step 1 "
        "is a true event by the rule above, kept in the label, though a detector that needs history before a "
        "value (stabsearch's needs 10 values) cannot flag it")),
)
# objectives/broken_lines.py was a draft ("constants still being tuned") when this corpus was made, so its
# runs are not here yet: add ObjectiveRun("broken_lines", "FAILING" / "STABLE", seed) once it is final, rerun
# this script, and check the new labels by eye before committing them.

EVENT_FACTOR = 10.0  # a true event: the loss above 10x ...
EVENT_LOOKBACK = 200  # ... the median of the previous 200 values,
EVENT_FLOOR = 1e-3  # ... and above it by more than 1e-3 * L0 (docs/design.md: wiggles near zero are no spikes)
EVENT_MERGE = 100  # flags closer than 100 steps are one event
RECOVER_FACTOR = 1.15  # recovered: the 5-value running median back below 1.15x the level before the event
SMOOTH = 11  # divergence: the centred 11-value median ...
DIVERGE_FACTOR = 1.2  # ... above 1.2 * max(L0, ln K)


def run_divergence(x: np.ndarray, steps: np.ndarray, *, chance: float | None, warmup: int) -> int | None:
    """Where a trained run diverged: the first non-finite value, or the step
    (at or after ``warmup``) from which the median of the 11 values centred on
    each value (fewer at the ends) stays above ``1.2 * max(L0, ln K)`` to the
    end of the log. ``L0`` is the smaller of the first value and the median
    of the first 11: the first value is the only one measured before any
    update, so a run that explodes at once does not lift its own L0.

    the rule of docs/design.md ("above max(L0, chance)"), read offline: the trainer stops a
    diverged run, so a diverged log ends above its start, while noise near the
    start comes back down. The 20% margin keeps a run that sits at its
    starting loss from being called diverged."""
    bad = np.flatnonzero(~np.isfinite(x))
    end = int(bad[0]) if bad.size else x.size
    l0 = min(float(x[0]), float(np.median(x[:SMOOTH])))
    limit = DIVERGE_FACTOR * max(l0, chance if chance is not None else -math.inf)
    half = SMOOTH // 2
    smooth = np.array([np.median(x[max(0, i - half) : min(end, i + half + 1)]) for i in range(end)])
    below = np.flatnonzero((smooth <= limit) | (steps[:end] < warmup))
    start = 0 if below.size == 0 else int(below[-1]) + 1
    while start < end and x[start] <= limit:  # the median is centred: start at a value that is above itself
        start += 1
    if start < end:
        return int(steps[start])
    return int(steps[end]) if end < x.size else None


def run_events(x: np.ndarray, steps: np.ndarray) -> list[tuple[int, bool]]:
    """True spike events of a finite curve: (step, recovered).

    A value is flagged when it is above ``EVENT_FACTOR`` (10) times the median
    of the ``EVENT_LOOKBACK`` (200) values before it and above that median by
    more than ``EVENT_FLOOR * L0``; flags closer than ``EVENT_MERGE`` steps
    are one event, at its first flag. The event recovered when the running
    median of 5 values after its last flag falls below ``RECOVER_FACTOR``
    times the median before it.
    """
    if x.size < 2:
        return []
    floor = EVENT_FLOOR * float(np.median(x[:5]))
    flags = []
    for i in range(1, x.size):
        level = float(np.median(x[max(0, i - EVENT_LOOKBACK) : i]))
        if x[i] > EVENT_FACTOR * level and x[i] - level > floor:
            flags.append(i)
    events: list[list[int]] = []
    for i in flags:
        if events and steps[i] - steps[events[-1][-1]] < EVENT_MERGE:
            events[-1].append(i)
        else:
            events.append([i])
    out = []
    for group in events:
        first, last = group[0], group[-1]
        level = float(np.median(x[max(0, first - EVENT_LOOKBACK) : first]))
        after = x[last + 1 :]
        smooth = np.array([np.median(after[j : j + 5]) for j in range(max(0, after.size - 4))])
        out.append((int(steps[first]), bool(np.any(smooth < RECOVER_FACTOR * level))))
    return out


def label_run(losses: np.ndarray, steps: np.ndarray, *, classes: int | None, warmup: int,
              dead_layer: bool = False) -> dict:
    """Verdict, events and divergence of a trained run, by the rules above and docs/design.md's verdict order:
    diverged, then plateau (over the last 25% of the run the centred 11-value median stays within 2% of
    ln K: stuck at chance, whatever the mini-batch jitter; or, the other collapse rule of docs/design.md, the trainer
    found a hidden ReLU layer completely dead at the end of the run: ``dead_layer``), then spiky (an event
    in the second half, or one that never recovered), else stable."""
    x = np.asarray(losses, dtype=np.float64)
    chance = math.log(classes) if classes else None
    diverged_at = run_divergence(x, steps, chance=chance, warmup=warmup)
    end = x.size if diverged_at is None else int(np.searchsorted(steps, diverged_at))
    events = run_events(x[:end], steps[:end])
    k = max(1, math.ceil(0.25 * x.size))
    half = SMOOTH // 2
    tail = np.array([np.median(x[max(0, i - half) : i + half + 1]) for i in range(x.size - k, x.size)])
    if diverged_at is not None:
        verdict = "diverged"
    elif dead_layer or (chance is not None and bool(np.all(np.abs(tail - chance) <= 0.02 * chance))):
        verdict = "plateau"
    elif any(step >= steps[x.size // 2] or not recovered for step, recovered in events):
        verdict = "spiky"
    else:
        verdict = "stable"
    return {"verdict": verdict, "events": [step for step, _ in events], "diverged_at": diverged_at}


def train_curve(run: ObjectiveRun) -> Curve | None:
    """Train one objective run with stabsearch's trainer (CPU, one thread); None when the module is missing."""
    path = ROOT / "objectives" / f"{run.module}.py"
    if not path.exists():
        return None
    import torch

    from stabsearch import OptimConfig, load_model_module, train_trial

    torch.set_num_threads(1)
    module = load_model_module(str(path))
    settings = {**getattr(module.module, run.settings), **dict(run.overrides)}
    steps = run.steps or module.steps
    result = train_trial(module, OptimConfig(**settings), steps=steps, seed=run.seed, device=torch.device("cpu"), sharpness=False)
    x = rounded(result.losses, RUN_DIGITS)
    st = steps_of(x.size)
    config = OptimConfig(**settings)
    warmup = config.warmup_steps(steps)
    found = label_run(x, st, classes=module.classes, warmup=warmup, dead_layer=bool(result.dead_layers))
    recipe = (
        f"objectives/{run.module}.py trained by stabsearch.train_trial on CPU (1 thread), seed {run.seed}, "
        f"{steps} steps, the module's {run.settings} settings"
        + (f" with {', '.join(f'{k}={v:g}' for k, v in run.overrides)}" if run.overrides else "")
        + f" ({settings}); the trainer stops a diverged run early. "
        f"Labels by make_corpus.label_run, independent of stabsearch's detector: an event where the loss is above "
        f"{EVENT_FACTOR:g}x the median of the previous {EVENT_LOOKBACK} values and above it by more than "
        f"{EVENT_FLOOR:g}*L0 (flags merged within {EVENT_MERGE} steps); diverged at the first non-finite value or "
        f"from where the centred {SMOOTH}-value median stays above {DIVERGE_FACTOR:g}*max(L0, ln K) to the end; "
        f"plateau when that median stays within 2% of ln K over the last 25%, or when the trainer found a hidden "
        f"ReLU layer completely dead at the end of the run (dead_layers). Checked by eye on a plot: "
        f"{run.note or 'no event'}"
    )
    labelled = label(
        found["verdict"], found["events"], recipe, diverged_at=found["diverged_at"], classes=module.classes,
        warmup=warmup, source="objective")
    labelled["dead_layers"] = list(result.dead_layers)
    return Curve(run.name, x, st, labelled)


# --------------------------------------------------------------------------- main


def write(curve: Curve, digits: int) -> None:
    (CORPUS / f"{curve.name}.csv").write_text(curve.csv(digits), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hand-only", action="store_true", help="only the hand-made curves (keep the trained ones)")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="only these objective runs (names without .csv)")
    args = parser.parse_args(argv)
    CORPUS.mkdir(parents=True, exist_ok=True)
    labels = json.loads(LABELS.read_text()) if LABELS.exists() else {}
    show = lambda c: print(f"{c.name}.csv: {c.label['verdict']} events={c.label['events']} diverged_at={c.label['diverged_at']}")  # noqa: E731
    for name, make in HAND_MADE.items():
        curve = make()
        write(curve, HAND_DIGITS)
        labels[f"{name}.csv"] = curve.label
        show(curve)
    if not args.hand_only:
        for run in OBJECTIVE_RUNS:
            if args.only and run.name not in args.only:
                continue
            curve = train_curve(run)
            if curve is None:
                print(f"{run.name}.csv: skipped, objectives/{run.module}.py is missing", file=sys.stderr)
                continue
            write(curve, RUN_DIGITS)
            labels[f"{run.name}.csv"] = curve.label
            show(curve)
    known = {f"{name}.csv" for name in HAND_MADE} | {f"{run.name}.csv" for run in OBJECTIVE_RUNS}
    for stale in sorted(set(labels) - known):  # curves no longer made here
        labels.pop(stale)
        (CORPUS / stale).unlink(missing_ok=True)
        print(f"{stale}: removed", file=sys.stderr)
    LABELS.write_text(json.dumps(dict(sorted(labels.items())), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
