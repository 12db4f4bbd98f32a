"""Task ``pgd_sweep``: untargeted PGD ASR against eps, step eps/3 (§3.2, Figure 3).

One ``task: "pgd_sweep"`` record per (model, eps); figure
``{workdir}/figures/pgd_eps_sweep.png`` with one curve per model, coloured by family.
"""

from __future__ import annotations

from pathlib import Path

import jax
from tqdm.auto import tqdm

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.report import plots, results
from nas_jax.report.tables import format_table
from nas_jax.study import victims
from nas_jax.study.evasion import run_pgd
from nas_jax.study.seam import Task


def run(config, workdir: str | Path) -> list[dict]:
    pc = config.pgd
    dataset, entries = victims.load_victims(config)
    order = victims.attack_order(len(dataset.y_test), config.seed)
    eps_grid = [e / 255 for e in pc.eps_grid_255]
    key = jax.random.key(config.seed)
    records, curves, rows = [], {}, []
    bar = tqdm(total=len(entries) * len(eps_grid), desc="pgd_sweep attacks", unit="attack", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    for entry in entries:
        correct = victims.predictions(entry, dataset.x_test) == dataset.y_test
        idx = victims.correct_inputs(correct, order, pc.n_inputs)
        asrs = []
        for j, eps in enumerate(eps_grid):
            start = results.now()
            cfg = EvasionConfig.from_config(pc, eps=eps, step_size=eps / 3)
            out = run_pgd(entry, dataset.x_test[idx], dataset.y_test[idx], cfg, "untargeted",
                          jax.random.fold_in(key, j), pc.batch_size)
            asrs.append(float(out.success.mean()))
            bar.update(1)
            bar.set_postfix(model=entry.name, eps=f"{eps * 255:g}/255", asr=f"{asrs[-1]:.2f}")
            records.append(results.make_record(
                config, task="pgd_sweep", model=entry.name, n=len(idx), start_time=start,
                metrics={"asr_untargeted": asrs[-1], "clean_accuracy": float(correct.mean())},
                setting={"family": entry.family, "eps": eps, "step_size": eps / 3, "iterations": pc.iterations,
                         "restarts": pc.restarts, "norm": pc.norm}))
            if jax.process_index() == 0:
                results.append_record(workdir, records[-1])
        curves[entry.name] = (entry.family, asrs)
        rows.append({"model": entry.name, "family": entry.family,
                     **{f"eps {e:g}/255": a for e, a in zip(pc.eps_grid_255, asrs)}})
    bar.close()
    if jax.process_index() == 0:
        cols = [("model", "model", None), ("family", "family", None)]
        cols += [(f"eps {e:g}/255", f"{e:g}/255", ".2f") for e in pc.eps_grid_255]
        print(format_table(rows, cols))
        fig = plots.family_curves(list(pc.eps_grid_255), curves, Path(workdir) / "figures" / "pgd_eps_sweep.png",
                                  xlabel="ε (×1/255)", ylabel="untargeted ASR (%)",
                                  title=f"untargeted PGD, step ε/3, {config.dataset}, n = {pc.n_inputs} inputs "
                                        f"per model, seed {config.seed}")
        print(f"figure: {fig}")
    return records


TASK = Task("pgd_sweep", run, cost_minutes=1.5)
