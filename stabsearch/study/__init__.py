"""The search: the space, the study's storage and trial attributes, the runner, workers and confirmation.

This is the layer that talks to Optuna.

- :mod:`~stabsearch.study.space`: the search space and its overrides;
- :mod:`~stabsearch.study.storage`: opening a study's storage, and refusing a damaged one;
- :mod:`~stabsearch.study.trial_attrs`: a trial's stored attributes, written and read back as a
  :mod:`~stabsearch.study.record` (the plain :class:`~stabsearch.study.record.TrialRecord`);
- :mod:`~stabsearch.study.optuna_internals`: the one module that uses Optuna's private API;
- :mod:`~stabsearch.study.context`: what a search's trials share (study, module, space, storage, settings);
- :mod:`~stabsearch.study.runner`: the search loop;
- :mod:`~stabsearch.study.sampler`: TPE seeded per trial;
- :mod:`~stabsearch.study.slots`, :mod:`~stabsearch.study.workers`: sharing a study between workers;
- :mod:`~stabsearch.study.interrupts`: Ctrl-C and SIGTERM that never land mid-bookkeeping;
- :mod:`~stabsearch.study.confirm`: re-running the best configurations on new seeds at a longer horizon;
- :mod:`~stabsearch.study.recommend`: the recommendation and its evidence.
"""
