"""The launcher, configs and results store: one command per task, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas_jax.config import base_config, validate
from nas_jax.report import results
from nas_jax.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def _launch(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_zoo_task_reports_reference_counts(tmp_path):
    out = _launch(f"--config={ROOT}/configs/zoo.py", f"--workdir={tmp_path}",
                  "--config.zoo.models=('darts','enas','resnet')", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    zoo = json.loads((tmp_path / "zoo.json").read_text())
    assert zoo["config"] == {"init_channels": 36, "layers": 20, "num_classes": 10, "auxiliary": False}
    rows = {m["name"]: m for m in zoo["models"]}
    assert rows["darts"]["params"] == 3_349_342 and rows["resnet"]["params"] == 11_173_962
    assert (rows["darts"]["cell_depth"], rows["darts"]["cell_width"], rows["darts"]["skip_connects"]) == (3, 3, 2)
    assert rows["resnet"]["family"] == "manual" and rows["resnet"]["cell_depth"] is None
    assert rows["enas"]["family"] == "nas"
    assert "3,349,342" in out.stdout
    records = results.read_records(tmp_path, task="zoo")
    assert {r["model"] for r in records} == {"darts", "enas", "resnet"}


@pytest.mark.parametrize("arg,message", [
    ("--config.modle=darts", "modle"),
    ("--config.model=dartz", "valid models"),
    ("--config.dataset=mnist", "valid: "),
    ("--config.train.epochs=0", "train.epochs must be >= 1"),
])
def test_bad_input_fails_with_a_clear_message(tmp_path, arg, message):
    out = _launch(f"--config={ROOT}/configs/train.py", f"--workdir={tmp_path}", arg, cwd=tmp_path)
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "zoo").exists()  # nothing was trained or written


def test_unknown_preset_and_task():
    with pytest.raises(ValueError, match="valid presets"):
        base_config("train", "full")
    with pytest.raises(ValueError, match="valid tasks"):
        get_task("trian")


def test_validate_accepts_presets_and_npz():
    for preset in ("quick", "paper"):
        validate(base_config("train", preset))
    c = base_config("train")
    c.dataset = "npz:/some/file.npz"
    validate(c)


def test_results_store_appends_and_skips_torn_lines(tmp_path):
    c = base_config("train")
    rec = results.make_record(c, task="train", model="darts", metrics={"test_accuracy": 0.9}, n=10,
                              start_time=results.now())
    assert {"task", "model", "dataset", "preset", "setting", "metrics", "n", "seed", "config_hash",
            "code_version", "start_time", "end_time"} <= set(rec)
    results.append_record(tmp_path, rec)
    with open(tmp_path / results.RESULTS_FILE, "a") as f:
        f.write('{"task": "train", "mod')  # a run killed mid-write
    results.append_record(tmp_path, {**rec, "model": "resnet"})
    assert [r["model"] for r in results.read_records(tmp_path)] == ["darts", "resnet"]
    assert results.config_hash(c) == results.config_hash(base_config("train"))
    # a resumed run repeats a finished measurement: stored once; another setting is a new record
    assert not results.append_record(tmp_path, {**rec, "end_time": "later"})
    assert results.append_record(tmp_path, {**rec, "setting": {"fraction": 0.1}})
    assert [r["model"] for r in results.read_records(tmp_path)] == ["darts", "resnet", "darts"]


def test_train_overrides_apply_per_model_and_enter_the_spec():
    from nas_jax.train import zoo

    c = base_config("pgd")
    assert zoo.training_spec(c, "vgg")["train"]["epochs"] == 12  # quick: VGG's saddle (sharp_edges)
    assert zoo.training_spec(c, "darts")["train"]["epochs"] == c.train.epochs == 8
    assert zoo.model_config(c, "darts") is c
    c.train_overrides.vgg.lr = 0.1
    assert zoo.model_config(c, "vgg").train.lr == 0.1 and c.train.lr == 0.05
    c.train_overrides.vgg.epochz = 3
    with pytest.raises(ValueError, match="unknown train fields.*epochz.*valid"):
        validate(c)
    assert base_config("pgd", "paper").train_overrides.to_dict() == {}


def test_zoo_slug_keeps_files_with_one_name_apart():
    from nas_jax.train.zoo import slug

    a, b = slug("genotype:runs/darts/genotype.json"), slug("genotype:runs/darts_ii/genotype.json")
    assert a != b and a.startswith("genotype_darts_genotype_") and b.startswith("genotype_darts_ii_genotype_")
    assert slug("resnet") == "resnet" and slug("genotype:runs/darts/genotype.json") == a  # stable
    assert "/" not in slug("npz:/data/x y.npz") and ":" not in slug("npz:/data/x y.npz")
