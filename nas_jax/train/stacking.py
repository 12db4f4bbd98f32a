"""The train state's stacked-cell layout: fewer leaves for the optimiser to compile.

A DARTS network scans the structurally identical cells of a stage (:meth:`DartsNetwork.scan_runs`). Its
variables keep one entry per cell (``cell_0 … cell_{L−1}``, the checkpoint and zoo layout), so an optimiser
step over them compiles per-cell copies of every update (clipping, weight decay, momentum) and the slices that
stack the cells for the scan. Inside the training loops the state holds each scanned run's parameters, BN
statistics and optimiser buffers stacked on a leading axis instead (``cells_2_to_5``: 369 instead of 919
parameter leaves for DARTS at L=20), and the network scans such a run's stacked entry as it is
(:class:`~nas_jax.models.darts.DartsNetwork`), so the compiled step neither slices nor restacks them. Measured
cold on the 2-core CPU (``python benchmarks/compile_time.py``, BENCHMARKS.md): the C=16 L=20 train step
compiles in ~59 s instead of 73–80 s with the per-cell state (L=8, which has no run, ~39 s either way); reading
the stacked entries directly instead of slices of them removed 442 slice and stack fusions and 16% of the
program (46,423 -> 38,953 StableHLO ops); L=20 median 34.0 s against 40.4 s before, in interleaved cold pairs on
one afternoon (docs/compile_time.md: within this machine's noise, 33–54 s). Checkpoints
are written and read in the per-cell layout (:func:`unstack_state` before saving), so their format is unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nas_jax.models.darts import run_name

Runs = tuple[tuple[int, int], ...]


def stacked_runs(model, image_shape: tuple[int, ...]) -> Runs:
    """The runs of two or more cells that ``model`` scans at this image shape; () for other models."""
    scan_runs = getattr(model, "scan_runs", None)
    if scan_runs is None:
        return ()
    return tuple((a, b) for a, b in scan_runs(tuple(image_shape[:2])) if b - a > 1)


def stack_cells(tree: dict, runs: Runs, axis: int = 0) -> dict:
    """A params-shaped dict with the cells of each run stacked into one entry (``run_name``) at ``axis``."""
    out = dict(tree)
    for a, b in runs:
        cells = [out.pop(f"cell_{i}") for i in range(a, b)]
        out[run_name((a, b))] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs, axis), *cells)
    return out


def unstack_cells(tree: dict, runs: Runs, axis: int = 0) -> dict:
    """The inverse of :func:`stack_cells`: one ``cell_i`` entry per cell again (``tree`` itself without runs)."""
    return _unstack_cells(tree, runs, axis) if runs else tree


@functools.partial(jax.jit, static_argnums=(1, 2))
def _unstack_cells(tree: dict, runs: Runs, axis: int) -> dict:
    out = dict(tree)
    for a, b in runs:
        stacked = out.pop(run_name((a, b)))
        for k, i in enumerate(range(a, b)):
            out[f"cell_{i}"] = jax.tree_util.tree_map(lambda x, k=k: jax.lax.index_in_dim(x, k, axis, False), stacked)
    return out


def _map_param_dicts(fn, tree, key: str):
    """``fn`` applied to every dict in ``tree`` that holds ``key`` (the params and each optimiser buffer)."""
    is_params = lambda t: isinstance(t, dict) and key in t
    return jax.tree_util.tree_map(lambda t: fn(t) if is_params(t) else t, tree, is_leaf=is_params)


def stack_state(state, runs: Runs, axis: int = 0):
    """A per-cell ``TrainState`` in the stacked layout (``axis`` 1 for a population's states); ``state`` itself
    without runs (manual models, short networks)."""
    return _stack_state(state, runs, axis) if runs else state


def unstack_state(state, axis: int = 0):
    """A stacked ``TrainState`` back in the per-cell (checkpoint) layout; ``state`` itself if it is per cell."""
    return _unstack_state(state, axis) if state.cell_runs else state


@functools.partial(jax.jit, static_argnums=(1, 2))
def _stack_state(state, runs: Runs, axis: int):
    fn = functools.partial(stack_cells, runs=runs, axis=axis)
    return state.replace(params=fn(state.params), batch_stats=fn(state.batch_stats),
                         opt_state=_map_param_dicts(fn, state.opt_state, f"cell_{runs[0][0]}"), cell_runs=runs)


@functools.partial(jax.jit, static_argnums=1)
def _unstack_state(state, axis: int):
    runs = state.cell_runs
    fn = functools.partial(unstack_cells, runs=runs, axis=axis)
    return state.replace(params=fn(state.params), batch_stats=fn(state.batch_stats),
                         opt_state=_map_param_dicts(fn, state.opt_state, run_name(runs[0])), cell_runs=())
