"""The evasion tasks end to end on tiny victims (8x8 digits as an npz dataset)."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

from nas_jax.data import load_dataset
from nas_jax.report import results
from nas_jax.tasks import get_task, victims
from nas_jax.tasks.pgd import evasion_config, run_pgd

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str, tmp_path: Path):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("quick")
    ds = load_dataset("digits", native=True)
    path = tmp_path / "digits8.npz"
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    c.dataset, c.zoo_dir = f"npz:{path}", str(tmp_path / "zoo")
    c.models = ("darts", "resnet")
    c.arch.init_channels, c.arch.layers, c.arch.width_multiplier = 4, 3, 0.125
    c.train.epochs, c.train.crop_padding, c.train.lr = 2, 1, 0.05
    return c


@pytest.fixture(scope="module")
def pgd_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pgd")
    c = _config("pgd", tmp)
    c.pgd.n_inputs, c.pgd.batch_size = 40, 40
    workdir = tmp / "work"
    get_task("pgd")(c, workdir)
    return c, workdir


def test_pgd_task_records_table_and_figure(pgd_run):
    c, workdir = pgd_run
    recs = results.read_records(workdir, task="pgd")
    assert [r["model"] for r in recs] == ["darts", "resnet"]
    for r in recs:
        m = r["metrics"]
        assert 0 <= m["asr_most_likely"] <= 1 and 0 <= m["asr_least_likely"] <= 1
        assert 0.2 < m["clean_accuracy"] <= 1
        assert r["setting"]["family"] in ("nas", "manual") and r["n"] <= 40
    assert (workdir / "figures" / "pgd_asr.png").stat().st_size > 0


def test_pgd_asr_follows_eps(pgd_run):
    """On the zoo victims the task trained: eps = 0 fools nothing, a huge eps (almost) everything."""
    c, _ = pgd_run
    dataset, entries = victims.load_victims(c, progress=False)  # restored from the zoo, not retrained
    x, y = dataset.x_test[:40], dataset.y_test[:40]
    for eps, check in ((0.0, lambda a: a == 0.0), (0.5, lambda a: a >= 0.9)):
        cfg = evasion_config(c.pgd, 3, eps=eps, step_size=eps / 3)
        out = run_pgd(entries[0], x, y, cfg, "most_likely", jax.random.key(0), 40)
        assert check(float(out.success.mean())), (eps, out.success.mean())
        assert np.all(np.abs(out.x_adv - x / 255.0) <= eps + 1e-6)
