"""Per-example gradient throughput for the gradient-variance study (docs/protocol.md §f.3, Eqn 14): nas_jax's
compiled ``vmap(grad)`` against PyTorch's ``torch.func.vmap(grad)`` on the same weights, same machine, same run.

Work per repetition, on both sides: the per-example gradients of CE(f(x_i), y_i) with respect to all
parameters (BN affine included, eval mode) for ``--n`` examples, ``--chunk`` at a time, reduced on the fly
into the per-coordinate moments of the raw and the norm-5-clipped gradients (Chan et al.'s merge), and the
four metrics (trace_cov, sum_std, clipped and not). Never n × |θ| at once.

* nas_jax: ``nas_jax.analysis.grad_variance.gradient_variance`` (one compiled ``lax.scan`` over chunks of
  ``vmap(grad)``).
* PyTorch: ``torch.func.vmap(torch.func.grad(loss))`` over ``functional_call`` of the model per chunk, the
  rows flattened and merged by the same update, in eager PyTorch (``torch.no_grad`` around the reductions).

Models (as in ``benchmarks/pgd_throughput.py``, whose weight recipe this reuses: nas_jax init, random BN
affine parameters, BN running statistics from a calibration batch): ``darts`` (DARTS V2, C=16, 8 cells) and
``resnet`` (ResNet-18 CIFAR). The weights go to ``benchmarks/torch_models.py`` via
``benchmarks/port_weights.py``; the run aborts if the eval logits disagree (relative 1e-4) and reports both
sides' trace_cov (they must agree to float tolerance: same weights, same data).

Throughput and peak memory at two chunk sizes (``--chunks k1,k2``, both sides at each): nas_jax reports XLA's
compiled memory analysis (temp working set + arguments + outputs; deterministic, not disturbed by other
processes) and, on GPU, the device's peak bytes in use; PyTorch reports on CPU the growth of the worker's peak
RSS (``ru_maxrss``) over its size after loading, each chunk size in a fresh process, and on GPU
``torch.cuda.max_memory_allocated``. Both should grow with the chunk size and not with n.

Each framework runs in its own child process; both compile / warm up first, then the parent alternates their
timed repetitions. Results go to stdout and to this script's section of BENCHMARKS.md.

    .venv/bin/python benchmarks/grad_variance_throughput.py                     # full run, writes BENCHMARKS.md
    .venv/bin/python benchmarks/grad_variance_throughput.py --models darts --n 8 --chunks 2,4 --reps 1 \\
        --darts-c 4 --darts-layers 3 --max-wait 0 --no-write                    # smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NUM_CLASSES,
    Worker,
    children_cpu_seconds,
    cpu_busy_seconds,
    cpu_model,
    loadavg,
    markers,
    serve,
    update_benchmarks_md,
    versions,
    wait_for_quiet,
)

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MODELS = ("darts", "resnet")
MARK_BEGIN, MARK_END = markers("grad_variance_throughput")
CLIP = 5.0
LOGIT_TOL = 1e-4
METRIC_TOL = 1e-3  # relative agreement of the raw (unclipped) metrics between the two sides
SEED = 0


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def make_data(n: int):
    import numpy as np
    from pgd_throughput import make_images

    x = make_images(SEED + 5, n)
    y = np.random.default_rng(SEED + 6).integers(0, NUM_CLASSES, n).astype(np.int32)
    return x, y


# ----------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------


def jax_worker(args, data: Path):
    import jax
    import numpy as np
    import pgd_throughput

    from nas_jax.analysis import grad_variance as gv
    from nas_jax.models.registry import build_model

    pgd_throughput.DARTS_C, pgd_throughput.DARTS_LAYERS = args.darts_c, args.darts_layers
    model = build_model(args.models, num_classes=NUM_CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                        init_channels=args.darts_c, layers=args.darts_layers)
    variables, flat = pgd_throughput.make_variables(model, 16)
    x, y = make_data(args.n)
    logits = np.asarray(jax.jit(model.apply)(variables, x[:16]))
    np.savez(data, x=x, y=y, logits=logits, **{f"v:{k}": v for k, v in flat.items()})
    chunks = [int(c) for c in args.chunks.split(",")]
    apply_fn = model.apply
    dev = jax.devices()[0]
    compiled, memory, peak_device = {}, {}, {}
    t0 = time.perf_counter()
    for k in chunks:  # ahead-of-time compilation gives XLA's memory analysis and the program that is timed
        compiled[k], memory[k] = gv.compile_gradient_variance(apply_fn, variables, x, y, chunk=k, clip_norm=CLIP)
        if k == chunks[0]:
            compile_s = time.perf_counter() - t0
    metrics = compiled[chunks[0]]()
    if dev.platform == "gpu":
        for k in sorted(chunks):  # the device's peak counter only grows: smallest chunk first
            compiled[k]()
            peak_device[k] = int(dev.memory_stats().get("peak_bytes_in_use", 0))

    def run_once(index: int):
        compiled[chunks[index]]()  # returns Python floats: synchronous

    info = {"params": metrics["num_params"], "compile_s": compile_s, "metrics": metrics,
            "memory": {str(k): v for k, v in memory.items()},
            "peak_device": {str(k): v for k, v in peak_device.items()},
            "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')} x{len(jax.devices())}"}
    return info, run_once


def torch_worker(args, data: Path):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    sys.path.insert(0, str(HERE))
    import port_weights
    import torch_models as tm

    from nas_jax.models.genotypes import get_genotype

    torch.set_num_threads(os.cpu_count())
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.models == "darts":
        model = tm.DartsNetwork(get_genotype("darts"), NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD,
                                init_channels=args.darts_c, layers=args.darts_layers, dropout=0.2)
    else:
        model = tm.ResNet18(NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    with np.load(data) as z:
        flat = {k[2:]: z[k] for k in z.files if k.startswith("v:")}
        x_np, y_np, logits_jax = z["x"], z["y"], z["logits"]
    port_weights.port(model, flat)
    model = model.to(device).eval()
    x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(y_np.astype(np.int64)).to(device)
    with torch.no_grad():
        logits = model(x[:16]).cpu().numpy()
    rel = float(np.abs(logits - logits_jax).max() / max(np.abs(logits_jax).max(), 1e-12))
    if not rel < LOGIT_TOL:
        print(f"ABORT: eval logits disagree for {args.models}: relative {rel:.3g} >= {LOGIT_TOL}", file=sys.stderr)
        sys.exit(3)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    n_params = sum(v.numel() for v in params.values())

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    chunk = int(args.chunks.split(",")[args.chunk_index])

    def merge(state, rows):
        count, mean, m2 = state
        k = rows.shape[0]
        cmean = rows.mean(0)
        cm2 = ((rows - cmean) ** 2).sum(0)
        total = count + k
        delta = cmean - mean
        return total, mean + delta * (k / total), m2 + cm2 + delta**2 * (count * k / total)

    def metrics():
        zero = (0, torch.zeros(n_params, device=device), torch.zeros(n_params, device=device))
        raw, clipped = zero, zero
        for i in range(0, len(x), chunk):
            g = per_example(params, x[i : i + chunk], y[i : i + chunk])
            with torch.no_grad():
                rows = torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], 1)
                norms = rows.norm(dim=1, keepdim=True)
                raw = merge(raw, rows)
                clipped = merge(clipped, rows * torch.clamp(CLIP / (norms + 1e-6), max=1.0))
        var_raw, var_clip = (torch.clamp(s[2] / s[0], min=0) for s in (raw, clipped))
        out = {"trace_cov": float(var_raw.sum()), "sum_std": float(var_clip.sqrt().sum()),
               "trace_cov_clipped": float(var_clip.sum()), "sum_std_unclipped": float(var_raw.sqrt().sum())}
        if cuda:
            torch.cuda.synchronize()
        return out

    rss0 = _max_rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    values = metrics()  # warm-up
    first_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else _max_rss_bytes() - rss0
    dev = torch.cuda.get_device_name(0) if cuda else "cpu"
    info = {"params": n_params, "compile_s": first_s, "metrics": values, "logit_rel_diff": rel, "chunk": chunk,
            "peak_bytes": int(peak), "peak_kind": "cuda max_memory_allocated" if cuda else "peak RSS growth",
            "device": f"{device.type}:{dev}", "threads": torch.get_num_threads()}
    return info, lambda: metrics()


# ----------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------


def _worker(args, side: str, model: str, data: Path, chunk_index: int = 0) -> Worker:
    argv = ["--worker", side, "--models", model, "--n", str(args.n), "--chunks", args.chunks, "--data", str(data),
            "--chunk-index", str(chunk_index), "--darts-c", str(args.darts_c), "--darts-layers",
            str(args.darts_layers)]
    return Worker(__file__, argv, f"{side} worker for {model}")


def measure(args, model: str, tmp: Path) -> dict:
    """Both sides at every chunk size, timed repetitions alternating jax / torch chunk by chunk."""
    data = tmp / f"{model}.npz"
    chunks = args.chunks.split(",")
    jw = _worker(args, "jax", model, data)
    tws = []
    try:
        tws = [_worker(args, "torch", model, data, idx) for idx in range(len(chunks))]
        jt, tt = {k: [] for k in chunks}, {k: [] for k in chunks}
        for _ in range(args.reps):
            for idx, k in enumerate(chunks):
                jt[k].append(jw.run(idx + 1))
                tt[k].append(tws[idx].run())
    finally:
        for w in [jw, *tws]:
            w.close()
    return {"jax": {**jw.info, "times": jt}, "torch": {**tws[0].info, "times": tt},
            "torch_peaks": {k: w.info["peak_bytes"] for k, w in zip(chunks, tws)}}


def _mb(b: int) -> str:
    return f"{b / 2**20:.1f}"


def render_section(res: dict) -> str:
    v = res["versions"]
    lines = [
        MARK_BEGIN,
        "## Per-example gradient throughput (benchmarks/grad_variance_throughput.py)",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Gradient-variance metrics (trace_cov and sum_std, raw and clipped at norm {CLIP:g}) over n = {res['n']} "
        f"examples, per-example gradients of all parameters in eval mode, k at a time: nas_jax "
        "`gradient_variance` (compiled lax.scan over vmap(grad) chunks) vs PyTorch `torch.func.vmap(grad(loss))` "
        "over `functional_call`, same reductions, SAME weights (ported by benchmarks/port_weights.py). "
        f"gradients/s = n / median of {res['reps']} timed runs after the first (compiling / warm-up) run. "
        "Ratio = nas_jax / PyTorch (> 1: nas_jax faster).",
        "",
        "| model | params | "
        + " | ".join(f"grads/s @chunk {k}: nas_jax / PyTorch (ratio)" for k in res["chunks"])
        + " | best nas_jax / best PyTorch | trace_cov nas_jax / PyTorch | "
        + " | ".join(f"nas_jax MiB @chunk {k} (temp+args+out)" for k in res["chunks"]) + " | "
        + " | ".join(f"PyTorch MiB @chunk {k}" for k in res["chunks"]) + " |",
        "|---|---:|" + "---:|" * len(res["chunks"]) + "---:|---|" + "---:|" * (2 * len(res["chunks"])),
    ]
    for r in res["models"].values():
        lines.append(
            f"| {r['label']} | {r['params']:,} | "
            + " | ".join(f"{r['jax_gps'][str(k)]:.2f} / {r['torch_gps'][str(k)]:.2f} ({r['ratio'][str(k)]:.2f}x)"
                         for k in res["chunks"])
            + f" | **{r['best_ratio']:.2f}x** | {r['jax_trace']:.5g} / {r['torch_trace']:.5g} | "
            + " | ".join(_mb(r["jax_memory"][str(k)]["total"]) for k in res["chunks"]) + " | "
            + " | ".join(_mb(r["torch_peaks"][str(k)]) for k in res["chunks"]) + " |")
    lines += [
        "",
        f"- Date (UTC): {res['date']}",
        f"- Machine: {res['cpu']}, {res['cores']} cores; {platform.system()} {platform.machine()}",
        f"- Devices: nas_jax on `{res['jax_device']}`, PyTorch on `{res['torch_device']}` "
        f"({res['torch_threads']} threads); PyTorch memory = {res['torch_peak_kind']}",
        f"- Versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, torch {v['torch']}, Python {v['python']}",
        f"- Load average (1 min) before: {res['load_before']:.2f} (waited {res['waited_s']:.0f} s for "
        f"< {res['load_threshold']}); after: {res['load_after']:.2f}. Other processes used "
        f"{res['foreign_cpu_s']:.0f} CPU-s during the {res['wall_s']:.0f} s of measurement",
        "- Per-run seconds: " + "; ".join(
            f"{n} @{k} jax {', '.join(f'{t:.2f}' for t in r['jax_times'][str(k)])} / torch "
            f"{', '.join(f'{t:.2f}' for t in r['torch_times'][str(k)])}"
            for n, r in res["models"].items() for k in res["chunks"]),
        "- First-call seconds (nas_jax: ahead-of-time compilation at the timed chunk; PyTorch: warm-up run): "
        + ", ".join(
            f"{n} {r['jax_compile_s']:.1f} / {r['torch_first_s']:.1f}" for n, r in res["models"].items()),
        "- Relative difference nas_jax vs PyTorch of the four metrics: " + "; ".join(
            f"{n} " + ", ".join(f"{k} {d:.1e}" for k, d in r["rel_diff"].items()) for n, r in res["models"].items())
        + f" (the raw metrics must agree within {METRIC_TOL:g} or nothing is written; the norm-clipped ones are "
        "reported)",
        "- nas_jax device peak bytes (GPU only): " + ("; ".join(
            f"{n} " + ", ".join(f"@{k}: {_mb(b)} MiB" for k, b in r["jax_peak_device"].items())
            for n, r in res["models"].items() if r["jax_peak_device"]) or "n/a (CPU)"),
        "",
        "Notes. On XLA:CPU a vmapped chunk of per-example convolution gradients lowers to grouped "
        "convolutions that run slower than one example at a time: chunk 1 (a plain lax.scan, no vmap) is the "
        "fastest CPU setting, and `grad_variance.chunk = 0` (the default) picks it on CPU and 32 on GPU/TPU. "
        "nas_jax memory is XLA's compiled memory analysis of the whole program (its temp working set "
        "grows with the chunk size, not with n). PyTorch's CPU figure is the growth of the worker's peak RSS "
        "during one run (a fresh process per chunk size), which includes allocator caching: compare how each "
        "side scales with the chunk, not the absolute values across sides.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of darts,resnet")
    p.add_argument("--n", type=int, default=128, help="examples per run")
    p.add_argument("--chunks", default="1,16", help="two chunk sizes: both sides timed and measured at each")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--darts-c", type=int, default=16)
    p.add_argument("--darts-layers", type=int, default=8)
    p.add_argument("--load-threshold", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=600.0)
    p.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--no-write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--chunk-index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        fn = jax_worker if args.worker == "jax" else torch_worker
        info, run_once = fn(args, Path(args.data))
        # jax: the parent's "run N" times chunk N-1 of one worker holding every compiled chunk size;
        # torch: one process per chunk size (its peak RSS is that chunk's)
        serve(info, (lambda n: run_once(n - 1)) if args.worker == "jax" else (lambda _n: run_once()))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; valid: {list(MODELS)}")
    chunks = [int(c) for c in args.chunks.split(",")]
    if len(chunks) != 2 or min(chunks) < 1:
        p.error("--chunks takes two positive chunk sizes, e.g. 16,32")

    command = "python benchmarks/grad_variance_throughput.py" + (
        "" if argv is None and len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:] if argv is None else argv))
    load_before, waited = wait_for_quiet(args.load_threshold, args.max_wait)
    print(f"load average {load_before:.2f} after {waited:.0f} s; measuring", flush=True)
    t_start = time.perf_counter()
    busy0, ours0 = cpu_busy_seconds(), children_cpu_seconds()
    labels = {"darts": f"darts (DARTS V2, C={args.darts_c}, {args.darts_layers} cells)",
              "resnet": "resnet (ResNet-18 CIFAR)"}
    res = {"models": {}, "n": args.n, "chunks": chunks, "reps": args.reps, "command": command, "cpu": cpu_model(),
           "cores": os.cpu_count(), "versions": versions(("jax", "jaxlib", "flax", "torch")),
           "load_before": load_before, "waited_s": waited, "load_threshold": args.load_threshold,
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")}
    failed = False
    with tempfile.TemporaryDirectory(prefix="grad_variance_throughput_") as tmp:
        for m in models:
            out = measure(args, m, Path(tmp))
            j, t = out["jax"], out["torch"]
            gps = {side: {k: args.n / statistics.median(ts) for k, ts in w["times"].items()} for side, w in
                   (("jax", j), ("torch", t))}
            r = {"label": labels[m], "params": j["params"], "jax_gps": gps["jax"], "torch_gps": gps["torch"],
                 "jax_times": j["times"], "torch_times": t["times"], "jax_compile_s": j["compile_s"],
                 "torch_first_s": t["compile_s"], "jax_trace": j["metrics"]["trace_cov"],
                 "torch_trace": t["metrics"]["trace_cov"], "jax_memory": j["memory"],
                 "jax_peak_device": j["peak_device"], "torch_peaks": out["torch_peaks"]}
            r["ratio"] = {k: r["jax_gps"][k] / r["torch_gps"][k] for k in r["jax_gps"]}
            r["best_ratio"] = max(r["jax_gps"].values()) / max(r["torch_gps"].values())
            res["models"][m] = r
            res["jax_device"], res["torch_device"] = j["device"], t["device"]
            res["torch_threads"], res["torch_peak_kind"] = t["threads"], t["peak_kind"]
            if j["params"] != t["params"]:
                print(f"ERROR: parameter counts differ for {m}: {j['params']} vs {t['params']}", file=sys.stderr)
                failed = True
            r["rel_diff"] = {}
            for key in ("trace_cov", "sum_std_unclipped", "sum_std", "trace_cov_clipped"):
                a, b = j["metrics"][key], t["metrics"][key]
                r["rel_diff"][key] = abs(a - b) / max(abs(a), abs(b), 1e-30)
                if r["rel_diff"][key] > METRIC_TOL:
                    raw = key in ("trace_cov", "sum_std_unclipped")
                    print(f"{'ERROR' if raw else 'WARNING'}: {m} {key} differs: nas_jax {a:.6g}, PyTorch {b:.6g}",
                          file=sys.stderr)
                    failed = failed or raw
            print(f"{m}: grads/s by chunk nas_jax {r['jax_gps']}, PyTorch {r['torch_gps']}, best/best ratio "
                  f"{r['best_ratio']:.2f}x; trace_cov {r['jax_trace']:.6g} / {r['torch_trace']:.6g}; nas_jax MiB "
                  f"{ {k: _mb(v['total']) for k, v in j['memory'].items()} }, PyTorch MiB "
                  f"{ {k: _mb(v) for k, v in out['torch_peaks'].items()} }", flush=True)
    res["load_after"] = loadavg()[0]
    res["wall_s"] = time.perf_counter() - t_start
    res["foreign_cpu_s"] = max(0.0, (cpu_busy_seconds() - busy0) - (children_cpu_seconds() - ours0))
    section = render_section(res)
    if failed:
        print(section)
        print("not writing BENCHMARKS.md: the two sides disagree (see above)", file=sys.stderr)
        return 1
    if not args.no_write:
        update_benchmarks_md("grad_variance_throughput", section, Path(args.output))
        print(f"wrote section to {args.output}")
    else:
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
