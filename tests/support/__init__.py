"""What the tests share besides fixtures: the repository's paths and a stored study's snapshot."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
MODULES = TESTS / "modules"
DATA = TESTS / "data"
OBJECTIVES = ROOT / "objectives"


def module_path(name: str) -> str:
    """Path of a test model module in tests/modules."""
    return str(MODULES / f"{name}.py")


def snapshot(db: Path) -> list[tuple]:
    """Every trial row and attribute of a study database, to prove nothing changed."""
    with sqlite3.connect(db) as conn:
        tables = ["studies", "trials", "trial_params", "trial_values", "trial_user_attributes", "trial_system_attributes", "study_user_attributes"]
        return [(t, conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()) for t in tables]


#: The environment of a ``stabsearch`` subprocess: one thread (a 2-core machine runs several), unbuffered output.
CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def stabsearch(*args, cwd, check=True, timeout=600) -> subprocess.CompletedProcess:
    """``python -m stabsearch ARGS`` in ``cwd``; asserts exit status 0 unless ``check`` is False."""
    r = subprocess.run([sys.executable, "-m", "stabsearch", *map(str, args)], cwd=cwd, env=CLI_ENV,
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return r
