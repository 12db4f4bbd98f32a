"""Task ``study``: run this shard's cells of the (task, model, seed) grid, then write the report.

See ``configs/study.py`` and :mod:`nas_jax.study.grid`. Every cell's config is built and validated
before the first cell runs (a typo in the grid fails at once, not hours in). A finished cell leaves
``cell.json`` (its config hash, the ids of the records it wrote, seconds) in its workdir, written atomically
after its records. A rerun with the same config skips the cell only when its results file still holds every
record the marker lists; a cell whose config changed, or whose results were damaged or lost, runs again
(its records are new measurements, and readers show the newest).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from nas_jax import files
from nas_jax.config import validate
from nas_jax.report import results
from nas_jax.study import grid
from nas_jax.tasks import TASKS, get_task



def shard_cells(config) -> list[grid.Cell]:
    """The cells this process runs: ``study.only`` if given, else the ``study.shard`` part of the grid."""
    s = config.study
    cells = grid.grid_cells(tuple(s.tasks), tuple(s.models), tuple(s.seeds), TASKS, tuple(s.search_methods))
    if s.only:
        return grid.only_cells(cells, tuple(s.only))
    i, n = grid.parse_shard(s.shard)
    return grid.assign_shards(cells, n)[i]


def _finished(cell_dir: Path, digest: str) -> bool:
    marker = results.read_marker(cell_dir)
    return bool(marker) and marker.get("config_hash") == digest and results.marked_records(cell_dir) is not None


def run(config, workdir: str | Path) -> list[dict]:
    workdir = Path(workdir)
    mine = shard_cells(config)
    grid.check_study_fields(config)
    planned = []
    for cell in mine:
        c = grid.cell_config(config, cell)
        validate(c)
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
        out = get_task(cell.task)(c, cell_dir) or []
        jax.clear_caches()  # each cell compiles its own programs; kept loaded, a long shard exhausts the
        # process's memory maps (LLVM "Cannot allocate memory" after ~56 quick cells); the disk cache reloads them
        records += out
        if main:
            marker = {"cell": cell.name, "config_hash": digest, "records": len(out),
                      "record_ids": [r["record_id"] for r in out], "seconds": time.perf_counter() - t0}
            files.write_json(cell_dir / results.MARKER_FILE, marker, indent=2)
    bar.close()
    if config.study.report and main:
        from nas_jax.report.study import write_report

        path = write_report(workdir, models=tuple(config.study.models))
        print(f"report: {path}")
    return records
