"""DARTS search (paper §2.1 Eqn 4, §5.2 mitigations; docs/protocol.md §g, §f.4).

- :mod:`nas_jax.search.darts`: hypergradients (first order, DARTS finite difference,
  exact autodiff), unrolled inner steps, optimisers, the compiled bi-level step.
- :mod:`nas_jax.search.genotype`: genotype derivation from α and ``genotype.json``.
- :mod:`nas_jax.search.pipeline`: the resumable search loop (``run_search``).
- :mod:`nas_jax.search.plots`: α over the epochs.

The supernet itself is :mod:`nas_jax.models.supernet`.
"""
