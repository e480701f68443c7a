"""Open study storage: the embedded SQLite default, any SQLAlchemy URL, or a journal file.

Every way a storage can fail to open (missing file, corrupt file, bad URL,
wrong password, missing driver) becomes a one-line :class:`UsageError` that
shows the URL through :func:`masked_url`, with every password hidden. Passwords never leave
this module: every output names a storage by :attr:`Storage.shown`.
"""

from __future__ import annotations

import dataclasses
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

from stabsearch.errors import UsageError

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


@dataclasses.dataclass(frozen=True)
class Storage:
    """An opened storage plus where its artifacts (loss curves) live."""

    url: str
    storage: BaseStorage
    artifacts: FileSystemArtifactStore
    artifacts_dir: Path

    @property
    def shown(self) -> str:
        return masked_url(self.url)

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
    shown = masked_url(url)
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
            reason = mask_text(reason, url)
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
