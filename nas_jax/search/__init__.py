"""DARTS search (paper §2.1 Eqn 4, §5.2 mitigations; docs/protocol.md §g, §f.4): the bi-level step
(:mod:`nas_jax.search.darts`), genotype derivation (:mod:`nas_jax.search.genotype`), the resumable loop
(:mod:`nas_jax.search.pipeline`) and α plots; the supernet is :mod:`nas_jax.models.supernet`.
"""
