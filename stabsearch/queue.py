"""Share one study between workers: trial slots, heartbeats, and lost-trial recovery.

Optuna's storages already let many processes (on many machines) ask and tell
on one study. What they leave out, this adds:

- **Slots.** A search that must end with exactly N trials reserves them as
  WAITING trials (``enqueue_trial`` with no fixed parameters) and workers claim
  them with the same atomic WAITING -> RUNNING update Optuna's own queue uses.
  A worker with no slot to claim stops, so N workers never overshoot N.
- **Heartbeats.** Optuna's heartbeat only runs inside ``study.optimize``, not
  for ask-and-tell trials, so each running trial here gets a thread that
  stamps the time into a system attribute every few seconds.
- **Recovery.** A RUNNING trial whose heartbeat is older than the grace period
  belongs to a worker that died (SIGKILL, a lost machine). It is ended as FAIL
  with the failure "worker lost", and its parameters are queued again, once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_KEY = "stabsearch:heartbeat"
#: A trial is stale after this many missed heartbeats.
GRACE_BEATS = 6
#: Failures that do not use up a slot: the trial is re-run instead.
NOT_COUNTED = frozenset({"interrupted", "worker lost"})


def is_search(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get("kind", "search") == "search"


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """A finished search trial; interrupted or lost ones are re-run instead."""
    if not is_search(trial):
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure") not in NOT_COUNTED


def budget_state(study: optuna.Study) -> tuple[int, int, int]:
    """(finished, running, waiting) search trials."""
    trials = study.get_trials(deepcopy=False)
    finished = sum(counts_toward_budget(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING and is_search(t) for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return finished, running, waiting


def reserve(study: optuna.Study, target: int, at_most: int | None = None) -> int:
    """Queue WAITING slots (``at_most`` of them) towards finished + running + waiting = ``target``.

    Returns how many it queued.
    """
    finished, running, waiting = budget_state(study)
    missing = max(0, target - finished - running - waiting)
    if at_most is not None:
        missing = min(missing, at_most)
    for _ in range(missing):
        study.enqueue_trial({}, user_attrs={"kind": "search"})
    return missing


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take a WAITING trial (as ``Study.ask`` does); None when there is none left."""
    storage = study._storage
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                trial = optuna.Trial(study, frozen._trial_id)
                beat(study, trial._trial_id)
                return trial
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def beat(study: optuna.Study, trial_id: int) -> None:
    study._storage.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())


@contextmanager
def heartbeat(study: optuna.Study, trial_id: int, interval: float) -> Iterator[None]:
    """Stamp the trial's heartbeat every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                beat(study, trial_id)
            except Exception:  # the trial may have just finished; the next run of the loop ends
                return

    thread = threading.Thread(target=loop, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def recover_lost(study: optuna.Study, interval: float, now: float | None = None) -> list[int]:
    """Fail RUNNING trials whose heartbeat stopped, and queue a lost search trial's parameters once.

    Returns the numbers of the trials it recovered.
    """
    now = time.time() if now is None else now
    grace = GRACE_BEATS * interval
    storage = study._storage
    lost = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = t.system_attrs.get(HEARTBEAT_KEY)
        if last is None:
            last = t.datetime_start.timestamp() if t.datetime_start else now
        if now - float(last) <= grace:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "verdict", "failed")
            storage.set_trial_user_attr(t._trial_id, "failure", "worker lost")
            storage.set_trial_user_attr(t._trial_id, "error", f"no heartbeat for {now - float(last):.0f}s: the worker died")
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker recovered it first, or it finished after all
        lost.append(t.number)
        if is_search(t) and not t.user_attrs.get("retry"):
            study.enqueue_trial(t.params, user_attrs={"kind": "search", "requeued_from": t.number, "retry": 1})
    return lost
