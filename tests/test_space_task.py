"""The space task: its properties are the per-genotype network's; the report's statistics on records with a known
answer; a tiny study end to end (sample, properties, grid, report) that resumes without recomputing."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from nas_jax.models import space
from nas_jax.models.darts import DartsNetwork
from nas_jax.models.genotypes import get_genotype
from nas_jax.study.phases import bn_variables
from nas_jax.tasks import space as task

ROOT = Path(__file__).resolve().parents[1]
KW = {"num_classes": 10, "mean": (0.5, 0.4, 0.3), "std": (0.25, 0.2, 0.3), "init_channels": 2, "layers": 3,
      "dropout": 0.0, "conv_impl": "xla"}


def test_the_properties_from_the_one_program_are_the_genotype_networks():
    """Every property at initialisation of two genotypes (sharpness aside: its random directions are drawn per
    parameter tree) from the space program equals the per-genotype network's with the same variables and BN
    calibrated on the same batches."""
    s = task.SpaceSettings(n_examples=4, hessian_iterations=5, sharpness_directions=2)
    x = np.asarray(jax.random.uniform(jax.random.key(0), (4, 8, 8, 3)))
    y = np.arange(4)
    net = space.SpaceNetwork(get_genotype("darts_v2"), **KW)
    template = net.init(jax.random.key(1), x[:1])
    for name in ("pc_darts", "snas"):
        reference = DartsNetwork(get_genotype(name), **KW)
        v = reference.init(jax.random.key(2), x[:1])
        w = space.variables_from_network(reference, v, template)
        batches = [x, x[::-1]]  # BN calibrated in train mode, as the task does: the same statistics
        v, w = (bn_variables(m, u, "calibrated", batches, 0) for m, u in ((reference, v), (net, w)))
        want = task.properties(reference.apply, v, x, y, jax.random.key(3), s, 10)
        got = task.properties(net.apply, w, x, y, jax.random.key(3), s, 10)
        for key, value in want.items():
            if key == "sharpness":  # random directions drawn per parameter tree: equal in distribution, not per draw
                continue
            assert got[key] == pytest.approx(value, rel=2e-3, abs=1e-6), key


def _records(asr: dict, prop: dict, family: dict, accuracy: dict) -> tuple[list[dict], list[dict]]:
    props = [{"task": "space", "model": m, "seed": 0, "setting": {"family": family[m]},
              "metrics": {p: prop[m] for p in task.PROPERTIES}} for m in asr]
    grid = [{"task": "pgd", "model": m, "seed": 0, "setting": {}, "metrics": {"asr_most_likely": a,
                                                                             "asr_least_likely": a}}
            for m, a in asr.items()]
    grid += [{"task": "train", "model": m, "seed": 0, "setting": {}, "metrics": {"test_accuracy": a}}
             for m, a in accuracy.items()]
    return props, grid


def test_the_analysis_finds_a_perfect_predictor_and_the_named_cells_at_the_top():
    """ASR increasing in a property: ρ = 1 over the random cells; named cells above every random cell: their ASR
    percentile is 1 and the gap is 'higher' (4 named vs 20 random can reach p < 0.05). The metrics are the pgd
    task's own report metrics, the accuracy the train task's."""
    rng = np.random.default_rng(0)
    random_cells = [f"r{i}" for i in range(20)]
    named = ("n0", "n1", "n2", "n3")
    asr = {m: 0.2 + 0.02 * i for i, m in enumerate(random_cells)} | {m: 0.9 + 0.01 * i for i, m in enumerate(named)}
    prop = {m: 10 * a for m, a in asr.items()}
    family = {m: "random" for m in random_cells} | {m: "nas" for m in named}
    accuracy = {m: 0.8 + 0.05 * rng.random() for m in asr}
    metrics, acc = task.threat_metrics(task.SpaceSettings()), task.accuracy_metric()
    assert [m.key for m in metrics] == ["pgd_m", "pgd_l"] and acc.key == "clean_accuracy"
    a = task.analyse(*_records(asr, prop, family, accuracy), named, metrics, acc)["metrics"]["pgd_m"]
    assert a["correlation"]["sharpness"]["interval"].value == pytest.approx(1.0)
    assert all(a["percentile"][m]["pgd_m"].value == 1.0 for m in named)
    assert task.gap_verdict(a["gap"], a["min_p"]) == "higher"
    assert a["gap"].value == pytest.approx(np.mean([asr[m] for m in named]) - np.mean([asr[m] for m in random_cells]))
    assert a["adjusted_gap"].low > 0  # accuracy is noise here: the adjusted gap stays positive
    few = task.analyse(*_records({m: asr[m] for m in (*random_cells[:2], *named[:2])}, prop, family, accuracy),
                       named, metrics, acc)["metrics"]["pgd_m"]
    assert task.gap_verdict(few["gap"], few["min_p"]).startswith("insufficient cells")  # 2 + 2: p ≥ 1/3


def test_a_tiny_space_study_samples_measures_trains_attacks_reports_and_resumes(tmp_path):
    """From the launcher (its own process, as a user runs it), then again: nothing is recomputed."""
    from nas_jax.data import load_dataset
    from nas_jax.report import results

    ds = load_dataset("digits", native=True)
    np.savez(tmp_path / "digits8.npz", x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    workdir = tmp_path / "space"
    flags = [f"--config.dataset=npz:{tmp_path / 'digits8.npz'}", f"--config.zoo_dir={tmp_path / 'zoo'}",
             "--config.jit_cache_dir=", "--config.arch.init_channels=2", "--config.arch.layers=3",
             "--config.train.epochs=1", "--config.train.crop_padding=1", "--config.space.n_random=2",
             "--config.space.n_trained=1", "--config.space.named=('darts',)", "--config.space.n_examples=4",
             "--config.space.hessian_iterations=3", "--config.space.sharpness_directions=2"]

    def launch():
        out = subprocess.run([sys.executable, "launch/main.py", "--config=configs/space.py", f"--workdir={workdir}",
                              *flags], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    first = launch()
    assert "properties: 3 new records" in first
    records = results.read_records(workdir, "space")
    assert "darts" in {r["model"] for r in records} and len(records) == 3
    files = sorted(p.name for p in (workdir / "genotypes").iterdir())
    assert files == ["random_s0_0000.json", "random_s0_0001.json"]
    assert {r["setting"]["family"] for r in records} == {"random", "nas"}
    for r in records:
        assert all(k in r["metrics"] for k in task.PROPERTIES) and r["n"] == 4
    assert {p.name for p in (tmp_path / "zoo").glob("*/*/*") if p.is_dir()} == {"quick_space"}  # one program
    cells = sorted(p.parent.relative_to(workdir / "grid" / "cells").parts[0] for p in
                   (workdir / "grid" / "cells").glob("**/cell.json"))
    assert cells == ["pgd"] * 2 + ["train"] * 2
    report = json.loads((workdir / "report.json").read_text())
    a = report["metrics"]["pgd_m"]
    assert a["n_trained_random"] == 1 and a["named"] == ["darts"]
    assert all(0 <= v <= 1 for v in a["values"].values())
    assert (workdir / "figures" / "space_predictor_pgd_m.png").stat().st_size > 0
    assert "Spearman" in (workdir / "report.md").read_text()
    again = launch()  # everything measured: nothing new
    assert "properties: 0 new records" in again and "4 cells, 4 already finished" in again
    assert len(results.read_records(workdir, "space")) == 3


def test_the_report_reads_only_records_of_this_setting_genotype_content_and_seeds(tmp_path):
    """A record of another property setting, of an edited genotype file or of another seed is not this study's."""
    from nas_jax.report import results

    s = task.SpaceSettings(n_random=3, n_trained=0, named=(), n_examples=4)
    names = [(name, g) for name, g, _ in task.sample(s, tmp_path)]
    current = {**task.property_setting(s), "family": "random"}
    rows = [(names[0], current, 0), (names[1], {**current, "n_examples": 8}, 0),
            (names[2], {**current, "genotype_sha256": "edited"}, 0), (names[0], current, 1)]
    for (name, g), setting, seed in rows:
        setting = {"genotype_sha256": task.genotype_sha256(g), **setting}
        results.append_record(tmp_path, {"task": "space", "model": name, "seed": seed, "setting": setting,
                                         "metrics": {p: 1.0 for p in task.PROPERTIES}, "end_time": str(seed)})
    task.write_report(tmp_path, s, (0,))
    assert json.loads((tmp_path / "report.json").read_text())["n_random"] == 1
