"""Time and peak memory of one DARTS bi-level step: first order, DARTS finite-difference second order and the
exact (autodiff through the virtual step) second order (docs/protocol.md §g). Goal: exact ≤ 3x first order.

  python benchmarks/search_step.py                      # C=16, 8 cells, batch 64, 32x32 (the §g supernet)
  python benchmarks/search_step.py --tiny --no-write    # a smoke run: C=2, 1 cell, 1 node, 3 ops, 8x8
  python benchmarks/search_step.py --channels 4 --layers 3 --batch 64 --size 8 --reps 3 \
      --ops none,max_pool_3x3,skip_connect,sep_conv_3x3   # the quick search's supernet (CPU, ~10 min)

Each step is compiled once (compile time reported separately), then timed over --reps calls. Peak memory is the
device's ``peak_bytes_in_use`` where the backend reports it (GPU/TPU), otherwise the compiled program's temp +
argument + output bytes from XLA's memory analysis. On a GPU it also estimates a full 50-epoch CIFAR-10 search
(390 steps per epoch: 25k images per half, batch 64). JAX only: the DARTS reference search is PyTorch 0.3 code
that does not run on current PyTorch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from common import ROOT, SECTIONS_ENV, cpu_model, loadavg, markers, update_benchmarks_md, versions

sys.path.insert(0, str(ROOT))
from nas_jax import parallel
from nas_jax.models.supernet import Supernet
from nas_jax.search import darts


def measure(model, sc: darts.StepConfig, batch: int, size: int, reps: int) -> dict:
    """Compile seconds, median ms/step over ``reps`` and peak MiB of one search step of ``sc`` on random batches."""
    mesh = parallel.data_mesh()
    state = darts.create_search_state(model, sc, 0, (size, size, 3))
    rng = np.random.default_rng(0)
    args = (rng.integers(0, 256, (1, batch, size, size, 3), dtype=np.uint8), rng.integers(0, 10, (1, batch)),
            rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), rng.integers(0, 10, (batch,)))
    step = darts.make_search_step(model, sc, 0, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, *args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    state, m = compiled(state, *args)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        state, m = compiled(state, *args)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    if peak is None and mem is not None:
        peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    return {"hypergradient": sc.hypergradient, "compile_s": compile_s, "step_ms": 1e3 * float(np.median(times)),
            "peak_mib": None if peak is None else peak / 2**20}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="smoke-test settings (seconds of compute)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--channels", type=int, default=16, help="C of the supernet (§g: 16)")
    p.add_argument("--layers", type=int, default=8, help="cells (§g: 8)")
    p.add_argument("--batch", type=int, default=64, help="batch per half (§g: 64)")
    p.add_argument("--size", type=int, default=32, help="input height = width (CIFAR-10: 32)")
    p.add_argument("--conv-impl", default="auto", help="the ops' convolution implementation (nas_jax.models.ops)")
    p.add_argument("--ops", default="", help="comma-separated subset of the DARTS primitives (default: all 8)")
    p.add_argument("--hypergradients", default=",".join(darts.HYPERGRADIENTS),
                   help="comma-separated subset of " + ", ".join(darts.HYPERGRADIENTS) + " (first one = the base)")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    a = p.parse_args(argv)
    if a.tiny:
        model = Supernet(10, (0.5,) * 3, (0.25,) * 3, init_channels=2, layers=1, steps=1, multiplier=1,
                         op_names=("none", "skip_connect", "avg_pool_3x3"))
        batch, size = 8, 8
    else:
        model = Supernet(10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), init_channels=a.channels, layers=a.layers,
                         conv_impl=a.conv_impl, op_names=tuple(o for o in a.ops.split(",") if o))
        batch, size = a.batch, a.size
    hypergradients = a.hypergradients.split(",")
    unknown = set(hypergradients) - set(darts.HYPERGRADIENTS)
    if unknown:
        p.error(f"unknown --hypergradients {sorted(unknown)}; choose from {', '.join(darts.HYPERGRADIENTS)}")
    rows = []
    for hg in hypergradients:
        sc = darts.StepConfig(hypergradient=hg, epochs=50, steps_per_epoch=390)
        rows.append(measure(model, sc, batch, size, a.reps))
        print(rows[-1], flush=True)
    base = rows[0]["step_ms"]
    full = (a.channels, a.layers, batch, size, a.ops) == (16, 8, 64, 32, "") and not a.tiny
    device = jax.devices()[0]
    begin, end = markers("search_step")
    vers = ", ".join(f"{k} {v}" for k, v in versions(("jax", "jaxlib", "flax", "optax")).items())
    cmd = " ".join(["python benchmarks/search_step.py", *sys.argv[1:]])
    where = cpu_model() if jax.default_backend() == "cpu" else device.device_kind
    lines = [begin, "## DARTS search step (`python benchmarks/search_step.py`)", "",
             f"Command: `{cmd}`. Device: {where} ({jax.default_backend()}, load average after: {loadavg()[0]:.2f}); "
             f"batch {batch} per half, {size}x{size}, C={model.init_channels}, {model.layers} cells, "
             f"ops {', '.join(model.ops)}, conv_impl {model.conv_impl}; {vers}."
             + ("" if full else " A reduced supernet (the §g one: C=16, 8 cells, the 8 ops, batch 64, 32x32)."), "",
             f"| step | ms/step | x {hypergradients[0]} | peak MiB | compile s |", "|---|---|---|---|---|"]
    for r in rows:
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(f"| {r['hypergradient']} | {r['step_ms']:.1f} | {r['step_ms'] / base:.2f} | {peak} | "
                     f"{r['compile_s']:.1f} |")
    if jax.default_backend() == "gpu" and full and not a.tiny and "exact" in hypergradients:
        hours = rows[hypergradients.index("exact")]["step_ms"] * 390 * 50 / 3.6e6
        lines.append(f"\nEstimated 50-epoch CIFAR-10 search (exact second order, 390 steps/epoch): {hours:.2f} h "
                     "(the DARTS paper: about 1 GPU-day on a 1080Ti).")
    if not full and not a.tiny:
        lines.append("\nThe §g supernet: `python benchmarks/search_step.py` (it also compiles on a 2-core CPU, where the "
                     "exact step takes ~2 minutes: `compile_time`); the 50-epoch search estimate is made on a GPU.")
    section = "\n".join([*lines, end])
    print(section)
    if not a.no_write and (not a.tiny or os.environ.get(SECTIONS_ENV)):  # the suite's --smoke: a section file
        update_benchmarks_md("search_step", section)


if __name__ == "__main__":
    sys.exit(main())
