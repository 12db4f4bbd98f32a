"""A task from outside the package (examples/custom_attack: its module and its config, nothing else): it runs
from the launcher with a table, records and a figure, and as a cell of the study grid whose report shows its
metric."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from nas_jax.report import results
from nas_jax.study import grid

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_attack" / "config.py"
SMALL = ("arch.init_channels=4", "arch.layers=3", "arch.width_multiplier=0.125", "train.epochs=2",
         "train.crop_padding=1", "train.eval_batch_size=128")


def _digits8(tmp_path: Path) -> Path:
    from nas_jax.data import load_dataset

    ds = load_dataset("digits", native=True)
    path = tmp_path / "digits8.npz"
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    return path


def test_the_example_task_runs_from_the_launcher_and_as_a_study_cell(tmp_path):
    assert sorted(p.name for p in EXAMPLE.parent.iterdir() if p.name != "__pycache__") == ["config.py", "fgsm.py"]
    data, zoo_dir = f"npz:{_digits8(tmp_path)}", str(tmp_path / "zoo")
    flags = [f"--config.dataset={data}", f"--config.zoo_dir={zoo_dir}", "--config.jit_cache_dir=",
             "--config.models=('darts','resnet')", "--config.fgsm.n_inputs=24", "--config.fgsm.eps=16/255",
             *(f"--config.{s}" for s in SMALL)]
    out = subprocess.run([sys.executable, "launch/main.py", f"--config={EXAMPLE}", f"--workdir={tmp_path / 'one'}",
                          *flags], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FGSM ASR" in out.stdout and "victims: 2 model(s)" in out.stdout
    records = results.read_records(tmp_path / "one", task="fgsm")
    assert [r["model"] for r in records] == ["darts", "resnet"]
    for r in records:
        assert 0 <= r["metrics"]["asr"] <= 1 and 0 < r["n"] <= 24
        assert r["setting"] == {"family": r["setting"]["family"], "eps": 16 / 255}  # run-only fields left out
        assert "task_module_sha256" in r["identity"]["task_settings"]  # the module by content, not its path
        assert str(EXAMPLE.parent) not in json.dumps(r["identity"])
    assert (tmp_path / "one" / "figures" / "fgsm.png").stat().st_size > 0

    from nas_jax.tasks.study import run

    study = grid.task_config("study", "quick")
    study.dataset, study.zoo_dir, study.jit_cache_dir = data, zoo_dir, ""
    study.study.models, study.seeds = ("darts", "resnet"), (0,)
    study.study.tasks = ("train", str(EXAMPLE))
    study.study.overrides.all = SMALL
    study.study.overrides.fgsm = ("fgsm.n_inputs=24", "fgsm.eps=16/255")
    run(study, tmp_path / "study")  # the victims come from the zoo the launcher filled
    cells = sorted(p.parent.relative_to(tmp_path / "study" / "cells").as_posix()
                   for p in (tmp_path / "study" / "cells").glob("**/cell.json"))
    assert cells == ["fgsm/darts/seed0", "fgsm/resnet/seed0", "train/darts/seed0", "train/resnet/seed0"]
    report = json.loads((tmp_path / "study" / "report.json").read_text())
    fgsm = next(e for e in report["per_model"] if e["metric"] == "fgsm_asr")
    assert fgsm["range"] == [0.0, 1.0]
    assert "FGSM ASR, untargeted (extension)" in (tmp_path / "study" / "report.md").read_text()
    again = {r["model"]: r["metrics"]["asr"] for r in results.read_records(tmp_path / "study" / "cells" / "fgsm" /
                                                                           "darts" / "seed0", task="fgsm")}
    assert again == {"darts": records[0]["metrics"]["asr"]}  # the same victim and inputs: the same number
