"""Shared fixtures: a scratch working directory and an in-process CLI runner."""

from __future__ import annotations

import dataclasses

import pytest
import torch

# --doctest-modules (pyproject.toml) would import every .py file here. The model modules of tests/modules and
# the corpus builder of tests/data are loaded by path, as user code is; imported as top-level modules they
# would put their folders on sys.path and run their module-level code in the test process.
collect_ignore = ["modules", "data"]


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


# Tiny models train fastest on one thread, and the suite must not oversubscribe a 2-core CI machine.
torch.set_num_threads(1)
