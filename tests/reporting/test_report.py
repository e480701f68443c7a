"""`stabsearch report`: the safe-region figures, the written summary, escaping, and the page in a real browser.

Most tests build a study by hand (``make_study``: trials laid out exactly as the
runner stores them, with loss-curve artifacts, no training), so they run in a
second or two. The browser tests load the HTML in Debian's headless chromium
through Playwright; ``.ci/run`` installs chromium, so CI never skips them.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from stabsearch.config import OptimConfig
from stabsearch.errors import UsageError
from stabsearch.study.trial_attrs import study_records
from stabsearch.reporting.curves import envelope
from stabsearch.reporting.figures import map_pairs
from stabsearch.reporting.instability import instability_probability
from stabsearch.reporting.page import build_report, default_report_path, safe_filename, write_report
from stabsearch.reporting.summary import summarize, summary_html, summary_markdown
from stabsearch.study.storage import Storage, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

from tests.support.studies import CLIFF_LR, XSS, add_trial, make_study, sqlite_store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    store = sqlite_store(root)
    study = make_study(store)
    return study, store, build_report(study, store)


# ---------------------------------------------------------------------------------------------
# Pure pieces


def test_instability_probability_follows_the_trials():
    points = np.array([[0.1, 0.5], [0.2, 0.5], [0.8, 0.5], [0.9, 0.5]])
    unstable = np.array([False, False, True, True])
    p = instability_probability(points, unstable, np.array([[0.1, 0.5], [0.5, 0.5], [0.9, 0.5], [0.5, 50.0]]))
    assert p[0] < 0.15 and p[2] > 0.85
    assert p[0] < p[1] < p[2]
    assert p[3] == pytest.approx(0.5)  # far from every trial: the overall share
    assert instability_probability(np.zeros((0, 2)), np.zeros(0, bool), np.zeros((3, 2))).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="differ in length"):
        instability_probability(points, unstable[:2], points)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        instability_probability(points, unstable, points, bandwidth=0)


def test_envelope_keeps_spikes_and_breaks():
    values = np.ones(100_000)
    values[54_321] = 1e4
    values[-10:] = np.inf
    steps, thin = envelope(np.arange(len(values)), values, buckets=500)
    assert len(thin) <= 1600
    assert 1e4 in thin.tolist() and 54_321 in steps.tolist()
    assert np.isinf(thin).any()
    short = np.arange(10.0)
    assert envelope(np.arange(10), short)[1].tolist() == short.tolist()


def test_filenames_from_study_names():
    assert safe_filename("tiny") == "tiny"
    assert safe_filename(XSS) == "script_alert_1_script"
    assert safe_filename("../../etc/passwd") == "etc_passwd"
    assert safe_filename("///") == "study"
    assert default_report_path("ab") == Path("studies") / "ab.html"
    assert default_report_path("a b").name.startswith("a_b-")  # a cleaned name carries a hash of the name
    assert default_report_path("a b") != default_report_path("a_b") != default_report_path("a/b")


# ---------------------------------------------------------------------------------------------
# The report of a hand-made study


def test_summary_says_what_was_searched_spent_found_and_what_to_copy(built):
    study, store, report = built
    s = report.summary
    assert s.search_trials == 18 and s.confirm_runs == 4
    assert s.search_verdicts["stable"] + s.search_verdicts["spiky"] + s.search_verdicts["diverged"] == 18
    assert s.steps_run > 0 and s.train_seconds == pytest.approx(0.25 * 22)
    assert s.recommendation is not None and s.nothing_reason is None
    rec = s.recommendation
    assert rec["lr"] < CLIFF_LR
    ev = rec["evidence"]
    assert ev["confirmed"] and ev["nearest_unstable_lr"] > rec["lr"] and ev["margin_decades"] >= 0.477
    page = report.html
    for text in ("Summary", "Searched", "Compute", "Found", "What to copy", f"{rec['lr']:.4g}",
                 f"search: {s.search_verdicts['stable']} stable", "18 search trials and 4 confirmation runs",
                 f"Margin: {ev['margin_decades']:.2f} decades", "Python code that builds it", "torch.optim.AdamW"):
        assert text in page, text
    note = report.note_markdown
    assert note.startswith("## stabsearch: synthetic") and "**Recommended**" in note and "Margin:" in note


def test_figures_maps_curves_confirmation_and_breakdown(built):
    study, store, report = built
    figs = report.figures
    assert list(figs) == ["safe-region_lr-x-eps", "safe-region_lr-x-beta2", "safe-region_lr-x-warmup", "loss-curves",
                          "confirmation", "verdicts", "param-importances"]
    lr_eps = figs["safe-region_lr-x-eps"]
    heat = [t for t in lr_eps.data if t.type == "heatmap"]
    assert len(heat) == 1
    z = np.array(heat[0].z)
    xs, ys = np.array(heat[0].x), np.array(heat[0].y)
    band = z[(ys > 2e-9) & (ys < 5e-8)]  # the eps band the trials sampled; elsewhere it is the overall rate
    assert band[:, xs < 1e-3].mean() < 0.2 < 0.8 < band[:, xs > 0.3].mean()  # unstable at high lr, safe at low
    assert z[ys > 1e-3].std() < 0.01  # far from every trial: flat
    names = [t.name or "" for t in lr_eps.data]
    assert any(n.startswith("stable (") for n in names) and any(n.startswith("diverged (") for n in names)
    assert any(n.startswith("recommended") for n in names)
    assert any(n.startswith("margin ") for n in names)
    assert "Gaussian kernel estimate in log10 space" in lr_eps.layout.title.subtitle.text
    assert lr_eps.layout.xaxis.type == "log" and lr_eps.layout.yaxis.type == "log"
    assert figs["safe-region_lr-x-beta2"].layout.yaxis.title.text.startswith("1 - beta2")
    assert figs["safe-region_lr-x-warmup"].layout.yaxis.type == "linear"
    curves = figs["loss-curves"]
    assert curves.layout.yaxis.type == "log"
    lines = [t.name for t in curves.data if t.mode == "lines"]
    assert any(n.startswith("best: ") for n in lines) and any(n.startswith("recommended") for n in lines)
    assert any(n.startswith("spiky: ") for n in lines) and any(n.startswith("diverged: ") for n in lines)
    spike_marks = [t for t in curves.data if t.marker and t.marker.symbol == "triangle-down"]
    assert spike_marks and "spike at step" in spike_marks[0].text[0]
    confirm = figs["confirmation"]
    assert sum(len(t.x) for t in confirm.data if t.name.startswith("stable")) == 4
    assert report.html.count("<tr><td>#") == 4  # the seed-by-seed table
    assert [t.name for t in figs["verdicts"].data] == ["stable", "spiky", "diverged"]


def test_page_is_self_contained(built):
    page = built[2].html
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<script") == page.count("</script>")
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page and "@import" not in page
    assert "plotly.js" in page and len(page) > 3_000_000  # the library itself, inline
    assert page.count('class="plotly-graph-div"') == 7


def test_warmup_map_only_when_warmup_varied(built):
    records = study_records(built[0])
    assert ("lr", "warmup") in map_pairs(records)
    fixed = [r.__class__(**{**r.__dict__, "params": {**r.params, "warmup": 0.05}}) for r in records]
    assert map_pairs(fixed) == [("lr", "eps"), ("lr", "beta2")]


def test_no_recommendation_says_why(tmp_path):
    store = sqlite_store(tmp_path)
    study = make_study(store, "all-diverged", all_unstable=True, trials=5)
    report = build_report(study, store)
    assert report.summary.recommendation is None
    assert "none of its 5 trials trained stably" in report.summary.nothing_reason
    assert "No recommendation" in report.html and "What to copy" not in report.html
    assert "param-importances" not in report.figures  # no finished (COMPLETE) search trial
    assert "Parameter importances need at least two finished search trials" in report.html
    assert "**No recommendation**" in report.note_markdown


def test_the_early_warning_penalty_and_its_reason_are_shown(tmp_path, built):
    store = sqlite_store(tmp_path)
    study = make_study(store, trials=6)
    reason = "lr/eps = 2.3e+04 exceeds 24.7/lambda_max = 7.29: will blow up once v collapses"
    warned = {"predicted_unstable": True, "warning": reason, "warning_penalty": 1.0}
    rng = np.random.default_rng(1)
    config = OptimConfig(optimizer="adamw", lr=3e-3, eps=1e-9, beta2=0.999, schedule="cosine")
    with tempfile.TemporaryDirectory() as tmp:
        number = add_trial(study, store, Path(tmp), config, "stable", rng=rng, extra=warned)
        add_trial(study, store, Path(tmp), config, "stable", kind="confirm", seed=1000, steps=400, of=number, rng=rng, extra=warned)
    report = build_report(study, store)
    assert [p["number"] for p in report.summary.penalized] == [number]
    page = html.unescape(report.html)
    assert f"Early warning</b>: 1 search trial(s) scored worse for a predicted later blow-up: #{number} +1. Why #{number}: {reason}" in page
    assert "early-warning penalty</th>" in report.html  # the confirmation table's column
    hovers = [text for fig in report.figures.values() for trace in fig.data for text in (getattr(trace, "customdata", None) or ())]
    assert any(f"early-warning penalty +1: {html.escape(reason)}" in str(text) for text in hovers)  # the trial's points
    assert "Early warning" in report.note_markdown
    # Without a penalised trial, neither the line nor the column is there.
    assert "Early warning" not in built[2].html and "early-warning penalty" not in built[2].html


def test_records_read_the_warning_attributes_defensively():
    from stabsearch.study.trial_attrs import trial_record

    def record(value, **attrs):
        return trial_record(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"verdict": "stable", **attrs}))

    assert record(1.0).warning_penalty == 0.0 and record(1.0).checks == {} and record(1.0).warning is None
    assert record(2.5, warning_penalty=1.5, warning="why").warning_penalty == 1.5
    # Trials stored before the penalty was: their score less their curve's own score.
    assert record(2.5, predicted_unstable=True, curve_score=1.5).warning_penalty == pytest.approx(1.0)
    assert record(2.5, predicted_unstable=False, curve_score=1.5).warning_penalty == 0.0
    assert record(2.5, warning_penalty="garbage").warning_penalty == 0.0
    assert record(1.0, checks={"evaluate": "ran", "sharpness": "failed: no double backward"}).checks["sharpness"].startswith("failed")
    assert record(1.0, checks=["not", "a", "dict"]).checks == {}
    assert record(1.0, curve_artifact="abc-123").curve_artifact == "abc-123"


def test_empty_study(tmp_path):
    store = sqlite_store(tmp_path)
    study = optuna.create_study(study_name="empty", storage=store.storage)
    report = build_report(study, store)
    assert "no finished search trials yet" in report.html and "no finished trials yet" in report.html


def test_cli_writes_the_report_and_saves_it_for_the_dashboard(workdir, cli):
    store = open_storage(None, create=True)
    make_study(store, "my study", trials=8)
    result = cli("report")
    assert result.code == 0, result.err
    path = default_report_path("my study")  # studies/my_study-<hash>.html: the name has a space
    assert result.out.strip() == str(path) and path.is_file() and path.name.startswith("my_study-")
    assert "stabsearch report: my study" in path.read_text()
    from optuna_dashboard import get_note

    assert get_note(optuna.load_study(study_name="my study", storage=store.storage)).startswith("## stabsearch: my study")
    result = cli("report", "--output", "out/r.html", "--no-dashboard")
    assert result.code == 0 and Path("out/r.html").is_file()
    assert cli("report", "--output", "out").code == 2
    bad = cli("report", "--study", "nope")
    assert bad.code == 2 and "no study named 'nope'" in bad.err


def test_report_without_optuna_dashboard_still_writes_the_html(workdir, cli, monkeypatch):
    make_study(open_storage(None, create=True), "plain", trials=4)
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    result = cli("report")
    assert result.code == 0 and Path("studies/plain.html").is_file()
    assert "not saved for the dashboard: optuna-dashboard is not installed" in result.err
    result = cli("dashboard")
    assert result.code == 2 and "pip install optuna-dashboard" in result.err


def test_write_report_writes_the_page_and_saves_the_dashboard_copy(workdir, monkeypatch):
    store = open_storage(None, create=True)
    study = make_study(store, "written", trials=4)
    written = write_report(study, store)
    assert written.path == default_report_path("written") and written.dashboard_error is None
    assert written.path.read_text(encoding="utf-8") == written.report.html
    from optuna_dashboard import get_note

    assert get_note(study) == written.report.note_markdown
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    again = write_report(study, store, workdir / "deep" / "er" / "r.html")
    assert again.path.is_file() and "optuna-dashboard is not installed" in again.dashboard_error
    (workdir / "taken").write_text("a file, not a folder")
    with pytest.raises(UsageError, match="taken.r.html: cannot write the report"):
        write_report(study, store, workdir / "taken" / "r.html", dashboard=False)
    with pytest.raises(UsageError, match="deep: is a directory"):
        write_report(study, store, workdir / "deep", dashboard=False)


# ---------------------------------------------------------------------------------------------
# Escaping and secrets


def test_user_written_text_is_escaped(tmp_path):
    store = sqlite_store(tmp_path)
    study = make_study(store, XSS, model='"><img src=x onerror=alert(2)>.py', trials=6)
    report = build_report(study, store)
    page = report.html
    assert XSS not in page and "<img" not in page
    assert "stabsearch report: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;.py" in page
    # Plotly's embedded JSON can't close the script tag: every </script> is one of ours.
    assert page.count("</script>") == page.count("<script")
    assert "\\u003c\\u002fscript\\u003e" in page or "&lt;/script&gt;" in page
    assert XSS not in report.note_markdown and "&lt;script&gt;" in report.note_markdown
    assert default_report_path(XSS).name.startswith("script_alert_1_script-")


def test_storage_password_never_appears(tmp_path):
    url = "postgresql://user:secret@db.example:5432/studies"
    store = Storage(url=url, storage=optuna.storages.InMemoryStorage(), artifacts=FileSystemArtifactStore(str(tmp_path)),
                    artifacts_dir=tmp_path)
    study = make_study(store, "remote", trials=6)
    summary = summarize(study, study_records(study), store)
    assert summary.storage == "postgresql://user:***@db.example:5432/studies"
    report = build_report(study, store)
    for text in (summary_html(summary), summary_markdown(summary), report.html, report.note_markdown,
                 json.dumps([f.to_plotly_json() for f in report.figures.values()], default=str)):
        assert "secret" not in text
    assert "postgresql://user:***@db.example:5432/studies" in report.html


# ---------------------------------------------------------------------------------------------
# In a real browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, path: Path) -> dict:
    """Load ``path``; return the page plus its JavaScript errors, dialogs and every request it made."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    seen: dict = {"page": page, "errors": [], "dialogs": [], "requests": []}
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
    page.on("console", lambda msg: seen["errors"].append(msg.text) if msg.type == "error" else None)
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("request", lambda req: seen["requests"].append(req.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0", timeout=20_000)
    page.wait_for_timeout(300)
    return seen


def drawn(page, div_id: str) -> dict:
    return page.evaluate("""(id) => {
        const el = document.getElementById(id);
        if (!el) return null;
        return {svg: el.querySelectorAll('.main-svg').length,
                traces: el.querySelectorAll('.scatterlayer .trace').length,
                points: el.querySelectorAll('.scatterlayer .trace .point').length,
                lines: [...el.querySelectorAll('.scatterlayer .trace .js-line')].filter(p => (p.getAttribute('d') || '').length > 20).length,
                heatmap: el.querySelectorAll('.heatmaplayer image, .heatmaplayer .hm').length,
                data: (el.data || []).length};
    }""", div_id)


@pytest.mark.slow
def test_report_of_a_real_search_in_a_browser(workdir, cli, browser):
    from tests.support import module_path

    result = cli("run", module_path("tiny"), "--trials", "6", "--confirm", "1", "--seeds", "2", "--no-progress")
    assert result.code == 0, result.err
    result = cli("report")
    assert result.code == 0, result.err
    path = Path(result.out.strip())
    assert path == Path("studies/tiny.html")
    seen = open_page(browser, path)
    page = seen["page"]
    assert seen["errors"] == []
    assert seen["dialogs"] == []
    assert seen["requests"] == [path.resolve().as_uri()]  # nothing from the network
    lr_eps = drawn(page, "fig-safe-region_lr-x-eps")
    assert lr_eps["svg"] >= 1 and lr_eps["heatmap"] >= 1 and lr_eps["points"] >= 6
    curves = drawn(page, "fig-loss-curves")
    assert curves["svg"] >= 1 and curves["lines"] >= 2  # the best trial and the recommended one
    for fig in ("fig-safe-region_lr-x-beta2", "fig-confirmation", "fig-verdicts"):
        assert drawn(page, fig)["svg"] >= 1, fig
    assert "What to copy" in page.inner_text("#recommendation")
    page.close()


def test_script_in_study_name_renders_as_text_in_a_browser(tmp_path, browser):
    store = sqlite_store(tmp_path)
    study = make_study(store, XSS, model='"><img src=x onerror=alert(2)>.py', trials=6)
    path = write_report(study, store, tmp_path / "xss.html", dashboard=False).path
    seen = open_page(browser, path)
    page = seen["page"]
    assert seen["dialogs"] == [] and seen["errors"] == []
    assert page.inner_text("header h1") == f"stabsearch report: {XSS}"
    assert page.title() == f"stabsearch report: {XSS}"
    assert page.evaluate("document.querySelectorAll('script').length") == path.read_text().count("<script")  # none injected
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert seen["requests"] == [path.resolve().as_uri()]
    page.close()


def test_evidence_names_the_edge_probes_the_proven_margin_and_a_rescue():
    from stabsearch.reporting.summary import _evidence_lines

    ev = {"confirmed": True, "trial": 8, "seeds": [1000, 1001, 1002], "horizon": 2000, "divergences": 0, "spikes": 0,
          "final_loss": 1e-3, "rescued_from": 9.12e-3, "edge_probes": {"0.00527": "failed"}, "nearest_unstable_lr": 5.27e-3,
          "margin_decades": 0.717, "proven_margin_decades": 0.477, "basin_lr": [1e-3, 3e-3]}
    text = "\n".join(_evidence_lines({"evidence": ev}))
    assert "Rescued: every candidate failed confirmation; trial #8 passed once its lr was backed off from 0.00912" in text
    assert "Edge probes (same seeds and horizon): lr=0.00527 failed." in text
    assert "below lr=0.00527, the nearest lr that went unstable; a learning rate 0.48 decades above it passed." in text
    unknown = "\n".join(_evidence_lines({"evidence": {**ev, "rescued_from": None, "nearest_unstable_lr": None,
                                                      "edge_probes": {"0.0274": "passed"}}}))
    assert "the edge is unknown; a learning rate 0.48 decades above it passed." in unknown and "Rescued" not in unknown
