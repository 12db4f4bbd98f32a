"""AutoAttack side by side: nas_jax's compiled APGD-CE, APGD-T, FAB-T, Square and AutoAttack vs torchattacks'
``APGD``, ``APGDT``, ``FAB(multi_targeted=True)``, ``Square`` and ``AutoAttack`` on the same ported weights.

Model: the DARTS V2 evaluation network (a small width, ``--darts-c``/``--darts-layers``), 32x32x3 inputs, 10
classes, eval mode. Weights as in benchmarks/pgd_throughput.py (seed-0 init, random BN scale/bias, BN running
statistics of a calibration batch), ported by benchmarks/port_weights.py; the eval logits of both sides are
compared and the run aborts if max|Δlogit| / max|logit| >= 1e-4. Inputs: the smooth random images of the PGD
benchmark; labels: the model's clean predictions (all correct). A random network is fragile, so ε is chosen by
the nas_jax APGD-CE on the batch from a grid (the one whose robust accuracy is closest to 50%) and both sides use it.

Both sides run the same reduced budget (``--steps`` APGD/FAB iterations, ``--targets`` target classes for
APGD-T/FAB-T, ``--queries`` Square queries, one restart); torchattacks' ``AutoAttack(version='standard')`` is
built as is and its four sub-attacks get the same reduced settings (the attributes ``steps``,
``n_target_classes`` and ``n_queries``). Per attack, each side reports the robust accuracy on the batch (the
returned adversarials classified by the side's own model, plus the L∞ size of the perturbation); inputs/s =
batch / median of the timed repetitions, alternated jax, torch, jax, ... after a warm-up (nas_jax: the compiling
call). Every framework in its own child process (benchmarks/common.py).

    .venv/bin/python benchmarks/autoattack_throughput.py --batch 32 --reps 2           # writes BENCHMARKS.md
    .venv/bin/python benchmarks/autoattack_throughput.py --batch 8 --steps 3 --queries 20 --reps 1 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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
    alternate,
    cpu_model,
    loadavg,
    markers,
    serve,
    update_benchmarks_md,
    versions,
    wait_for_quiet,
)

HERE = Path(__file__).resolve().parent
ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack")
EPS_GRID_255 = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
LOGIT_TOL = 1e-4
MARK_BEGIN, MARK_END = markers("autoattack_throughput")


def jax_worker(args, data: Path):
    import jax
    import numpy as np
    from flax import traverse_util
    from pgd_throughput import make_images, make_variables

    from nas_jax.attacks.apgd import apgd_attack_jit
    from nas_jax.attacks.autoattack import AutoAttackConfig, autoattack_jit
    from nas_jax.models.registry import build_model

    # One worker per attack: the ε-grid APGD-CE is the same program in each, compiled once (persistent cache).
    jax.config.update("jax_compilation_cache_dir", str(Path(tempfile.gettempdir()) / "nas_jax_bench_xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    model = build_model("darts", num_classes=NUM_CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                        init_channels=args.darts_c, layers=args.darts_layers)
    variables, flat = make_variables(model, args.batch)
    apply_fn = model.apply
    x = jax.numpy.asarray(make_images(0, args.batch))
    logits = np.asarray(jax.jit(apply_fn)(variables, x))
    y = jax.numpy.asarray(logits.argmax(-1).astype(np.int32))
    key = jax.random.key(0)
    # ε: the grid value whose APGD-CE robust accuracy is closest to 50% (eps is traced: one compilation).
    rob = {e: 1 - float(np.asarray(apgd_attack_jit(apply_fn, variables, x, y, key, e / 255, "linf",
                                                   args.steps).fooled).mean()) for e in EPS_GRID_255}
    eps_255 = min(EPS_GRID_255, key=lambda e: abs(rob[e] - 0.5))
    eps = eps_255 / 255
    np.savez(data, x=np.asarray(x), labels=np.asarray(y), logits=logits, eps=eps,
             **{f"v:{k}": v for k, v in traverse_util.flatten_dict(variables, sep="/").items()})
    del flat
    single = {"apgd-ce": ("apgd-ce",), "apgd-t": ("apgd-t",), "fab-t": ("fab-t",), "square": ("square",),
              "autoattack": None}[args.attack]
    cfg = AutoAttackConfig(eps=eps, norm="linf", version="custom" if single else "standard", attacks=single,
                           apgd_iter=args.steps, fab_iter=args.steps, n_target_classes=args.targets,
                           n_queries=args.queries)

    def attack():
        return jax.block_until_ready(autoattack_jit(apply_fn, variables, x, y, key, cfg))

    t0 = time.perf_counter()
    res = attack()
    first_s = time.perf_counter() - t0
    linf = float(np.abs(np.asarray(res.x_adv) - np.asarray(x)).max())
    dev = jax.devices()[0]
    info = {"robust": float(np.asarray(res.robust).mean()), "first_s": first_s, "linf": linf, "eps_255": eps_255,
            "eps_grid_robust": rob, "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
            "square_queries": float(np.asarray(res.queries)[np.asarray(res.queries) > 0].mean())
            if np.any(np.asarray(res.queries) > 0) else 0.0}
    return info, lambda n=1: [attack() for _ in range(n)]


def torch_worker(args, data: Path):
    import numpy as np
    import torch
    import torchattacks

    sys.path.insert(0, str(HERE))
    import port_weights
    import torch_models as tm

    from nas_jax.models.genotypes import get_genotype

    torch.set_num_threads(args.torch_threads or os.cpu_count())
    model = tm.DartsNetwork(get_genotype("darts"), NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD,
                            init_channels=args.darts_c, layers=args.darts_layers, dropout=0.2)
    with np.load(data) as z:
        flat = {k[2:]: z[k] for k in z.files if k.startswith("v:")}
        x_np, labels_np, logits_jax, eps = z["x"], z["labels"], z["logits"], float(z["eps"])
    port_weights.port(model, flat)
    model = model.eval()
    x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels_np.astype(np.int64))
    with torch.no_grad():
        logits = model(x).numpy()
    rel = float(np.abs(logits - logits_jax).max()) / max(float(np.abs(logits_jax).max()), 1e-12)
    if not rel < LOGIT_TOL:
        print(f"ABORT: eval logits disagree: relative {rel:.3g} >= {LOGIT_TOL}", file=sys.stderr, flush=True)
        sys.exit(3)
    common = {"norm": "Linf", "eps": eps, "seed": 0}
    if args.attack == "autoattack":
        atk = torchattacks.AutoAttack(model, version="standard", n_classes=NUM_CLASSES, **common)
        parts = atk._autoattack.attacks  # APGD, APGDT, FAB, Square: the same reduced budget as nas_jax
    else:
        atk = {"apgd-ce": lambda: torchattacks.APGD(model, steps=args.steps, loss="ce", n_restarts=1, **common),
               "apgd-t": lambda: torchattacks.APGDT(model, steps=args.steps, n_restarts=1, n_classes=NUM_CLASSES,
                                                    **common),
               "fab-t": lambda: torchattacks.FAB(model, steps=args.steps, n_restarts=1, multi_targeted=True,
                                                 n_classes=NUM_CLASSES, **common),
               "square": lambda: torchattacks.Square(model, n_queries=args.queries, n_restarts=1, **common)}[
                   args.attack]()
        parts = [atk]
    for part in parts:
        if hasattr(part, "steps"):
            part.steps = args.steps
        if hasattr(part, "n_target_classes"):
            part.n_target_classes = args.targets
        if hasattr(part, "n_queries"):
            part.n_queries = args.queries

    t0 = time.perf_counter()
    adv = atk(x, y)
    first_s = time.perf_counter() - t0
    with torch.no_grad():
        robust = float((model(adv).argmax(-1) == y).float().mean())
    info = {"robust": robust, "first_s": first_s, "linf": float((adv.detach() - x).abs().max()), "logit_rel_diff": rel,
            "threads": torch.get_num_threads()}
    return info, lambda n=1: [atk(x, y) for _ in range(n)]


def measure(args, attack: str, tmp: Path) -> tuple[dict, dict]:
    data = tmp / f"{attack}.npz"
    common_argv = ["--attack", attack, "--data", str(data), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--targets", str(args.targets), "--queries", str(args.queries), "--darts-c", str(args.darts_c),
                   "--darts-layers", str(args.darts_layers), "--torch-threads", str(args.torch_threads)]
    return alternate(lambda: Worker(__file__, ["--worker", "jax", *common_argv], f"jax worker ({attack})"),
                     lambda: Worker(__file__, ["--worker", "torch", *common_argv], f"torch worker ({attack})"),
                     args.reps)


def render(res: dict) -> str:
    v = res["versions"]
    lines = [MARK_BEGIN, "## AutoAttack vs torchattacks (benchmarks/autoattack_throughput.py)", "",
             f"Command: `{res['command']}`", "",
             (f"DARTS V2 evaluation network, C={res['darts_c']}, {res['darts_layers']} cells, eval mode, batch "
             f"{res['batch']} of 32x32x3 smooth random images (labels: the clean predictions), the SAME weights on "
             f"both sides (ported; eval logits within {LOGIT_TOL:g} relative). L∞, ε = {res['eps_255']:g}/255 "
             "(chosen by nas_jax APGD-CE on the batch: the grid value with robust accuracy closest to 50%). "
             f"Budget on both sides: {res['steps']} APGD/FAB iterations, {res['targets']} target classes for "
             f"APGD-T/FAB-T, {res['queries']} Square queries, 1 restart; AutoAttack = the standard sequence with "
             "these settings (torchattacks.AutoAttack(version='standard') with its sub-attacks set to them). "
             f"inputs/s = batch / median of {res['reps']} timed attacks after the first (nas_jax: compiling) "
             "call; ratio = nas_jax / torchattacks (> 1: nas_jax faster). Robust accuracy: each side's returned "
             "adversarials classified by its own model."), "",
             ("| attack | robust acc nas_jax | robust acc torchattacks | Δ (points) | nas_jax inputs/s | "
             "torchattacks inputs/s | ratio | max L∞ nas_jax / torch (×255) |"),
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in res["attacks"].items():
        j, t = r["jax"], r["torch"]
        lines.append(f"| {name} | {100 * j['robust']:.1f}% | {100 * t['robust']:.1f}% | "
                     f"{100 * (j['robust'] - t['robust']):+.1f} | {r['jax_ips']:.2f} | {r['torch_ips']:.2f} | "
                     f"{r['ratio']:.2f}x | {255 * j['linf']:.2f} / {255 * t['linf']:.2f} |")
    lines += ["", (f"- Date (UTC): {res['date']}; machine: {res['cpu']}, {os.cpu_count()} cores; nas_jax on "
              f"`{res['jax_device']}`, PyTorch {res['torch_threads']} threads"),
              f"- Versions: jax {v['jax']}, flax {v['flax']}, torch {v['torch']}, torchattacks {v['torchattacks']}",
              (f"- Load average (1 min) before: {res['load_before']:.2f}, after: {res['load_after']:.2f} "
              "(shared machine: other agents' jobs ran meanwhile; ratios within this run only)"),
              "- APGD-CE robust accuracy over the ε grid (×1/255): "
              + ", ".join(f"{float(e):g}: {100 * a:.0f}%" for e, a in res["eps_grid_robust"].items()),
              "- Per-rep seconds: " + "; ".join(
                  f"{n} jax {', '.join(f'{s:.2f}' for s in r['jax']['times'])} / torch "
                  f"{', '.join(f'{s:.2f}' for s in r['torch']['times'])}" for n, r in res["attacks"].items()),
              "- First call seconds (nas_jax includes compilation): " + "; ".join(
                  f"{n} jax {r['jax']['first_s']:.1f} / torch {r['torch']['first_s']:.1f}"
                  for n, r in res["attacks"].items()),
              ("- Notes: nas_jax steps the whole fixed-shape batch and freezes fooled inputs (a loop stops only "
              "when every input is fooled); torchattacks re-indexes the remaining inputs, so it does less work "
              "once part of the batch is fooled. Square draws its windows per example in nas_jax, per batch in "
              "torchattacks (AutoAttack's code), and nas_jax counts the start query inside the budget; random "
              "starts and windows differ between the frameworks, so single inputs near the boundary can differ."),
              MARK_END, ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=("jax", "torch"))
    p.add_argument("--attack", choices=ATTACKS, default="autoattack")
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--data", type=Path)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--targets", type=int, default=3)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--darts-c", type=int, default=8)
    p.add_argument("--darts-layers", type=int, default=5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=0, help="0: os.cpu_count(); 1 degrades less under load")
    p.add_argument("--max-wait", type=float, default=0.0)
    p.add_argument("--load-threshold", type=float, default=1.5)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.worker:
        info, run = (jax_worker if args.worker == "jax" else torch_worker)(args, args.data)
        serve(info, run)
        return 0
    load_before, _ = wait_for_quiet(args.load_threshold, args.max_wait)
    res = {"command": "python benchmarks/autoattack_throughput.py " + shlex.join(sys.argv[1:]), "attacks": {},
           "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(),
           "versions": versions(("jax", "jaxlib", "flax", "torch", "torchattacks")), "load_before": load_before,
           **{k: getattr(args, k) for k in ("batch", "steps", "targets", "queries", "darts_c", "darts_layers",
                                            "reps")}}
    with tempfile.TemporaryDirectory() as tmp:
        for attack in args.attacks.split(","):
            j, t = measure(args, attack, Path(tmp))
            jips, tips = args.batch / statistics.median(j["times"]), args.batch / statistics.median(t["times"])
            res["attacks"][attack] = {"jax": j, "torch": t, "jax_ips": jips, "torch_ips": tips, "ratio": jips / tips}
            res.update(eps_255=j["eps_255"], eps_grid_robust=j["eps_grid_robust"], jax_device=j["device"],
                       torch_threads=t["threads"])
            print(f"{attack}: robust nas_jax {j['robust']:.3f} / torch {t['robust']:.3f}; inputs/s {jips:.2f} / "
                  f"{tips:.2f} (ratio {jips / tips:.2f}x); times jax {j['times']} torch {t['times']}", flush=True)
    res["load_after"] = loadavg()[0]
    section = render(res)
    if args.no_write:
        print(section)
    else:
        update_benchmarks_md("autoattack_throughput", section)
        print("wrote section to BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
