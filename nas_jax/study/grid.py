"""The study as a grid of independent, resumable cells: (task, model, seed).

Every cell runs the task's launcher config (``configs/{task}.py`` at the study's preset with the cell's models
and seed, :func:`cell_config`) in its own workdir ``{workdir}/cells/{task}/{model}/seed{s}``, so no two processes
append to one ``results.jsonl`` and a cell is the same computation in a shard (``study.shard``, SLURM) or alone
(``study.only``, Ray). A task's cells (:meth:`~nas_jax.study.seam.Task.cell_targets`): one per model, one per
seed for a ``joint`` task, or its own targets (the search: one per searcher, e.g. ``search/gdas/seed0``).

Sharding (``study.shard = "i/n"``) keeps the cells of one (model, seed) together, so their victim is trained
once, and assigns the groups by longest processing time first (``Task.cost_minutes``), deterministic and
balanced. The grid knows tasks only through the registry entries it is given (:func:`nas_jax.tasks.get_task`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nas_jax.config_loader import load_config_file, override
from nas_jax.errors import UserError
from nas_jax.study.seam import ALL_MODELS, Task

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TRAIN_MINUTES = 3.0  # a victim's quick training, counted once per (model, seed) group (its train cell: 0 above)


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    task: str
    model: str  # the cell's target: a zoo name, ALL_MODELS for a joint task, or the task's own (a search method)
    seed: int
    cost: float = dataclasses.field(default=1.0, compare=False)  # the task's estimated minutes
    config_file: str = dataclasses.field(default="", compare=False)  # the task's config ('': configs/{task}.py)
    victim: bool = dataclasses.field(default=True, compare=False)  # it needs the victim of (model, seed)

    @property
    def name(self) -> str:
        return f"{self.task}/{'all' if self.model == ALL_MODELS else self.model}/seed{self.seed}"

    def workdir(self, root: str | Path) -> Path:
        from nas_jax.train.zoo import slug

        return Path(root) / "cells" / self.task / ("all" if self.model == ALL_MODELS else slug(self.model)) / \
            f"seed{self.seed}"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise UserError(f"study.shard must look like 'i/n' (the i-th of n parts, 0-based), got {text!r}; "
                        "e.g. --config.study.shard=0/4.") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"study.shard {text!r}: need 0 <= i < n, e.g. 0/{max(n, 1)} ... {max(n, 1) - 1}/{max(n, 1)}.")
    return i, n


def grid_cells(tasks, seeds, registry: dict[str, Task], study, config_files=None) -> list[Cell]:
    """Every (task, target, seed) of the grid in a stable order (the cells that make the victims first).
    ``registry``: the task of each name; ``study``: the study config (``study.models`` and what a task's own targets read);
    ``config_files``: the config of a task that is not ``configs/{task}.py`` (a task outside the package)."""
    valid = sorted(registry)
    unknown = [t for t in tasks if t not in valid]
    if unknown:
        raise UserError(f"unknown study tasks {unknown}; valid: {valid} or the path of a task's config file "
                        "(e.g. examples/custom_attack/config.py).")
    if not study.study.models or not seeds:
        raise UserError("the study needs at least one model and one seed (study.models, seeds).")
    order = sorted(tasks, key=lambda t: (not registry[t].makes_victims, list(tasks).index(t)))
    targets = {t: registry[t].cell_targets(study) for t in order}
    return [Cell(t, target, int(seed), registry[t].cost_minutes, (config_files or {}).get(t, ""),
                 registry[t].needs_victims and target != ALL_MODELS) for seed in seeds for t in order
            for target in targets[t]]


def assign_shards(cells: list[Cell], n: int) -> list[list[Cell]]:
    """``n`` disjoint parts covering ``cells``: (model, seed) groups by longest estimated cost first, each to
    the currently cheapest shard (ties: the lowest index); within a shard the grid order is kept."""
    groups: dict[tuple[str, int], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.seed), []).append(c)

    def cost(group: list[Cell]) -> float:
        victim = TRAIN_MINUTES if any(c.victim for c in group) else 0.0
        return victim + sum(c.cost for c in group)

    loads, parts = [0.0] * n, [[] for _ in range(n)]
    for key in sorted(groups, key=lambda k: (-cost(groups[k]), k)):
        i = min(range(n), key=lambda s: (loads[s], s))
        loads[i] += cost(groups[key])
        parts[i] += groups[key]
    position = {c: k for k, c in enumerate(cells)}
    return [sorted(p, key=position.__getitem__) for p in parts]


def task_config(task: str, preset: str, config_file: str = ""):
    """``get_config(preset)`` of ``config_file`` (default ``configs/{task}.py``), as the launcher loads it."""
    path = Path(config_file) if config_file else CONFIG_DIR / f"{task}.py"
    if not path.exists():
        raise UserError(f"no config file {path} for task {task!r}.")
    return load_config_file(path, preset)


PATH_FIELDS = ("data_dir", "zoo_dir", "jit_cache_dir")  # where things live, not what is measured
SHARED_FIELDS = ("dataset", *PATH_FIELDS)  # the study's fields every cell takes


def without_paths(config):
    """``config`` with the path fields blanked and a task module outside the package named by its content: what
    a finished cell's marker is keyed on (moving the zoo or the compilation cache does not rerun finished cells;
    editing the task's module does)."""
    from nas_jax.train.zoo import file_sha256

    out = config.copy_and_resolve_references()
    for key in PATH_FIELDS:
        out[key] = ""
    if out.get("task_module"):
        out.task_module = file_sha256(str(Path(out.task_module).expanduser()))
    return out


def cell_config(study, cell: Cell, task: Task):
    """The launcher config of ``cell``: the task's config at the study's preset, the study's shared fields, the
    cell's target, models and seed, then ``study.overrides['all']`` and ``study.overrides[task]``."""
    c = task_config(cell.task, study.preset, cell.config_file)
    for key in SHARED_FIELDS:
        c[key] = study[key]
    c.seed = cell.seed
    task.set_cell(c, cell.model, tuple(study.study.models) if cell.model == ALL_MODELS else (cell.model,))
    overrides = study.study.get("overrides", {})
    for text in (*overrides.get("all", ()), *overrides.get(cell.task, ())):
        override(c, text)
    return c


def only_cells(cells: list[Cell], names) -> list[Cell]:
    """The cells named in ``names`` (``task/model/seed{s}``, :attr:`Cell.name`): how the Ray driver runs one cell
    per launcher call (``--config.study.only="('pgd/darts/seed0',)"``)."""
    by_name = {c.name: c for c in cells}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"study.only names cells not in the grid: {unknown}; e.g. {list(by_name)[:3]}.")
    return [by_name[n] for n in names]
