"""The search: the space, the study's storage and trial attributes, the runner, workers and confirmation.

This is the layer that talks to Optuna.

- :mod:`~stabsearch.search.space`: the search space and its overrides;
- :mod:`~stabsearch.search.storage`: opening a study's storage, and refusing a damaged one;
- :mod:`~stabsearch.search.trial_attrs`: a trial's stored attributes, written and read back as a
  :mod:`~stabsearch.search.record` (the plain :class:`~stabsearch.search.record.TrialRecord`);
- :mod:`~stabsearch.search.optuna_internals`: the one module that uses Optuna's private API;
- :mod:`~stabsearch.search.runner`: the search loop;
- :mod:`~stabsearch.search.sampler`: TPE seeded per trial;
- :mod:`~stabsearch.search.slots`, :mod:`~stabsearch.search.workers`: sharing a study between workers;
- :mod:`~stabsearch.search.interrupts`: Ctrl-C and SIGTERM that never land mid-bookkeeping;
- :mod:`~stabsearch.search.confirm`: re-running the best configurations on new seeds at a longer horizon;
- :mod:`~stabsearch.search.recommend`: the recommendation and its evidence.
"""
