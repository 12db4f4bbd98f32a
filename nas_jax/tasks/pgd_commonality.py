"""Task ``pgd_commonality``: how many models each input fools (§3.2, Figure 4).

Least-likely L∞ PGD (eps 4/255, step 1/255, 7 iterations, 5 restarts) on one
common set of test inputs that every model classifies correctly; for each
input, count the NAS and the manual models it fools; histogram per family in
``{workdir}/figures/pgd_commonality.png``; one ``task: "pgd_commonality"``
record per family holding the histogram.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.report import plots, results
from nas_jax.study import victims
from nas_jax.study.evasion import run_pgd
from nas_jax.study.seam import Task


def run(config, workdir: str | Path) -> list[dict]:
    pc = config.pgd
    start = results.now()
    dataset, entries = victims.load_victims(config)
    order = victims.attack_order(len(dataset.y_test), config.seed)
    correct_all = np.all([victims.predictions(e, dataset.x_test) == dataset.y_test for e in entries], axis=0)
    idx = victims.correct_inputs(correct_all, order, pc.n_inputs)
    print(f"{len(idx)} common inputs classified correctly by all {len(entries)} models", flush=True)
    cfg = EvasionConfig.from_config(pc)
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
        records.append(results.make_record(
            config, task="pgd_commonality", model=f"{f}_family", n=len(idx), start_time=start,
            metrics={"histogram": hist, "inputs_fooling_all": hist[-1]},
            setting={"family": f, "models": [e.name for e in entries if e.family == f], "eps": pc.eps,
                     "step_size": pc.step_size, "iterations": pc.iterations, "restarts": pc.restarts}))
    if jax.process_index() == 0:
        for rec in records:
            results.append_record(workdir, rec)
        fig = plots.family_histograms(counts, sizes, Path(workdir) / "figures" / "pgd_commonality.png",
                                      title=f"least-likely PGD ε={pc.eps * 255:.0f}/255, {len(idx)} common inputs")
        print(f"figure: {fig}")
    return records


TASK = Task("pgd_commonality", run, cost_minutes=2.0, joint=True)
