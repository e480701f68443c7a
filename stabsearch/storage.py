"""Open study storage: the embedded SQLite default, any SQLAlchemy URL, or a journal file.

Every way a storage can fail to open (missing file, corrupt file, bad URL,
wrong password, missing driver) becomes a one-line :class:`UsageError` that
shows the URL with its password hidden. Passwords never leave this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from stabsearch.errors import StorageError, UsageError
from stabsearch.inputs import printable

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


#: Exceptions that mean the storage itself failed (never the user's model code).
STORAGE_FAULTS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.SQLAlchemyError, sqlite3.DatabaseError, optuna.exceptions.StorageInternalError,
)
_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO)
_LAST_OPENED: list[str] = []  # the storage most recently opened in this process, as shown


def is_storage_fault(exc: BaseException, *, disk: bool = True) -> bool:
    """Whether ``exc`` came from reading or writing a storage.

    A database error; a stored row that does not decode (bad JSON, an
    unknown trial state); and, with ``disk``, an artifact write the disk
    refused (full, read-only). Call it with ``disk=False`` on what user code
    raised: its own ``OSError`` is its own.
    """
    if isinstance(exc, STORAGE_FAULTS) or isinstance(exc, json.JSONDecodeError) or type(exc) is LookupError:
        return True
    return disk and isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


def last_opened() -> str:
    """The storage most recently opened in this process, password hidden (for a message that has no other)."""
    return _LAST_OPENED[-1] if _LAST_OPENED else "(none opened)"


def storage_error(shown: str, exc: BaseException) -> StorageError:
    """One line naming the storage and the cause of ``exc`` (the first line of its root cause, shortened)."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    cause = getattr(cause, "orig", None) or cause
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return StorageError(shown, f"{type(cause).__name__}: {text[:200]}")


@dataclasses.dataclass(frozen=True)
class Storage:
    """An opened storage plus where its artifacts (loss curves) live.

    Paths are absolute, resolved once when the storage is opened, so user
    code that changes the working directory moves nothing. ``database`` and
    ``identity`` name the SQLite or journal file and its device and inode
    then: :meth:`check` finds a file that was deleted or replaced since.
    """

    url: str
    storage: BaseStorage
    artifacts: FileSystemArtifactStore
    artifacts_dir: Path
    database: Path | None = None
    identity: tuple[int, int] | None = None

    @property
    def shown(self) -> str:
        return redact(self.url)

    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    def check(self) -> None:
        """Raise :class:`StorageError` if the database file is gone or is another file than the one opened."""
        if self.database is None or self.identity is None:
            return
        try:
            info = self.database.stat()
        except FileNotFoundError:
            raise StorageError(self.shown, f"{self.database} was deleted during the run") from None
        if (info.st_dev, info.st_ino) != self.identity:
            raise StorageError(self.shown, f"{self.database} was replaced by another file during the run")


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _sqlite_path(url: str) -> Path | None:
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _prepare_sqlite(path: Path, shown: Path, *, create: bool) -> None:
    """Create the file (and its folder) when allowed, refuse a non-database or another program's, turn on WAL.

    A file that already holds tables but not Optuna's is someone else's
    database: it is refused, so no command adds tables to it. Only a
    command that may create a study (``create``) turns on WAL.
    """
    if not path.exists():
        if not create:
            raise UsageError(f"{shown}: no study database here (run `stabsearch run` first, or pass --storage)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{shown}: cannot create its folder ({exc.strerror or exc})") from None
    elif path.is_dir():
        raise UsageError(f"{shown}: is a directory, not a study database")
    elif not path.is_file():
        raise UsageError(f"{shown}: not a regular file")
    try:
        if path.exists():
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not {"studies", "version_info"} <= tables:
                raise UsageError(f"{shown}: a SQLite database of another program (no Optuna tables); not touched")
            if not tables and not create:
                raise UsageError(f"{shown}: an empty SQLite file, no studies (run `stabsearch run` first)")
        if create:
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent; ~3x cheaper writes
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{shown}: not a readable SQLite study database ({exc})") from None


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
    _LAST_OPENED[:] = [shown]
    database: Path | None = None
    if url.startswith("journal:"):
        rest = url[len("journal:") :]
        given = Path(rest[2:] if rest.startswith("//") else rest)
        database = given.absolute()
        if not database.exists() and not create:
            raise UsageError(f"{given}: no journal file here (run `stabsearch run` first, or pass --storage)")
        if database.exists() and not database.is_file():
            raise UsageError(f"{given}: not a regular file")
        database.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage: BaseStorage = JournalStorage(JournalFileBackend(str(database)))
        artifacts_dir = database.parent / "artifacts"
    else:
        sqlite_path = _sqlite_path(url)
        engine_url = url
        if sqlite_path is not None:
            database = sqlite_path.absolute()  # user code may chdir: connections must not follow it
            _prepare_sqlite(database, sqlite_path, create=create)
            engine_url = sqlalchemy.engine.make_url(url).set(database=str(database)).render_as_string(hide_password=False)
            artifacts_dir = database.parent / "artifacts"
            engine_kwargs = {"connect_args": {"timeout": 30}}
        else:
            artifacts_dir = (Path("studies") / "artifacts").absolute()
            engine_kwargs = {"pool_pre_ping": True}
        try:
            storage = RDBStorage(engine_url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if url in reason:
                reason = reason.replace(url, shown)
            raise UsageError(f"storage {shown}: cannot open it ({type(exc).__name__}: {reason[:200]})") from None
        if sqlite_path is not None:
            sqlalchemy.event.listen(storage.engine, "connect", _on_sqlite_connect)
    try:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{artifacts_dir}: cannot create the artifact folder ({exc.strerror or exc})") from None
    return Storage(
        url=url, storage=storage, artifacts=FileSystemArtifactStore(artifacts_dir), artifacts_dir=artifacts_dir,
        database=database, identity=_identity(database) if database is not None and database.exists() else None,
    )


def pick_study_name(storage: Storage, name: str | None) -> str:
    """``name`` if the storage has it; without a name, the storage's only study."""
    names = storage.study_names()
    if name is not None:
        if name not in names:
            known = ", ".join(map(printable, names)) if names else "none"
            raise UsageError(f"no study named {name!r} in {storage.shown} (studies there: {known})")
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError(f"no studies in {storage.shown} yet; run `stabsearch run MODEL` first")
    raise UsageError(f"{len(names)} studies in {storage.shown} ({', '.join(map(printable, names))}); pick one with --study")


def load_study(storage: Storage, name: str | None, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Load an existing study, or a one-line error naming what is there."""
    study_name = pick_study_name(storage, name)
    return optuna.load_study(study_name=study_name, storage=storage.storage, sampler=sampler)
