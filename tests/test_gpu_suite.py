"""The one-command GPU benchmark suite: its CPU smoke run writes section files that
merge_sections.py merges into a BENCHMARKS.md, and the project imports without tensorflow-datasets."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_smoke_writes_sections_that_merge(tmp_path):
    out = tmp_path / "suite"
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_suite.sh"), "--smoke", "--only", "search_step",
                          "--out", str(out), "--wheels", str(tmp_path / "no_wheels")],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    section = (out / "sections/search_step.md").read_text()
    assert section.startswith("<!-- BEGIN search_step -->") and "| first_order |" in section
    assert "| search_step | ok |" in (out / "summary.md").read_text()

    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n<!-- BEGIN search_step -->\nold CPU numbers\n<!-- END search_step -->\n")
    merge = [sys.executable, str(ROOT / "benchmarks/merge_sections.py"), str(out / "sections"),
             "--target", str(target)]
    subprocess.run([*merge, "--prefix", "gpu_"], check=True, capture_output=True, text=True, cwd=ROOT)
    text = target.read_text()
    assert "old CPU numbers" in text and "<!-- BEGIN gpu_search_step -->" in text  # kept next to the CPU one
    subprocess.run(merge, check=True, capture_output=True, text=True, cwd=ROOT)
    text = target.read_text()
    assert "old CPU numbers" not in text and text.count("<!-- BEGIN search_step -->") == 1


def test_gpu_suite_rejects_unknown_arguments():
    run = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_suite.sh"), "--fast"], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 2 and "unknown argument '--fast'" in run.stderr


def test_project_imports_without_tensorflow_datasets():
    """Nothing but the cifar loaders needs tfds: the GPU image has none (``None`` in sys.modules blocks it)."""
    code = ("import sys; sys.modules['tensorflow_datasets'] = None\n"
            "import nas_jax.tasks, nas_jax.train.trainer, nas_jax.attacks.pgd, nas_jax.attacks.hopskipjump\n"
            "import nas_jax.search.darts, nas_jax.models.registry\n"
            "from nas_jax.data import load_dataset\n"
            "assert load_dataset('digits').x_train.shape[1:] == (32, 32, 3)\n"
            "try:\n    load_dataset('cifar10')\nexcept ImportError as e:\n    print('cifar10:', e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "needs tensorflow-datasets" in run.stdout  # only the tfds datasets need it, and say so
