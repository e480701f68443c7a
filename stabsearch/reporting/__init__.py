"""What a user reads: the HTML report, the exported settings and the Optuna dashboard.

- :mod:`~stabsearch.reporting.page`: the self-contained HTML page; :func:`write_report` writes it;
- :mod:`~stabsearch.reporting.summary`: the written summary (facts, HTML block, markdown note);
- :mod:`~stabsearch.reporting.figures`: the plotly figures (safe-region maps, loss curves, confirmation, verdicts);
- :mod:`~stabsearch.reporting.instability`: P(unstable) under each map, a kernel estimate (pure numpy);
- :mod:`~stabsearch.reporting.curves`: loss curves read back from the study's artifact store, thinned for a figure;
- :mod:`~stabsearch.reporting.style`: the verdict colours and how values are written on the page;
- :mod:`~stabsearch.reporting.export`: the recommendation as YAML, TOML, JSON, Python, HF or Lightning settings;
- :mod:`~stabsearch.reporting.dashboard`: optuna-dashboard over the study, with the report attached.

The names below are imported on first use (PEP 562), so ``import stabsearch.reporting`` loads no plotly or
Optuna.
"""

from stabsearch._lazy import lazy_names


_HOMES = {
    "FORMATS": "stabsearch.reporting.export",
    "Report": "stabsearch.reporting.page",
    "Summary": "stabsearch.reporting.summary",
    "WrittenReport": "stabsearch.reporting.page",
    "build_figures": "stabsearch.reporting.figures",
    "build_report": "stabsearch.reporting.page",
    "default_report_path": "stabsearch.reporting.page",
    "envelope": "stabsearch.reporting.curves",
    "format_recommendation": "stabsearch.reporting.export",
    "hf_fields": "stabsearch.reporting.export",
    "instability_probability": "stabsearch.reporting.instability",
    "make_server": "stabsearch.reporting.dashboard",
    "read_curve": "stabsearch.reporting.curves",
    "safe_filename": "stabsearch.reporting.page",
    "save_to_dashboard": "stabsearch.reporting.dashboard",
    "serve": "stabsearch.reporting.dashboard",
    "summarize": "stabsearch.reporting.summary",
    "summary_html": "stabsearch.reporting.summary",
    "summary_markdown": "stabsearch.reporting.summary",
    "write_report": "stabsearch.reporting.page",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)


__all__ = sorted(_HOMES)  # noqa: PLE0605 (provided by __getattr__)
