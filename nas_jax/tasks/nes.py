"""Task ``nes``: black-box NES evasion, most/least likely (§3.2, Figure 5; Eqn 10).

The victim is reached only through ``query_fn(x) -> probabilities`` (eval mode); every query is counted per
input. Otherwise the PGD protocol of Figure 2. One ``task: "nes"`` record per model with ASR and mean queries
per input for both targets; figure ``{workdir}/figures/nes_asr.png``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from nas_jax.attacks.nes import BlackBox, NESQueryConfig, nes_attack_jit
from nas_jax.data import to_float
from nas_jax.report.study import Metric, reader
from nas_jax.study import victims
from nas_jax.study.evasion import (
    TARGETED_COLUMNS,
    TargetedSettings,
    describe_targeted,
    targeted_figure,
    targeted_metrics,
)
from nas_jax.study.seam import VictimTask, run_only


@dataclasses.dataclass(frozen=True)
class NESSettings(TargetedSettings):
    """Figure 2's budget with 400 queries per gradient estimate (200 antithetic pairs) and σ = 1e-3
    (docs/protocol.md §e.2); ``query_budget`` 0: no budget beyond the iterations. quick, reduced: 20 inputs and
    one run (a pipeline check, configs/nes.py)."""

    PRESETS: ClassVar[dict] = {"quick": {"n_inputs": 20, "restarts": 1, "batch_size": 20}}
    n_queries: int = 400
    sigma: float = 1e-3
    query_budget: int = 0
    chunk_size: int = run_only(25)  # antithetic pairs per model call
    batch_size: int = run_only(50)

    def __post_init__(self):
        super().__post_init__()
        self.queries()

    def queries(self) -> NESQueryConfig:
        return NESQueryConfig(n_queries=self.n_queries, sigma=self.sigma, query_budget=self.query_budget,
                              chunk_size=self.chunk_size)


def run_nes(entry, x_u8, labels, cfg, mode, key, queries: NESQueryConfig, batch_size: int):
    """Per-example NES results; the victim is reachable only as a probability oracle."""
    query_fn = BlackBox(entry.model.apply, entry.variables)  # eval mode, softmax output only

    def attack(x, y, key):
        return nes_attack_jit(query_fn, to_float(x), y, key, cfg, mode=mode, **dataclasses.asdict(queries))

    return victims.AttackBatches(batch_size, per_example_keys=True).run(attack, x_u8, labels, key)


def measure(ctx, entry):
    s = ctx.settings

    def attack(x, y, mode, iterations, key):
        return run_nes(entry, x, y, s.budget(iterations), mode, key, s.queries(), s.batch_size)

    def query_metrics(out, mode):
        return {f"mean_queries_{mode}": float(np.mean(out.queries)),
                f"mean_queries_success_{mode}": (float(np.mean(out.queries[out.success])) if out.success.any()
                                                 else None)}

    return targeted_metrics(ctx, entry, s.n_inputs, s.iterations(), attack, query_metrics)


TASK = VictimTask(
    name="nes", settings=NESSettings, measure=measure, columns=TARGETED_COLUMNS, figure=targeted_figure,
    figure_file="nes_asr.png", describe=describe_targeted, cost_minutes=3.0,
    title=lambda s, config: f"NES (n={s.n_queries}) on {config.dataset}",
    metrics=(Metric("nes_m", "NES ASR most likely (Fig. 5)", reader("nes", "asr_most_likely"), +1, 1,
                    inputs_task="nes"),
             Metric("nes_l", "NES ASR least likely (Fig. 5)", reader("nes", "asr_least_likely"), +1, 1,
                    inputs_task="nes")))
