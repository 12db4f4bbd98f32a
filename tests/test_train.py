"""Training: recipe, learning, resume, zoo refusal, multi-device and multi-host equality."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax.models.registry import build_from_config
from nas_jax.train import trainer, zoo
from nas_jax.train.checkpoint import Checkpointer, CheckpointMismatchError

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import tiny_cnn, tiny_config, tiny_dataset  # noqa: E402

WORKER = str(Path(__file__).with_name("train_worker.py"))


def _train(run_dir, model=None, **overrides):
    config = tiny_config(zoo_dir="")
    for key, value in overrides.items():
        config.train[key] = value
    ds = tiny_dataset()
    model = model or build_from_config("darts", config.arch, ds.num_classes, ds.mean, ds.std)
    return config, ds, model, trainer.train(model, ds, config, run_dir, progress=False)


def test_cosine_schedule_is_per_epoch():
    lr = trainer.cosine_per_epoch(0.025, epochs=4, steps_per_epoch=10)
    np.testing.assert_allclose([lr(0), lr(9), lr(10), lr(20), lr(39)],
                               [0.025, 0.025, 0.0125 * (1 + np.cos(np.pi / 4)), 0.0125, 0.0125 * (1 + np.cos(0.75 * np.pi))],
                               rtol=1e-6)


def test_optimizer_is_pytorch_coupled_sgd():
    """clip -> + wd·w -> momentum buffer, as torch.optim.SGD with clip_grad_norm_."""
    tcfg = tiny_config("").train
    tcfg.lr_schedule, tcfg.lr, tcfg.weight_decay, tcfg.grad_clip = "constant", 0.1, 0.01, 1.0
    tx = trainer.make_optimizer(tcfg, steps_per_epoch=1)
    w = jnp.array([1.0, -2.0])
    g = jnp.array([3.0, 4.0])  # norm 5 -> clipped to norm 1
    state = tx.init(w)
    buf = np.zeros(2)
    wn = np.array(w)
    for _ in range(3):
        upd, state = tx.update(g, state, w)
        w = optax.apply_updates(w, upd)
        d = np.array(g) / 5.0 + 0.01 * wn
        buf = 0.9 * buf + d
        wn = wn - 0.1 * buf
    np.testing.assert_allclose(w, wn, rtol=1e-6)


def test_training_learns_far_above_chance(tmp_path):
    config, ds, model, out = _train(tmp_path / "run", epochs=8, lr=0.05)
    assert out["test_accuracy"] >= 0.5, out["log"]  # chance: 0.1
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(8))
    assert {"train_loss", "train_accuracy", "test_accuracy", "images_per_s", "lr"} <= set(log[0])
    assert log[-1]["train_loss"] < log[0]["train_loss"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted tiny run, shared by the resume tests."""
    return _train(tmp_path_factory.mktemp("full") / "run", model=tiny_cnn())[-1]


def test_resume_equals_uninterrupted(tmp_path, full_run):
    full = full_run
    config, ds, model, first = _train_interrupted(tmp_path / "resumed", stop_at=11)
    assert first["interrupted"] and first["step"] == 11
    *_, resumed = _train(tmp_path / "resumed", model=tiny_cnn(), checkpoint_every_steps=3)
    assert int(resumed["state"].step) == int(full["state"].step)
    for a, b in zip(jax.tree_util.tree_leaves(full["state"].params), jax.tree_util.tree_leaves(resumed["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    _assert_same_log(full["log"], resumed["log"])  # the resumed epoch carries its running sums (step 9 of 8..15)


def _assert_same_log(a, b):
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "train_accuracy", "test_accuracy"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5), (k, ra, rb)


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, full_run):
    full = full_run
    _train_interrupted(tmp_path / "resumed", stop_at=14)  # checkpoints kept: steps 9 and 12
    steps = Checkpointer(tmp_path / "resumed" / "checkpoints").all_steps()
    assert steps == [9, 12], steps
    for f in (tmp_path / "resumed" / "checkpoints" / "12").rglob("*"):
        if f.is_file():
            f.write_bytes(b"not a checkpoint")  # e.g. a disk that filled while it was written
    with pytest.warns(UserWarning, match=r"checkpoints/12 cannot be read.*Resuming from the previous checkpoint"):
        *_, resumed = _train(tmp_path / "resumed", model=tiny_cnn(), checkpoint_every_steps=3)
    assert (tmp_path / "resumed" / "corrupt_checkpoints" / "12").is_dir()
    for a, b in zip(jax.tree_util.tree_leaves(full["state"].params), jax.tree_util.tree_leaves(resumed["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    _assert_same_log(full["log"], resumed["log"])


def _train_interrupted(run_dir, stop_at):
    config = tiny_config(zoo_dir="")
    config.train.checkpoint_every_steps = 3
    ds = tiny_dataset()
    model = tiny_cnn()
    return config, ds, model, trainer.train(model, ds, config, run_dir, progress=False, max_steps=stop_at)


def test_soft_labels_transform_and_initial_variables(tmp_path):
    """One-hot soft labels train exactly like integer labels; ``batch_transform``
    runs inside the step; ``initial_variables`` start from the given weights."""
    config, ds = tiny_config(zoo_dir=""), tiny_dataset()
    config.train.epochs = 1
    model = tiny_cnn()
    hard = trainer.train(model, ds, config, tmp_path / "hard", progress=False)
    onehot = np.eye(ds.num_classes, dtype=np.float32)[ds.y_train]
    soft = trainer.train(model, dataclasses.replace(ds, y_train=onehot), config, tmp_path / "soft", progress=False)
    assert soft["log"][0]["train_loss"] == pytest.approx(hard["log"][0]["train_loss"], rel=1e-5)
    np.testing.assert_allclose(jax.tree_util.tree_leaves(soft["state"].params)[0],
                               jax.tree_util.tree_leaves(hard["state"].params)[0], rtol=1e-5, atol=1e-6)

    def all_zero_labels(key, variables, images, labels):
        return images, jnp.zeros_like(labels)

    zero = trainer.train(model, ds, config, tmp_path / "zero", progress=False, batch_transform=all_zero_labels)
    assert zero["log"][0]["train_accuracy"] > hard["log"][0]["train_accuracy"]  # class 0 everywhere is easy

    start = hard["state"].variables
    config.train.lr = 1e-9  # (almost) no update: the parameters stay at the initial ones (BN statistics move)
    tuned = trainer.train(model, ds, config, tmp_path / "tuned", progress=False, initial_variables=start)
    np.testing.assert_allclose(jax.tree_util.tree_leaves(tuned["state"].params)[0],
                               jax.tree_util.tree_leaves(start["params"])[0], atol=1e-6)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    config, ds = tiny_config(zoo_dir=""), tiny_dataset()
    tx = trainer.make_optimizer(config.train, 8)

    def state(width):
        return trainer.create_state(tiny_cnn(width), tx, trainer.init_key(0), ds.x_train.shape[1:])

    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(8, state(4))
    ckpt.close()
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        Checkpointer(tmp_path / "checkpoints").restore(state(6))


def test_zoo_trains_once_then_restores_and_refuses_mismatch(tmp_path):
    config = tiny_config(zoo_dir=str(tmp_path / "zoo"))
    config.train.epochs = 1
    ds = tiny_dataset()
    first = zoo.get_or_train(config, dataset=ds, progress=False)
    assert (first.run_dir / "final.json").exists() and (first.run_dir / "spec.json").exists()
    again = zoo.get_or_train(config, dataset=ds, progress=False)
    assert again.test_accuracy == first.test_accuracy
    for a, b in zip(jax.tree_util.tree_leaves(first.variables), jax.tree_util.tree_leaves(again.variables)):
        np.testing.assert_array_equal(a, b)
    stored_lr, config.train.lr = config.train.lr, 0.5
    with pytest.raises(zoo.ZooMismatchError, match=f"train.lr: stored {stored_lr}, requested 0.5"):
        zoo.get_or_train(config, dataset=ds, progress=False)


def test_a_zoo_checkpoint_is_a_plain_orbax_pytree_and_older_formats_are_refused(tmp_path):
    """docs/provenance.md's five lines restore a trained victim with orbax alone (its state: step, params,
    batch_stats, opt_state, as before the train state had ``fixed`` variables); an entry of the earlier packed
    format is refused by its spec, a packed checkpoint elsewhere with the directory to delete."""
    import orbax.checkpoint as ocp

    config = tiny_config(zoo_dir=str(tmp_path / "zoo"))
    config.train.epochs = 1
    ds = tiny_dataset()
    entry = zoo.get_or_train(config, dataset=ds, progress=False)
    manager = ocp.CheckpointManager(entry.run_dir / "checkpoints", item_names=("state",))
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    # the format of the entries written before the train state had ``fixed`` variables, which therefore restore
    assert set(state) == {"step", "params", "batch_stats", "opt_state"}
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    np.testing.assert_array_equal(entry.model.apply(variables, ds.x_test[:8] / 255.0),
                                  entry.model.apply(entry.variables, ds.x_test[:8] / 255.0))

    spec_path = entry.run_dir / "spec.json"
    old = json.loads(spec_path.read_text())
    old.pop("checkpoint")
    spec_path.write_text(json.dumps(old))
    with pytest.raises(zoo.ZooMismatchError, match="checkpoint: stored None, requested 'orbax pytree"):
        zoo.get_or_train(config, dataset=ds, progress=False)

    packed = ocp.CheckpointManager(tmp_path / "run" / "checkpoints", item_names=("vectors", "layout", "progress"))
    packed.save(4, args=ocp.args.Composite(vectors=ocp.args.StandardSave({"float32": np.zeros(3, np.float32)}),
                                           layout=ocp.args.JsonSave([]), progress=ocp.args.JsonSave({})))
    packed.wait_until_finished()
    packed.close()
    with pytest.raises(CheckpointMismatchError, match="earlier nas_jax"):
        trainer.train(entry.model, ds, config, tmp_path / "run", progress=False)


def _run_worker(out, *args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, WORKER, str(out), *args], env=env)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_four_simulated_devices_match_one_device(tmp_path):
    """The same loss trajectory on a 4-device 'data' mesh as on one device. A small lr keeps the
    float32 reduction-order differences (~1e-7) from being amplified by training dynamics."""
    procs = [
        _run_worker(tmp_path / "one.json", "--run_dir", str(tmp_path / "one"), "--lr", "0.005"),
        _run_worker(tmp_path / "four.json", "--run_dir", str(tmp_path / "four"), "--lr", "0.005",
                    env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}),
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    one, four = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "four.json"))
    assert (one["devices"], four["devices"]) == (1, 4)
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-4)
    np.testing.assert_allclose(four["digest"], one["digest"], rtol=1e-4)


def test_two_processes_match_one_process(tmp_path):
    """Two processes joined by jax.distributed (gloo), each loading its own data
    slice, train in lockstep to the result of one process holding both slices."""
    port = _free_port()
    procs = [_run_worker(tmp_path / "multi.json", "--processes", "2", "--process_id", str(i), "--port", str(port),
                         "--slices", "2", "--run_dir", str(tmp_path / "multi"), "--lr", "0.005") for i in range(2)]
    single = _run_worker(tmp_path / "single.json", "--slices", "2", "--run_dir", str(tmp_path / "single"), "--lr", "0.005")
    assert [p.wait(timeout=600) for p in [*procs, single]] == [0, 0, 0]
    multi, one = (json.loads((tmp_path / f).read_text()) for f in ("multi.json", "single.json"))
    assert (multi["processes"], one["processes"]) == (2, 1)
    np.testing.assert_allclose(multi["losses"], one["losses"], rtol=1e-4)
    np.testing.assert_allclose(multi["digest"], one["digest"], rtol=1e-4)


def test_predict_logits_pads_to_one_shape_and_is_shared():
    """Any array length runs through one padded batch shape, with the executable training compiled."""
    from nas_jax import parallel

    ds, model = tiny_dataset(), tiny_cnn()
    variables = trainer.init_variables(model, trainer.init_key(0), ds.x_test.shape[1:])
    mesh = parallel.data_mesh()
    predict = trainer.make_predict(model, mesh)
    assert trainer.make_predict(tiny_cnn(), parallel.data_mesh()) is predict
    x, programs = ds.x_test[:37], predict._cache_size()  # (earlier trainings of this model may have added some)
    logits = trainer.predict_logits(predict, variables, x, mesh, batch_size=16)
    direct = model.apply(variables, x.astype(np.float32) / 255.0, train=False)
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)
    assert predict._cache_size() <= programs + 1  # batches of 16, 16 and 5 (+11 padding rows): one program


def test_model_logits_takes_uint8_or_float_images():
    """The (model, variables) wrapper: float images in [0, 1] give the logits of the uint8 ones they came from."""
    ds, model = tiny_dataset(), tiny_cnn()
    variables = trainer.init_variables(model, trainer.init_key(0), ds.x_test.shape[1:])
    x = ds.x_test[:21]
    from_u8 = trainer.model_logits(model, variables, x, batch_size=8)
    from_float = trainer.model_logits(model, variables, x.astype(np.float32) / 255.0, batch_size=8)
    direct = model.apply(variables, x.astype(np.float32) / 255.0, train=False)
    np.testing.assert_allclose(from_u8, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_float, direct, rtol=1e-5, atol=1e-5)
