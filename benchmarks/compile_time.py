"""Cold compile seconds and steady ms/step of the paper-size programs.

Workloads (names as in ``--json``):

* ``train_darts_c16_l8``, ``train_darts_c16_l20``, ``train_darts_c36_l20``: the evaluation network's train step
  (``nas_jax.train.trainer.make_train_step``, the paper recipe: SGD, clip 5, crop/flip/cutout, per-op dropout),
  DARTS V2 genotype, batch 96, 32x32;
* ``search_first_order``, ``search_finite_difference``, ``search_exact``: the §g supernet step
  (``nas_jax.search.darts.make_search_step``; C=16, 8 cells, the 8 primitives, batch 64 per half, 32x32);
* ``pgd_darts``: untargeted PGD-7 (ε = 8/255, step 2/255, no restart) on darts C=16 L=8, batch 96;
* ``hsj_first_call``: ``hopskipjump_jit`` on 25 inputs with the Table 5 budget (max_iter 50, max_eval 2500,
  init_eval 100, init_size 100) through the quick zoo's ResNet-18 (width 0.25); ``compile_s`` is the
  trace + XLA compile of that program and ``step_ms`` one run of it (``--hsj-max-iter`` shortens the run only:
  the schedule is a table inside the same program).

Each workload runs in its own child process with the persistent compilation cache off, so every compile is
cold. ``compile_s`` = tracing + lowering + XLA compilation (``jit(...).lower(...).compile()``), reported next to
its two parts and the size of the program (jaxpr equations, StableHLO ops); ``step_ms`` = the median of
``--reps`` calls of the compiled program after one warm-up call.

    python benchmarks/compile_time.py                      # all workloads at their sizes, writes BENCHMARKS.md
    python benchmarks/compile_time.py --only train_darts_c16_l8,train_darts_c16_l20 --no-write
    python benchmarks/compile_time.py --only train_darts_c16_l20 --unrolled --no-write   # without the cell scan
    python benchmarks/compile_time.py --only search_exact --search-vmapped --no-write   # edges vmapped, not scanned
    python benchmarks/compile_time.py --smoke --json /tmp/ct.json --no-write   # tiny sizes, seconds on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NUM_CLASSES,
    ROOT,
    SECTIONS_ENV,
    cpu_model,
    loadavg,
    markers,
    update_benchmarks_md,
)

NAMES = ("train_darts_c16_l8", "train_darts_c16_l20", "train_darts_c36_l20", "search_first_order",
         "search_finite_difference", "search_exact", "pgd_darts", "hsj_first_call")


def _program_size(lowered) -> dict:
    text = lowered.as_text()
    ops = sum(1 for line in text.splitlines() if " = " in line and ("stablehlo." in line or "chlo." in line))
    return {"hlo_ops": ops}


def _timed(jitted, args, reps: int, donate: bool) -> dict:
    """Trace/lower, compile, warm up, then time ``reps`` calls; ``donate``: the first output replaces args[0]."""
    import jax
    import numpy as np

    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    trace_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    xla_s = time.perf_counter() - t0
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        if donate:
            args = (out[0], *args[1:])
    steady = times[1:] or times  # reps = 0: the first (only) run
    return {"compile_s": trace_s + xla_s, "trace_s": trace_s, "xla_s": xla_s, "first_run_s": times[0],
            "step_ms": 1e3 * float(np.median(steady)), **_program_size(lowered)}


def train_workload(channels: int, layers: int, batch: int, size: int, reps: int, conv_impl: str,
                   scan_cells: bool = True) -> dict:
    import jax
    import numpy as np

    from nas_jax import parallel
    from nas_jax.config import base_config
    from nas_jax.models.registry import build_from_config
    from nas_jax.train.trainer import create_state, make_optimizer, make_train_step

    cfg = base_config("train", "paper")
    cfg.arch.init_channels, cfg.arch.layers, cfg.arch.conv_impl = channels, layers, conv_impl
    cfg.train.batch_size = batch
    model = build_from_config("darts", cfg.arch, NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD).clone(scan_cells=scan_cells)
    mesh = parallel.data_mesh()
    tx = make_optimizer(cfg.train, 521)
    state = jax.device_put(create_state(model, tx, jax.random.key(0), (size, size, 3)), parallel.replicated(mesh))
    rng = np.random.default_rng(0)
    batch_arrays = parallel.global_batch(mesh, (rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
                                                rng.integers(0, NUM_CLASSES, (batch,), dtype=np.int32)))
    step = make_train_step(model, tx, cfg.train, cfg.arch, 521, 0, mesh)
    n_params = sum(int(v.size) for v in jax.tree_util.tree_leaves(state.params))
    return {"params": n_params, **_timed(step.keyed, (state, *batch_arrays, step.key), reps, donate=True)}


def search_workload(hypergradient: str, channels: int, layers: int, batch: int, size: int, reps: int,
                    conv_impl: str, ops: str, steps: int = 4, scan_edges: bool = True) -> dict:
    import numpy as np

    from nas_jax import parallel
    from nas_jax.models.supernet import Supernet
    from nas_jax.search import darts

    model = Supernet(NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD, init_channels=channels, layers=layers, steps=steps,
                     multiplier=steps, conv_impl=conv_impl, op_names=tuple(o for o in ops.split(",") if o),
                     scan_edges=scan_edges)
    mesh = parallel.data_mesh()
    sc = darts.StepConfig(hypergradient=hypergradient, epochs=50, steps_per_epoch=390)
    state = darts.create_search_state(model, sc, 0, (size, size, 3))
    rng = np.random.default_rng(0)
    args = (rng.integers(0, 256, (1, batch, size, size, 3), dtype=np.uint8), rng.integers(0, 10, (1, batch)),
            rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), rng.integers(0, 10, (batch,)))
    step = darts.make_search_step(model, sc, 0, mesh)
    return _timed(step, (state, *args), reps, donate=True)


def pgd_workload(channels: int, layers: int, batch: int, size: int, reps: int, conv_impl: str) -> dict:
    import jax
    import numpy as np

    from nas_jax.attacks.evasion import EvasionConfig
    from nas_jax.attacks.pgd import pgd_attack_jit
    from nas_jax.models.registry import build_model
    from nas_jax.train.trainer import init_variables

    model = build_model("darts", num_classes=NUM_CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                        init_channels=channels, layers=layers, conv_impl=conv_impl)
    variables = init_variables(model, jax.random.key(0), (size, size, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch,)).astype(np.int32)
    cfg = EvasionConfig(eps=8 / 255, step_size=2 / 255, iterations=7, restarts=0)
    jitted = jax.jit(lambda v, x, y, k: pgd_attack_jit(model.apply, v, x, y, k, cfg, mode="untargeted"))
    return _timed(jitted, (variables, x, labels, jax.random.key(0)), reps, donate=False)


def hsj_workload(n_inputs: int, size: int, max_iter: int, width: float, reps: int) -> dict:
    import jax
    import numpy as np

    from nas_jax.attacks.hopskipjump import HSJConfig, LabelOracle, hopskipjump_jit
    from nas_jax.models.registry import build_model
    from nas_jax.train.trainer import init_variables

    model = build_model("resnet", num_classes=NUM_CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                        width_multiplier=width)
    variables = init_variables(model, jax.random.key(0), (size, size, 3))
    oracle = LabelOracle(lambda v, x: model.apply(v, x, train=False), variables)
    x = np.random.default_rng(0).uniform(0, 1, (n_inputs, size, size, 3)).astype(np.float32)
    cfg = HSJConfig(max_iter=max_iter, max_eval=2500, init_eval=100, init_size=100, chunk_size=25)
    jitted = jax.jit(lambda o, x, k: hopskipjump_jit(o, x, k, cfg=cfg))
    return _timed(jitted, (oracle, x, jax.random.key(0, impl="rbg")), reps, donate=False)


def run_one(name: str, a) -> dict:
    """The workload ``name`` in this process (a child of :func:`main`)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    batch, size = (8, 8) if a.smoke else (a.batch, a.size)
    if name.startswith("train_darts_"):
        c, layers = {"c16_l8": (16, 8), "c16_l20": (16, 20), "c36_l20": (36, 20)}[name.removeprefix("train_darts_")]
        if a.smoke:
            c, layers = 2, layers // 4 + 1  # 3 and 6 cells: the L ratio stays visible
        return train_workload(c, layers, batch, size, a.reps, a.conv_impl, not a.unrolled)
    if name.startswith("search_"):
        if a.smoke:
            return search_workload(name.removeprefix("search_"), 2, 1, 8, 8, a.reps, a.search_conv_impl,
                                   "none,skip_connect,avg_pool_3x3", steps=1)
        return search_workload(name.removeprefix("search_"), a.search_channels, a.search_layers, a.search_batch,
                               size, a.reps, a.search_conv_impl, a.search_ops, scan_edges=not a.search_vmapped)
    if name == "pgd_darts":
        return pgd_workload(2 if a.smoke else 16, 3 if a.smoke else 8, batch, size, a.reps, a.conv_impl)
    if name == "hsj_first_call":
        return hsj_workload(4 if a.smoke else a.hsj_inputs, size, 1 if a.smoke else a.hsj_max_iter,
                            0.125 if a.smoke else 0.25, reps=0)
    raise ValueError(f"unknown workload {name!r}; valid: {', '.join(NAMES)}")


def section(rows: dict, a, argv: list[str]) -> str:
    import jax

    begin, end = markers("compile_time")
    where = cpu_model() if jax.default_backend() == "cpu" else jax.devices()[0].device_kind
    cmd = " ".join(["python benchmarks/compile_time.py", *argv])
    lines = [begin, "## Cold compile time and steady step time (`python benchmarks/compile_time.py`)", "",
             (f"Command: `{cmd}`. Device: {where} ({jax.default_backend()}, {os.cpu_count()} cores); load average "
              f"before/after: {a.load_before:.2f} / {loadavg()[0]:.2f}; persistent compilation cache off, one child "
              f"process per workload. jax {jax.__version__}."), "",
             "| workload | compile s (trace + XLA) | trace s | XLA s | StableHLO ops | ms/step |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | |")
            continue
        lines.append(f"| {name} | {r['compile_s']:.1f} | {r['trace_s']:.1f} | {r['xla_s']:.1f} | {r['hlo_ops']} | "
                     f"{r['step_ms']:.1f} |")
    return "\n".join([*lines, end])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(NAMES), help="comma-separated workloads")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds on CPU); never writes BENCHMARKS.md itself")
    p.add_argument("--reps", type=int, default=3, help="timed calls after one warm-up call (median)")
    p.add_argument("--batch", type=int, default=96, help="train/PGD batch")
    p.add_argument("--size", type=int, default=32, help="image height = width")
    p.add_argument("--conv-impl", default="auto", help="evaluation-network conv_impl (nas_jax.models.ops)")
    p.add_argument("--unrolled", action="store_true", help="evaluation network without the scan over cells")
    p.add_argument("--search-channels", type=int, default=16)
    p.add_argument("--search-layers", type=int, default=8)
    p.add_argument("--search-batch", type=int, default=64, help="batch per half")
    p.add_argument("--search-ops", default="", help="comma-separated primitives (default: all 8)")
    p.add_argument("--search-conv-impl", default="auto")
    p.add_argument("--search-vmapped", action="store_true", help="supernet edges as vmapped groups, not scanned")
    p.add_argument("--hsj-inputs", type=int, default=25)
    p.add_argument("--hsj-max-iter", type=int, default=50, help="Table 5: 50; shortens the run, not the compile")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per workload child")
    p.add_argument("--json", help="write {name: {compile_s, step_ms, ...}} here")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(run_one(a.child, a)), flush=True)
        return 0
    names = [n for n in a.only.split(",") if n]
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        p.error(f"unknown --only {unknown}; valid: {', '.join(NAMES)}")
    a.load_before = loadavg()[0]
    env = {**os.environ}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    rows = {}
    for name in names:
        cmd = [sys.executable, __file__, *argv, "--child", name]
        try:
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=a.timeout, env=env, cwd=ROOT)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            rows[name] = json.loads(lines[-1][7:]) if lines else {"error": f"failed (exit {out.returncode})"}
            if not lines:
                print(out.stderr[-3000:], file=sys.stderr)
        except subprocess.TimeoutExpired:
            rows[name] = {"error": f"> {a.timeout:.0f} s (timed out)"}
        print(name, rows[name], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    text = section(rows, a, argv)
    print(text)
    if not a.no_write and (not a.smoke or os.environ.get(SECTIONS_ENV)):  # smoke: only into a section folder
        update_benchmarks_md("compile_time", text)
    return 0 if all("error" not in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
