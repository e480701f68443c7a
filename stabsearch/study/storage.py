"""Open study storage: the embedded SQLite default, any SQLAlchemy URL, or a journal file.

Every way a storage can fail to open (missing file, corrupt file, bad URL,
wrong password, missing driver) becomes a one-line :class:`UsageError` that
shows the URL through :func:`masked_url`, with every password hidden. Passwords never leave
this module: every output names a storage by :attr:`Storage.shown`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import re
import sqlite3
import urllib.parse
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


#: Query keys whose values are secrets (case-insensitive): password, passwd, pwd, sslpassword, a token...
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_MASK = "***"


def masked_url(url: str) -> str:
    """``url`` with every password-like part replaced by ``***``: the one form any output shows.

    The password of the user info goes, and so does the value of every query
    key that looks like a password (``password``, ``passwd``, ``pwd``,
    ``sslpassword``, ``...token``, in any case).

    Args:
        url: a storage URL, as given to ``--storage``.

    Example:
        >>> masked_url("postgresql://me:secret@db/studies")
        'postgresql://me:***@db/studies'
        >>> masked_url("postgresql://me@db/studies?PassWord=secret&sslmode=require")
        'postgresql://me@db/studies?PassWord=***&sslmode=require'
    """
    if url.startswith("journal:"):
        return url
    try:
        parsed = sqlalchemy.engine.make_url(url)
        base = parsed.set(query={}).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"
    pairs = [
        (key, _MASK if _SECRET_KEY.search(key) else value)
        for key, values in parsed.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    return base + ("?" + urllib.parse.urlencode(pairs, safe="*") if pairs else "")


def secrets_of(url: str) -> list[str]:
    """The password-like values in ``url`` (decoded and as written), longest first, for :func:`mask_text`."""
    found = set()
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        return []
    if parsed.password:
        found.add(str(parsed.password))
    for key, values in parsed.query.items():
        if _SECRET_KEY.search(key):
            found.update((values,) if isinstance(values, str) else values)
    found |= {urllib.parse.quote(v, safe="") for v in found}
    return sorted((v for v in found if v), key=len, reverse=True)


def mask_text(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` and each of its secrets masked as :func:`masked_url` does.

    Example:
        >>> mask_text("cannot reach db?pwd=hunter2 (pwd hunter2)", "postgresql://db/x?pwd=hunter2")
        'cannot reach db?pwd=*** (pwd ***)'
    """
    text = text.replace(url, masked_url(url))
    for secret in secrets_of(url):  # as a whole word, so that a one-letter password does not garble the text
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", _MASK, text)
    return text


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
        return masked_url(self.url)

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
    shown = masked_url(url)
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
            reason = mask_text(reason, url)
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
