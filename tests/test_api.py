"""The Python API: ``stabsearch.search`` and friends do what the commands do, and refuse what they refuse."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import stabsearch
from stabsearch import UsageError
from tests.support import DATA, OBJECTIVES, module_path

CURVE = DATA / "corpus" / "clean_lognormal_030.csv"
#: The objective whose 4 x 200-step search and confirmation runs fastest.
FAST = str(OBJECTIVES / "softmax_chance.py")
ARGS = {"trials": 4, "steps": 200, "confirm": 1, "seeds": 2}


@pytest.mark.slow
def test_search_from_python_recommends_what_the_cli_run_does(workdir, cli):
    api_db, cli_db = f"sqlite:///{workdir}/api.db", f"sqlite:///{workdir}/cli.db"
    result = stabsearch.search(FAST, storage=api_db, progress=False, **ARGS)
    assert result.outcome == "complete" and result.search.finished == 4
    assert result.confirmation is not None and result.confirmation.runs >= 2
    assert result.report is not None and result.report.is_file()
    ours = stabsearch.recommend(study=result.study, storage=api_db)
    assert result.recommendation == ours

    r = cli("run", FAST, "--storage", cli_db, "--no-progress", *(f"--{k}={v}" for k, v in ARGS.items()))
    assert r.code == 0, r.err
    theirs = json.loads(cli("recommend", "--storage", cli_db, "--format", "json").out)

    assert ours.evidence["confirmed"] is theirs["evidence"]["confirmed"] is True
    assert ours.evidence["trial"] == theirs["evidence"]["trial"]
    assert ours.evidence["seeds"] == theirs["evidence"]["seeds"] == [1000, 1001]
    assert ours.config.optimizer == theirs["optimizer"] and ours.config.schedule == theirs["schedule"]["name"]
    for mine, other in ((ours.config.lr, theirs["lr"]), (ours.config.eps, theirs["eps"]),
                        (ours.config.beta2, theirs["betas"][1]), (ours.config.weight_decay, theirs["weight_decay"])):
        assert math.isclose(mine, other, rel_tol=1e-9), (mine, other)
    # the scores behind the choice agree within what float reductions may move them
    assert math.isclose(ours.evidence["worst_score"], theirs["evidence"]["worst_score"], rel_tol=1e-4, abs_tol=1e-6)


def test_search_without_confirmation_returns_the_unconfirmed_recommendation(workdir):
    lines: list[str] = []
    result = stabsearch.search(module_path("tiny"), trials=2, confirm=0, storage=f"sqlite:///{workdir}/t.db",
                               progress=False, report=False, log=lines.append)
    assert result.outcome == "complete" and result.confirmation is None and result.report is None
    assert not (workdir / "studies").exists()  # report=False writes nothing
    assert lines[0].startswith("study 'tiny' in sqlite:///") and lines[1].startswith("2/2 trials finished")
    if result.recommendation is not None:
        assert result.recommendation.evidence["confirmed"] is False
    else:
        assert result.no_recommendation


def _cli_error(cli, *args: str) -> str:
    r = cli(*args)
    assert r.code == 2 and r.err.startswith("stabsearch: error: "), r
    return r.err.strip().removeprefix("stabsearch: error: ")


@pytest.mark.parametrize("call, args", [
    (lambda: stabsearch.search(module_path("tiny"), force_population=True), ("run", module_path("tiny"), "--force-population")),
    (lambda: stabsearch.search("no/such/model.py"), ("run", "no/such/model.py")),
    (lambda: stabsearch.search(module_path("tiny"), precision="fp16", device="cpu"),
     ("run", module_path("tiny"), "--precision", "fp16", "--device", "cpu")),
    (lambda: stabsearch.search(module_path("tiny"), space={"lr": "fast"}), None),
    (lambda: stabsearch.confirm(module_path("tiny")), ("confirm", module_path("tiny"))),
    (lambda: stabsearch.recommend(), ("recommend",)),
    (lambda: stabsearch.report(), ("report",)),
], ids=["force-population", "no-model", "fp16-on-cpu", "bad-space", "confirm-no-study", "recommend-no-study", "report-no-study"])
def test_bad_input_raises_usage_error_with_the_cli_line_and_stores_nothing(workdir, cli, call, args):
    with pytest.raises(UsageError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    if args is not None:
        assert message == _cli_error(cli, *args)
    else:
        assert message.startswith("space: lr"), message
    assert not (workdir / "studies").exists()


@pytest.mark.parametrize("kwargs, named", [
    ({"trials": 0}, "trials=0"), ({"seed": -1}, "seed=-1"), ({"stress": math.nan}, "stress=nan"),
    ({"heartbeat": 0.0}, "heartbeat=0.0"), ({"population": 2000}, "population=2000"), ({"steps": 1.5}, "steps=1.5"),
    ({"precision": "16"}, "precision='16'"), ({"timeout": -1}, "timeout=-1"),
])
def test_out_of_range_arguments_name_the_argument_and_value(workdir, kwargs, named):
    with pytest.raises(UsageError, match="^" + __import__("re").escape(named) + ": must be"):
        stabsearch.search(module_path("tiny"), **kwargs)
    assert not (workdir / "studies").exists()


def test_the_names_are_the_api_functions_even_after_the_subpackages_load():
    import stabsearch.api
    import stabsearch.study.recommend
    import stabsearch.study.runner  # noqa: F401  (loads the subpackage stabsearch.study)

    for name in ("search", "confirm", "recommend", "report", "analyze"):
        assert getattr(stabsearch, name) is getattr(stabsearch.api, name) and callable(getattr(stabsearch, name))


def test_analyze_reads_a_loss_log_as_the_cli_does(cli):
    ours = stabsearch.analyze(CURVE)
    theirs = json.loads(cli("analyze", str(CURVE), "--format", "json").out)
    assert ours.verdict == theirs["verdict"] and len(ours.spikes) == len(theirs["spikes"])
    assert math.isclose(ours.final_loss, theirs["final_loss"], rel_tol=1e-12)
    with pytest.raises(UsageError, match="no such file"):
        stabsearch.analyze("no/such/log.csv")
    with pytest.raises(UsageError, match="losses must be one-dimensional"):
        stabsearch.analyze([[1.0, 2.0]])


def test_analyze_of_an_array_imports_no_heavy_library(tmp_path):
    code = (
        "import sys, numpy as np, stabsearch\n"
        "result = stabsearch.analyze(np.geomspace(2.3, 0.1, 200), warmup=10)\n"
        "assert result.verdict == 'stable', result.verdict\n"
        "print([m for m in ('torch', 'optuna', 'plotly', 'pandas') if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
