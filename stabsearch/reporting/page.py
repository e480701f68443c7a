"""The report as one self-contained HTML page, and the one function that writes it.

The page answers four questions in this order: what was searched and at what
cost, what the trials turned out to be, what to copy into production, and
where the safe region ends. :func:`build_report` makes it in memory;
:func:`write_report` writes it to a file and saves the same figures and note
on the study for optuna-dashboard.

Safety rules: every string a user wrote (study name, model path, parameter
values, error text) goes through :func:`html.escape` before it reaches the
HTML or a figure's text; plotly's embedded JSON escapes ``<``, ``>`` and
``/``, so nothing in it can close a ``<script>`` tag; the storage appears only
as :attr:`stabsearch.study.storage.Storage.shown`, with its password hidden; and the
file loads nothing from the network (plotly's JavaScript is inline).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import plotly.graph_objects as go
import plotly.io as pio

from stabsearch.errors import UsageError
from stabsearch.reporting.figures import MAPS_NOTE, build_figures, confirmation_table
from stabsearch.reporting.style import esc
from stabsearch.reporting.summary import Summary, summarize, summary_html, summary_markdown
from stabsearch.study.recommend import NothingToRecommend, Recommendation, recommend
from stabsearch.study.record import TrialRecord
from stabsearch.study.trial_attrs import study_records

if TYPE_CHECKING:
    from stabsearch.study.storage import Storage


def safe_filename(name: str) -> str:
    """A file name made from a study name: letters, digits, ``.``, ``_`` and ``-`` only.

    Example:
        >>> safe_filename("my study/<script>")
        'my_study_script'
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:120] or "study"


def default_report_path(study_name: str) -> Path:
    """``studies/<study>.html`` under the current directory.

    A name that is not already a safe file name gets a short hash of itself
    after its cleaned form, so two studies never share a report file.

    Example:
        >>> str(default_report_path("adam-late")), str(default_report_path("a b")) != str(default_report_path("a_b"))
        ('studies/adam-late.html', True)
    """
    cleaned = safe_filename(study_name)
    if cleaned != study_name:
        cleaned += "-" + hashlib.sha1(study_name.encode("utf-8")).hexdigest()[:8]
    return Path("studies") / f"{cleaned}.html"


@dataclasses.dataclass(frozen=True)
class Report:
    """A built report: its figures (by id), its summary, the markdown note and the HTML page."""

    summary: Summary
    figures: dict[str, go.Figure]
    note_markdown: str
    html: str


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:20px;font-weight:600;word-break:break-all}
header p{margin:4px 0 0;font-size:12px;color:#c4cad6;word-break:break-all}
main{padding:14px 24px 30px;max-width:1500px;margin:0 auto}
h2{font-size:16px;margin:0 0 8px}
section>h2{margin:22px 0 8px}
.top{display:grid;grid-template-columns:1.1fr 1fr;gap:14px}
.card{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.12);font-size:13.5px;min-width:0}
.card ul{margin:0;padding-left:18px}.card li{margin:3px 0;overflow-wrap:anywhere}
.card.ok{border-left:5px solid #2e9d46}.card.none{border-left:5px solid #d62728}
table.settings{border-collapse:collapse;margin-bottom:6px}
table.settings th{text-align:left;font-weight:600;padding:2px 14px 2px 0;color:#4a5263}
table.settings td{padding:2px 0}
code,pre{font-family:"SFMono-Regular",Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f4f5f7;padding:8px;overflow:auto;max-height:360px}
.evidence li.warn{color:#b3261e;font-weight:600}
.hint,.muted{color:#666;font-size:12px}
p.note{color:#4a5263;font-size:12.5px;margin:0 0 8px;max-width:1200px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.fig{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.12);padding:4px;min-width:0}
table.runs{border-collapse:collapse;font-size:12.5px;background:#fff;margin-top:10px;width:100%}
table.runs th,table.runs td{border-bottom:1px solid #e3e5ea;padding:3px 8px;text-align:left}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:5px}
footer{color:#777;font-size:12px;padding:10px 24px 24px}
@media (max-width:1000px){.top,.grid2{grid-template-columns:1fr}}
"""


def _figure_div(fig: go.Figure, div_id: str, first: bool) -> str:
    return pio.to_html(
        fig, full_html=False, include_plotlyjs=first, div_id=div_id, default_width="100%",
        config={"displaylogo": False, "responsive": True},
    )


def render_html(summary: Summary, figures: Mapping[str, go.Figure], records: Sequence[TrialRecord]) -> str:
    """The whole page. Plotly's JavaScript is inlined once, with the first figure."""
    divs: dict[str, str] = {}
    for i, (key, fig) in enumerate(figures.items()):
        divs[key] = f'<div class="fig">{_figure_div(fig, "fig-" + key, first=(i == 0))}</div>'
    maps = [divs[k] for k in figures if k.startswith("safe-region_")]
    rest = {k: v for k, v in divs.items() if not k.startswith("safe-region_")}
    importance = rest.get("param-importances", '<div class="fig"><p class="muted" style="padding:12px">'
                                               "Parameter importances need at least two finished search trials.</p></div>")
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    from stabsearch import __version__

    model = f" &middot; model {esc(summary.model)}" if summary.model else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stabsearch report: {esc(summary.study)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>stabsearch report: {esc(summary.study)}</h1>
<p>storage {esc(summary.storage)}{model} &middot; generated {esc(generated)} by stabsearch {esc(__version__)}</p></header>
<main>
{summary_html(summary)}
<section id="safe-region"><h2>Where the safe region ends</h2>
<p class="note">{esc(MAPS_NOTE)}</p>
<div class="grid2">{''.join(maps)}</div></section>
<section id="loss-curves"><h2>Loss curves</h2>{rest.get('loss-curves', '')}</section>
<section id="confirmation"><h2>Confirmation, seed by seed</h2>{rest.get('confirmation', '')}{confirmation_table(records)}</section>
<section id="breakdown"><h2>Verdicts and what mattered</h2>
<div class="grid2">{rest.get('verdicts', '')}{importance}</div></section>
</main>
<footer>Every point is one trial; hover for its settings. List them with <code>stabsearch trials --study {esc(summary.study)}</code>.
Open the study live with <code>stabsearch dashboard</code>.</footer>
</body>
</html>
"""


def build_report(study: optuna.Study, storage: Storage, records: Sequence[TrialRecord] | None = None) -> Report:
    """Build the report of ``study`` in memory; nothing is written.

    Args:
        study: the study, loaded from ``storage``.
        storage: the :class:`~stabsearch.study.storage.Storage` it lives in: the curve files are read from its
            artifact folder, and the page shows its URL with any password hidden.
        records: the study's trials read back (:func:`~stabsearch.study.trial_attrs.study_records`), when the caller
            has them already.

    Example:
        >>> import tempfile
        >>> from stabsearch.study.storage import open_storage
        >>> folder = tempfile.TemporaryDirectory()
        >>> store = open_storage(f"sqlite:///{folder.name}/s.db", create=True)
        >>> report = build_report(optuna.create_study(study_name="demo", storage=store.storage), store)
        >>> report.summary.nothing_reason is not None, sorted(report.figures)[:2]
        (True, ['confirmation', 'loss-curves'])
        >>> folder.cleanup()
    """
    records = study_records(study) if records is None else list(records)
    try:
        rec: Recommendation | None = recommend(records, study.study_name)
        reason = None
    except NothingToRecommend as exc:
        rec, reason = None, str(exc)
    summary = summarize(study, records, storage, rec, reason)
    figures = build_figures(study, records, Path(storage.artifacts_dir), rec)
    return Report(summary=summary, figures=figures, note_markdown=summary_markdown(summary),
                  html=render_html(summary, figures, records))


@dataclasses.dataclass(frozen=True)
class WrittenReport:
    """What :func:`write_report` did: the file it wrote, the report in it, and why the dashboard copy was not saved."""

    path: Path
    report: Report
    #: None when the figures and note were saved for optuna-dashboard (or ``dashboard=False``); else why not.
    dashboard_error: str | None = None


def write_report(study: optuna.Study, storage: Storage, path: str | Path | None = None, *,
                 dashboard: bool = True) -> WrittenReport:
    """Build the report of ``study``, write it as one HTML file, and save it on the study for optuna-dashboard.

    This is what ``stabsearch report`` and the end of ``stabsearch run`` call.

    Args:
        study: the study, loaded from ``storage``.
        storage: the :class:`~stabsearch.study.storage.Storage` it lives in.
        path: the HTML file to write (its folder is created); default ``studies/<study>.html`` under the
            current directory (:func:`default_report_path`). An existing file is replaced.
        dashboard: also save the figures and the summary note on the study, where optuna-dashboard shows
            them. A failure there (optuna-dashboard not installed) does not undo the HTML file: it is
            returned as :attr:`WrittenReport.dashboard_error`.

    Returns:
        The path written, the report, and why the dashboard copy was not saved (None when it was).

    Raises:
        UsageError: ``path`` is a folder, or the file cannot be written (the message names the path).

    Example:
        >>> import tempfile
        >>> from stabsearch.study.storage import open_storage
        >>> folder = tempfile.TemporaryDirectory()
        >>> store = open_storage(f"sqlite:///{folder.name}/s.db", create=True)
        >>> study = optuna.create_study(study_name="demo", storage=store.storage)
        >>> written = write_report(study, store, f"{folder.name}/out/demo.html", dashboard=False)
        >>> written.path.name, "stabsearch report: demo" in written.path.read_text(encoding="utf-8")
        ('demo.html', True)
        >>> write_report(study, store, folder.name, dashboard=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: ...: is a directory; give the report a file name
        >>> folder.cleanup()
    """
    target = Path(path) if path is not None else default_report_path(study.study_name)
    if target.is_dir():
        raise UsageError(f"{target}: is a directory; give the report a file name")
    report = build_report(study, storage)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(report.html, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{target}: cannot write the report ({exc.strerror or exc})") from None
    error = None
    if dashboard:
        from stabsearch.reporting.dashboard import save_to_dashboard

        try:
            save_to_dashboard(study, report.figures, report.note_markdown)
        except UsageError as exc:
            error = str(exc)
    return WrittenReport(path=target, report=report, dashboard_error=error)
