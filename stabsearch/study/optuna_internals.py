"""Every use of Optuna's private API, behind small typed functions.

Optuna's public API has no way to name a study's or a trial's storage id, to
write several trial attributes in one transaction, to change a trial's
state conditionally in SQL, or to let a sampler read the trials once per
draw; stabsearch needs all four. What it uses of
Optuna's internals (``Study._storage``, ``Study._study_id``, ``Study._get_trials``
and its per-thread cache of the trials,
``Trial._trial_id``, ``Trial._cached_frozen_trial``, ``Trial.storage``, ``FrozenStudy._study_id``,
``_CachedStorage._backend``, ``JournalFileBackend._file_path``, the RDB
storage's session helpers and its table models in
``optuna.storages._rdb.models``) is used here and nowhere else, so an Optuna
upgrade that moves one of them breaks this module alone.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages import BaseStorage, RDBStorage
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState


# --- ids and storages -----------------------------------------------------------------------------


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes (for a SQL URL, Optuna's caching wrapper of the RDB storage)."""
    return study._storage


def study_id(study: optuna.Study | FrozenStudy) -> int:
    """The storage's id of ``study`` (a loaded study, or one of ``storage.get_all_studies()``)."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (not its number, which counts within the study)."""
    return trial._trial_id


def stored_trial(trial: optuna.Trial) -> FrozenTrial:
    """``trial`` as the storage holds it now (a live ``optuna.Trial`` caches only what it wrote itself)."""
    return trial.storage.get_trial(trial._trial_id)


def all_trials(study: optuna.Study, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
    """The study's trials read from its storage, past the study's per-thread cache (not deep-copied)."""
    return study._storage.get_all_trials(study._study_id, deepcopy=False, states=states)


def waiting_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's WAITING trials read from its storage; on a SQL storage filtered by the database, so the
    RUNNING trials (a population's, every worker's) are not read and built each time (not deep-copied)."""
    rdb = rdb_of(study)
    if rdb is None:
        return all_trials(study, states=(TrialState.WAITING,))
    return rdb.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))


class OneReadStudy:
    """``study`` as a sampler sees it while it draws one trial: every read of the trials, the constant liar's
    too, served from one snapshot (Optuna's per-thread cache), renewed by :meth:`begin_draw`.

    TPE with ``constant_liar`` reads the trials past Optuna's cache, once
    for the relative parameters and once more for each independently
    sampled one; with a population's members RUNNING, each read builds them
    all. Within one trial's draw the trials it sees do not change (this
    process draws it), so one read serves them all.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        """Everything but the reads of the trials is the study's own."""
        return getattr(self._study, name)

    def begin_draw(self, startup: int) -> None:
        """A trial's draw begins: past TPE's random start-up (``startup`` finished trials), take a new snapshot,
        so the constant liar sees every trial drawn before this one.

        Optuna renews the snapshot at each ``tell`` (a population's refill
        follows one); a population's first members are drawn one after the
        other with none between. During the start-up their draws are random
        and read no running trials, so the snapshot stays.
        """
        local = self._study._thread_local
        if local.cached_all_trials is None:
            return  # the next read takes a new one
        if len(self._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) >= startup:
            local.cached_all_trials = None

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False) -> list[FrozenTrial]:
        """``Study._get_trials`` from the snapshot, whatever ``use_cache`` asks (the constant liar asks to skip it)."""
        return self._study._get_trials(deepcopy, states, use_cache=True)


def set_trial_system_attr(study: optuna.Study, trial: int | optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    """Write one system attribute of a trial (``trial``: the trial or its storage id)."""
    study._storage.set_trial_system_attr(trial if isinstance(trial, int) else trial._trial_id, key, value)


def rdb_of(study: optuna.Study) -> RDBStorage | None:
    """The SQL storage under ``study``'s storage, or None (journal, in-memory)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, RDBStorage) else None


def journal_file(study: optuna.Study) -> str | None:
    """The path of ``study``'s journal file, or None when it is not stored in one."""
    return getattr(getattr(study._storage, "_backend", None), "_file_path", None)


# --- writing a trial's attributes at once ---------------------------------------------------------


#: A drawn parameter as ``Trial.suggest_*`` hands it to the storage: name, internal value, distribution.
Param = tuple[str, float, BaseDistribution]


def set_trial_attrs(
    trial: optuna.Trial, user_attrs: Mapping[str, Any], system_attrs: Mapping[str, Any] = {},
    reports: Mapping[int, float] = {}, params: Sequence[Param] = (),
) -> None:
    """Write ``user_attrs``, ``system_attrs``, ``reports`` (intermediate values by step, as ``trial.report``
    writes them) and ``params`` (kept by :func:`params_kept`) of the running ``trial``: on a SQL storage in
    one transaction.

    Other storages get one write per value. ``trial.user_attrs`` and
    ``trial.intermediate_values`` read them back afterwards.
    """
    if not (user_attrs or system_attrs or reports or params):
        return
    rdb = rdb_of(trial.study)
    tid = trial._trial_id
    if rdb is None:
        for name, value, distribution in params:
            trial.storage.set_trial_param(tid, name, value, distribution)
        for key, value in user_attrs.items():
            trial.storage.set_trial_user_attr(tid, key, value)
        for key, value in system_attrs.items():
            trial.storage.set_trial_system_attr(tid, key, value)
        for step, value in reports.items():
            trial.storage.set_trial_intermediate_value(tid, step, value)
    else:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(rdb.scoped_session, True) as session:
            row = models.TrialModel.find_or_raise_by_id(tid, session)
            rdb.check_trial_is_updatable(tid, row.state)
            if params:
                _insert_params(session, row, params)
            for model, attrs in ((models.TrialUserAttributeModel, user_attrs), (models.TrialSystemAttributeModel, system_attrs)):
                rows = [{"trial_id": tid, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
                if rows and not _upsert(rdb, session, model, rows, ("trial_id", "key"), ("value_json",)):
                    for key, value in attrs.items():
                        rdb._set_trial_attr_without_commit(session, model, tid, key, value)
            values = models.TrialIntermediateValueModel
            rows = []
            for step, value in reports.items():
                stored, kind = values.intermediate_value_to_stored_repr(value)  # NaN and infinities by kind, as Optuna stores them
                rows.append({"trial_id": tid, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
            if rows and not _upsert(rdb, session, values, rows, ("trial_id", "step"), ("intermediate_value", "intermediate_value_type")):
                for step, value in reports.items():
                    rdb._set_trial_intermediate_value_without_commit(session, tid, step, value)
    trial._cached_frozen_trial.user_attrs.update(user_attrs)
    trial._cached_frozen_trial.system_attrs.update(system_attrs)
    trial._cached_frozen_trial.intermediate_values.update(reports)


class _KeepParams:
    """``trial.storage`` while :func:`params_kept` holds it: parameters kept, everything else passed on."""

    def __init__(self, storage: BaseStorage, kept: list[Param]) -> None:
        self._storage, self._kept = storage, kept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: BaseDistribution) -> None:
        self._kept.append((name, value, distribution))


@contextmanager
def params_kept(trial: optuna.Trial) -> Iterator[list[Param]]:
    """The parameters the block draws with ``trial.suggest_*``, kept for one write with the trial's attributes
    (:func:`set_trial_attrs`, ``params=``) instead of one transaction each.

    ``trial.params`` holds them as soon as they are drawn; the storage holds
    them once written. Nine parameters were nine commits per trial.
    """
    kept: list[Param] = []
    storage = trial.storage
    trial.storage = _KeepParams(storage, kept)
    try:
        yield kept
    finally:
        trial.storage = storage


def _upsert(rdb: RDBStorage, session: Any, model: Any, rows: list[dict[str, Any]], keys: Sequence[str],
            update: Sequence[str]) -> bool:
    """``rows`` of ``model``'s table in one multi-row upsert on its unique ``keys`` (SQLite 3.24+, PostgreSQL,
    MySQL), ``update`` taken from the new row on a conflict; False on another database (the caller writes
    them one by one, as Optuna does).

    One statement instead of two per value: a finished trial stores some
    thirty attributes and its reports.
    """
    import sqlite3

    from sqlalchemy.dialects import mysql, postgresql, sqlite

    name = rdb.engine.name
    if name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        insert = sqlite.insert(model).values(rows)
        statement = insert.on_conflict_do_update(index_elements=list(keys), set_={c: insert.excluded[c] for c in update})
    elif name == "postgresql":
        insert = postgresql.insert(model).values(rows)
        statement = insert.on_conflict_do_update(index_elements=list(keys), set_={c: insert.excluded[c] for c in update})
    elif name == "mysql":
        insert = mysql.insert(model).values(rows)
        statement = insert.on_duplicate_key_update({c: insert.inserted[c] for c in update})
    else:
        return False
    session.execute(statement)
    return True


def _insert_params(session: Any, trial: Any, params: Sequence[Param]) -> None:
    """A running trial's drawn ``params`` in one insert, each distribution checked first against one of the
    study's earlier ones of that name, as Optuna checks it (a query each, stopping at the first row)."""
    from optuna.distributions import check_distribution_compatibility, json_to_distribution
    from optuna.storages._rdb import models
    from sqlalchemy import insert, select

    tp, tm = models.TrialParamModel, models.TrialModel
    for name, _, distribution in params:
        earlier = session.execute(
            select(tp.distribution_json).join(tm, tp.trial_id == tm.trial_id)
            .where(tm.study_id == trial.study_id, tp.param_name == name).limit(1)
        ).scalar_one_or_none()
        if earlier is not None:
            check_distribution_compatibility(json_to_distribution(earlier), distribution)
    session.execute(insert(tp).values([
        {"trial_id": trial.trial_id, "param_name": name, "param_value": value, "distribution_json": distribution_to_json(d)}
        for name, value, d in params
    ]))


# --- SQL: conditional state changes and slots in one transaction ----------------------------------


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


@contextmanager
def locked_study(rdb: RDBStorage, study: optuna.Study) -> Iterator[Any]:
    """A SQLAlchemy session in one transaction that holds ``study``'s row until it commits (or rolls back).

    PostgreSQL and MySQL lock the row, SQLite the whole database.
    """
    from optuna.storages._rdb import models
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    with Session(rdb.engine) as session, session.begin():
        st = models.StudyModel
        # A no-op write on the study's row takes the lock.
        session.execute(update(st).where(st.study_id == study._study_id).values(study_name=st.study_name))
        yield session


def trial_states(session: Any, study: optuna.Study, keys: Sequence[str]) -> list[Any]:
    """Every trial of ``study`` as ``state`` and the ``user_attrs`` among ``keys``, read in ``session``.

    Two narrow queries instead of building every trial with all it holds:
    what counting the study's slots needs (see :func:`stabsearch.study.slots.reserve`).
    """
    import types

    from optuna.storages._rdb import models
    from sqlalchemy import select

    t, a, sid = models.TrialModel, models.TrialUserAttributeModel, study._study_id
    trials = {tid: types.SimpleNamespace(state=state, user_attrs={})
              for tid, state in session.execute(select(t.trial_id, t.state).where(t.study_id == sid))}
    query = select(a.trial_id, a.key, a.value_json).join(t, t.trial_id == a.trial_id).where(t.study_id == sid, a.key.in_(list(keys)))
    for tid, key, value in session.execute(query):
        if tid in trials:
            trials[tid].user_attrs[key] = json.loads(value)
    return list(trials.values())


def add_waiting_trials(
    session: Any, study: optuna.Study,
    trials: Iterable[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any], Mapping[str, BaseDistribution]]],
) -> None:
    """Add WAITING trials in ``session``: each as (user attributes, system attributes, params, distributions)."""
    from optuna.storages._rdb import models
    from sqlalchemy import func, select

    trials = list(trials)
    if not trials:
        return
    sid = study._study_id
    base = session.scalar(select(func.count(models.TrialModel.trial_id)).where(models.TrialModel.study_id == sid))
    rows = [models.TrialModel(study_id=sid, number=base + i, state=TrialState.WAITING) for i in range(len(trials))]
    session.add_all(rows)
    session.flush()
    for row, (user_attrs, system_attrs, params, distributions) in zip(rows, trials):
        session.add_all(models.TrialUserAttributeModel(trial_id=row.trial_id, key=k, value_json=json.dumps(v))
                        for k, v in user_attrs.items())
        session.add_all(models.TrialSystemAttributeModel(trial_id=row.trial_id, key=k, value_json=json.dumps(v))
                        for k, v in system_attrs.items())
        session.add_all(models.TrialParamModel(trial_id=row.trial_id, param_name=k,
                                               param_value=distributions[k].to_internal_repr(v),
                                               distribution_json=distribution_to_json(distributions[k]))
                        for k, v in params.items())


def fail_running(session: Any, trial: FrozenTrial, user_attrs: Mapping[str, Any]) -> bool:
    """In ``session``: RUNNING -> FAIL with ``user_attrs`` written; False (nothing changed) if it was not RUNNING."""
    from optuna.storages._rdb import models
    from sqlalchemy import delete, update

    t = models.TrialModel.__table__.c
    done = session.execute(update(models.TrialModel.__table__).where(t.trial_id == trial._trial_id, t.state == TrialState.RUNNING)
                           .values(state=TrialState.FAIL, datetime_complete=_utcnow()))
    if done.rowcount != 1:
        return False
    a = models.TrialUserAttributeModel
    session.execute(delete(a).where(a.trial_id == trial._trial_id, a.key.in_(list(user_attrs))))
    session.add_all(a(trial_id=trial._trial_id, key=k, value_json=json.dumps(v)) for k, v in user_attrs.items())
    return True


def take_waiting(rdb: RDBStorage, trial_id: int) -> bool:
    """The atomic WAITING -> RUNNING update of one trial (its own transaction); True for the one caller that made it."""
    from optuna.storages._rdb import models
    from sqlalchemy import update

    t = models.TrialModel.__table__
    with rdb.engine.begin() as conn:
        done = conn.execute(update(t).where(t.c.trial_id == trial_id, t.c.state == TrialState.WAITING)
                            .values(state=TrialState.RUNNING, datetime_start=_utcnow()))
    return done.rowcount == 1
