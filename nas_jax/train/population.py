"""Population training: several seeds of one architecture in one compiled program (vmap over the model axis).

Each member is exactly the single-seed run of :func:`nas_jax.train.trainer.train` with its seed: its own
initialisation (``init_key(seed)``), data order (``EpochSampler(seed)``), augmentation and dropout keys
(``fold_in(key(seed), step)``). The step of :func:`trainer.keyed_step` is vmapped over the stacked states,
the stacked (P, B, ...) batches and the P base keys; the batch axis is sharded over the ``'data'`` mesh as
in single-seed training. The stacked state is checkpointed and resumed as one (``run_dir/checkpoints``,
with the epoch's running sums in mid-epoch checkpoints), and every member's per-epoch row goes to
``run_dir/train_log_seed{s}.jsonl``. On an accelerator many small models fill the device that one alone
leaves idle; the zoo stores each member as its own entry (:func:`nas_jax.train.zoo.
get_or_train_population`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from nas_jax import parallel
from nas_jax.train import run_dir as rundir
from nas_jax.train import stacking, trainer
from nas_jax.train.checkpoint import Checkpointer
from nas_jax.train.sampler import EpochSampler


def stack(trees: list):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def member(tree, i: int):
    """The ``i``-th member of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def make_population_step(model: nn.Module, tx, tcfg, arch, steps_per_epoch: int, seeds: tuple[int, ...], mesh):
    """``step(states, images_u8 (P, B, ...), labels (P, B)) -> (states, metrics (P, 3))``, one ``jit``."""
    keyed = trainer.keyed_step(model, tx, tcfg, arch, steps_per_epoch)
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])

    def step(states, images_u8, labels):
        return jax.vmap(lambda st, x, y, k: keyed(st, x, y, jax.random.wrap_key_data(k)))(states, images_u8, labels,
                                                                                         keys)

    rep = parallel.replicated(mesh)
    data = NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))
    return jax.jit(step, in_shardings=(rep, data, data), out_shardings=(rep, rep), donate_argnums=(0,))


@functools.partial(jax.jit, static_argnums=1)
def _member_variables(states, i: int) -> dict:
    """Member ``i``'s eval variables (params and batch_stats only, not its optimiser state)."""
    return member(states, i).variables


def train_population(model: nn.Module, dataset, config, seeds: tuple[int, ...], run_dir: str | Path, *,
                     max_steps: int | None = None, progress: bool = True, name: str | None = None) -> dict:
    """Train one model per seed of ``seeds`` together; resumable from ``run_dir``.

    Returns ``{'states': [TrainState per seed], 'test_accuracy': [...], 'logs': [[rows] per seed], 'step',
    'interrupted'}``; member i equals ``trainer.train`` with ``config.seed = seeds[i]`` (float tolerance).
    """
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"train.seeds must list distinct seeds, got {seeds}.")
    tcfg, arch = config.train, config.arch
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(tcfg.batch_size, mesh)
    slices = tcfg.data_slices or jax.process_count()
    samplers = [EpochSampler(len(dataset.y_train), tcfg.batch_size, slices, s) for s in seeds]
    local = [sm.local_data(dataset.x_train, dataset.y_train) for sm in samplers]
    spe, epochs = samplers[0].steps_per_epoch, tcfg.epochs
    tx, schedule = trainer.make_optimizer(tcfg, spe), trainer.make_schedule(tcfg, spe)
    image_shape = dataset.x_train.shape[1:]
    states = stack([trainer.create_state(model, tx, trainer.init_key(s), image_shape) for s in seeds])
    states = jax.device_put(states, parallel.replicated(mesh))
    ckpt = Checkpointer(run_dir / "checkpoints")
    states, progress_info = trainer.resume(ckpt, states)
    states = stacking.stack_state(states, stacking.stacked_runs(model, image_shape), 1)  # axis 0: the seeds
    step = start = int(states.step[0])
    step_fn = make_population_step(model, tx, tcfg, arch, spe, seeds, mesh)
    predict = trainer.make_predict(model, mesh)
    data = NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))

    main = parallel.is_main_process()
    log_paths = [run_dir / f"train_log_seed{s}.jsonl" for s in seeds]
    logs = [rundir.read_log(p, start // spe) for p in log_paths]
    bar = rundir.progress_bar(epochs * spe, start, f"train {name or config.model} x{len(seeds)} seeds", progress)
    carry = progress_info if start % spe and progress_info.get("epoch") == start // spe else {}
    accs = [None] * len(seeds)
    try:
        while step < epochs * spe:
            epoch = step // spe
            sums = jnp.asarray(carry.get("epoch_sums", np.zeros((len(seeds), 3))), jnp.float32)
            seconds_before, carry = float(carry.get("epoch_seconds", 0.0)), {}
            t0 = time.perf_counter()
            for s in range(step % spe, spe):
                rows = [sm.local_batch(x, y, epoch, s) for sm, (x, y) in zip(samplers, local, strict=True)]
                batch = tuple(jax.make_array_from_process_local_data(data, np.stack([r[j] for r in rows]))
                              for j in (0, 1))
                states, m = step_fn(states, *batch)
                sums = sums + m
                step += 1
                bar.update(1)
                if tcfg.checkpoint_every_steps and step % tcfg.checkpoint_every_steps == 0 and step % spe:
                    ckpt.save(step, stacking.unstack_state(states, 1),
                              {"epoch": epoch, "epoch_sums": np.asarray(jax.device_get(sums)).tolist(),
                               "epoch_seconds": seconds_before + time.perf_counter() - t0})
                if max_steps is not None and step >= max_steps:
                    return {"states": None, "interrupted": True, "step": step}
            totals = np.asarray(jax.device_get(sums))  # waits for the epoch's steps: dispatch is asynchronous
            seconds = seconds_before + time.perf_counter() - t0
            evaluate = (epoch + 1) % tcfg.eval_every_epochs == 0 or epoch + 1 == epochs
            for i, (loss_sum, correct, count) in enumerate(totals):
                row = {"epoch": epoch, "step": step, "train_loss": float(loss_sum / count),
                       "train_accuracy": float(correct / count), "images_per_s": float(count * len(seeds) / seconds),
                       "lr": float(schedule(step - 1))}
                if evaluate:
                    row["test_accuracy"] = accs[i] = trainer.evaluate(
                        predict, _member_variables(states, i), dataset.x_test, dataset.y_test, mesh,
                        tcfg.eval_batch_size)
                logs[i].append(row)
            ckpt.save(step, stacking.unstack_state(states, 1))
            if main:
                for path, log in zip(log_paths, logs, strict=True):
                    rundir.write_log(path, log)
                bar.set_postfix(acc=" ".join(f"{a:.3f}" for a in accs if a is not None))
    finally:
        bar.close()
        ckpt.close()
    states = stacking.unstack_state(states, 1)
    members = [member(states, i) for i in range(len(seeds))]
    for i, a in enumerate(accs):
        if a is None:  # a finished run restarted: evaluate each member once
            accs[i] = trainer.evaluate(predict, members[i].variables, dataset.x_test, dataset.y_test, mesh,
                                       tcfg.eval_batch_size)
    return {"states": members, "interrupted": False, "step": step, "test_accuracy": accs, "logs": logs}
