"""What the tests share besides fixtures: the repository's paths and a stored study's snapshot."""

from __future__ import annotations

import sqlite3
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
