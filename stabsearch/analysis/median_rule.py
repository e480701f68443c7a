"""Stop a search trial that is clearly losing: the median rule, as pure arithmetic.

Optuna's ``MedianPruner`` rule, with its defaults: once 5 search trials have
finished, a trial whose best reported value so far is above the median of
the finished trials' values at the same step is stopped. It saves the steps a
hopeless trial would spend, and most of all those of a trial that crawls
before it blows up: a learning rate past the cliff often trains slowly for
hundreds of steps before its loss explodes (the README's "stabsearch against
plain Optuna" gives the steps it saved).

Why not ``trial.should_prune()``: with the median pruner it re-reads every
trial of the study from the storage on each call. Here
the finished trials' values are read once, when the trial starts
(:func:`median_by_step`), and each decision is a dict lookup
(:func:`is_slow`). Only search trials are ever stopped this way:
confirmation runs must reach their stress horizon.

The rule waits for the trial's own learning-rate warmup to end (a run still
warming up is slow by design). A stopped trial whose curve already diverged
keeps that verdict; every other stopped trial gets the verdict ``slow``, even
if its cut curve looks spiky or flat: a spike cannot be called late, nor a
slow start a plateau, on a run cut short. Slow trials end PRUNED, which the
sampler ranks below every finished trial. What a stopped trial cannot show
is instability that would have come later: a learning rate past the cliff
that was stopped while crawling is ``slow``, not ``diverged``, so it is no
edge for the back-off; confirmation's edge probes supply that evidence.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

MIN_FINISHED = 5
"""Finished trials needed before the rule acts (``MedianPruner``'s ``n_startup_trials``)."""


def median_by_step(finished: Iterable[Mapping[int, float]], min_finished: int = MIN_FINISHED) -> dict[int, float]:
    """Per step, the median of the values the finished trials reported there, where at least ``min_finished`` did.

    Counting per step keeps a median of one or two trials out: trials of a
    population report nothing on the way, and a resumed study can mix them in.

    Args:
        finished: per finished trial, the value it reported at each step.
        min_finished: how many trials must have reported at a step for it to count.

    Example:
        >>> median_by_step([{100: 1.0, 200: 0.5}, {100: 2.0}, {100: 3.0, 200: 0.7}, {}], min_finished=2)
        {100: 2.0, 200: 0.6}
        >>> median_by_step([{100: 1.0}, {}, {}], min_finished=2)
        {}
    """
    values: dict[int, list[float]] = {}
    for history in finished:
        for step, value in history.items():
            values.setdefault(step, []).append(value)
    return {step: statistics.median(v) for step, v in sorted(values.items()) if len(v) >= min_finished}


def is_slow(best_so_far: float, step: int, medians: Mapping[int, float]) -> bool:
    """Whether a trial whose best reported value so far is ``best_so_far`` is to be stopped at ``step``.

    Lower is better. A step the finished trials never reported is no reason to stop.

    Args:
        best_so_far: the trial's best reported value so far (lower is better).
        step: the step it reported at.
        medians: the finished trials' medians, from :func:`median_by_step`.

    Example:
        >>> is_slow(1.5, 100, {100: 1.2}), is_slow(1.0, 100, {100: 1.2}), is_slow(9.0, 150, {100: 1.2})
        (True, False, False)
    """
    median = medians.get(step)
    return median is not None and best_so_far > median
