"""Shared fixtures: a scratch working directory and an in-process CLI runner."""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MODULES = Path(__file__).resolve().parent / "modules"
OBJECTIVES = ROOT / "objectives"


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run each test in its own empty directory, so studies/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(capsys):
    """Call the ``stabsearch`` entry point in-process and return its exit code and output."""
    from stabsearch.cli import main

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def module_path(name: str) -> str:
    """Path of a test model module in tests/modules."""
    return str(MODULES / f"{name}.py")


def snapshot(db: Path) -> list[tuple]:
    """Every trial row and attribute of a study database, to prove nothing changed."""
    with sqlite3.connect(db) as conn:
        tables = ["studies", "trials", "trial_params", "trial_values", "trial_user_attributes", "trial_system_attributes", "study_user_attributes"]
        return [(t, conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()) for t in tables]


sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tiny models train fastest on one thread, and the suite must not oversubscribe a 2-core CI machine.
torch.set_num_threads(1)
