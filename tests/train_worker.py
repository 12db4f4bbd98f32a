"""Subprocess worker for the multi-device and multi-host tests, and the tests' shared tiny models and helpers.

Trains a tiny CNN (the trainer's model contract, compiled in seconds) on a slice
of native 8x8 `digits` and writes the per-epoch training loss and a digest of the
final parameters as JSON.

  python tests/train_worker.py OUT.json [--processes N --process_id P --port PORT] [--slices S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402  (importing JAX does not start a backend: distributed init still works)


class TinyCNN(nn.Module):
    """Conv-BN-ReLU x2, global average pool, dense: what the trainer needs of a model (a ``train``
    flag, ``batch_stats``), compiled in a fraction of a DARTS network's time."""

    width: int = 8
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for c in (self.width, 2 * self.width):
            x = nn.Conv(c, (3, 3))(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        return nn.Dense(self.num_classes)(x.mean((1, 2)))


def tiny_cnn(width: int = 8) -> TinyCNN:
    return TinyCNN(width)


def fast_jit(fn, *args):
    """``fn`` compiled for ``args`` without XLA's backend optimisations: the same values, about half the compile
    time, for programs a test runs once or twice."""
    import jax

    return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def cheap_genotype():
    """A DARTS-space cell pair with one op of each parameterised kind (sep_conv, dil_conv; in the reduction cell
    the strided skip's FactorizedReduce) and parameter-free ops elsewhere: the structure the layout tests (cell
    scan, stacked state) exercise, at a fraction of DARTS V2's compile time (five sep_convs per normal cell)."""
    from nas_jax.models.genotypes import Genotype

    normal = (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 1), ("max_pool_3x3", 0),
              ("skip_connect", 0), ("avg_pool_3x3", 2), ("skip_connect", 1), ("max_pool_3x3", 3))
    reduce = (("max_pool_3x3", 0), ("skip_connect", 1), ("avg_pool_3x3", 0), ("skip_connect", 2),
              ("max_pool_3x3", 1), ("skip_connect", 2), ("avg_pool_3x3", 0), ("skip_connect", 3))
    return Genotype(normal, (2, 3, 4, 5), reduce, (2, 3, 4, 5))


def tiny_config(zoo_dir: str, slices: int = 0):
    from nas_jax.config import base_config

    c = base_config("train", "quick")
    c.model, c.zoo_dir = "darts", zoo_dir
    c.arch.init_channels, c.arch.layers, c.arch.dropout = 4, 3, 0.0
    c.train.epochs, c.train.batch_size, c.train.crop_padding, c.train.cutout = 2, 32, 1, 2
    c.train.data_slices = slices
    return c


def tiny_dataset():
    from nas_jax.data import load_dataset, subsample

    return subsample(load_dataset("digits", native=True), n_train=256, n_test=64, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slices", type=int, default=0)
    parser.add_argument("--run_dir", default="")
    parser.add_argument("--lr", type=float, default=0.025)
    parser.add_argument("--seeds", default="", help="comma-separated: train a population instead")
    args = parser.parse_args()

    from nas_jax import parallel

    if args.processes > 1:
        parallel.initialize_distributed(f"127.0.0.1:{args.port}", args.processes, args.process_id)

    import jax
    import numpy as np

    from nas_jax.train import trainer

    config = tiny_config(zoo_dir="", slices=args.slices)
    config.train.lr = args.lr
    ds = tiny_dataset()
    model = tiny_cnn()
    if args.seeds:
        from nas_jax.train.trainer import train_population

        seeds = tuple(int(v) for v in args.seeds.split(","))
        pop = train_population(model, ds, config, seeds, args.run_dir, progress=False)
        digests = [float(sum(np.abs(np.asarray(jax.device_get(p), np.float64)).sum()
                             for p in jax.tree_util.tree_leaves(st.params))) for st in pop["states"]]
        if jax.process_index() == 0:
            Path(args.out).write_text(json.dumps({"losses": [[r["train_loss"] for r in log] for log in pop["logs"]],
                                                  "digests": digests, "devices": jax.device_count()}))
        return
    out = trainer.train(model, ds, config, args.run_dir, progress=False)
    params = jax.tree_util.tree_leaves(out["state"].params)
    digest = float(sum(np.abs(np.asarray(jax.device_get(p), np.float64)).sum() for p in params))
    if jax.process_index() == 0:
        Path(args.out).write_text(json.dumps({"losses": [r["train_loss"] for r in out["log"]], "digest": digest,
                                              "devices": jax.device_count(), "processes": jax.process_count(),
                                              "test_accuracy": out["test_accuracy"]}))


if __name__ == "__main__":
    main()
