"""Population training throughput: images/s of P seeds of one model trained together.

One vmapped train step (:func:`nas_jax.train.trainer.make_train_step` with a tuple of seeds: the single-seed step of
``trainer.keyed_step``, augmentation, forward, backward, clip 5, SGD) over P stacked states and P batches of
``--batch`` images; images/s = P · batch · steps / seconds (median of ``--reps``, compilation excluded), and the
speed-up over P = 1. The goal on a GPU is ≥ 4x the one-seed throughput at 8 seeds; a CPU core has no idle
lanes to fill, so expect ~1x there.

    python benchmarks/population_throughput.py                                   # darts C=16 L=8, batch 96
    python benchmarks/population_throughput.py --channels 8 --layers 5 --batch 32 --sizes 1,2,4  # a CPU size
    python benchmarks/population_throughput.py --smoke --no-write                # seconds, for the tests
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model, loadavg, update_benchmarks_md, versions

NAME = "population_throughput"


def measure(model_name: str, channels: int, layers: int, batch: int, size: int, population: int, steps: int,
            reps: int) -> float:
    """Seconds per step (median) of a population of ``population`` seeds."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nas_jax import parallel
    from nas_jax.config import base_config
    from nas_jax.models.registry import build_from_config
    from nas_jax.train import trainer

    c = base_config("train", "paper")
    c.arch.init_channels, c.arch.layers = channels, layers
    model = build_from_config(model_name, c.arch, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    seeds = tuple(range(population))
    tx = trainer.make_optimizer(c.train, 100)
    states = trainer.stack([trainer.create_state(model, tx, trainer.init_key(s), (size, size, 3)) for s in seeds])
    mesh = parallel.data_mesh()
    step = trainer.make_train_step(model, tx, c.train, c.arch, 100, seeds, mesh)  # a tuple of seeds: vmapped
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (population, batch, size, size, 3), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, (population, batch)))
    states, m = step(states, x, y)  # compile + warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            states, m = step(states, x, y)
        jax.block_until_ready(m)
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="darts")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--sizes", default="1,2,4,8", help="population sizes")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (C=2, 3 cells, batch 4, 8x8, P=1,2)")
    p.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    a = p.parse_args(argv)
    if a.smoke:
        a.channels, a.layers, a.batch, a.size, a.sizes, a.steps, a.reps = 2, 3, 4, 8, "1,2", 1, 1
    import jax

    sizes = [int(v) for v in a.sizes.split(",")]
    rows = []
    for n in sizes:
        sec = measure(a.model, a.channels, a.layers, a.batch, a.size, n, a.steps, a.reps)
        rows.append((n, sec, n * a.batch / sec))
        print(f"population {n}: {1000 * sec:.1f} ms/step, {n * a.batch / sec:.1f} images/s", flush=True)
    base = rows[0][2]
    table = "\n".join(f"| {n} | {1000 * sec:.1f} | {ips:.1f} | {ips / base:.2f}x |" for n, sec, ips in rows)
    v = versions(("jax", "jaxlib", "flax"))
    section = f"""<!-- BEGIN {NAME} -->
## Population training throughput ({NAME})

{a.model} C={a.channels}, {a.layers} cells, batch {a.batch} per seed, {a.size}x{a.size}: one vmapped train step over
P seeds (each its own init, data, augmentation and dropout keys). images/s = P · batch / median step time
(compilation excluded); speed-up against P = {sizes[0]}.

| seeds P | ms/step | images/s | speed-up |
|---:|---:|---:|---:|
{table}

- Command: `python benchmarks/population_throughput.py --model {a.model} --channels {a.channels} --layers {a.layers} --batch {a.batch} --size {a.size} --sizes {a.sizes} --steps {a.steps} --reps {a.reps}`
- Date (UTC): {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}; load average at the end {loadavg()[0]:.1f}
- Machine: {cpu_model()}; devices {jax.devices()}; {platform.system()} {platform.machine()}
- Versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, Python {v['python']}
<!-- END {NAME} -->
"""
    print(section)
    if not a.no_write:
        update_benchmarks_md(NAME, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
