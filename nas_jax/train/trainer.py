"""Training: state, compiled step, evaluation and the resumable loop.

The paper's recipe (§3.1, Table 5; docs/protocol.md §d): SGD momentum 0.9, lr 0.025
with per-epoch cosine annealing, coupled weight decay, global-norm clipping at
5.0, batch 96, crop/flip/cutout augmentation. The train step is one ``jit``
over a ``'data'`` mesh (batch sharded, state replicated); augmentation, the
drop-path ramp and per-step randomness are computed on the device from the
step counter, so resuming from any checkpoint replays the same computation.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from nas_jax import parallel
from nas_jax.data.augment import augment_batch, to_float
from nas_jax.train import run_dir as rundir
from nas_jax.train import stacking
from nas_jax.train.checkpoint import CheckpointCorruptError, Checkpointer
from nas_jax.train.sampler import EpochSampler

# ----------------------------------------------------------------------------
# State and optimiser
# ----------------------------------------------------------------------------


class TrainState(flax.struct.PyTreeNode):
    """``params``, ``batch_stats`` and ``opt_state`` are per cell, or with ``cell_runs`` set stacked per scanned
    run (:mod:`nas_jax.train.stacking`, the training loops' layout); ``variables`` are always per cell."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    cell_runs: tuple = flax.struct.field(pytree_node=False, default=())

    @property
    def variables(self) -> dict:
        return {"params": stacking.unstack_cells(self.params, self.cell_runs),
                "batch_stats": stacking.unstack_cells(self.batch_stats, self.cell_runs)}


def cosine_per_epoch(lr: float, epochs: int, steps_per_epoch: int, final_lr: float = 0.0):
    """lr_e = final + (lr - final)/2 · (1 + cos(π e / E)), constant within epoch e (§d)."""

    def schedule(step):
        epoch = jnp.minimum(step // steps_per_epoch, epochs - 1)
        return final_lr + 0.5 * (lr - final_lr) * (1.0 + jnp.cos(jnp.pi * epoch / epochs))

    return schedule


def make_schedule(tcfg, steps_per_epoch: int):
    """The learning rate as a function of the step: 'cosine' (per epoch) or 'constant'."""
    if tcfg.lr_schedule == "cosine":
        return cosine_per_epoch(tcfg.lr, tcfg.epochs, steps_per_epoch)
    if tcfg.lr_schedule == "constant":
        return lambda step: tcfg.lr
    raise ValueError(f"unknown lr_schedule {tcfg.lr_schedule!r}; valid: 'cosine', 'constant'.")


def make_optimizer(tcfg, steps_per_epoch: int) -> optax.GradientTransformation:
    """chain(clip_by_global_norm, add_decayed_weights, sgd): PyTorch's coupled
    weight decay with the momentum buffer (docs/protocol.md §d, optax mapping)."""
    schedule = make_schedule(tcfg, steps_per_epoch)
    parts = []
    if tcfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(tcfg.grad_clip))
    parts += [optax.add_decayed_weights(tcfg.weight_decay), optax.sgd(schedule, momentum=tcfg.momentum)]
    return optax.chain(*parts)


def init_key(seed: int) -> jax.Array:
    """The key for parameter initialisation. XLA's RngBitGenerator ('rbg') makes
    the jitted init compile several times faster on CPU than threefry."""
    return jax.random.key(seed, impl="rbg")


@functools.partial(jax.jit, static_argnames=("model", "image_shape"))
def _init_jit(model: nn.Module, pkey, dkey, image_shape: tuple[int, ...]):
    """Compiled once per (model, image shape) and reused by every later ``train`` call."""
    return model.init({"params": pkey, "dropout": dkey}, jnp.zeros((2, *image_shape), jnp.float32), train=False)


def init_variables(model: nn.Module, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
    """Initialise params and batch_stats (BiT has no BatchNorm: empty batch_stats)."""
    pkey, dkey = jax.random.split(key)
    variables = _init_jit(model, pkey, dkey, tuple(image_shape))
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def create_state(model: nn.Module, tx, key: jax.Array, image_shape: tuple[int, ...]) -> TrainState:
    v = init_variables(model, key, image_shape)
    return TrainState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], tx.init(v["params"]))


# ----------------------------------------------------------------------------
# Compiled steps
# ----------------------------------------------------------------------------


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy on integer labels (G3), or on soft labels
    (rows of class probabilities, e.g. a victim's outputs for Knockoff)."""
    if labels.ndim == logits.ndim:
        return optax.softmax_cross_entropy(logits, labels).mean()
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def hard_labels(labels):
    """Integer classes of integer or soft labels."""
    return jnp.argmax(labels, -1) if labels.ndim == 2 else labels


def make_train_step(model: nn.Module, tx, tcfg, arch, steps_per_epoch: int, seed: int, mesh,
                    batch_transform=None):
    """Return ``step(state, images_u8, labels) -> (state, metrics)``, jitted on ``mesh``. ``state`` may be per
    cell or stacked (:func:`nas_jax.train.stacking.stack_state`: what :func:`train` passes; it compiles faster).

    ``batch_transform(key, variables, images, labels) -> (images, labels)``, if
    given, rewrites each augmented float batch inside the compiled step before the
    loss (trigger stamping for backdoors, PGD examples for adversarial training);
    ``variables`` are the current eval-mode variables.
    """
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    step = keyed_step(model, tx, tcfg, arch, steps_per_epoch, batch_transform)

    def raw_keyed(state, images_u8, labels, key_data):
        return step(state, images_u8, labels, jax.random.wrap_key_data(key_data))

    keyed = jax.jit(raw_keyed, in_shardings=(rep, data, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))
    # The seed's key is an argument, not a constant of the program: every seed of a model runs (and the persistent
    # cache keeps) one compiled step. Passed as its raw uint32 data, which every process can place.
    return SeededStep(keyed, jax.device_put(jax.random.key_data(jax.random.key(seed)), rep))


@dataclasses.dataclass(frozen=True)
class SeededStep:
    """``step(state, images_u8, labels)``: the jitted ``keyed(state, images_u8, labels, key)`` with its seed's
    ``key`` bound (lower or compile ``keyed`` with ``key`` for ahead-of-time use)."""

    keyed: Callable
    key: jax.Array

    def __call__(self, state, images_u8, labels):
        return self.keyed(state, images_u8, labels, self.key)


def keyed_step(model: nn.Module, tx, tcfg, arch, steps_per_epoch: int, batch_transform=None):
    """The uncompiled train step ``(state, images_u8, labels, base_key) -> (state, metrics)``: augmentation and
    dropout keys are ``fold_in(base_key, state.step)``. :func:`make_train_step` jits it for one seed,
    :mod:`nas_jax.train.population` vmaps it over a population of seeds."""
    use_drop_path = getattr(model, "use_drop_path", False)
    aux_weight = arch.aux_weight if getattr(model, "auxiliary", False) else 0.0

    def step(state: TrainState, images_u8, labels, base_key):
        key = jax.random.fold_in(base_key, state.step)
        aug_key, dropout_key = jax.random.split(key)
        images = augment_batch(aug_key, images_u8, crop_padding=tcfg.crop_padding, flip=tcfg.flip,
                               cutout=tcfg.cutout)
        if batch_transform is not None:
            images, labels = batch_transform(jax.random.fold_in(key, 1), state.variables, images, labels)
        kwargs = {}
        if use_drop_path:  # DARTS ramp: 0.2 · epoch / epochs
            kwargs["drop_path_prob"] = arch.drop_path_prob * (state.step // steps_per_epoch) / tcfg.epochs

        def loss_fn(params):
            logits, mutated = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, images, train=True,  # read stacked (DartsNetwork)
                rngs={"dropout": dropout_key}, mutable=["batch_stats", "intermediates"], **kwargs)
            loss = cross_entropy(logits, labels)
            if aux_weight:
                (aux_logits,) = mutated["intermediates"]["aux_logits"]
                loss = loss + aux_weight * cross_entropy(aux_logits, labels)
            return loss, (logits, mutated.get("batch_stats", {}))

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  batch_stats=new_stats, opt_state=opt_state)
        metrics = jnp.stack([loss * labels.shape[0], jnp.sum(jnp.argmax(logits, -1) == hard_labels(labels)),
                             labels.shape[0]])
        return new_state, metrics.astype(jnp.float32)

    return step


@functools.cache
def make_predict(model: nn.Module, mesh):
    """``predict(variables, images) -> logits`` in eval mode (G2), batch-sharded; one jitted
    function per (model, mesh), so training's evaluation and the attacks' clean predictions share
    one executable. ``images`` are uint8 (divided by 255) or already float in [0, 1]."""

    def predict(variables, images):
        x = to_float(images) if images.dtype == jnp.uint8 else images
        return model.apply(variables, x, train=False)

    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(predict, in_shardings=(rep, data), out_shardings=data)


def predict_logits(predict, variables, images_u8: np.ndarray, mesh, batch_size: int) -> np.ndarray:
    """Logits of a host array; every process passes the same full arrays.

    Batches have one fixed shape (the last one padded, the padding dropped), so a
    model compiles one program whatever the array's length.
    """
    n_dev = mesh.devices.size
    batch_size = max(n_dev, batch_size // n_dev * n_dev)
    n_proc, p = jax.process_count(), jax.process_index()
    out = []
    for start in range(0, len(images_u8), batch_size):
        rows = images_u8[start : start + batch_size]
        valid = len(rows)
        if valid < batch_size:
            rows = np.concatenate([rows, np.zeros((batch_size - valid, *rows.shape[1:]), rows.dtype)])
        per = batch_size // n_proc
        logits = predict(variables, parallel.global_batch(mesh, rows[p * per : (p + 1) * per]))
        if n_proc > 1:
            logits = multihost_utils.process_allgather(logits, tiled=True)
        out.append(np.asarray(logits)[:valid])
    return np.concatenate(out)


def model_logits(model: nn.Module, variables, images: np.ndarray, batch_size: int = 500, mesh=None) -> np.ndarray:
    """Eval-mode logits of ``model`` on a host array (uint8, or float in [0, 1]): the one batched
    prediction path (:func:`predict_logits` on the data mesh unless ``mesh`` is given)."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    return predict_logits(make_predict(model, mesh), variables, np.asarray(images), mesh, batch_size)


def evaluate(predict, variables, images_u8: np.ndarray, labels: np.ndarray, mesh, batch_size: int) -> float:
    """Accuracy over a host array (see :func:`predict_logits`)."""
    pred = predict_logits(predict, variables, images_u8, mesh, batch_size).argmax(-1)
    return float(np.mean(pred == labels))


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


def resume(ckpt: Checkpointer, state: TrainState) -> tuple[TrainState, dict]:
    """(state, progress) of the newest readable checkpoint, or (``state``, {}) when there is none. An unreadable
    checkpoint (a run killed while the disk filled, a damaged copy) is moved aside with a warning and the
    previous one is used; a checkpoint of another architecture is refused (CheckpointMismatchError)."""
    while (step := ckpt.latest_step()) is not None:
        try:
            restored = ckpt.restore(state, step)
        except CheckpointCorruptError as e:
            moved = ckpt.quarantine(step)
            warnings.warn(f"{e} Resuming from the previous checkpoint instead (the damaged one was moved to "
                          f"{moved}).", stacklevel=2)
            continue
        return restored, ckpt.restore_progress(step)
    return state, {}


def train(model: nn.Module, dataset, config, run_dir: str | Path, *, max_steps: int | None = None,
          tb_dir: str | Path | None = None, progress: bool = True, name: str | None = None,
          batch_transform=None, initial_variables: dict | None = None) -> dict:
    """Train ``model`` on ``dataset`` with ``config.train``; resumable from ``run_dir``.

    Checkpoints go to ``run_dir/checkpoints`` at every epoch end (and every
    ``checkpoint_every_steps``); the per-epoch log to ``run_dir/train_log.jsonl``.
    Restarting with the same arguments resumes from the last checkpoint and
    reaches the same parameters as an uninterrupted run. ``max_steps`` stops
    early (as an interruption would). Returns the final state and metrics.
    ``batch_transform`` rewrites each batch in the step (see :func:`make_train_step`);
    ``initial_variables`` ({'params', 'batch_stats'}) start fine-tuning from a
    trained model (fresh optimiser state) instead of a new initialisation.
    """
    tcfg, arch = config.train, config.arch
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(tcfg.batch_size, mesh)
    sampler = EpochSampler(len(dataset.y_train), tcfg.batch_size, tcfg.data_slices or jax.process_count(),
                           config.seed)
    name = name or config.model
    x_local, y_local = sampler.local_data(dataset.x_train, dataset.y_train)
    spe, epochs = sampler.steps_per_epoch, tcfg.epochs

    tx, schedule = make_optimizer(tcfg, spe), make_schedule(tcfg, spe)
    state = create_state(model, tx, init_key(config.seed), dataset.x_train.shape[1:])
    if initial_variables is not None:  # copied: the train step donates its state, the caller keeps its arrays
        start = jax.tree_util.tree_map(jnp.copy, {"params": initial_variables["params"],
                                                  "batch_stats": initial_variables.get("batch_stats", {})})
        state = state.replace(params=start["params"], batch_stats=start["batch_stats"],
                              opt_state=tx.init(start["params"]))
    state = jax.device_put(state, parallel.replicated(mesh))
    ckpt = Checkpointer(run_dir / "checkpoints")
    state, progress_info = resume(ckpt, state)
    state = stacking.stack_state(state, stacking.stacked_runs(model, dataset.x_train.shape[1:]))
    start = int(state.step)
    train_step = make_train_step(model, tx, tcfg, arch, spe, config.seed, mesh, batch_transform)
    predict = make_predict(model, mesh)

    main = parallel.is_main_process()
    log_path = run_dir / "train_log.jsonl"
    log = rundir.read_log(log_path, start // spe) if main else []
    writer = rundir.tensorboard_writer(tb_dir)
    bar = rundir.progress_bar(epochs * spe, start, f"train {name}", progress)
    step, test_acc = start, None
    # A resume inside an epoch continues that epoch's running sums (saved with mid-epoch checkpoints).
    carry = progress_info if start % spe and progress_info.get("epoch") == start // spe else {}
    try:
        while step < epochs * spe:
            epoch = step // spe
            sums = jnp.asarray(carry.get("epoch_sums", np.zeros(3)), jnp.float32)
            seconds_before, carry = float(carry.get("epoch_seconds", 0.0)), {}
            t0 = time.perf_counter()
            for s in range(step % spe, spe):
                images, labels = sampler.local_batch(x_local, y_local, epoch, s)
                state, m = train_step(state, *parallel.global_batch(mesh, (images, labels)))
                sums = sums + m
                step += 1
                bar.update(1)
                if tcfg.checkpoint_every_steps and step % tcfg.checkpoint_every_steps == 0 and step % spe:
                    ckpt.save(step, stacking.unstack_state(state),
                              {"epoch": epoch, "epoch_sums": np.asarray(jax.device_get(sums)).tolist(),
                               "epoch_seconds": seconds_before + time.perf_counter() - t0})
                if max_steps is not None and step >= max_steps:
                    return {"state": stacking.unstack_state(state), "interrupted": True, "step": step}
            loss_sum, correct, count = np.asarray(jax.device_get(sums))
            seconds = seconds_before + time.perf_counter() - t0
            row = {"epoch": epoch, "step": step, "train_loss": float(loss_sum / count),
                   "train_accuracy": float(correct / count), "images_per_s": float(count / seconds),
                   "lr": float(schedule(step - 1))}
            if (epoch + 1) % tcfg.eval_every_epochs == 0 or epoch + 1 == epochs:
                row["test_accuracy"] = test_acc = evaluate(predict, state.variables, dataset.x_test,
                                                           dataset.y_test, mesh, tcfg.eval_batch_size)
            ckpt.save(step, stacking.unstack_state(state))
            if main:
                log.append(row)
                rundir.write_log(log_path, log)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row.get('test_accuracy', float('nan')):.3f}")
                rundir.write_scalars(writer, name, row, epoch)
    finally:
        bar.close()
        ckpt.close()
        if writer is not None:
            writer.close()
    state = stacking.unstack_state(state)
    if test_acc is None:  # a finished run restarted: nothing was trained or evaluated above
        test_acc = evaluate(predict, state.variables, dataset.x_test, dataset.y_test, mesh, tcfg.eval_batch_size)
    return {"state": state, "interrupted": False, "step": step, "test_accuracy": test_acc, "log": log}

