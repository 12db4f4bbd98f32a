"""The training loops' stacked-cell state layout (nas_jax.train.stacking): the same step as the per-cell
layout, an exact round trip, and checkpoints still written and read in the per-cell layout."""

import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import parallel
from nas_jax.models.darts import DartsNetwork
from nas_jax.train import stacking, trainer
from nas_jax.train.checkpoint import Checkpointer

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import cheap_genotype, tiny_config, tiny_dataset

RUNS = ((5, 7), (9, 11))  # a DARTS-space network at L=11: the cells after the first normal cell of stages 2 and 3


def _setup():
    config = tiny_config(zoo_dir="")
    config.arch.init_channels, config.arch.layers, config.arch.conv_impl = 2, 11, "xla"
    config.train.epochs, config.train.checkpoint_every_steps = 1, 3
    ds = tiny_dataset()
    mean, std = tuple(map(float, ds.mean)), tuple(map(float, ds.std))  # the stacking is the layout, whatever the ops
    model = DartsNetwork(cheap_genotype(), ds.num_classes, mean, std, init_channels=2, layers=11, dropout=0.0,
                         conv_impl="xla")
    return config, ds, model


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_stacked_state_round_trips_and_steps_like_the_per_cell_state():
    config, ds, model = _setup()
    shape = ds.x_train.shape[1:]
    assert stacking.stacked_runs(model, shape) == RUNS
    tx = trainer.make_optimizer(config.train, 8)
    state = trainer.create_state(model, tx, trainer.init_key(0), shape)
    stacked = stacking.stack_state(state, RUNS)
    assert stacked.cell_runs == RUNS and {"cells_5_to_6", "cells_9_to_10"} <= set(stacked.params)
    for tree in (stacked.params, stacked.batch_stats):  # BN statistics stacked too: the scan reads and writes them
        assert {"cells_5_to_6", "cells_9_to_10"} <= set(tree) and not {"cell_5", "cell_6", "cell_9", "cell_10"} & set(tree)
    n_cell = len(jax.tree_util.tree_leaves(state.params["cell_5"]))
    assert len(jax.tree_util.tree_leaves(stacked.params)) == len(jax.tree_util.tree_leaves(state.params)) - 2 * n_cell
    n = lambda tree: len(jax.tree_util.tree_leaves(tree))
    assert n(stacked.opt_state) - n(stacked.params) == n(state.opt_state) - n(state.params)  # momentum stacked too
    back = stacking.unstack_state(stacked)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
    for a, b in zip(_leaves(back), _leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree_util.tree_structure(stacked.variables) == jax.tree_util.tree_structure(state.variables)

    mesh = parallel.data_mesh()
    step = trainer.make_train_step(model, tx, config.train, config.arch, 8, 0, mesh)
    x, y = parallel.global_batch(mesh, (ds.x_train[:32], ds.y_train[:32]))
    copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # the step donates its state

    def run(s):  # compiled without XLA's backend optimisations: the same values, about half the compile time
        compiled = step.keyed.lower(s, x, y, step.key).compile(compiler_options={"xla_backend_optimization_level": 0})
        return compiled(s, x, y, step.key)

    (from_stacked, m2), (per_cell, m1) = run(copy(stacked)), run(copy(state))
    np.testing.assert_allclose(m2, m1, rtol=1e-5)
    for a, b in zip(_leaves(stacking.unstack_state(from_stacked)), _leaves(per_cell), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # parameters, BN statistics and the new momentum
    assert not np.allclose(_leaves(per_cell.params)[0], _leaves(state.params)[0])

    other = trainer.create_state(model, tx, trainer.init_key(1), shape)
    seeds = jax.tree_util.tree_map(lambda a, b: np.stack([a, b]), state, other)  # a population's states: axis 1
    pop, back = jax.jit(lambda s: (stacking.stack_state(s, RUNS, 1),
                                   stacking.unstack_state(stacking.stack_state(s, RUNS, 1), 1)))(seeds)
    for i, alone in enumerate((stacked, stacking.stack_state(other, RUNS))):
        for a, b in zip(_leaves(pop), _leaves(alone), strict=True):
            np.testing.assert_array_equal(a[i], b)
    for a, b in zip(_leaves(back), _leaves(seeds), strict=True):
        np.testing.assert_array_equal(a, b)


def test_trainer_checkpoints_the_per_cell_layout_and_resumes_through_the_stacked_one(tmp_path):
    config, ds, model = _setup()
    full = trainer.train(model, ds, config, tmp_path / "run", progress=False)  # 8 steps, checkpoints at 6 and 8
    assert full["state"].cell_runs == () and "cell_5" in full["state"].params
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints")
    try:
        assert ckpt.all_steps() == [6, 8]
        template = jax.eval_shape(lambda: trainer.create_state(model, trainer.make_optimizer(config.train, 8),
                                                               trainer.init_key(0), ds.x_train.shape[1:]))
        stored = ckpt.restore(template, 8)  # the per-cell layout, as before the stacked state existed
    finally:
        ckpt.close()
    for a, b in zip(_leaves(stored), _leaves(full["state"]), strict=True):
        np.testing.assert_array_equal(a, b)

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "8")  # as if killed after step 6
    resumed = trainer.train(model, ds, config, tmp_path / "run", progress=False)
    for a, b in zip(_leaves(resumed["state"]), _leaves(full["state"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert [r["train_loss"] for r in resumed["log"]] == [r["train_loss"] for r in full["log"]]
