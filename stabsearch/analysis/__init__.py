"""The pure core: numpy functions of a loss curve and its telemetry, with no torch, Optuna, plotly or pandas.

- :mod:`~stabsearch.analysis.verdict`: divergence, spikes, relapses, plateaus, the score and ``analyze``;
- :mod:`~stabsearch.analysis.early_warning`: the eps-regime warning from Adam's second moments;
- :mod:`~stabsearch.analysis.diagnosis`: what a failed curve says about its cause;
- :mod:`~stabsearch.analysis.median_rule`: stopping a search trial that is clearly losing;
- :mod:`~stabsearch.analysis.loss_log`: reading a loss log from any training run (pandas, imported on use).
"""
