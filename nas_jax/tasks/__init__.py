"""One module per launcher task; each exposes ``run(config, workdir) -> list[dict]``
(the records it appended). The launcher dispatches on ``config.task``."""

from __future__ import annotations

import importlib
from pathlib import Path

import jax

TASKS = {
    "adv_train": "nas_jax.tasks.adv_train",
    "autoattack": "nas_jax.tasks.autoattack",
    "backdoor": "nas_jax.tasks.backdoor",
    "cells": "nas_jax.tasks.cells",
    "grad_variance": "nas_jax.tasks.grad_variance",
    "landscape": "nas_jax.tasks.landscape",
    "membership": "nas_jax.tasks.membership",
    "nes": "nas_jax.tasks.nes",
    "ntk": "nas_jax.tasks.ntk",
    "pgd": "nas_jax.tasks.pgd",
    "pgd_commonality": "nas_jax.tasks.pgd_commonality",
    "pgd_sweep": "nas_jax.tasks.pgd_sweep",
    "poison": "nas_jax.tasks.poison",
    "search": "nas_jax.tasks.search",
    "stealing": "nas_jax.tasks.stealing",
    "study": "nas_jax.tasks.study",
    "train": "nas_jax.tasks.train",
    "zoo": "nas_jax.tasks.zoo_table",
}


def get_task(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {sorted(TASKS)}.")
    return importlib.import_module(TASKS[name]).run


def run_task(config, workdir):
    """Run ``config.task``; with ``config.train.seeds`` an attack or analysis task runs once per seed (its
    victims of all seeds trained together first, :func:`nas_jax.study.victims.load_victims`), the ``train``
    task trains them together, and the study grid takes its seeds from ``study.seeds``. Over several seeds
    every per-seed record is kept, each seed's figures move to ``figures/seed{s}/`` (none overwrites
    another), and one table and one figure (``figures/{task}_seeds.png``) give each model's mean and
    interval over the seeds (:mod:`nas_jax.report.seeds`)."""
    run = get_task(config.task)
    seeds = tuple(config.train.get("seeds", ())) if "train" in config else ()
    if not seeds or config.task == "study":
        return run(config, workdir)
    if config.task == "train":
        records = run(config, workdir) or []
    else:
        records = []
        for seed in seeds:
            c = config.copy_and_resolve_references()
            c.seed = int(seed)
            print(f"== seed {seed} ({list(seeds).index(seed) + 1}/{len(seeds)})", flush=True)
            before = _figures(workdir)
            records += run(c, workdir) or []
            _keep_seed_figures(workdir, before, int(seed))
    if len(seeds) > 1 and records and jax.process_index() == 0:
        from nas_jax.report import seeds as over_seeds

        rows = over_seeds.aggregate(records)
        print(f"\n{config.task} over seeds {list(seeds)}: mean [95% interval] per model\n{over_seeds.table(rows)}")
        fig = over_seeds.figure(rows, Path(workdir) / "figures" / f"{config.task}_seeds.png",
                                f"{config.task} on {config.dataset}")
        if fig:
            print(f"figure: {fig}")
    return records


def _figures(workdir) -> dict[Path, int]:
    root = Path(workdir) / "figures"
    if not root.is_dir():
        return {}
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.png") if "seed" not in p.parent.name}


def _keep_seed_figures(workdir, before: dict[Path, int], seed: int) -> None:
    """Move the figures one seed's run wrote (new or changed since ``before``) to ``figures/seed{seed}/``."""
    root = Path(workdir) / "figures"
    for path, mtime in _figures(workdir).items():
        if before.get(path) != mtime:
            target = root / f"seed{seed}" / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
