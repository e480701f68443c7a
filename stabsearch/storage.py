"""Open study storage: the embedded SQLite default, any SQLAlchemy URL, or a journal file.

Every way a storage can fail to open (missing file, corrupt file, bad URL,
wrong password, missing driver) becomes a one-line :class:`UsageError` that
shows the URL with its password hidden. Passwords never leave this module.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from stabsearch.errors import UsageError

DEFAULT_STORAGE = "sqlite:///studies/stabsearch.db"


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``.

    Example:
        >>> redact("postgresql://me:secret@db/studies")
        'postgresql://me:***@db/studies'
    """
    if url.startswith("journal:"):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


@dataclasses.dataclass(frozen=True)
class Storage:
    """An opened storage plus where its artifacts (loss curves) live."""

    url: str
    storage: BaseStorage
    artifacts: FileSystemArtifactStore
    artifacts_dir: Path

    @property
    def shown(self) -> str:
        return redact(self.url)

    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]


def _sqlite_path(url: str) -> Path | None:
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _prepare_sqlite(path: Path, *, create: bool) -> None:
    """Create the file (and its folder) when allowed, refuse a non-database, and turn on WAL."""
    if not path.exists():
        if not create:
            raise UsageError(f"{path}: no study database here (run `stabsearch run` first, or pass --storage)")
        path.parent.mkdir(parents=True, exist_ok=True)
    elif path.is_dir():
        raise UsageError(f"{path}: is a directory, not a study database")
    try:
        with sqlite3.connect(path, timeout=30) as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent; ~3x cheaper writes
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: not a readable SQLite study database ({exc})") from None


def _on_sqlite_connect(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_storage(url: str | None = None, *, create: bool = False) -> Storage:
    """Open ``url`` (default: ``studies/stabsearch.db``); ``create`` allows a new SQLite file.

    Example:
        >>> open_storage("sqlite:///no/such/dir/x.db")
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: no/such/dir/x.db: no study database here (run `stabsearch run` first, or pass --storage)
    """
    url = url or DEFAULT_STORAGE
    shown = redact(url)
    if url.startswith("journal:"):
        rest = url[len("journal:") :]
        path = Path(rest[2:] if rest.startswith("//") else rest)
        if not path.exists() and not create:
            raise UsageError(f"{path}: no journal file here (run `stabsearch run` first, or pass --storage)")
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage: BaseStorage = JournalStorage(JournalFileBackend(str(path)))
        artifacts_dir = path.parent / "artifacts"
    else:
        sqlite_path = _sqlite_path(url)
        if sqlite_path is not None:
            _prepare_sqlite(sqlite_path, create=create)
            artifacts_dir = sqlite_path.parent / "artifacts"
            engine_kwargs = {"connect_args": {"timeout": 30}}
        else:
            artifacts_dir = Path("studies") / "artifacts"
            engine_kwargs = {"pool_pre_ping": True}
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if url in reason:
                reason = reason.replace(url, shown)
            raise UsageError(f"storage {shown}: cannot open it ({type(exc).__name__}: {reason[:200]})") from None
        if sqlite_path is not None:
            sqlalchemy.event.listen(storage.engine, "connect", _on_sqlite_connect)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    return Storage(url=url, storage=storage, artifacts=FileSystemArtifactStore(artifacts_dir), artifacts_dir=artifacts_dir)


def pick_study_name(storage: Storage, name: str | None) -> str:
    """``name`` if the storage has it; without a name, the storage's only study."""
    names = storage.study_names()
    if name is not None:
        if name not in names:
            known = ", ".join(names) if names else "none"
            raise UsageError(f"no study named {name!r} in {storage.shown} (studies there: {known})")
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError(f"no studies in {storage.shown} yet; run `stabsearch run MODEL` first")
    raise UsageError(f"{len(names)} studies in {storage.shown} ({', '.join(names)}); pick one with --study")


def load_study(storage: Storage, name: str | None, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Load an existing study, or a one-line error naming what is there."""
    study_name = pick_study_name(storage, name)
    return optuna.load_study(study_name=study_name, storage=storage.storage, sampler=sampler)
