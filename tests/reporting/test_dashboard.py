"""optuna-dashboard: the report's figures and note saved on the study, and `stabsearch dashboard` serving them.

The server test starts the real command in a subprocess on a free local port and
reads optuna-dashboard's own JSON API (routes from optuna_dashboard/_app.py:
/api/meta, /api/studies, /api/studies/<id>, and the artifact route
/artifacts/<study_id>/<trial_id>/<artifact_id>), then stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import plotly.graph_objects as go
import pytest

from stabsearch.reporting.dashboard import is_loopback, save_to_dashboard
from stabsearch.reporting.page import build_report
from tests.support.studies import XSS, make_study, sqlite_store

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the dev extra")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_dashboard_api_we_rely_on_exists():
    assert callable(optuna_dashboard.save_plotly_graph_object) and callable(optuna_dashboard.save_note)
    assert callable(optuna_dashboard.wsgi) and callable(optuna_dashboard.get_note)


def test_save_to_dashboard_replaces_instead_of_piling_up():
    study = optuna.create_study()
    figures = {"a-figure": go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), "other:one": go.Figure()}
    assert save_to_dashboard(study, figures, "## note") == ["a-figure", "other:one"]
    attrs = study._storage.get_study_system_attrs(study._study_id)
    version = attrs["dashboard:note_ver"]
    save_to_dashboard(study, figures, "## note")
    attrs2 = study._storage.get_study_system_attrs(study._study_id)
    assert attrs2 == attrs and attrs2["dashboard:note_ver"] == version  # nothing rewritten
    save_to_dashboard(study, figures, "## new note")
    assert optuna_dashboard.get_note(study) == "## new note"
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    graphs = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    assert sorted(graphs) == ["a-figure", "other:one"]
    assert json.loads(graphs["a-figure"])["data"][0]["y"] == [3, 4]
    with pytest.raises(ValueError, match="not a valid graph id"):
        save_to_dashboard(study, {"has space": go.Figure()}, "x")


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_until_up(proc: subprocess.Popen, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"dashboard did not answer {url} within {timeout}s")


def test_dashboard_serves_the_study_figures_note_and_curves(tmp_path, cli):
    store = sqlite_store(tmp_path)
    study = make_study(store, "served", trials=8)
    url = store.url
    result = cli("report", "--storage", url, "--output", str(tmp_path / "served.html"))
    assert result.code == 0, result.err
    expected_figures = set(build_report(study, store).figures)

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stabsearch", "dashboard", "--storage", url, "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, f"{base}/api/meta")
        meta = json.loads(_get(f"{base}/api/meta")[1])
        assert meta["artifact_is_available"] is True  # the artifact store is wired in
        studies = json.loads(_get(f"{base}/api/studies")[1])["study_summaries"]
        assert [s["study_name"] for s in studies] == ["served"]
        detail = json.loads(_get(f"{base}/api/studies/{studies[0]['study_id']}")[1])
        assert len(detail["trials"]) == len(study.trials)
        graphs = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
        assert set(graphs) == expected_figures
        assert any(t["type"] == "heatmap" for t in graphs["safe-region_lr-x-eps"]["data"])
        assert graphs["loss-curves"]["layout"]["yaxis"]["type"] == "log"
        assert detail["note"]["body"].startswith("## stabsearch: served") and "**Recommended**" in detail["note"]["body"]
        trial = detail["trials"][0]
        artifact = trial["artifacts"][0]
        assert artifact["artifact_id"] == study.trials[0].user_attrs["curve_artifact"] and artifact["mimetype"] == "text/csv"
        status, body = _get(f"{base}/artifacts/{trial['study_id']}/{trial['trial_id']}/{artifact['artifact_id']}")
        assert status == 200 and body.decode().startswith("step,loss\n0,")
        status, page = _get(f"{base}/dashboard")
        assert status == 200 and b"<html" in page.lower()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"dashboard ignored Ctrl-C: {err}") from None
    assert proc.returncode == 0, err
    assert f"on http://127.0.0.1:{port}/" in err and "dashboard stopped" in err
    assert "Traceback" not in err
    with pytest.raises(OSError):  # the port is closed again
        _get(f"{base}/api/meta")


def test_dashboard_note_escapes_study_names(tmp_path):
    store = sqlite_store(tmp_path)
    study = make_study(store, XSS, trials=6)
    report = build_report(study, store)
    save_to_dashboard(study, report.figures, report.note_markdown)
    note = optuna_dashboard.get_note(study)
    assert XSS not in note and "&lt;script&gt;alert(1)&lt;/script&gt;" in note


def test_dashboard_refuses_a_busy_port_and_a_missing_storage(workdir, cli):
    sqlite_store(Path("."))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("dashboard", "--port", port)
    assert result.code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.err and "--port" in result.err
    result = cli("dashboard", "--storage", "sqlite:///nowhere/x.db")
    assert result.code == 2 and "no study database here" in result.err
    assert cli("dashboard", "--port", "70000").code == 2
