"""What a user reads: the HTML report, the exported settings and the Optuna dashboard.

- :mod:`~stabsearch.reporting.report`: the summary, the figures and the self-contained page;
- :mod:`~stabsearch.reporting.export`: the recommendation as YAML, TOML, JSON, Python, HF or Lightning settings;
- :mod:`~stabsearch.reporting.dashboard`: optuna-dashboard over the study, with the report attached.
"""
