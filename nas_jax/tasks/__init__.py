"""The task registry: one entry per launcher task, each a module that defines ``TASK``
(:class:`~nas_jax.study.seam.Task`, usually a :class:`~nas_jax.study.seam.VictimTask`). A task outside the
package names its module in its config (``config.task_module``, a ``.py`` file; examples/custom_attack/) and
needs no entry here. The launcher, the study grid, its report and the seeds below all read the task from here.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import jax

from nas_jax.errors import UserError
from nas_jax.study.seam import Task
from nas_jax.train.zoo import file_sha256

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
    "space": "nas_jax.tasks.space",
    "stealing": "nas_jax.tasks.stealing",
    "study": "nas_jax.tasks.study",
    "train": "nas_jax.tasks.train",
    "zoo": "nas_jax.tasks.zoo_table",
}


def get_task(name: str) -> Task:
    """The registered task ``name``."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {sorted(TASKS)} (or a config that names its own "
                        "module in task_module, docs/extending.md).")
    return importlib.import_module(TASKS[name]).TASK


def task_from_file(path: str | Path) -> Task:
    """The ``TASK`` of a task module outside the package, imported once per file content."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"task_module {path} does not exist; it names the .py file that defines TASK "
                        "(docs/extending.md).")
    name = f"nas_jax_task_{path.stem}_{file_sha256(str(path))[:12]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    task = getattr(sys.modules[name], "TASK", None)
    if not isinstance(task, Task):
        raise UserError(f"{path} defines no TASK (a nas_jax.study.seam.Task); see examples/custom_attack/.")
    return task


def task_of(config) -> Task:
    """The task ``config`` runs: its ``task_module`` file if it names one, else the registry's ``config.task``."""
    module = config.get("task_module", "")
    task = task_from_file(module) if module else get_task(config.task)
    if task.name != config.task:
        raise UserError(f"config.task is {config.task!r} but {module or TASKS[config.task]} defines the task "
                        f"{task.name!r}; they must agree.")
    return task


def check_config(config) -> None:
    """Refuse a config that cannot work, before any work: the shared checks, then the task's own settings."""
    from nas_jax.config import validate

    task = task_of(config)
    validate(config, task.victims(config), task.needs_victims, task.trains)
    task.check(config)


def study_metrics(tasks: list[Task] | None = None) -> list:
    """The per-model metrics the study report compares: clean accuracy, then each task's, in task order
    (default: every registered task)."""
    tasks = [get_task(n) for n in TASKS] if tasks is None else tasks
    return list(get_task("train").metrics) + [m for t in tasks if t.name != "train" for m in t.metrics]


def study_sections(tasks: list[Task] = ()) -> tuple:
    """The tasks' own parts of the study report: every registered task's (a remark a study did not measure
    says so), then those of ``tasks`` outside the package."""
    registered = [get_task(n) for n in TASKS]
    extra = [t for t in tasks if t.name not in TASKS]
    return tuple(s for t in registered + extra for s in t.report_sections)


def run_task(config, workdir):
    """Run ``config``'s task; with ``config.seeds`` an attack or analysis task runs once per seed (the victims
    of all seeds trained first, :func:`nas_jax.study.victims.load_victims`), the ``train`` task trains them
    all, and the study grid runs its cells for each. Over several seeds
    every per-seed record is kept, each seed's figures move to ``figures/seed{s}/`` (none overwrites
    another), and one table and one figure (``figures/{task}_seeds.png``) give each model's mean and
    interval over the seeds (:mod:`nas_jax.report.seeds`)."""
    task = task_of(config)
    run, seeds = task.run, tuple(config.get("seeds", ()))
    if not seeds or task.own_seeds:
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
