"""Share one study between workers: trial slots, owners, heartbeats, and lost-trial recovery.

Optuna's storages already let many processes (on many machines) ask and tell
on one study. What they leave out, this adds:

- **Slots.** A search that must end with exactly N trials reserves them as
  WAITING trials, and workers claim them with an atomic WAITING -> RUNNING
  update (a conditional ``UPDATE ... WHERE state = 'WAITING'`` whose row count
  says who won, on every SQL database; Optuna's own row lock is ignored by
  SQLite). A worker with no slot to claim stops, so N workers never overshoot N.
  Slots are added, and lost trials re-queued, in one transaction that holds
  the study's row (:func:`slot_changes`): counting and adding cannot
  interleave between processes, and an interrupted reservation adds nothing.
- **Owners.** A claimed trial records who runs it: host, a machine identity
  (boot id and PID namespace, Linux only), pid, the process's start time, and
  that worker's heartbeat interval.
- **Heartbeats.** Optuna's heartbeat only runs inside ``study.optimize``, not
  for ask-and-tell trials, so each worker runs a thread that stamps the time
  on its running trials every interval, and the time the training loop last
  logged a step (``stabsearch:progress``).
- **Recovery.** A RUNNING trial whose owner is a process of this machine that
  no longer exists is lost at once; any other is lost once its heartbeat is
  older than 6 of *its writer's* intervals. A lost trial is ended as FAIL with
  the failure "worker lost", and a search trial's parameters are queued again, once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from stabsearch.study import optuna_internals as internals
from stabsearch.study.trial_attrs import CONFIG, FAILURE, KIND, NOT_COUNTED, REQUEUED_FROM, RETRY, SEARCH, failure_attrs, is_search

HEARTBEAT_KEY = "stabsearch:heartbeat"
OWNER_KEY = "stabsearch:owner"
PROGRESS_KEY = "stabsearch:progress"
#: A trial is stale after this many missed heartbeats (of the interval its worker wrote).
GRACE_BEATS = 6
#: The interval assumed for a trial whose worker recorded none, when the observer's is not usable.
DEFAULT_INTERVAL = 10.0


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """A finished search trial; interrupted or lost ones are re-run instead."""
    if not is_search(trial):
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(FAILURE) not in NOT_COUNTED


def _budget(trials: Iterable[FrozenTrial]) -> tuple[int, int, int]:
    finished = running = waiting = 0
    for t in trials:
        finished += counts_toward_budget(t)
        running += t.state == TrialState.RUNNING and is_search(t)
        waiting += t.state == TrialState.WAITING and is_search(t)
    return finished, running, waiting


def budget_state(study: optuna.Study) -> tuple[int, int, int]:
    """(finished, running, waiting) search trials."""
    return _budget(study.get_trials(deepcopy=False))


# --- who runs a trial ---------------------------------------------------------------------------


def machine_id() -> str | None:
    """This kernel's boot id and this PID namespace: equal ids mean pids can be checked here (Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/<pid>/stat), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def owner_record(interval: float) -> dict[str, Any]:
    """What a claimed trial stores about the process that runs it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "machine": machine_id(), "pid": pid, "start": process_start(pid),
            "interval": interval, "claimed": time.time()}


def owner_gone(owner: dict[str, Any] | None) -> bool | None:
    """True: the owner was a process of this machine that has exited; False: it still runs; None: can't tell here."""
    if not isinstance(owner, dict) or owner.get("machine") is None or owner.get("start") is None:
        return None
    if owner["machine"] != machine_id():
        return None
    try:
        return process_start(int(owner["pid"])) != owner["start"]
    except (TypeError, ValueError):
        return None


def writer_interval(trial: FrozenTrial, observer: float) -> float:
    """The heartbeat interval of the worker that runs ``trial`` (the observer's, for trials that recorded none)."""
    for value in ((trial.system_attrs.get(OWNER_KEY) or {}).get("interval"), observer):
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            return float(value)
    return DEFAULT_INTERVAL


# --- slot changes, under the study's lock ---------------------------------------------------------


@dataclasses.dataclass
class Slot:
    """A WAITING trial to add: ``fixed_params`` are suggested as given (a re-run); ``params`` are set on it."""

    user_attrs: dict[str, Any]
    fixed_params: dict[str, Any] | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = dataclasses.field(default_factory=dict)

    def system_attrs(self) -> dict[str, Any]:
        return {} if self.fixed_params is None else {"fixed_params": self.fixed_params}


class _Changes:
    """What :func:`slot_changes` yields: the study's trials, and the changes to make atomically."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    def trials(self) -> list[FrozenTrial]:
        return internals.all_trials(self.study)

    def budget(self) -> tuple[int, int, int]:
        """(finished, running, waiting) search trials, as :func:`budget_state` counts them."""
        return _budget(self.trials())

    def add(self, slots: list[Slot]) -> None:
        storage = internals.storage_of(self.study)
        for s in slots:
            template = optuna.trial.create_trial(state=TrialState.WAITING, params=s.params, distributions=s.distributions,
                                                 user_attrs=s.user_attrs, system_attrs=s.system_attrs())
            storage.create_new_trial(internals.study_id(self.study), template_trial=template)

    def fail(self, trial: FrozenTrial, attrs: dict[str, Any]) -> bool:
        storage, trial_id = internals.storage_of(self.study), internals.trial_id(trial)
        if storage.get_trial(trial_id).state != TrialState.RUNNING:
            return False
        try:
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)
            return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False


class _RDBChanges(_Changes):
    """The same changes in one SQL transaction that holds the study's row (SQLite: the database's write lock)."""

    def __init__(self, study: optuna.Study, session: Any) -> None:
        super().__init__(study)
        self.session = session

    def budget(self) -> tuple[int, int, int]:
        return _budget(internals.trial_states(self.session, self.study, (KIND, FAILURE)))  # what _budget reads

    def add(self, slots: list[Slot]) -> None:
        internals.add_waiting_trials(self.session, self.study,
                                     ((s.user_attrs, s.system_attrs(), s.params, s.distributions) for s in slots))

    def fail(self, trial: FrozenTrial, attrs: dict[str, Any]) -> bool:
        return internals.fail_running(self.session, trial, attrs)


_local_lock = threading.Lock()


@contextmanager
def slot_changes(study: optuna.Study) -> Iterator[_Changes]:
    """Read and change the study's slots with no other process doing the same in between.

    On SQL storages this is one transaction, rolled back whole if the block
    raises (or the process dies); on a journal file, an exclusive ``flock`` on
    ``<journal>.slots.lock``, held by the stabsearch processes of this machine.
    """
    rdb = internals.rdb_of(study)
    if rdb is not None:
        with internals.locked_study(rdb, study) as session:
            yield _RDBChanges(study, session)
        return
    path = internals.journal_file(study)
    with _local_lock:
        if path is None:
            yield _Changes(study)
            return
        with open(f"{path}.slots.lock", "a") as lock:  # not {path}.lock: Optuna's own lock for the journal
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield _Changes(study)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def reserve(study: optuna.Study, target: int, at_most: int | None = None) -> int:
    """Queue WAITING slots (``at_most`` of them) towards finished + running + waiting = ``target``, atomically.

    Returns how many it queued.
    """
    with slot_changes(study) as changes:
        finished, running, waiting = changes.budget()
        missing = max(0, target - finished - running - waiting)
        if at_most is not None:
            missing = min(missing, at_most)
        changes.add([Slot(user_attrs={KIND: SEARCH}) for _ in range(missing)])
    return missing


def requeue(study: optuna.Study, trial: FrozenTrial, attrs: dict[str, Any], *, retry: bool = False) -> bool:
    """End the RUNNING ``trial`` as FAIL with ``attrs`` and, for a search trial, queue its parameters again.

    Both in one change, so no process counts the study between them. ``retry``
    marks the new slot as a retry (a retry is not queued again). A trial that
    stopped before it drew its configuration (no ``config`` attribute) is
    queued with the configuration it was queued with, if any, else a fresh
    slot takes its place. Returns False
    if the trial was no longer RUNNING (then nothing changed).
    """
    with slot_changes(study) as changes:
        if not changes.fail(trial, attrs):
            return False
        if not is_search(trial):
            return True
        # Its configuration: the one it drew, or the one it was queued to run again; none if it never drew one.
        params = dict(trial.params) if CONFIG in trial.user_attrs else trial.system_attrs.get("fixed_params")
        if not params:
            changes.add([Slot(user_attrs={KIND: SEARCH})])  # a fresh slot in its place
        elif not (retry and trial.user_attrs.get(RETRY)):
            again = retry or trial.user_attrs.get(RETRY)
            user_attrs = {KIND: SEARCH, REQUEUED_FROM: trial.number, **({RETRY: 1} if again else {})}
            changes.add([Slot(user_attrs=user_attrs, fixed_params=params)])
    return True


def abandon(study: optuna.Study, trial: optuna.Trial, reason: str) -> bool:
    """End the RUNNING ``trial`` as FAIL with the failure ``reason`` and queue it to run again (:func:`requeue`).

    False if it was no longer RUNNING (told just before): nothing to redo.
    """
    return requeue(study, internals.stored_trial(trial), failure_attrs(reason))


def _take(study: optuna.Study, trial_id: int) -> bool:
    """The atomic WAITING -> RUNNING update; True for the one process that made it."""
    rdb = internals.rdb_of(study)
    if rdb is not None:
        return internals.take_waiting(rdb, trial_id)
    try:  # journal and in-memory storages already decide one owner
        return internals.storage_of(study).set_trial_state_values(trial_id, state=TrialState.RUNNING)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def claim(study: optuna.Study, interval: float = DEFAULT_INTERVAL,
          accept: Callable[[FrozenTrial], bool] = is_search) -> optuna.Trial | None:
    """Atomically take a WAITING trial that ``accept`` takes (a search slot) and record this process as its owner.

    None when there is none left.
    """
    return next(iter(claim_some(study, 1, interval, accept)), None)


def claim_some(study: optuna.Study, at_most: int, interval: float = DEFAULT_INTERVAL,
               accept: Callable[[FrozenTrial], bool] = is_search) -> list[optuna.Trial]:
    """Up to ``at_most`` WAITING trials that ``accept`` takes, each taken atomically as :func:`claim` takes one,
    the WAITING trials read once (a population's first members)."""
    claimed: list[optuna.Trial] = []
    for frozen in internals.waiting_trials(study):
        if len(claimed) >= at_most:
            break
        trial_id = internals.trial_id(frozen)
        if not accept(frozen) or not _take(study, trial_id):
            continue
        trial = optuna.Trial(study, trial_id)
        internals.set_trial_attrs(trial, {}, {OWNER_KEY: owner_record(interval), HEARTBEAT_KEY: time.time()})
        claimed.append(trial)
    return claimed


def beat(study: optuna.Study, trial_id: int) -> None:
    internals.set_trial_system_attr(study, trial_id, HEARTBEAT_KEY, time.time())


@contextmanager
def heartbeat(study: optuna.Study, trial_ids: int | list[int] | set[int], interval: float,
              progress: Callable[[], int] | None = None) -> Iterator[None]:
    """Stamp the trials' heartbeat every ``interval`` seconds while the block runs.

    A ``set`` of ids is read live at each beat: the caller adds the trials
    that join (a population's refills) and removes those that end.
    ``progress()`` is a counter the training loop advances (steps logged);
    each beat that sees it moved also stamps ``stabsearch:progress``.
    """
    ids = trial_ids if isinstance(trial_ids, set) else [trial_ids] if isinstance(trial_ids, int) else list(trial_ids)
    name = min(ids, default="")
    stop = threading.Event()
    last = progress() if progress else None

    def loop() -> None:
        nonlocal last
        while not stop.wait(interval):
            now = progress() if progress else None
            try:
                for trial_id in tuple(ids):  # a snapshot: the caller may change a live set meanwhile
                    beat(study, trial_id)
                    if now != last:
                        internals.set_trial_system_attr(study, trial_id, PROGRESS_KEY, time.time())
            except Exception:  # the trial may have just finished; the next run of the loop ends
                return
            last = now

    thread = threading.Thread(target=loop, name=f"heartbeat-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def lost_reason(trial: FrozenTrial, interval: float, now: float) -> str | None:
    """Why the RUNNING ``trial`` is lost, or None while its worker may still run it."""
    owner = trial.system_attrs.get(OWNER_KEY)
    gone = owner_gone(owner)
    if gone:
        return f"its worker (pid {owner['pid']} on {owner.get('host')}) is gone"
    last = trial.system_attrs.get(HEARTBEAT_KEY)
    if not isinstance(last, (int, float)):
        last = trial.datetime_start.timestamp() if trial.datetime_start else now
    silent = now - float(last)
    if silent <= GRACE_BEATS * writer_interval(trial, interval):
        return None
    return f"no heartbeat for {silent:.0f}s: the worker died"


def recover_lost(study: optuna.Study, interval: float, now: float | None = None) -> list[int]:
    """Fail RUNNING trials whose worker is gone, and queue a lost search trial's parameters once.

    ``interval`` is used only for trials whose worker recorded no interval of its own.
    Returns the numbers of the trials it recovered.
    """
    now = time.time() if now is None else now
    lost = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = lost_reason(t, interval, now)
        if why is not None and requeue(study, t, failure_attrs("worker lost", why), retry=True):
            lost.append(t.number)
    return lost


def last_progress(trial: FrozenTrial) -> float:
    """When ``trial``'s training loop was last seen to log a step (its claim time before the first)."""
    for value in (trial.system_attrs.get(PROGRESS_KEY), (trial.system_attrs.get(OWNER_KEY) or {}).get("claimed")):
        if isinstance(value, (int, float)):
            return float(value)
    return trial.datetime_start.timestamp() if trial.datetime_start else time.time()


def stalled(study: optuna.Study, timeout: float, now: float | None = None) -> dict[int, list[FrozenTrial]]:
    """RUNNING trials whose loop logged no step for ``timeout`` seconds, by the pid of their owner.

    Progress is stamped once per heartbeat, so a trial is judged stalled only
    once ``timeout`` plus one of its worker's heartbeat intervals has passed.
    """
    now = time.time() if now is None else now
    out: dict[int, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.system_attrs.get(OWNER_KEY)
        if isinstance(owner, dict) and now - last_progress(t) > timeout + writer_interval(t, DEFAULT_INTERVAL):
            out.setdefault(int(owner["pid"]), []).append(t)
    return out


def end_timed_out(study: optuna.Study, trial: FrozenTrial, timeout: float) -> bool:
    """End a stalled trial as FAIL "timed out" (counted, not re-run); False if it was no longer RUNNING."""
    attrs = failure_attrs("timed out", f"no step logged for {timeout:g}s (--trial-timeout): its worker was stopped")
    with slot_changes(study) as changes:
        return changes.fail(trial, attrs)
