"""search/storage.py: opening SQLite storages by path and URL, and refusing files that are not study databases."""

from __future__ import annotations

import contextlib
import sqlite3

import optuna
import pytest

from stabsearch.errors import UsageError
from stabsearch.study.storage import open_storage, pick_study_name


def _tables(path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_relative_sqlite_url_is_resolved_once_and_user_code_chdir_moves_nothing(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.chdir(tmp_path)
    store = open_storage("sqlite:///nested/dir/s.db", create=True)
    assert store.database == tmp_path / "nested" / "dir" / "s.db" and store.database.is_absolute()
    assert store.artifacts_dir == tmp_path / "nested" / "dir" / "artifacts" and store.artifacts_dir.is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    optuna.create_study(study_name="here", storage=store.storage)
    assert not (elsewhere / "nested").exists()
    assert {"studies", "version_info"} <= _tables(tmp_path / "nested" / "dir" / "s.db")
    store.check()  # the same file as opened


def test_an_absolute_sqlite_url_opens_the_same_database(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "abs.db"
    optuna.create_study(study_name="mine", storage=open_storage(f"sqlite:///{path}", create=True).storage)
    again = open_storage(f"sqlite:///{path}")  # without create: it must exist, and it does
    assert again.database == path and pick_study_name(again, None) == "mine"


def test_a_missing_file_is_not_created_without_create(tmp_path):
    with pytest.raises(UsageError, match="no study database here"):
        open_storage(f"sqlite:///{tmp_path}/absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_the_database_of_another_program_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        conn.commit()
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(UsageError, match="a SQLite database of another program"):
            open_storage(f"sqlite:///{path}", create=create)
    assert path.read_bytes() == before and _tables(path) == {"invoices"}


def test_a_read_only_open_of_an_empty_file_creates_no_tables(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(UsageError, match="an empty SQLite file, no studies"):
        open_storage(f"sqlite:///{path}")
    assert path.stat().st_size == 0 and _tables(path) == set()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for\n" * 100)
    with pytest.raises(UsageError, match="not a readable SQLite study database"):
        open_storage(f"sqlite:///{path}", create=True)
    assert path.read_text().startswith("these are not")
