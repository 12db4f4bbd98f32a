"""Properties at initialisation of many DARTS-space genotypes: one compiled program for every genotype
(``nas_jax.models.space.SpaceNetwork``) against one network per genotype (``DartsNetwork``, what the zoo builds).

Per genotype, the properties of the space task (``nas_jax.tasks.space.properties`` after BN calibration on
two batches: gradient variance, NTK condition number, input-gradient norm, input-Hessian eigenvalue,
sharpness) on ``--n`` images of 32x32x3, at C=``--channels`` with ``--layers`` cells, the quick preset's settings.

* single program: ``--genotypes`` random genotypes in one process; the first call compiles every program
  (``compile_s`` = its time minus a steady genotype's), the rest reuse them (``steady_s`` per genotype, median);
  the total wall time is measured, not extrapolated.
* per-genotype networks: ``--per-genotype`` genotypes, each with its own networks and programs (what a study over
  genotypes costs today); its seconds per genotype, mostly compilation.
* over genotypes: the eval forward of up to 8 genotypes one after the other against vmapped over them.
* the cost of the single program in a training step: the train-mode loss gradient (batch ``--batch``) of both
  networks for one genotype (compile s, ms per step) and their parameter bytes (the unused ops' weights).

    python benchmarks/space_throughput.py                            # 1,000 genotypes, writes BENCHMARKS.md
    python benchmarks/space_throughput.py --genotypes 50 --no-write  # a shorter look
    python benchmarks/space_throughput.py --smoke --no-write         # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NUM_CLASSES,
        cpu_model,
    loadavg,
    markers,
    publish,
)

from nas_jax.models import space
from nas_jax.models.darts import DartsNetwork
from nas_jax.models.genotypes import get_genotype
from nas_jax.search.random_search import random_genotypes
from nas_jax.study.phases import bn_variables
from nas_jax.tasks.space import SpaceSettings, properties

NAME = "space_throughput"


def _measure(net, variables, g, x, y, batches, s, ops=None) -> float:
    """Seconds for one genotype's properties (``ops``: the space network's genotype arrays, else ``net`` is it)."""
    t0 = time.perf_counter()
    v = variables
    if ops is not None:
        v = space.with_genotype(v, g, ops)
    v = bn_variables(net, v, "calibrated", batches, 0)
    properties(net.apply, v, x, y, jax.random.key(1), s, NUM_CLASSES)
    return time.perf_counter() - t0


def _breakdown(net, variables, genotypes, x, y, batches, s) -> dict[str, float]:
    """Median seconds per genotype of each part of the properties (programs already compiled)."""
    from nas_jax.analysis.grad_variance import gradient_variance
    from nas_jax.analysis.ntk import ntk_matrix
    from nas_jax.analysis.sensitivity import input_gradient_norms, input_hessian_eigenvalues, sharpness

    xj, yj, h, key = jnp.asarray(x), jnp.asarray(y), s.hessian_examples, jax.random.key(1)
    parts = {
        "BN calibration": lambda v: bn_variables(net, v, "calibrated", batches, 0),
        "gradient variance": lambda v: gradient_variance(net.apply, v, x, y, chunk=0),
        "NTK": lambda v: ntk_matrix(net.apply, v, x, num_classes=NUM_CLASSES),
        "input gradients": lambda v: input_gradient_norms(net.apply, v, xj, yj),
        "input Hessian": lambda v: input_hessian_eigenvalues(net.apply, v, xj[:h], yj[:h], key, s.hessian_iterations),
        "sharpness": lambda v: sharpness(net.apply, v, xj, yj, key, s.sharpness_radius, s.sharpness_directions),
    }
    times: dict[str, list[float]] = {k: [] for k in parts}
    for g in genotypes:
        v = space.with_genotype(variables, g)
        v = bn_variables(net, v, "calibrated", batches, 0)
        for name, part in parts.items():
            t0 = time.perf_counter()
            jax.block_until_ready(part(v))
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _over_genotypes(net, variables, genotypes, x) -> dict[str, float]:
    """Eval-forward ms per genotype of ``x`` for the genotypes one after the other and vmapped over them (every
    slot's switch then runs all its ops), both compiled beforehand; best of 3."""
    arrays = [space.with_genotype({}, g)[space.GENOTYPE] for g in genotypes]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *arrays)
    one = jax.jit(lambda gen: net.apply({**variables, space.GENOTYPE: gen}, x))
    many = jax.jit(jax.vmap(lambda gen: net.apply({**variables, space.GENOTYPE: gen}, x)))
    runs = {"loop": lambda: [one(a) for a in arrays], "vmap": lambda: many(stacked)}
    out = {}
    for name, run in runs.items():
        jax.block_until_ready(run())
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(run())
            best = min(best, time.perf_counter() - t0)
        out[name] = 1e3 * best / len(genotypes)
    return out


def _loss_grad_cost(net, variables, x, y) -> dict:
    """Compile seconds and median ms of the train-mode loss gradient."""
    def step(v):
        def loss(p):
            logits, _ = net.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return jax.grad(loss)(v["params"])

    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(variables).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(variables))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(compiled(variables))
        times.append(time.perf_counter() - t)
    params = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(variables["params"]))
    return {"compile_s": compile_s, "step_ms": 1e3 * statistics.median(times), "param_mb": params / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--genotypes", type=int, default=1000)
    p.add_argument("--per-genotype", type=int, default=3)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--smoke", action="store_true", help="C=2, 3 cells, 8x8 images, 3 + 1 genotypes")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    size = 32
    if a.smoke:
        a.genotypes, a.per_genotype, a.channels, a.layers, a.n, a.batch, size = 3, 1, 2, 3, 4, 8, 8
    s = dataclasses.replace(SpaceSettings.read("space", SpaceSettings.section("quick")), n_examples=a.n)
    rng = np.random.default_rng(0)
    x = rng.random((a.n, size, size, 3), np.float32)
    y = rng.integers(0, NUM_CLASSES, a.n)
    batches = [rng.random((a.batch, size, size, 3), np.float32) for _ in range(s.calibration_batches)]
    kw = {"num_classes": NUM_CLASSES, "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "init_channels": a.channels,
          "layers": a.layers, "dropout": 0.0}
    genotypes = random_genotypes(0, a.genotypes, ops=space.SPACE_OPS)
    load_before = loadavg()[0]

    net = space.SpaceNetwork(get_genotype("darts_v2"), **kw)
    t_start = time.perf_counter()
    variables = jax.jit(net.init)(jax.random.key(0), jnp.asarray(x[:1]))
    per = []
    for i, g in enumerate(genotypes):
        per.append(_measure(net, variables, g, x, y, batches, s, space.SPACE_OPS))
        if i % 100 == 0 or i == len(genotypes) - 1:
            print(f"  single program: {i + 1}/{len(genotypes)} genotypes, {time.perf_counter() - t_start:.0f} s",
                  flush=True)
    total = time.perf_counter() - t_start
    steady = statistics.median(per[1:]) if len(per) > 1 else float("nan")
    parts = _breakdown(net, variables, genotypes[:5], x, y, batches, s)
    over = _over_genotypes(net, variables, genotypes[:8], jnp.asarray(x))
    single = {"genotypes": len(per), "total_s": total, "compile_s": per[0] - steady, "steady_s": steady}

    separate = []
    for g in genotypes[:a.per_genotype]:
        jax.clear_caches()  # a new genotype is a new program: nothing to reuse
        t0 = time.perf_counter()
        own = DartsNetwork(g, **kw)
        _measure(own, jax.jit(own.init)(jax.random.key(0), jnp.asarray(x[:1])), g, x, y, batches, s)
        separate.append(time.perf_counter() - t0)
    per_genotype_s = statistics.median(separate)

    xb, yb = jnp.asarray(batches[0]), jnp.asarray(rng.integers(0, NUM_CLASSES, a.batch))
    g = genotypes[0]
    own = DartsNetwork(g, **kw)
    v_own = own.init(jax.random.key(0), xb[:1])
    v_space = space.with_genotype(variables, g)
    cost = {"per-genotype network": _loss_grad_cost(own, v_own, xb, yb),
            "space network": _loss_grad_cost(net, v_space, xb, yb)}
    load_after = loadavg()[0]

    machine = f"{cpu_model()}, {jax.device_count()} × {jax.devices()[0].platform}, jax {jax.__version__}"
    n1000 = single["compile_s"] + 1000 * steady
    command = f"`python benchmarks/space_throughput.py{' --smoke' if a.smoke else ''}`"
    setup = (f"{command} — {machine}; load average {load_before:.2f} before, {load_after:.2f} after. "
             f"C={a.channels}, {a.layers} cells, {size}×{size}×3, the quick preset's properties on {a.n} images "
             f"(BN calibrated on {s.calibration_batches} batches of {a.batch}).")
    rows = (f"| one program (SpaceNetwork) | {single['genotypes']} | {single['compile_s']:.1f} | {steady:.2f} | "
            f"{1 / steady:.2f} | 1 set for all |\n"
            f"| one network per genotype (DartsNetwork) | {len(separate)} | – | {per_genotype_s:.1f} | "
            f"{1 / per_genotype_s:.3f} | 1 set per genotype |")
    breakeven = int(np.ceil(single["compile_s"] / max(per_genotype_s - steady, 1e-9))) + 1
    summary = (f"Measured wall time for the {single['genotypes']} genotypes of the single program, compilation "
               f"included: **{single['total_s'] / 60:.1f} min** (1,000 genotypes at this rate: {n1000 / 60:.1f} min; "
               f"one network per genotype: {1000 * per_genotype_s / 3600:.1f} h). Per genotype the single program is "
               f"{per_genotype_s / steady:.0f}× faster; it pays from genotype {breakeven} on.")
    split = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
    training = (f"Cost of the single program in training (train-mode loss gradient, batch {a.batch}, one "
                "genotype; the parameters include every op of every slot):")
    lines = [markers(NAME)[0], f"## Properties of many genotypes: one program vs one network per genotype ({NAME})",
             "", setup, "", "| path | genotypes | compile s (once) | s per genotype | genotypes/s | programs |",
             "|---|---|---|---|---|---|", rows, "", summary, "",
             f"Where a genotype's time goes (median of 5, each part timed alone): {split}.", "",
             (f"Over genotypes: the eval forward of {a.n} images for {min(8, len(genotypes))} genotypes takes "
              f"{over['loop']:.1f} ms per genotype one after the other and {over['vmap']:.1f} ms vmapped over them "
              f"({over['vmap'] / over['loop']:.1f}×: under vmap every slot runs all its ops), so the properties "
              "loop over genotypes."), "", training, "",
             "| network | compile s | ms per step | parameters MiB |", "|---|---|---|---|",
             *(f"| {k} | {v['compile_s']:.1f} | {v['step_ms']:.1f} | {v['param_mb']:.2f} |" for k, v in cost.items()),
             markers(NAME)[1]]
    publish(NAME, lines, write=not a.no_write)


if __name__ == "__main__":
    main()
