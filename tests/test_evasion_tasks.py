"""The evasion tasks end to end on tiny victims (8x8 digits as an npz dataset)."""

from pathlib import Path

import jax
import numpy as np
import pytest

from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.config_loader import load_config_file
from nas_jax.data import load_dataset
from nas_jax.report import results
from nas_jax.study import victims
from nas_jax.study.evasion import run_pgd
from nas_jax.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str, tmp_path: Path):
    c = load_config_file(ROOT / "configs" / f"{name}.py", "quick")
    ds = load_dataset("digits", native=True)
    path = tmp_path / "digits8.npz"
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    c.dataset, c.zoo_dir = f"npz:{path}", str(tmp_path / "zoo")
    c.models = ("darts", "resnet")
    c.arch.init_channels, c.arch.layers, c.arch.width_multiplier = 4, 3, 0.125
    c.train.epochs, c.train.crop_padding, c.train.lr = 2, 1, 0.05
    return c


@pytest.fixture(scope="module")
def shared_tmp(tmp_path_factory):
    """One directory (npz data + zoo) for every task in this module: victims are trained once."""
    return tmp_path_factory.mktemp("evasion")


@pytest.fixture(scope="module")
def pgd_run(shared_tmp):
    tmp = shared_tmp
    c = _config("pgd", tmp)
    c.pgd.n_inputs, c.pgd.batch_size = 40, 40
    workdir = tmp / "work"
    get_task("pgd").run(c, workdir)
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
        cfg = EvasionConfig.from_config(c.pgd, iterations=3, eps=eps, step_size=eps / 3)
        out = run_pgd(entries[0], x, y, cfg, "most_likely", jax.random.key(0), 40)
        assert check(float(out.success.mean())), (eps, out.success.mean())
        assert np.all(np.abs(out.x_adv - x / 255.0) <= eps + 1e-6)


def test_eps_sweep_and_commonality_tasks(pgd_run, shared_tmp):
    """Figure 3 and Figure 4 commands on the victims trained above (restored, not retrained)."""
    c = _config("pgd_sweep", shared_tmp)
    c.pgd_sweep.n_inputs, c.pgd_sweep.batch_size, c.pgd_sweep.eps_grid_255, c.pgd_sweep.restarts = 20, 20, (0, 64), 1
    workdir = shared_tmp / "sweep"
    get_task("pgd_sweep").run(c, workdir)
    recs = results.read_records(workdir, task="pgd_sweep")
    assert [(r["model"], round(r["setting"]["eps"] * 255)) for r in recs] == [
        ("darts", 0), ("darts", 64), ("resnet", 0), ("resnet", 64)]
    asr = [r["metrics"]["asr_untargeted"] for r in recs]
    assert asr[0] == asr[2] == 0.0 and asr[1] >= 0.9 and asr[3] >= 0.9, asr
    assert (workdir / "figures" / "pgd_eps_sweep.png").stat().st_size > 0

    c = _config("pgd_commonality", shared_tmp)
    c.pgd_commonality.n_inputs, c.pgd_commonality.batch_size, c.pgd_commonality.restarts = 20, 20, 1
    workdir = shared_tmp / "commonality"
    get_task("pgd_commonality").run(c, workdir)
    recs = {r["setting"]["family"]: r for r in results.read_records(workdir, task="pgd_commonality")}
    assert set(recs) == {"nas", "manual"}
    for r in recs.values():  # one model per family: each input fools 0 or 1 model of it
        assert len(r["metrics"]["histogram"]) == 2 and sum(r["metrics"]["histogram"]) == r["n"] <= 20
    assert recs["nas"]["n"] == recs["manual"]["n"]  # the same common inputs for every model
    assert (workdir / "figures" / "pgd_commonality.png").stat().st_size > 0


def test_nes_task_counts_queries(pgd_run, shared_tmp):
    c = _config("nes", shared_tmp)
    c.models = ("darts",)
    c.nes.n_inputs, c.nes.batch_size, c.nes.restarts, c.nes.n_queries = 10, 10, 0, 20
    c.nes.iterations_most_likely, c.nes.iterations_least_likely = 2, 3
    workdir = shared_tmp / "nes"
    get_task("nes").run(c, workdir)
    (rec,) = results.read_records(workdir, task="nes")
    m = rec["metrics"]
    for mode, iters in (("most_likely", 2), ("least_likely", 3)):
        # the clean query that picks the target, one initial check, then per iteration
        # one 20-query estimate and one check
        assert 2 <= m[f"mean_queries_{mode}"] <= 2 + iters * (20 + 1), m
        assert 0 <= m[f"asr_{mode}"] <= 1
    assert (workdir / "figures" / "nes_asr.png").stat().st_size > 0


def test_membership_task_through_the_seam(pgd_run, shared_tmp):
    """One record per victim with its AUCs over the shared members and non-members, the per-input distances and
    the ROC figure; run-only fields (batch and chunk sizes) are not part of the record's setting."""
    c = _config("membership", shared_tmp)
    m = c.membership
    m.n_members, m.n_nonmembers, m.max_iter, m.max_eval, m.init_eval, m.init_size = 12, 12, 2, 8, 4, 8
    m.batch_size, m.chunk_size = 24, 4
    workdir = shared_tmp / "membership"
    get_task("membership").run(c, workdir)
    recs = results.read_records(workdir, task="membership")
    assert [r["model"] for r in recs] == ["darts", "resnet"] and all(r["n"] == 24 for r in recs)
    for r in recs:
        assert 0 <= r["metrics"]["auc"] <= 1 and 0 <= r["metrics"]["baseline_auc"] <= 1
        assert r["setting"]["n_members"] == 12 and "batch_size" not in r["setting"] and "chunk_size" not in r["setting"]
        saved = np.load(workdir / "membership" / f"{r['model']}.npz")
        assert saved["is_member"].sum() == 12 and len(saved["distance_l2"]) == 24
    assert (workdir / "figures" / "membership_roc.png").stat().st_size > 0


def test_grad_variance_task_reads_its_settings(pgd_run, shared_tmp):
    """One record per (model, phase, bn) with Eqn 14's trace; an unknown phase is refused before any work."""
    from nas_jax.errors import UserError
    from nas_jax.tasks import check_config

    c = _config("grad_variance", shared_tmp)
    c.models = ("darts", "resnet")
    c.grad_variance.n, c.grad_variance.phases, c.grad_variance.bn = 8, ("trained",), ("raw",)
    workdir = shared_tmp / "grad_variance"
    get_task("grad_variance").run(c, workdir)
    recs = results.read_records(workdir, task="grad_variance")
    assert [(r["model"], r["setting"]["phase"], r["n"]) for r in recs] == [("darts", "trained", 8),
                                                                          ("resnet", "trained", 8)]
    assert all(r["metrics"]["trace_cov"] > 0 for r in recs)
    c.grad_variance.phases = ("init", "halfway")
    with pytest.raises(UserError, match=r"grad_variance: invalid phases \('init', 'halfway'\)"):
        check_config(c)


def test_landscape_task_reads_its_settings(pgd_run, shared_tmp):
    """One record per (model, space, radius), the grids saved, a panel per grid; an even resolution (no centre)
    is refused before any work."""
    from nas_jax.errors import UserError
    from nas_jax.tasks import check_config

    c = _config("landscape", shared_tmp)
    c.models = ("darts", "resnet")
    c.landscape.resolution, c.landscape.n_images, c.landscape.input_radii, c.landscape.chunk = 5, 2, (0.02,), 25
    workdir = shared_tmp / "landscape"
    get_task("landscape").run(c, workdir)
    recs = results.read_records(workdir, task="landscape")
    assert sorted((r["model"], r["setting"]["space"]) for r in recs) == [
        ("darts", "input"), ("darts", "param"), ("resnet", "input"), ("resnet", "param")]
    assert all(r["metrics"]["increase_max"] >= 0 for r in recs)
    assert (workdir / "figures" / "landscape_input_0.02.png").stat().st_size > 0
    c.landscape.resolution = 4
    with pytest.raises(UserError, match="resolution=4 must be odd"):
        check_config(c)


def test_ntk_task_reads_its_settings(pgd_run, shared_tmp):
    """One record per (model, phase, bn) with the kernel's condition number; an unknown kernel is refused before
    any work."""
    from nas_jax.errors import UserError
    from nas_jax.tasks import check_config

    c = _config("ntk", shared_tmp)
    c.models = ("darts", "resnet")
    c.ntk.n, c.ntk.chunk, c.ntk.bn = 6, 6, ("raw",)
    workdir = shared_tmp / "ntk"
    get_task("ntk").run(c, workdir)
    recs = results.read_records(workdir, task="ntk")
    assert [(r["model"], r["setting"]["phase"]) for r in recs] == [("darts", "init"), ("resnet", "init")]
    assert all(r["metrics"]["cond"] >= 1 for r in recs), recs[0]["metrics"]
    c.ntk.kernel = "full"
    with pytest.raises(UserError, match="ntk: unknown kernel 'full'"):
        check_config(c)
