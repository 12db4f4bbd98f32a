"""Task ``nes``: black-box NES evasion, most/least likely (§3.2, Figure 5; Eqn 10).

The victim is reached only through ``query_fn(x) -> probabilities`` (eval
mode); every query is counted per input. One ``task: "nes"`` record per model
with ASR and mean queries per input for both targets; figure
``{workdir}/figures/nes_asr.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nas_jax.attacks.nes import BlackBox, NESQueryConfig, nes_attack_jit
from nas_jax.data import to_float
from nas_jax.study import victims
from nas_jax.study.evasion import targeted_study


def run_nes(entry, x_u8, labels, cfg, mode, key, queries: NESQueryConfig, batch_size: int):
    """Per-example NES results; the victim is reachable only as a probability oracle."""
    query_fn = BlackBox(entry.model.apply, entry.variables)  # eval mode, softmax output only

    def attack(x, y, key):
        return nes_attack_jit(query_fn, to_float(x), y, key, cfg, mode=mode, **dataclasses.asdict(queries))

    return victims.AttackBatches(batch_size, per_example_keys=True).run(attack, x_u8, labels, key)


def _query_metrics(out, mode: str) -> dict:
    return {f"mean_queries_{mode}": float(np.mean(out.queries)),
            f"mean_queries_success_{mode}": float(np.mean(out.queries[out.success])) if out.success.any() else None}


def run(config, workdir: str | Path) -> list[dict]:
    nc = config.nes
    queries = NESQueryConfig.from_config(nc)
    setting = {"eps": nc.eps, "step_size": nc.step_size, "restarts": nc.restarts, "n_queries": queries.n_queries,
               "sigma": queries.sigma, "query_budget": queries.query_budget}

    def attack(entry, x, y, cfg, mode, key):
        return run_nes(entry, x, y, cfg, mode, key, queries, nc.batch_size)

    return targeted_study(config, workdir, "nes", nc, attack, _query_metrics, setting,
                          title=f"NES (n={queries.n_queries}) on {config.dataset}")
