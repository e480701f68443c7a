"""The pure core is pure: its modules load no torch, Optuna, plotly or pandas, and ``stabsearch analyze`` runs without them."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tests.support import ROOT

HEAVY = ("torch", "optuna", "plotly", "pandas")


def _run(code: str, cwd) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that finds this checkout's stabsearch first."""
    return subprocess.run(
        [sys.executable, "-c", f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n{code}"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def test_every_module_of_the_pure_core_loads_no_heavy_library(tmp_path):
    code = (
        "import importlib, pkgutil\n"
        "import stabsearch.analysis as pkg\n"
        "names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__, 'stabsearch.analysis.'))\n"
        "for name in [*names, 'stabsearch.config', 'stabsearch.schedule']:\n"
        "    importlib.import_module(name)\n"
        "for name in pkg.__all__:  # every lazy name resolves to what its module defines\n"
        "    assert getattr(pkg, name) is not None, name\n"
        "print('MODULES=' + ','.join(names))\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    modules = lines["MODULES"].split(",")
    assert {"stabsearch.analysis.verdict", "stabsearch.analysis.spikes", "stabsearch.analysis.loss_log"} <= set(modules)
    assert lines["LOADED"] == ""


def test_the_package_names_are_the_functions_even_after_their_modules_are_imported(tmp_path):
    # Importing stabsearch.analysis.X binds X on the package: a module named like a function it defines
    # would replace that function there.
    code = (
        "import stabsearch.analysis.verdict as v, stabsearch.analysis.objective as o, stabsearch.analysis.options as p\n"
        "from stabsearch.analysis import analyze, score, StabilityOptions\n"
        "print(analyze is v.analyze, score is o.score, StabilityOptions is p.StabilityOptions)\n"
    )
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "True", "True"]


@pytest.mark.parametrize("verdict", ["stable", "diverged"])
def test_analyze_command_runs_where_torch_optuna_and_plotly_cannot_be_imported(tmp_path, verdict):
    rows = []
    for t in range(300):
        loss = 2.3 * math.exp(-t / 50) + 0.05
        rows.append(f"{10 * t},{'nan' if verdict == 'diverged' and t >= 200 else loss}")
    log = tmp_path / "loss.csv"
    log.write_text("step,loss\n" + "\n".join(rows) + "\n")
    code = (
        "for name in ('torch', 'optuna', 'plotly'):\n"
        "    sys.modules[name] = None  # any import of it now raises ImportError\n"
        "from stabsearch.cli import main\n"
        "try:\n"
        f"    main(['analyze', {str(log)!r}])\n"
        "except SystemExit as exc:\n"
        "    sys.exit(exc.code)\n"
    )
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0] == f"{log}: {verdict}"
    if verdict == "diverged":
        assert "divergence: step 2000" in r.stdout
