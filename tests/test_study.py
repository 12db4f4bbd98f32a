"""The study grid: cells, shard assignment, per-cell configs, resumable cells, two shards in two
processes equal to one process, and the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas_jax.errors import UserError
from nas_jax.study import grid
from nas_jax.tasks import TASKS, get_task

REGISTRY = {name: get_task(name) for name in TASKS}

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _study_config(tmp_path):
    spec = grid.task_config("study", "quick")
    spec.dataset = f"npz:{_tiny_npz(tmp_path)}"
    spec.zoo_dir, spec.jit_cache_dir = str(tmp_path / "zoo"), ""
    spec.study.models, spec.study.tasks, spec.seeds = ("darts", "resnet"), ("train", "cells"), (1,)
    spec.study.overrides.all = TINY
    spec.study.overrides.cells = ("cells.draw=False",)
    return spec


TINY = ("arch.init_channels=2", "arch.layers=3", "arch.width_multiplier=0.0625", "train.epochs=1",
        "train.batch_size=32", "train.crop_padding=1", "train.eval_batch_size=32")


def _tiny_npz(tmp_path) -> Path:
    path = tmp_path / "tiny.npz"
    if not path.exists():
        from nas_jax.data import load_dataset

        ds = load_dataset("digits", native=True)
        np.savez(path, x_train=ds.x_train[:64], y_train=ds.y_train[:64], x_test=ds.x_test[:32],
                 y_test=ds.y_test[:32], num_classes=10)
    return path


def _study(models, search_methods=("darts",)):
    study = grid.task_config("study", "quick")
    study.study.models, study.study.search_methods = models, search_methods
    return study


def test_grid_cells_and_balanced_deterministic_shards():
    cells = grid.grid_cells(("pgd", "train", "cells"), (0, 1), REGISTRY, _study(("darts", "resnet", "vgg")))
    assert [c.task for c in cells[:3]] == ["train"] * 3  # victims first
    assert sum(c.model == grid.ALL_MODELS for c in cells) == 2  # cells: one joint cell per seed
    assert len(cells) == 2 * (3 + 3 + 1)
    parts = grid.assign_shards(cells, 3)
    assert sorted(c for p in parts for c in p) == sorted(cells)  # disjoint and complete
    assert parts == grid.assign_shards(cells, 3)
    for p in parts:  # the cells of one victim stay in one shard
        for c in p:
            assert all(d in p for d in cells if (d.model, d.seed) == (c.model, c.seed))
    cost = {name: task.cost_minutes for name, task in REGISTRY.items()}
    loads = [sum(cost[c.task] for c in p) + grid.TRAIN_MINUTES * len({(c.model, c.seed) for c in p
                                                                           if c.model != grid.ALL_MODELS})
             for p in parts]
    assert max(loads) - min(loads) <= cost["pgd"] + cost["train"] + grid.TRAIN_MINUTES
    assert grid.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(UserError, match="study.shard"):
            grid.parse_shard(bad)
    with pytest.raises(UserError, match="unknown study tasks"):
        grid.grid_cells(("pgd", "pgdd"), (0,), REGISTRY, _study(("darts",)))


def test_search_cells_one_per_method_and_seed(tmp_path):
    """The search task's method dimension: a cell per (method, seed), no victim, the method set
    in the cell's config; an unknown method lists the valid ones."""
    cells = grid.grid_cells(("train", "search"), (0, 1), REGISTRY, _study(("darts", "resnet"), ("darts", "gdas")))
    search = [c for c in cells if c.task == "search"]
    assert [c.name for c in search] == ["search/darts/seed0", "search/gdas/seed0", "search/darts/seed1",
                                        "search/gdas/seed1"]
    parts = grid.assign_shards(cells, 2)
    assert sorted(c for p in parts for c in p) == sorted(cells)
    study = _study_config(tmp_path)
    c = grid.cell_config(study, grid.Cell("search", "gdas", 1), REGISTRY["search"])
    assert (c.search.method, c.seed) == ("gdas", 1)
    with pytest.raises(UserError, match="valid: .*pc_darts"):
        grid.grid_cells(("search",), (0,), REGISTRY, _study(("darts",), ("gdas", "enas")))


def test_cell_config_sets_models_seed_and_overrides(tmp_path):
    study = _study_config(tmp_path)
    study.study.overrides.pgd = ("pgd.n_inputs=7", "pgd.eps=0.01")
    c = grid.cell_config(study, grid.Cell("pgd", "darts", 1), REGISTRY["pgd"])
    assert (c.models, c.seed, c.pgd.n_inputs, c.pgd.eps, c.train.epochs) == (("darts",), 1, 7, 0.01, 1)
    assert c.zoo_dir == study.zoo_dir and c.dataset == study.dataset
    cells = grid.cell_config(study, grid.Cell("cells", grid.ALL_MODELS, 0), REGISTRY["cells"])
    assert tuple(cells.cells.genotypes) == ("darts",)  # the NAS models only
    study.study.overrides.pgd = ("pgd.epz=1",)
    with pytest.raises(UserError, match="unknown config key 'pgd.epz'"):
        grid.cell_config(study, grid.Cell("pgd", "darts", 0), REGISTRY["pgd"])


def _records(workdir: Path) -> list[tuple]:
    from nas_jax.report.study import collect_records

    keep = ("test_accuracy", "train_accuracy", "train_loss", "depth", "skip_connects")
    return sorted((r["task"], r["model"], r["seed"], json.dumps({k: v for k, v in r["metrics"].items() if k in keep}))
                  for r in collect_records(workdir))


def test_two_shards_in_two_processes_equal_one_process_and_a_rerun_skips_finished_cells(tmp_path):
    from nas_jax.tasks.study import run

    study = _study_config(tmp_path)
    run(study, tmp_path / "one")
    one = _records(tmp_path / "one")
    assert len(one) == 2 + 2  # train: 2 models; cells: darts + table3_mean
    assert {r[2] for r in one} == {1}
    assert len(list((tmp_path / "zoo").glob("*/*/quick_seed1/spec.json"))) == 2  # seed 1's victims: their own entries
    report = (tmp_path / "one" / "report.md").read_text()
    assert "clean accuracy" in report and "NAS − manual gaps" in report and "Remark 4" in report

    flags = [f"--config.dataset={study.dataset}", f"--config.zoo_dir={tmp_path / 'zoo2'}", "--config.jit_cache_dir=",
             "--config.study.models=('darts','resnet')", "--config.study.tasks=('train','cells')",
             "--config.seeds=(1,)", f"--config.study.overrides.all={TINY!r}",
             "--config.study.overrides.cells=('cells.draw=False',)"]
    procs = [subprocess.Popen([sys.executable, "launch/main.py", "--config=configs/study.py",
                               f"--workdir={tmp_path / 'two'}", f"--config.study.shard={i}/2", *flags], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    assert _records(tmp_path / "two") == one

    marker = next((tmp_path / "one" / "cells" / "train").glob("*/seed1/cell.json"))
    before = marker.stat().st_mtime_ns
    run(study, tmp_path / "one")  # finished cells are skipped
    assert marker.stat().st_mtime_ns == before and _records(tmp_path / "one") == one


CELLS_ONLY = ["--config.study.tasks=('cells',)", "--config.study.models=('darts','snas','resnet')",
              "--config.seeds=(0,1)", "--config.study.overrides.cells=('cells.draw=False',)",
              "--config.jit_cache_dir="]


def test_slurm_array_tasks_run_their_shard_and_submission_calls_sbatch(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'sbatch.log'}\necho 4242\n")
    (fake / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "PYTHON": sys.executable}
    flags = ["--config=configs/study.py", f"--workdir={tmp_path / 'w'}", *CELLS_ONLY]
    sub = subprocess.run(["bash", "launch/slurm_study.sh", "2", "--gpus", "1", "--", *flags], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    assert sub.returncode == 0, sub.stderr
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert "--array=0-1" in calls[0] and "--gpus-per-task=1" in calls[0] and "NAS_JAX_STUDY_SHARDS=2" in calls[0]
    assert "--dependency=afterok:4242" in calls[1] and "nas_jax.tasks.study" in calls[1]
    for i in range(2):  # what each array task runs
        task = subprocess.run(["bash", "launch/slurm_study.sh", *flags], cwd=ROOT, capture_output=True, text=True,
                              env={**env, "SLURM_ARRAY_TASK_ID": str(i), "NAS_JAX_STUDY_SHARDS": "2"}, check=False)
        assert task.returncode == 0, task.stdout[-2000:] + task.stderr[-2000:]
        assert f"study shard {i}/2: 1 cells" in task.stdout
    assert sorted(p.parent.name for p in (tmp_path / "w" / "cells" / "cells" / "all").glob("*/cell.json")) == \
        ["seed0", "seed1"]
    assert not (tmp_path / "w" / "report.md").exists()  # the dependent job writes it


def test_ray_driver_runs_one_task_per_cell_and_writes_the_report(tmp_path):
    pytest.importorskip("ray")
    out = subprocess.run([sys.executable, "launch/ray_study.py", "--config=configs/study.py",
                          f"--workdir={tmp_path / 'ray'}", "--num_cpus=2", *CELLS_ONLY], cwd=ROOT,
                         capture_output=True, text=True, check=False, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "done: cells/all/seed0" in out.stdout and "done: cells/all/seed1" in out.stdout
    assert (tmp_path / "ray" / "report.md").exists()
    records = _records(tmp_path / "ray")
    assert {(r[0], r[2]) for r in records} == {("cells", 0), ("cells", 1)} and len(records) == 2 * 3


def test_every_task_config_loads_at_every_preset_and_small_is_the_reduced_cifar_recipe():
    from nas_jax.config import PRESETS
    from nas_jax.tasks import TASKS

    for task in TASKS:
        for preset in PRESETS:
            c = grid.task_config(task, preset)
            assert c.task == task and c.preset == preset
    small = grid.task_config("pgd", "small")
    assert (small.dataset, small.arch.init_channels, small.arch.layers, small.arch.dropout) == ("cifar10", 16, 8, 0.0)
    assert small.arch.width_multiplier == 0.25 and small.train.cutout == 0 and small.train.flip
    t = small.train
    assert (t.epochs, t.lr, t.lr_schedule, t.weight_decay, t.grad_clip, t.batch_size) == (4, 0.025, "cosine", 3e-4, 5.0, 96)


def test_study_level_recipe_settings_are_refused_before_any_work():
    """A --config.train.* or --config.seed given to the study would reach no cell: the launcher's check refuses it
    with the override that does reach every cell."""
    from nas_jax.tasks import check_config

    study = grid.task_config("study", "quick")
    check_config(study)
    study.train.epochs, study.seed = 4, 3
    with pytest.raises(UserError, match=r"do not take \['train.epochs', 'seed'\].*study.overrides.all"):
        check_config(study)
