"""What each entry point imports: the read-only commands and the pure analysis never load torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

HEAVY = ("torch", "optuna", "plotly", "pandas")
CURVE = ROOT / "tests" / "data" / "corpus" / "clean_lognormal_030.csv"


def _loaded(code: str, cwd) -> list[str]:
    """The heavy modules loaded after ``code`` runs in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True)
    line = [line for line in r.stdout.splitlines() if line.startswith("LOADED=")]
    assert line, r.stderr[-2000:]
    return [m for m in line[0][len("LOADED="):].split(",") if m]


def test_import_stabsearch_and_its_analysis_load_no_heavy_library(tmp_path):
    code = "import stabsearch\nresult = stabsearch.analyze([2.3, 1.0, 0.5, 0.2] * 30)\nassert result.verdict"
    assert _loaded(code, tmp_path) == []


@pytest.mark.parametrize("args", [["--help"], ["trials"], ["recommend"], ["studies"], ["analyze", str(CURVE)]])
def test_read_commands_never_import_torch(tmp_path, args):
    code = f"from stabsearch.cli import main\ntry:\n    main({json.dumps(args)})\nexcept SystemExit:\n    pass"
    assert "torch" not in _loaded(code, tmp_path)


def test_analyze_works_where_torch_cannot_be_imported(tmp_path):
    code = (
        "sys.modules['torch'] = None  # any import of torch now raises ImportError\n"
        "from stabsearch.cli import main\n"
        f"try:\n    main(['analyze', {str(CURVE)!r}, '--format', 'json'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code"
    )
    r = subprocess.run([sys.executable, "-c", "import sys\n" + code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["verdict"] == "stable"
