"""Task ``search``: a DARTS search with the paper's in-NAS mitigations (§5.2, Table 4, Figure 15;
docs/protocol.md §g, §f.4).

Runs (or resumes) :mod:`nas_jax.search` with the configured hypergradient, ``n_step`` (mitigation i) and
``skip_gamma`` (mitigation ii); writes ``{workdir}/genotype.json`` (``genotype:PATH``) and figures, prints the
found cells' metrics (§c.4) beside the stored DARTS variants and appends one ``task: "search"`` record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

from nas_jax.errors import UserError
from nas_jax.models.genotypes import genotype_metrics, get_genotype
from nas_jax.models.searchers import SEARCHERS
from nas_jax.report import results
from nas_jax.report.tables import format_table
from nas_jax.search.pipeline import run_search
from nas_jax.study.seam import Task

STORED = ("darts", "darts_i", "darts_ii", "darts_iii")  # Table 4's stored cells (§c.2)
COLUMNS = [("model", "genotype", None), ("depth", "depth", None), ("width_w1", "W1", None),
           ("width_w2", "W2", ".1f"), ("width_w3", "W3", None), ("skip_connects", "#skip", None),
           ("reduce_depth", "depth (R)", None), ("reduce_skip_connects", "#skip (R)", None)]


def setting_name(sc) -> str:
    """DARTS / DARTS-i / DARTS-ii / DARTS-iii by the knobs (Table 4's naming)."""
    deep, noskip = sc.n_step > 1, sc.skip_gamma < 1.0
    return {(False, False): "darts", (True, False): "darts_i", (False, True): "darts_ii",
            (True, True): "darts_iii"}[(deep, noskip)]


def run(config, workdir: str | Path) -> list[dict]:
    start, t0 = results.now(), time.perf_counter()
    out = run_search(config, workdir, tb_dir=Path(workdir) / "tb")
    g, log, sc = out["genotype"], out["log"], config.search
    last = log[-1] if log else {}
    metrics = {**genotype_metrics(g), "train_accuracy": last.get("train_accuracy"),
               "val_accuracy": last.get("val_accuracy"), "train_loss": last.get("train_loss"),
               "val_loss": last.get("val_loss"), "epochs": config.train.epochs,
               "search_seconds": sum(r["seconds"] for r in log), "wall_seconds": time.perf_counter() - t0,
               "hessian_eigenvalues": [r.get("hessian_eigenvalue") for r in log],
               "early_stopped_epoch": out["early_stopped_epoch"]}
    setting = {"family": "nas", "variant": setting_name(sc), "method": sc.get("method", "darts"),
               "hypergradient": sc.hypergradient,
               "n_step": int(sc.n_step), "skip_gamma": float(sc.skip_gamma),
               "early_stop_factor": float(sc.get("early_stop_factor", 0.0)), "genotype": g.to_json(),
               "genotype_path": str(out["genotype_path"]), "init_channels": config.arch.init_channels,
               "layers": config.arch.layers}
    record = results.store(workdir, config, task="search", model=f"genotype:{out['genotype_path']}",
                           metrics=metrics, n=len(log), setting=setting, start_time=start)
    if jax.process_index() != 0:
        return [record]
    print(f"found genotype ({setting['method']} / {setting['variant']}: {sc.hypergradient}, n_step={sc.n_step}, "
          f"γ={sc.skip_gamma}):")
    print(json.dumps(g.to_json()))
    rows = [{"model": f"searched ({setting['method']} / {setting['variant']})", **genotype_metrics(g)}]
    rows += [{"model": f"stored {name}", **genotype_metrics(get_genotype(name))} for name in STORED]
    print(format_table(rows, COLUMNS))
    print(f"supernet after {config.train.epochs} epochs: train acc {metrics['train_accuracy']:.3f}, "
          f"val acc {metrics['val_accuracy']:.3f} (α half, train-mode BN); search {metrics['search_seconds']:.0f} s")
    eigs = [v for v in metrics["hessian_eigenvalues"] if v is not None]
    if eigs:
        print("α-Hessian λ_max per epoch (RobustDARTS smoothness): " + " ".join(f"{v:.3g}" for v in eigs)
              + (f"; DARTS-ES stopped at epoch {out['early_stopped_epoch']}" if out["early_stopped_epoch"] is not None
                 else ""))
    print(f"genotype: {out['genotype_path']}\nfigures: " + ", ".join(str(p) for p in out["figures"]))
    return [record]


def _searchers(study) -> tuple[str, ...]:
    """A study's search cells: one per searcher of ``study.search_methods`` (and seed)."""
    methods = tuple(study.study.search_methods)
    bad = [m for m in methods if m not in SEARCHERS]
    if bad or not methods:
        raise UserError(f"study.search_methods {methods}: unknown {bad or 'none given'}; valid: {tuple(SEARCHERS)}.")
    return methods


def _take_target(config, method: str, models) -> None:
    config.search.method = method


TASK = Task("search", run, cost_minutes=5.0, needs_victims=False, trains=0.5, study_targets=_searchers,
            take_target=_take_target)  # trains: the weights on one half of the training set, α on the other
