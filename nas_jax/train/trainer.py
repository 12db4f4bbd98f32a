"""Training: state, compiled step, evaluation, and training a population of seeds (one by default).

The paper's recipe (§3.1, Table 5; docs/protocol.md §d): SGD momentum 0.9, lr 0.025 with per-epoch cosine
annealing, coupled weight decay, global-norm clipping at 5.0, batch 96, crop/flip/cutout. The train step is one
``jit`` over a ``'data'`` mesh; augmentation, drop-path and randomness come from the step counter, so a resume
replays the same computation (the loop: :mod:`nas_jax.train.loop`).
"""

from __future__ import annotations

import dataclasses
import functools
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
from jax.sharding import NamedSharding, PartitionSpec

from nas_jax import parallel
from nas_jax.data.augment import augment_batch, to_float
from nas_jax.train.loop import Loop, run
from nas_jax.train.sampler import EpochSampler

# ----------------------------------------------------------------------------
# State and optimiser
# ----------------------------------------------------------------------------


class TrainState(flax.struct.PyTreeNode):
    """The step, the model's variables in its own layout (a DARTS network's scanned cells stacked) and the
    optimiser state over them. ``fixed``: the variables the step reads but neither trains nor updates, the same
    in every member of a population: a space network's genotype (``architecture_variables``,
    models/space.py), ``{}`` for every other model."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    fixed: Any = flax.struct.field(default_factory=dict)

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats, **self.fixed}


# vmap axes of a population's states: every member's own step, weights and optimiser state; one ``fixed``.
POPULATION_AXES = TrainState(0, 0, 0, 0, None)


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


def architecture_variables(model: nn.Module) -> dict:
    """The variables that choose ``model``'s architecture inside a program shared by many (a space network's
    genotype, models/space.py); ``{}`` for a model whose architecture is its program."""
    return model.architecture_variables() if hasattr(model, "architecture_variables") else {}


def init_variables(model: nn.Module, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
    """Initialise params and batch_stats (BiT has no BatchNorm: empty batch_stats), with the model's
    :func:`architecture_variables` (added after the compiled init, which is then the shared program's)."""
    pkey, dkey = jax.random.split(key)
    variables = _init_jit(model, pkey, dkey, tuple(image_shape))
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
            **architecture_variables(model)}


def create_state(model: nn.Module, tx, key: jax.Array, image_shape: tuple[int, ...]) -> TrainState:
    v = init_variables(model, key, image_shape)
    fixed = {k: t for k, t in v.items() if k not in ("params", "batch_stats")}
    return TrainState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], tx.init(v["params"]), fixed)


# ----------------------------------------------------------------------------
# Compiled steps
# ----------------------------------------------------------------------------


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy on integer labels (G3), or on soft labels
    (rows of class probabilities, e.g. a victim's outputs for Knockoff)."""
    if labels.ndim == logits.ndim:
        return optax.softmax_cross_entropy(logits, labels).mean()
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(model: nn.Module, tx, tcfg, arch, steps_per_epoch: int, seed: int | tuple[int, ...], mesh,
                    batch_transform=None):
    """Return ``step(state, images_u8, labels) -> (state, metrics)``, jitted on ``mesh``: the :func:`keyed_step`
    of one seed, or with a tuple of seeds vmapped over a population's stacked states and (P, B, ...) batches.

    ``batch_transform(key, variables, images, labels) -> (images, labels)`` rewrites each augmented batch inside the
    step (backdoor stamping, PGD examples), given the current eval-mode variables.
    """
    keyed = keyed_step(model, tx, tcfg, arch, steps_per_epoch, batch_transform)
    raw = lambda state, images_u8, labels, key_data: keyed(state, images_u8, labels, jax.random.wrap_key_data(key_data))
    seeds = seed if isinstance(seed, tuple) else (seed,)
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    if isinstance(seed, tuple):
        raw = jax.vmap(raw, in_axes=(POPULATION_AXES, 0, 0, 0), out_axes=(POPULATION_AXES, 0))
        data = NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))
    jitted = jax.jit(raw, in_shardings=(rep, data, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))
    # The seeds' keys are an argument, not constants of the program: every seed of a model runs (and the
    # persistent cache keeps) one compiled step. Passed as their raw uint32 data, which every process can place.
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    return SeededStep(jitted, jax.device_put(keys if isinstance(seed, tuple) else keys[0], rep))


@dataclasses.dataclass(frozen=True)
class SeededStep:
    """``step(state, images_u8, labels)``: the jitted ``keyed(state, images_u8, labels, key)`` with its seeds'
    ``key`` bound (lower or compile ``keyed`` with ``key`` for ahead-of-time use)."""

    keyed: Callable
    key: jax.Array

    def __call__(self, state, images_u8, labels):
        return self.keyed(state, images_u8, labels, self.key)


def keyed_step(model: nn.Module, tx, tcfg, arch, steps_per_epoch: int, batch_transform=None):
    """The uncompiled train step ``(state, images_u8, labels, base_key) -> (state, metrics)``: augmentation and
    dropout keys are ``fold_in(base_key, state.step)``. :func:`make_train_step` jits it for one seed or
    vmaps it over a population of seeds."""
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
                {**state.variables, "params": params}, images, train=True,
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
        classes = jnp.argmax(labels, -1) if labels.ndim == 2 else labels  # of integer or soft labels
        metrics = jnp.stack([loss * labels.shape[0], jnp.sum(jnp.argmax(logits, -1) == classes), labels.shape[0]])
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
# Training: a population of seeds, one of them by default
# ----------------------------------------------------------------------------


def stack(states: list[TrainState]) -> TrainState:
    """Members' states stacked on a new leading axis (:data:`POPULATION_AXES`: ``fixed`` is shared)."""
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[s.replace(fixed={}) for s in states])
    return stacked.replace(fixed=jax.tree_util.tree_map(jnp.copy, states[0].fixed))  # the step donates its input


def member(states: TrainState, i: int) -> TrainState:
    """The ``i``-th member of stacked states."""
    return jax.tree_util.tree_map(lambda x: x[i], states.replace(fixed={})).replace(fixed=states.fixed)


@functools.partial(jax.jit, static_argnums=1)
def _member_variables(states, i: int) -> dict:
    """Member ``i``'s eval variables (params and batch_stats only, not its optimiser state)."""
    return member(states, i).variables


def train(model: nn.Module, dataset, config, run_dir: str | Path, *, max_steps: int | None = None,
          tb_dir: str | Path | None = None, progress: bool = True, name: str | None = None,
          batch_transform=None, initial_variables: dict | None = None) -> dict:
    """Train ``model`` on ``dataset`` with ``config.train`` and ``config.seed``; resumable from ``run_dir``: the
    population of one seed (:func:`train_population`). Returns ``{'state', 'test_accuracy', 'log', 'step',
    'interrupted'}``."""
    out = train_population(model, dataset, config, (int(config.seed),), run_dir, max_steps=max_steps,
                           tb_dir=tb_dir, progress=progress, name=name, batch_transform=batch_transform,
                           initial_variables=initial_variables)
    if out["interrupted"]:
        return {"state": out["states"], "interrupted": True, "step": out["step"]}
    return {"state": out["states"][0], "interrupted": False, "step": out["step"],
            "test_accuracy": out["test_accuracy"][0], "log": out["logs"][0]}


def train_population(model: nn.Module, dataset, config, seeds: tuple[int, ...], run_dir: str | Path, *,
                     max_steps: int | None = None, tb_dir: str | Path | None = None, progress: bool = True,
                     name: str | None = None, batch_transform=None, initial_variables: dict | None = None) -> dict:
    """Train one model per seed of ``seeds`` in one compiled program; resumable from ``run_dir``.

    Each member is exactly its seed's run alone (initialisation, data order, augmentation and dropout keys); several
    step as the :func:`keyed_step` vmapped over stacked states, one unbatched. Checkpoints go to
    ``run_dir/checkpoints``, logs to ``run_dir/train_log.jsonl`` (one seed) or ``train_log_seed{s}.jsonl``.
    ``max_steps`` stops early; ``batch_transform``: see :func:`make_train_step`; ``initial_variables`` start
    fine-tuning (fresh optimiser state). Returns ``{'states', 'test_accuracy', 'logs', 'step', 'interrupted'}``.
    """
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must list distinct seeds, got {seeds}.")
    one, tcfg = len(seeds) == 1, config.train
    mesh = parallel.data_mesh()
    parallel.check_batch_size(tcfg.batch_size, mesh)
    slices = tcfg.data_slices or jax.process_count()
    samplers = [EpochSampler(len(dataset.y_train), tcfg.batch_size, slices, s) for s in seeds]
    local = [sm.local_data(dataset.x_train, dataset.y_train) for sm in samplers]
    spe = samplers[0].steps_per_epoch
    tx, schedule = make_optimizer(tcfg, spe), make_schedule(tcfg, spe)

    def initial(seed):
        state = create_state(model, tx, init_key(seed), dataset.x_train.shape[1:])
        if initial_variables is None:
            return state
        params, stats = jax.tree_util.tree_map(jnp.copy, (initial_variables["params"],  # the step donates
                                                          initial_variables.get("batch_stats", {})))
        return state.replace(params=params, batch_stats=stats, opt_state=tx.init(params))

    states = initial(seeds[0]) if one else stack([initial(s) for s in seeds])
    states = jax.device_put(states, parallel.replicated(mesh))
    train_step = make_train_step(model, tx, tcfg, config.arch, spe, seeds[0] if one else seeds, mesh,
                                 batch_transform)
    batch_sharding = (parallel.batch_sharded(mesh) if one
                      else NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS)))
    predict = make_predict(model, mesh)
    test_accuracy = lambda v: evaluate(predict, v, dataset.x_test, dataset.y_test, mesh, tcfg.eval_batch_size)
    variables = (lambda st, i: st.variables) if one else _member_variables
    accs = [None] * len(seeds)

    def step(states, global_step):
        epoch, s = divmod(global_step, spe)
        rows = [sm.local_batch(x, y, epoch, s) for sm, (x, y) in zip(samplers, local, strict=True)]
        batch = rows[0] if one else tuple(np.stack([r[j] for r in rows]) for j in (0, 1))
        return train_step(states, *(jax.make_array_from_process_local_data(batch_sharding, a) for a in batch))

    def end_epoch(states, epoch, global_step, totals, seconds):
        evaluate_now = (epoch + 1) % tcfg.eval_every_epochs == 0 or epoch + 1 == tcfg.epochs
        rows = []
        for i, (loss_sum, correct, count) in enumerate(np.reshape(totals, (len(seeds), 3))):
            row = {"epoch": epoch, "step": global_step, "train_loss": float(loss_sum / count),
                   "train_accuracy": float(correct / count), "images_per_s": float(count * len(seeds) / seconds),
                   "lr": float(schedule(global_step - 1))}
            if evaluate_now:
                row["test_accuracy"] = accs[i] = test_accuracy(variables(states, i))
            rows.append(row)
        return rows

    def show(rows):
        if one:
            return {"loss": f"{rows[0]['train_loss']:.3f}", "acc": f"{rows[0].get('test_accuracy', float('nan')):.3f}"}
        return {"acc": " ".join(f"{a:.3f}" for a in accs if a is not None)}

    loop = Loop(Path(run_dir), spe, tcfg.epochs, step, end_epoch, (3,) if one else (len(seeds), 3),
                ("train_log.jsonl",) if one else tuple(f"train_log_seed{s}.jsonl" for s in seeds),
                f"train {name or config.model}" + ("" if one else f" x{len(seeds)} seeds"), show,
                tcfg.checkpoint_every_steps, tb_dir=tb_dir, tb_prefix=name or config.model)
    out = run(loop, states, max_steps=max_steps, progress=progress)
    if out.interrupted:
        return {"states": out.state, "interrupted": True, "step": out.step}
    members = [out.state] if one else [member(out.state, i) for i in range(len(seeds))]
    for i, a in enumerate(accs):
        if a is None:  # a finished run restarted: evaluate each member once
            accs[i] = test_accuracy(members[i].variables)
    return {"states": members, "interrupted": False, "step": out.step, "test_accuracy": accs, "logs": out.logs}
