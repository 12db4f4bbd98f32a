"""Task ``pgd_commonality``: how many models each input fools (§3.2, Figure 4).

Least-likely L∞ PGD (eps 4/255, step 1/255, 7 iterations, 5 restarts) on common test inputs every model classifies
correctly; per family, the histogram of how many models each input fools (one ``task: "pgd_commonality"`` record
each) in ``{workdir}/figures/pgd_commonality.png``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np
from tqdm.auto import tqdm

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.report import plots, results
from nas_jax.study import victims
from nas_jax.study.evasion import PGDStudySettings, run_pgd
from nas_jax.study.seam import Task


@dataclasses.dataclass(frozen=True)
class CommonalitySettings(PGDStudySettings):
    """Figure 4's least-likely PGD: ε 4/255, step 1/255, 7 iterations, 5 restarts (docs/protocol.md §e.1)."""

    PRESETS: ClassVar[dict] = {"quick": {"n_inputs": 200, "batch_size": 200}}
    eps: float = 4 / 255
    step_size: float = 1 / 255
    iterations: int = 7

    def __post_init__(self):
        self.budget()

    def budget(self) -> EvasionConfig:
        return self.pgd(self.eps, self.step_size, self.iterations)


def run(config, workdir: str | Path) -> list[dict]:
    pc = CommonalitySettings.read("pgd_commonality", config.pgd_commonality)
    start = results.now()
    dataset, entries = victims.load_victims(config)
    order = victims.attack_order(len(dataset.y_test), config.seed)
    correct_all = np.all([victims.predictions(e, dataset.x_test) == dataset.y_test for e in entries], axis=0)
    idx = victims.correct_inputs(correct_all, order, pc.n_inputs)
    print(f"{len(idx)} common inputs classified correctly by all {len(entries)} models", flush=True)
    cfg = pc.budget()
    key = jax.random.key(config.seed)
    fooled = {e.name: run_pgd(e, dataset.x_test[idx], dataset.y_test[idx], cfg, "least_likely", key,
                              pc.batch_size).success
              for e in tqdm(entries, desc="pgd_commonality attacks", unit="model", dynamic_ncols=True,
                            disable=jax.process_index() != 0)}
    families = sorted({e.family for e in entries})
    counts = {f: np.sum([fooled[e.name] for e in entries if e.family == f], axis=0).astype(int).tolist()
              for f in families}
    sizes = {f: sum(e.family == f for e in entries) for f in families}
    records = []
    for f in families:
        hist = [int(np.sum(np.asarray(counts[f]) == j)) for j in range(sizes[f] + 1)]
        print(f"  {f}: inputs fooling j of {sizes[f]} models, j = 0..{sizes[f]}: {hist}")
        records.append(results.store(
            workdir, config, task="pgd_commonality", model=f"{f}_family", n=len(idx), start_time=start,
            metrics={"histogram": hist, "inputs_fooling_all": hist[-1]},
            setting={"family": f, "models": [e.name for e in entries if e.family == f], **pc.setting()}))
    if jax.process_index() == 0:
        fig = plots.family_histograms(counts, sizes, Path(workdir) / "figures" / "pgd_commonality.png",
                                      title=f"least-likely PGD ε={pc.eps * 255:.0f}/255, {len(idx)} common inputs")
        print(f"figure: {fig}")
    return records


TASK = Task("pgd_commonality", run, settings=CommonalitySettings, cost_minutes=2.0, joint=True)
