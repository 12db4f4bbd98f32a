"""One module per launcher task; each exposes ``run(config, workdir) -> list[dict]``
(the records it appended). The launcher dispatches on ``config.task``."""

from __future__ import annotations

import importlib

TASKS = {
    "nes": "nas_jax.tasks.nes",
    "pgd": "nas_jax.tasks.pgd",
    "pgd_commonality": "nas_jax.tasks.pgd_commonality",
    "pgd_sweep": "nas_jax.tasks.pgd_sweep",
    "train": "nas_jax.tasks.train",
    "zoo": "nas_jax.tasks.zoo_table",
}


def get_task(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {sorted(TASKS)}.")
    return importlib.import_module(TASKS[name]).run
