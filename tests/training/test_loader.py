"""The model-module loader: the contract and its one-line errors."""

from __future__ import annotations

import pytest

from tests.support import module_path
from stabsearch import UsageError, load_model_module


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_loads_a_path_and_reads_the_optional_names():
    m = load_model_module(module_path("flaky"))
    assert m.name == "flaky" and m.steps == 60 and m.space == {"lr": {"low": 1e-4, "high": 1.0}}
    assert callable(m.model) and callable(m.batches) and callable(m.loss) and m.train is None


def test_loads_an_importable_module_name():
    m = load_model_module("objectives.softmax_chance")
    assert m.name == "softmax_chance" and m.classes == 6


def test_a_train_only_module_needs_nothing_else():
    m = load_model_module(module_path("custom_loop"))
    assert m.train is not None and m.model is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("def model(:\n", "broken.py:1: syntax error"),
        ("import no_such_package_xyz\n", "import failed: line 1: ModuleNotFoundError: No module named 'no_such_package_xyz'"),
        ("x = 1 / 0\n", "import failed: line 1: ZeroDivisionError"),
        ("def model(): pass\ndef batches(seed): pass\n", "missing loss"),
        ("", "missing model, batches, loss"),
        ("model = 3\nbatches = loss = lambda *a: 0\n", "model must be callable, got int"),
        ("def train(run): pass\nSTEPS = 0\n", "STEPS must be a positive integer, got 0"),
        ("def train(run): pass\nSPACE = [1]\n", "SPACE must be a dict"),
        ("def train(run): pass\nCLASSES = 1\n", "CLASSES must be an integer of at least 2"),
        ("import sys\nsys.exit(3)\n", "import failed: line 2: SystemExit: 3"),
    ],
)
def test_bad_modules_get_one_line_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, "broken.py", text)
    with pytest.raises(UsageError) as err:
        load_model_module(path)
    assert str(err.value).startswith(path) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_missing_module():
    with pytest.raises(UsageError, match=r"^nowhere/model\.py: no such file$"):
        load_model_module("nowhere/model.py")
    with pytest.raises(UsageError, match="no such file or importable module"):
        load_model_module("no_such_module_xyz")
