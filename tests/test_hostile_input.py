"""Hostile and faulty input: out-of-range numbers, NaN, unbounded files, damaged or foreign databases, raw
control characters. Each gets one clean line and exit status 2, and leaves every stored study as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.support import module_path, snapshot


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One small stored study and broken copies of it, made once."""
    from stabsearch.cli import main

    home = tmp_path_factory.mktemp("hostile")
    old = os.getcwd()
    os.chdir(home)
    try:
        main(["run", module_path("tiny"), "--trials", "2", "--no-progress", "--confirm", "0"])
    finally:
        os.chdir(old)
    db = home / "studies" / "stabsearch.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    broken = home / "broken"
    broken.mkdir()
    for name, sql in {
        "badjson": "UPDATE trial_user_attributes SET value_json = '{bad' WHERE key = 'verdict'",
        "badstate": "UPDATE trials SET state = 'BOGUS'",
    }.items():
        shutil.copy(db, broken / f"{name}.db")
        with sqlite3.connect(broken / f"{name}.db") as conn:
            conn.execute(sql)
    shutil.copy(db, broken / "damaged.db")
    with open(broken / "damaged.db", "r+b") as f:  # overwrite two pages past the header
        f.seek(8192)
        f.write(b"\xff" * 8192)
    with sqlite3.connect(broken / "foreign.db") as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    return home


@pytest.fixture
def stored(workdir, template):
    shutil.copytree(template / "studies", workdir / "studies")
    shutil.copytree(template / "broken", workdir / "broken")
    db = workdir / "studies" / "stabsearch.db"
    files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (workdir / "broken").iterdir()}
    return db, snapshot(db), files


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _deep(d: Path) -> str:
    return _write(d / "deep.yaml", "lr: " + "[" * 100_000 + "]" * 100_000 + "\n")


def _bomb(d: Path) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
    return _write(d / "bomb.yaml", "\n".join(lines) + "\nlr: *i\n")


def _long_line(d: Path) -> str:
    return _write(d / "long.csv", "loss\n" + "x" * 50_000_000 + "\n")


def sqlite(d: Path, name: str) -> str:
    return f"sqlite:///{d / 'broken' / name}.db"


TINY = module_path("tiny")
SECRET = "S3cretPw"
HOSTILE = {
    "seed past 2**32": lambda d: ["run", TINY, "--seed", "4294967296"],
    "stress nan": lambda d: ["run", TINY, "--stress", "nan"],
    "stress inf": lambda d: ["run", TINY, "--stress", "inf"],
    "stress below one horizon": lambda d: ["run", TINY, "--stress", "1e-9"],
    "confirm stress nan": lambda d: ["confirm", TINY, "--stress", "nan"],
    "heartbeat nan": lambda d: ["run", TINY, "--heartbeat", "nan"],
    "heartbeat inf": lambda d: ["run", TINY, "--heartbeat", "inf"],
    "a billion seeds": lambda d: ["run", TINY, "--seeds", "1000000000"],
    "warning penalty nan": lambda d: ["run", TINY, "--warning-penalty", "nan"],
    "timeout nan": lambda d: ["run", TINY, "--timeout", "nan"],
    "trial timeout inf": lambda d: ["run", TINY, "--trial-timeout", "inf"],
    "analyze lr nan": lambda d: ["analyze", _write(d / "ok.csv", "loss\n1\n0.5\n"), "--lr", "nan"],
    "space 100k levels deep": lambda d: ["run", TINY, "--space", _deep(d)],
    "space YAML alias bomb": lambda d: ["run", TINY, "--space", _bomb(d)],
    "space file /dev/zero": lambda d: ["run", TINY, "--space", "/dev/zero"],
    "space file too large": lambda d: ["run", TINY, "--space", _write(d / "big.yaml", "# " + "x" * (2 << 20) + "\n")],
    "analyze a 50 MB line": lambda d: ["analyze", _long_line(d)],
    "analyze /dev/zero": lambda d: ["analyze", "/dev/zero"],
    "study name with a newline": lambda d: ["run", TINY, "--study", "tiny\nfake line"],
    "study name with ANSI escapes": lambda d: ["run", TINY, "--study", "tiny\x1b[2J\x1b[31m"],
    "trials on a foreign SQLite file": lambda d: ["trials", "--storage", sqlite(d, "foreign")],
    "recommend on a foreign SQLite file": lambda d: ["recommend", "--storage", sqlite(d, "foreign")],
    "run on a foreign SQLite file": lambda d: ["run", TINY, "--storage", sqlite(d, "foreign")],
    "trials on bad JSON": lambda d: ["trials", "--storage", sqlite(d, "badjson")],
    "recommend on bad JSON": lambda d: ["recommend", "--storage", sqlite(d, "badjson")],
    "trials on a bad state row": lambda d: ["trials", "--storage", sqlite(d, "badstate")],
    "trials on damaged pages": lambda d: ["trials", "--storage", sqlite(d, "damaged")],
    "report on damaged pages": lambda d: ["report", "--storage", sqlite(d, "damaged")],
    # passwords, as query parameters or user info, never shown (item 5); the line must still name the storage
    "query password on a missing database": lambda d: ["trials", "--storage", f"sqlite:///{d}/none.db?password={SECRET}"],
    "query password on a damaged database": lambda d: ["trials", "--storage", sqlite(d, "damaged") + f"?PassWord={SECRET}"],
    "sslpassword on an unreachable server": lambda d: [
        "trials", "--storage", f"postgresql://u@127.0.0.1:9/db?sslpassword={SECRET}&connect_timeout=1"],
    "userinfo password on an unreachable server": lambda d: [
        "recommend", "--storage", f"postgresql://u:{SECRET}@127.0.0.1:9/db?connect_timeout=1"],
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_one_clean_line_exit_2_and_changes_nothing(stored, cli, workdir, case):
    db, before, files = stored
    r = cli(*HOSTILE[case](workdir))
    assert r.code == 2, (case, r.code, r.err[-2000:])
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stabsearch: error:"), r.err[-2000:]
    assert len(lines[0]) < 400 and lines[0].isprintable(), lines[0][:400]
    assert "Traceback" not in r.err and r.out == "" and SECRET not in r.err
    assert snapshot(db) == before
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == files


def test_a_foreign_sqlite_file_keeps_only_its_own_tables(stored, cli, workdir):
    cli("trials", "--storage", sqlite(workdir, "foreign"))
    with sqlite3.connect(workdir / "broken" / "foreign.db") as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]


def test_a_stored_study_name_with_control_characters_is_shown_escaped(workdir, cli):
    import optuna

    optuna.create_study(study_name="evil\x1b[2J\nname", storage="sqlite:///studies.db")
    r = cli("studies", "--storage", "sqlite:///studies.db")
    assert r.code == 0 and "\x1b" not in r.out and "evil\\x1b[2J\\nname" in r.out


def test_stored_error_strings_reach_the_terminal_escaped(workdir, cli):
    import optuna

    study = optuna.create_study(study_name="s", storage="sqlite:///studies.db")
    trial = study.ask()
    trial.set_user_attr("failure", "user-code error")
    trial.set_user_attr("error", "ValueError: boom\n\x1b[2Jfake prompt$ ")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    r = cli("trials", "--storage", "sqlite:///studies.db")
    assert r.code == 0 and "\x1b" not in r.out and "boom\\n\\x1b[2Jfake" in r.out
    assert len(r.out.strip().splitlines()) == 2  # the header and one row
