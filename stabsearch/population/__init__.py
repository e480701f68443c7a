"""Training many trials at once as one vectorised population (``torch.func.vmap`` over stacked weights).

- :mod:`~stabsearch.population.driver`: the population trainer, its refusals and its memory sizing;
- :mod:`~stabsearch.population.rewrites`: cheaper batching rules for the ops every classifier has.
"""
