"""Spike detectors against the labelled corpus: event precision and recall.

Four detectors read every curve of ``tests/data/corpus/`` (see
``tests/data/make_corpus.py`` for how each was made and labelled):

* **stabsearch**: ``stabsearch.analysis.verdict.analyze`` (with the label's
  ``classes`` and ``warmup``): its spikes, found on the curve up to its
  divergence, plus the divergence itself as an event at ``diverged_at``.
* **lightning**: ``lightning.fabric.utilities.spike.SpikeDetection`` with its
  defaults (``window=10, warmup=1, rtol=2.0, atol=None, finite_only=True``):
  a loss is a spike when it is not lower than the previous loss and
  ``|loss - mean| >= 2 * mean`` (i.e. more than 3x the running mean of the
  last 10 losses); a non-finite loss is a spike; spikes do not enter the mean.
* **llm-foundry**: ``llmfoundry.callbacks.KillLossSpike`` with its defaults
  (``patience=4, outlier_multiplier=2, window_size=100, loss_cap=10``): once
  the window of the last 100 losses is full, a loss ``>= 2x`` the window mean
  is an outlier, and the 5th outlier in a row (and every one after) fires;
  otherwise it also fires when, after 200 steps, half the window is above 10.
* **megatron**: Megatron-LM's ``--check-for-spiky-loss``
  (``RerunStateMachine.is_unexpectedly_large`` with ``threshold=10``,
  ``num_samples=100``): the largest ``|loss|`` of the first 100 values is the
  reference, and any later loss ``>= 10x`` it fires. NaN and inf are ignored
  by that check and caught by the NaN/Inf loss checks that run beside it
  (``--check-for-nan-in-loss-and-grad``, on by default), so a non-finite loss
  fires too.

The three baselines were re-implemented from their source (Lightning 2.x,
llm-foundry main, Megatron-LM core) as offline replays: a run that would have
been stopped goes on being read, with the detector's state as the framework
leaves it.

Event matching, the same for all four: flags closer than 100 steps merge into
one event (at its first flag); a detected event matches when a true event or
the true divergence step lies within +-100 steps; precision = matched detected
events / detected events, recall = matched true events / true events (true
events are the labelled spike steps plus ``diverged_at``). "false events on
clean curves" counts the detected events on the curves with no true event and
no divergence.

    python bench/detectors.py            # the table
    python bench/detectors.py -v         # and every curve's events per detector
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stabsearch.analysis.loss_log import read_loss_log  # noqa: E402
from stabsearch.analysis.verdict import analyze  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
MERGE = 100  # flags closer than this (in steps) are one event
TOLERANCE = 100  # a detected event matches a true one within this many steps


# --------------------------------------------------------------------------- detectors
#
# Each takes (losses, steps, label) and returns the steps it flags.


def stabsearch_flags(x: np.ndarray, steps: np.ndarray, lab: dict) -> list[int]:
    chance = math.log(lab["classes"]) if lab.get("classes") else None
    result = analyze(x, steps=steps, chance_loss=chance, warmup=lab.get("warmup", 0))
    flags = [s.step for s in result.spikes]
    if result.diverged_at is not None:
        flags.append(int(result.diverged_at))
    return flags


def lightning_flags(x: np.ndarray, steps: np.ndarray, lab: dict, *, window: int = 10, warmup: int = 1, rtol: float = 2.0) -> list[int]:
    recent: deque[float] = deque(maxlen=window)  # torchmetrics Running(MeanMetric, window=10)
    last = 0.0
    flags = []
    for i, v in enumerate(x):
        spike = False
        if i >= warmup:
            mean = float(np.mean(recent)) if recent else math.nan
            if not math.isfinite(v):
                spike = True
            elif v - last > 0:  # not an improvement over the last value (mode="min")
                spike = abs(v - mean) >= abs(rtol * mean)  # atol=None: only the relative test
        if spike:
            flags.append(int(steps[i]))
        elif math.isfinite(v):
            recent.append(float(v))
            last = float(v)
    return flags


def llm_foundry_flags(x: np.ndarray, steps: np.ndarray, lab: dict, *, patience: int = 4, multiplier: float = 2.0,
                      window: int = 100, loss_cap: float = 10.0) -> list[int]:
    recent: deque[float] = deque(maxlen=window)
    counter = 0
    flags = []
    for i, v in enumerate(x):
        v = float(v)
        if len(recent) == window:
            with np.errstate(invalid="ignore", over="ignore"):
                mean = float(np.mean(recent))
            fired = False
            if v >= mean * multiplier:  # NaN compares False
                counter += 1
                fired = counter > patience
            elif counter > 0:
                counter = 0
            if not fired and i >= 2 * window and sum(1 for u in recent if u > loss_cap) >= window / 2:
                fired = True  # detect_high_losses (step counts batches; one logged value per batch)
            if fired:
                flags.append(int(steps[i]))
        recent.append(v)
    return flags


def megatron_flags(x: np.ndarray, steps: np.ndarray, lab: dict, *, threshold: float = 10.0, num_samples: int = 100) -> list[int]:
    count, largest = 0, 0.0
    flags = []
    for i, v in enumerate(x):
        value = abs(float(v))
        if not math.isfinite(value):
            flags.append(int(steps[i]))  # the NaN / Inf loss checks
            continue
        if count < num_samples:
            count += 1
            largest = max(largest, value)
            continue
        if value >= largest * threshold:
            flags.append(int(steps[i]))
    return flags


DETECTORS: dict[str, Callable[[np.ndarray, np.ndarray, dict], list[int]]] = {
    "stabsearch": stabsearch_flags,
    "lightning": lightning_flags,
    "llm-foundry": llm_foundry_flags,
    "megatron": megatron_flags,
}


# --------------------------------------------------------------------------- matching


def merge(flags: list[int], gap: int = MERGE) -> list[int]:
    """One event per run of flags whose neighbours are closer than ``gap`` steps."""
    events: list[int] = []
    last = None
    for f in sorted(flags):
        if last is None or f - last >= gap:
            events.append(f)
        last = f
    return events


def true_events(lab: dict) -> list[int]:
    events = list(lab["events"])
    if lab["diverged_at"] is not None:
        events.append(lab["diverged_at"])
    return sorted(events)


@dataclass
class Tally:
    detected: int = 0
    matched_detected: int = 0
    true: int = 0
    matched_true: int = 0
    clean_false: int = 0
    per_curve: dict[str, list[int]] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.matched_detected / self.detected if self.detected else math.nan

    @property
    def recall(self) -> float:
        return self.matched_true / self.true if self.true else math.nan


def near(step: int, others: list[int]) -> bool:
    return any(abs(step - o) <= TOLERANCE for o in others)


def evaluate(corpus: Path = CORPUS) -> tuple[dict[str, Tally], list[str], dict]:
    labels = json.loads((corpus / "labels.json").read_text())
    tallies = {name: Tally() for name in DETECTORS}
    clean = [f for f, lab in labels.items() if not true_events(lab)]
    for fname, lab in labels.items():
        log = read_loss_log(corpus / fname)
        steps = log.steps if log.steps is not None else np.arange(log.losses.size)
        truth = true_events(lab)
        for name, detect in DETECTORS.items():
            events = merge(detect(log.losses, steps, lab))
            t = tallies[name]
            t.per_curve[fname] = events
            t.detected += len(events)
            t.matched_detected += sum(near(e, truth) for e in events)
            t.true += len(truth)
            t.matched_true += sum(near(e, events) for e in truth)
            if fname in clean:
                t.clean_false += len(events)
    return tallies, clean, labels


# --------------------------------------------------------------------------- report


def fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.2f}"


def ratio(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)):
        return "n/a"
    if b == 0:
        return "inf" if a > 0 else "n/a"
    return f"{a / b:.2f}x"


def table(tallies: dict[str, Tally], n_clean: int) -> str:
    head = ["detector", "events found", "true events", "precision", "recall", f"false events on clean curves ({n_clean})"]
    rows = [
        [name, str(t.detected), str(t.true), fmt(t.precision), fmt(t.recall), str(t.clean_false)]
        for name, t in tallies.items()
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    ours = tallies["stabsearch"]
    out.append("")
    out.append("stabsearch relative to each baseline (stabsearch / baseline):")
    for name, t in tallies.items():
        if name == "stabsearch":
            continue
        out.append(f"  vs {name:<12} precision {ratio(ours.precision, t.precision):>6}   recall {ratio(ours.recall, t.recall):>6}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print every curve's events per detector")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    tallies, clean, labels = evaluate(args.corpus)
    print(f"corpus: {len(labels)} curves in {args.corpus.relative_to(ROOT) if args.corpus.is_relative_to(ROOT) else args.corpus}; "
          f"events merged within {MERGE} steps, matched within +-{TOLERANCE} steps")
    print()
    print(table(tallies, len(clean)))
    goal = tallies["stabsearch"]
    met = goal.precision >= 0.95 and goal.recall >= 0.95 and goal.clean_false == 0
    print()
    print(f"goal for stabsearch (precision and recall >= 0.95, no false event on clean curves): {'met' if met else 'NOT met'}")
    if args.verbose:
        print()
        for fname, lab in labels.items():
            print(f"{fname}: true {true_events(lab)}")
            for name, t in tallies.items():
                events = t.per_curve[fname]
                wrong = [e for e in events if not near(e, true_events(lab))]
                missed = [e for e in true_events(lab) if not near(e, events)]
                note = "" if not (wrong or missed) else f"   false {wrong[:6]}{'...' if len(wrong) > 6 else ''} missed {missed}"
                print(f"    {name:<12} {len(events):>3} events{note}")
    else:
        bad = []
        for fname, lab in labels.items():
            events = goal.per_curve[fname]
            wrong = [e for e in events if not near(e, true_events(lab))]
            missed = [e for e in true_events(lab) if not near(e, events)]
            if wrong or missed:
                bad.append(f"  {fname}: false {wrong} missed {missed}")
        if bad:
            print("stabsearch's misses and false events:")
            print("\n".join(bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
