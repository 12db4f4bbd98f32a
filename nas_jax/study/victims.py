"""Victims and attack inputs shared by the evasion tasks (docs/protocol.md §a.4, G5).

Victims come from the zoo. Each model is attacked on the first ``n`` inputs it classifies correctly of one
seeded test-set order shared by all models; the commonality study on the first ``n`` that all classify correctly.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np

from nas_jax import parallel
from nas_jax.attacks import evasion
from nas_jax.data import Dataset, load_dataset
from nas_jax.train import trainer, zoo
from nas_jax.train.zoo import ZooEntry


def load_victims(config, progress: bool = True) -> tuple[Dataset, list[ZooEntry]]:
    """Every model of ``config.models`` (seed ``config.seed``) from the zoo, trained first where missing; a run
    over ``config.seeds`` trains the missing victims of all its seeds at once (together with ``train.population``)."""
    dataset = load_dataset(config.dataset, config.data_dir or None)
    together = tuple(int(s) for s in config.get("seeds", ()))
    seeds = together if int(config.seed) in together else (int(config.seed),)
    missing = [f"{name}{'' if len(seeds) == 1 else f' seed {s}'}" for name in config.models for s in seeds
               if not zoo.is_trained(zoo.with_seed(config, s), name)]
    print(f"victims: {len(config.models)} model(s) × {len(seeds)} seed(s); "
          + (f"{len(missing)} to train first: {', '.join(missing)}" if missing else "all in the zoo"), flush=True)
    entries = []
    for i, name in enumerate(config.models):
        print(f"[{i + 1}/{len(config.models)}] victim {name}", flush=True)
        entries.append(zoo.get_or_train_population(config, name, seeds, dataset, progress)[seeds.index(
            int(config.seed))])  # all seeds trained or restored; this seed's entry
        print(f"    {name}: test accuracy {entries[-1].test_accuracy:.3f} ({entries[-1].run_dir})", flush=True)
    return dataset, entries


def attack_order(n_test: int, seed: int) -> np.ndarray:
    """The seeded order of test indices that every model's inputs are drawn from (G5)."""
    return np.random.default_rng([seed, 1228]).permutation(n_test)


def predictions(entry: ZooEntry, images_u8: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Eval-mode predicted classes of a uint8 array, with the executable that training's evaluation
    compiled for this model (the same padded batch of ``train.eval_batch_size`` = 500 by default)."""
    return trainer.model_logits(entry.model, entry.variables, images_u8, batch_size).argmax(-1)


def correct_inputs(correct: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` indices of ``order`` where ``correct`` holds; warns when fewer than ``n`` are."""
    chosen = order[correct[order]]
    if len(chosen) < n:
        warnings.warn(f"{n} attack inputs requested, {len(chosen)} used: only {len(chosen)} of the {len(order)} "
                      "test inputs are classified correctly (by every model, where inputs are shared).", stacklevel=2)
    return chosen[:n]


@jax.jit
def _example_keys(key, indices):
    return evasion.example_keys(key, indices)


@dataclasses.dataclass
class AttackBatches:
    """Runs a jitted per-example attack over an array in fixed-size, padded, batch-sharded chunks and concatenates
    the results. ``per_example_keys=True`` passes key ``fold_in(key, i)`` for input i, so results do not depend on
    batch size or devices (PGD, NES); ``False`` passes ``fold_in(key, chunk)`` per chunk (HopSkipJump).
    """

    batch_size: int
    per_example_keys: bool = False

    def run(self, attack, x: np.ndarray, labels: np.ndarray, key: jax.Array):
        mesh = parallel.data_mesh()
        n_dev = mesh.devices.size
        bs = max(n_dev, self.batch_size // n_dev * n_dev)
        sharding = parallel.batch_sharded(mesh)
        chunks = []
        for i, start in enumerate(range(0, len(x), bs)):
            xb, yb = x[start : start + bs], labels[start : start + bs]
            valid = len(xb)
            if valid < bs:  # pad to the fixed shape; the padding is dropped below
                xb, yb = (np.concatenate([a, np.repeat(a[-1:], bs - valid, 0)]) for a in (xb, yb))
            if self.per_example_keys:
                kb = _example_keys(key, jax.device_put(np.arange(start, start + bs, dtype=np.uint32), sharding))
            else:
                kb = jax.random.fold_in(key, i)
            out = attack(jax.device_put(xb, sharding), jax.device_put(yb, sharding), kb)
            chunks.append(jax.tree_util.tree_map(lambda a, valid=valid: np.asarray(a)[:valid], out))
        return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *chunks)
