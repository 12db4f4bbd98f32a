"""Task ``study``: run this shard's cells of the (task, model, seed) grid, then write the report.

See ``configs/study.py`` and :mod:`nas_jax.study.grid`. Every cell's config is built and validated before the
first runs. A finished cell leaves ``cell.json`` (config hash, record ids, seconds), written atomically after its
records; a rerun skips it only while its results file holds every listed record, else it runs again.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from nas_jax import files
from nas_jax.config import base_config
from nas_jax.config_loader import load_config_file
from nas_jax.errors import UserError
from nas_jax.report import results
from nas_jax.report.study import collect_records, write_report
from nas_jax.study import grid
from nas_jax.study.seam import Task
from nas_jax.tasks import TASKS, check_config, get_task, study_metrics, study_sections, task_of


def study_tasks(entries) -> tuple[list[str], dict[str, Task], dict[str, str]]:
    """The study's task names in order, the task of each name (the registry's, plus every task given by the path
    of its config file, e.g. examples/custom_attack/config.py) and those config files by name."""
    registry = {name: get_task(name) for name in TASKS if name != "study"}  # a study holds no study
    names, config_files = [], {}
    for entry in entries:
        if str(entry).endswith(".py"):
            c = load_config_file(entry)
            registry[c.task] = task_of(c)
            config_files[c.task] = str(Path(entry).resolve())
            names.append(c.task)
        else:
            names.append(entry)
    return names, registry, config_files


def study_grid(config) -> tuple[list[grid.Cell], list[Task]]:
    """Every cell of the study's grid, and the study's tasks in order (whose metrics its report compares)."""
    s = config.study
    names, registry, config_files = study_tasks(s.tasks)
    cells = grid.grid_cells(tuple(names), tuple(config.seeds) or (config.seed,), registry, config, config_files)
    return cells, [registry[n] for n in names]


def shard_cells(config, cells: list[grid.Cell]) -> list[grid.Cell]:
    """The cells of ``cells`` this process runs: ``study.only`` if given, else the ``study.shard`` part."""
    s = config.study
    if s.only:
        return grid.only_cells(cells, tuple(s.only))
    i, n = grid.parse_shard(s.shard)
    return grid.assign_shards(cells, n)[i]


def _finished(cell_dir: Path, digest: str) -> bool:
    marker = results.read_marker(cell_dir)
    return bool(marker) and marker.get("config_hash") == digest and results.marked_records(cell_dir) is not None


def run(config, workdir: str | Path) -> list[dict]:
    workdir = Path(workdir)
    cells, tasks = study_grid(config)
    by_name = {t.name: t for t in tasks}
    mine = shard_cells(config, cells)
    planned = []
    for cell in mine:
        c = grid.cell_config(config, cell, by_name[cell.task])
        check_config(c)
        planned.append((cell, c, results.config_hash(grid.without_paths(c))))
    todo = [(cell, c, h) for cell, c, h in planned if not _finished(cell.workdir(workdir), h)]
    print(f"study shard {config.study.shard if not config.study.only else 'only'}: {len(mine)} cells, "
          f"{len(mine) - len(todo)} already finished", flush=True)
    records = []
    main = jax.process_index() == 0
    bar = tqdm(todo, unit="cell", desc="study", dynamic_ncols=True, disable=not main)
    for cell, c, digest in bar:
        bar.set_postfix_str(cell.name)
        cell_dir = cell.workdir(workdir)
        results.check_workdir(cell_dir)
        t0 = time.perf_counter()
        out = task_of(c).run(c, cell_dir) or []
        jax.clear_caches()  # each cell compiles its own programs; kept loaded, a long shard exhausts the
        # process's memory maps (LLVM "Cannot allocate memory" after ~56 quick cells); the disk cache reloads them
        records += out
        if main:
            marker = {"cell": cell.name, "config_hash": digest, "records": len(out),
                      "record_ids": [r["record_id"] for r in out], "seconds": time.perf_counter() - t0,
                      **({"task_config": cell.config_file} if cell.config_file else {})}
            files.write_json(cell_dir / results.MARKER_FILE, marker, indent=2)
    bar.close()
    if config.study.report and main:
        path = write_report(workdir, study_metrics(tasks), models=tuple(config.study.models),
                            sections=study_sections(tasks))
        print(f"report: {path}")
    return records


def report_tasks(workdir: Path) -> list[Task]:
    """Every registered task, plus the tasks outside the package whose cells ran under ``workdir`` (their
    markers name their config files)."""
    paths = sorted(Path(workdir).glob(f"cells/**/{results.MARKER_FILE}"))
    markers = [results.read_marker(p.parent) or {} for p in paths]
    return list(study_tasks([m["task_config"] for m in markers if m.get("task_config")])[1].values())


def main(argv=None) -> int:
    """``python -m nas_jax.tasks.study WORKDIR [--models a,b]``: the study report again from what is there."""
    p = argparse.ArgumentParser(description="Write the study report of WORKDIR again (report.md, report.json).")
    p.add_argument("workdir")
    p.add_argument("--models", default="", help="comma-separated models (default: all with records)")
    a = p.parse_args(argv)
    if not collect_records(a.workdir):
        p.error(f"no records under {a.workdir} (results.jsonl or cells/**/results.jsonl); run the study first.")
    command = "python -m nas_jax.tasks.study " + " ".join(sys.argv[1:] if argv is None else argv)
    models = tuple(m for m in a.models.split(",") if m) or None
    tasks = report_tasks(Path(a.workdir))
    print(write_report(a.workdir, study_metrics(tasks), models, command, study_sections(tasks)))
    return 0


@dataclasses.dataclass(frozen=True)
class Study(Task):
    def check(self, config) -> None:
        """Refuse study-level settings that no cell would see: cells take their recipes from their own task
        configs (plus ``study.overrides``), so a ``--config.train.*``, ``--config.arch.*`` or ``--config.seed``
        given to the study would be silently ignored."""
        default = base_config("study", config.preset)
        changed = [f"{s}.{k}" for s in ("train", "arch") for k in config[s] if config[s][k] != default[s][k]]
        changed += ["seed"] if config.seed != default.seed else []
        if changed:
            raise UserError(f"the study's cells do not take {changed} from the study config; set them for every "
                            "cell with --config.study.overrides.all=\"('train.epochs=4',)\" (or .<task> for one "
                            "task), and the seeds with --config.seeds.")


TASK = Study("study", run, in_study=(), needs_victims=False, trains=0.0, own_seeds=True)


if __name__ == "__main__":
    sys.exit(main())
