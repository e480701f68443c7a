"""The pure core: numpy functions of a loss curve and its telemetry, with no torch, Optuna, plotly or pandas.

- :mod:`~stabsearch.analysis.verdict`: ``analyze``, the verdict, spikes and score of one curve (:class:`Analysis`);
- :mod:`~stabsearch.analysis.options`: :class:`StabilityOptions`, the thresholds and weights, checked when built;
- :mod:`~stabsearch.analysis.curve`: the checks on a curve, its start and final loss and its noise;
- :mod:`~stabsearch.analysis.divergence`: a non-finite loss, or a run of values well above the start;
- :mod:`~stabsearch.analysis.plateau`: collapse to chance, no progress, slow progress;
- :mod:`~stabsearch.analysis.spikes`: spikes and relapses (:class:`Spike`);
- :mod:`~stabsearch.analysis.objective`: the score Optuna minimises, capped for a diverged run;
- :mod:`~stabsearch.analysis.early_warning`: the eps-regime warning from Adam's second moments;
- :mod:`~stabsearch.analysis.diagnosis`: what a failed curve says about its cause;
- :mod:`~stabsearch.analysis.median_rule`: stopping a search trial that is clearly losing;
- :mod:`~stabsearch.analysis.loss_log`: reading a loss log from any training run (pandas, imported on use).

The public names of these modules are importable from the package itself
(``from stabsearch.analysis import analyze, StabilityOptions``); each module is
imported on first use of one of its names.
"""

from stabsearch._lazy import lazy_names


# name -> the module that defines it (PEP 562, as stabsearch/__init__.py does). No module is named like a
# name it defines: importing stabsearch.analysis.X binds X on this package, which would shadow a name X.
_HOMES = {
    "Analysis": "stabsearch.analysis.verdict",
    "EarlyWarning": "stabsearch.analysis.early_warning",
    "EpsRegime": "stabsearch.analysis.early_warning",
    "LossLog": "stabsearch.analysis.loss_log",
    "RunFacts": "stabsearch.analysis.diagnosis",
    "Spike": "stabsearch.analysis.spikes",
    "StabilityOptions": "stabsearch.analysis.options",
    "analyze": "stabsearch.analysis.verdict",
    "capped_score": "stabsearch.analysis.objective",
    "diagnose": "stabsearch.analysis.diagnosis",
    "divergence_noise": "stabsearch.analysis.divergence",
    "divergence_step": "stabsearch.analysis.divergence",
    "end_level": "stabsearch.analysis.plateau",
    "eps_floor": "stabsearch.analysis.early_warning",
    "eps_regime": "stabsearch.analysis.early_warning",
    "final_loss": "stabsearch.analysis.curve",
    "find_relapses": "stabsearch.analysis.spikes",
    "find_spikes": "stabsearch.analysis.spikes",
    "first_loss": "stabsearch.analysis.curve",
    "format_text": "stabsearch.analysis.diagnosis",
    "is_plateau": "stabsearch.analysis.plateau",
    "is_slow": "stabsearch.analysis.median_rule",
    "log_noise": "stabsearch.analysis.curve",
    "log_trend": "stabsearch.analysis.plateau",
    "median_by_step": "stabsearch.analysis.median_rule",
    "predict": "stabsearch.analysis.early_warning",
    "read_loss_log": "stabsearch.analysis.loss_log",
    "reference_loss": "stabsearch.analysis.divergence",
    "score": "stabsearch.analysis.objective",
    "stability_bound": "stabsearch.analysis.early_warning",
    "still_falling": "stabsearch.analysis.plateau",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)


__all__ = sorted(_HOMES)  # pyright: ignore[reportUnsupportedDunderAll]
