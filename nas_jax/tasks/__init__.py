"""One module per launcher task; each exposes ``run(config, workdir) -> list[dict]``
(the records it appended). The launcher dispatches on ``config.task``."""

from __future__ import annotations

import importlib

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
    task trains them together, and the study grid takes its seeds from ``study.seeds``."""
    run = get_task(config.task)
    seeds = tuple(config.train.get("seeds", ())) if "train" in config else ()
    if not seeds or config.task in ("train", "study"):
        return run(config, workdir)
    records = []
    for seed in seeds:
        c = config.copy_and_resolve_references()
        c.seed = int(seed)
        print(f"== seed {seed} ({list(seeds).index(seed) + 1}/{len(seeds)})", flush=True)
        records += run(c, workdir) or []
    return records
