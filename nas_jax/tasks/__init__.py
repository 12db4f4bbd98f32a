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
