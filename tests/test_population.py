"""Population training: seeds trained together in one vmapped program equal the same seeds
trained alone, on one device and on 4 simulated devices; a killed population resumes; each seed becomes its own
zoo entry that restores as if trained alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from nas_jax.train import trainer, zoo
from nas_jax.train.trainer import train_population

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import tiny_cnn, tiny_config, tiny_dataset  # noqa: E402

WORKER = str(Path(__file__).with_name("train_worker.py"))


def _leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves((state.params, state.batch_stats))]


def _config(seed=0, lr=0.005):
    c = tiny_config(zoo_dir="")
    c.seed, c.train.lr = seed, lr  # a small lr keeps float32 reduction-order noise from growing
    return c


def test_two_seeds_together_equal_each_seed_alone_and_a_killed_population_resumes(tmp_path):
    ds, model = tiny_dataset(), tiny_cnn()
    pop = train_population(model, ds, _config(), (0, 1), tmp_path / "pop", progress=False)
    for i, seed in enumerate((0, 1)):
        alone = trainer.train(model, ds, _config(seed), tmp_path / f"alone{seed}", progress=False)
        for a, b in zip(_leaves(pop["states"][i]), _leaves(alone["state"]), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose([r["train_loss"] for r in pop["logs"][i]],
                                   [r["train_loss"] for r in alone["log"]], rtol=1e-4)
        assert pop["test_accuracy"][i] == alone["test_accuracy"]
    assert not np.allclose(_leaves(pop["states"][0])[0], _leaves(pop["states"][1])[0])  # seeds differ

    c = _config()
    c.train.checkpoint_every_steps = 3
    killed = train_population(model, ds, c, (0, 1), tmp_path / "resumed", max_steps=5, progress=False)
    assert killed["interrupted"] and killed["step"] == 5
    resumed = train_population(model, ds, c, (0, 1), tmp_path / "resumed", progress=False)
    for i in range(2):
        for a, b in zip(_leaves(resumed["states"][i]), _leaves(pop["states"][i]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert [r["train_loss"] for r in resumed["logs"][i]] == [r["train_loss"] for r in pop["logs"][i]]


def test_population_on_four_simulated_devices_matches_one_device(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [subprocess.Popen([sys.executable, WORKER, str(tmp_path / f"{n}.json"), "--run_dir", str(tmp_path / n),
                               "--lr", "0.005", "--seeds", "0,1"], env=e)
             for n, e in (("one", dict(os.environ)), ("four", env))]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    one, four = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "four"))
    assert (one["devices"], four["devices"]) == (1, 4)
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-4)
    np.testing.assert_allclose(four["digests"], one["digests"], rtol=1e-4)


def test_each_seed_of_a_population_is_its_own_zoo_entry(tmp_path, monkeypatch):
    """get_or_train_population stores seeds 0 and 1 at {preset} and {preset}_seed1; get_or_train of either seed
    restores those weights (no training), and a second call trains nothing."""
    ds, model = tiny_dataset(), tiny_cnn()
    c = _config()
    c.zoo_dir, c.model = str(tmp_path / "zoo"), "darts"
    monkeypatch.setattr(zoo, "build_from_config", lambda *a, **k: model)
    entries = zoo.get_or_train_population(c, "darts", seeds=(0, 1), dataset=ds, progress=False)
    dirs = [e.run_dir for e in entries]
    assert [d.name for d in dirs] == ["quick", "quick_seed1"]
    assert [json.loads((d / "spec.json").read_text())["seed"] for d in dirs] == [0, 1]
    trained = [json.loads((d / "final.json").read_text())["trained"] for d in dirs]  # how each was trained
    assert [(t["how"], t["population_seeds"]) for t in trained] == [("population", [0, 1])] * 2
    pop = train_population(model, ds, c, (0, 1), tmp_path / "ref", progress=False)
    for e, st in zip(entries, pop["states"], strict=True):
        for a, b in zip(jax.tree_util.tree_leaves(e.variables["params"]), jax.tree_util.tree_leaves(st.params),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    one_by_one = c.copy_and_resolve_references()  # the execution switch off: the same entries, seed after seed
    one_by_one.train.population, one_by_one.zoo_dir = False, str(tmp_path / "zoo_one_by_one")
    singles = zoo.get_or_train_population(one_by_one, "darts", seeds=(0, 1), dataset=ds, progress=False)
    assert [e.run_dir.name for e in singles] == ["quick", "quick_seed1"]
    assert [json.loads((e.run_dir / "final.json").read_text())["trained"]["how"] for e in singles] == ["alone"] * 2
    assert [json.loads((e.run_dir / "spec.json").read_text()) for e in singles] == [
        json.loads((d / "spec.json").read_text()) for d in dirs]  # the switch is not part of what was trained
    np.testing.assert_allclose([e.test_accuracy for e in singles], [e.test_accuracy for e in entries], atol=0.05)
    monkeypatch.setattr(trainer, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    alone = zoo.get_or_train(zoo.with_seed(c, 1), "darts", ds, progress=False)
    assert alone.test_accuracy == entries[1].test_accuracy and len(alone.log) == c.train.epochs
    again = zoo.get_or_train_population(c, "darts", seeds=(0, 1), dataset=ds, progress=False)
    assert [e.test_accuracy for e in again] == [e.test_accuracy for e in entries]
