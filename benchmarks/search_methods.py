"""ms/step of every NAS searcher against DARTS first order, on the same supernet and batches.

  python benchmarks/search_methods.py                     # the quick search's supernet (C=4, 3 cells, 4 ops, 8x8)
  python benchmarks/search_methods.py --tiny --no-write   # a smoke run (C=2, 1 cell, 8x8)
  python benchmarks/search_methods.py --channels 16 --layers 8 --batch 64 --size 32 --ops all   # the §g size (GPU)
  python benchmarks/search_methods.py --channels 16 --layers 8 --batch 64 --size 32 --ops all --reps 2 \
      --conv-impl xla --section search_methods_g   # §g on a CPU: its first step did not compile in 78 min

Every method's step (nas_jax.search.darts.make_search_step with StepConfig.method) is compiled once (compile
time reported apart), then timed over --reps calls (``search_step.measure``); --hypergradient applies to every method but ``random``
(no α update). PC-DARTS needs C divisible by --partial-k.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
from common import ROOT, SECTIONS_ENV, cpu_model, loadavg, markers, update_benchmarks_md, versions
from search_step import measure

sys.path.insert(0, str(ROOT))
from nas_jax.models.searchers import SEARCHERS
from nas_jax.models.supernet import Supernet
from nas_jax.search import darts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="smoke-test settings")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--ops", default="none,max_pool_3x3,skip_connect,sep_conv_3x3", help="comma-separated primitives, or 'all' (the 8 of §g)")
    p.add_argument("--methods", default=",".join(SEARCHERS), help="comma-separated subset of " + ", ".join(SEARCHERS))
    p.add_argument("--hypergradient", default="first_order", choices=darts.HYPERGRADIENTS)
    p.add_argument("--partial-k", type=int, default=4)
    p.add_argument("--conv-impl", default="auto", help="the ops' convolution implementation (nas_jax.models.ops)")
    p.add_argument("--section", default="search_methods", help="BENCHMARKS.md section to write (one per size)")
    p.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    a = p.parse_args(argv)
    methods = a.methods.split(",")
    unknown = set(methods) - set(SEARCHERS)
    if unknown:
        p.error(f"unknown --methods {sorted(unknown)}; choose from {', '.join(SEARCHERS)}")
    c, layers, batch, size, ops, k = a.channels, a.layers, a.batch, a.size, "" if a.ops == "all" else a.ops, a.partial_k
    if a.tiny:
        c, layers, batch, size, ops, k = 2, 1, 8, 8, "none,skip_connect,avg_pool_3x3", 2
    rows = [("darts (first order)", "darts", "first_order")]
    rows += [(m, m, a.hypergradient) for m in methods if (m, a.hypergradient) != ("darts", "first_order")]
    results = []
    for label, method, hg in rows:
        searcher = SEARCHERS[method]
        model = Supernet(10, (0.5,) * 3, (0.25,) * 3, init_channels=c, layers=layers,
                         op_names=tuple(o for o in ops.split(",") if o), searcher=searcher, partial_k=k,
                         conv_impl=a.conv_impl)
        sc = darts.StepConfig(hypergradient=hg, epochs=50, steps_per_epoch=390, searcher=searcher,
                              settings=tuple(sorted(searcher.defaults("paper").items())))
        results.append({"label": label, "hypergradient": hg, **measure(model, sc, batch, size, a.reps)})
        print(results[-1], flush=True)
        text = section(a.section, results, len(rows), batch, size, c, layers, ops, k, model.conv_impl)
        if not a.no_write and (not a.tiny or os.environ.get(SECTIONS_ENV)):  # after every row: a timeout keeps some
            update_benchmarks_md(a.section, text)
    print(text)


def section(name: str, results: list[dict], planned: int, batch: int, size: int, c: int, layers: int, ops: str,
            k: int, conv_impl: str) -> str:
    """The BENCHMARKS.md section ``name`` of the rows measured so far (``planned``: how many were asked for)."""
    base = results[0]["step_ms"]
    begin, end = markers(name)
    vers = ", ".join(f"{k} {v}" for k, v in versions(("jax", "jaxlib", "flax", "optax")).items())
    cmd = " ".join(["python benchmarks/search_methods.py", *sys.argv[1:]])
    where = cpu_model() if jax.default_backend() == "cpu" else jax.devices()[0].device_kind
    lines = [begin, "## NAS searchers' step (`python benchmarks/search_methods.py`)", "",
             (f"Command: `{cmd}`. Device: {where} ({jax.default_backend()}, load average after: {loadavg()[0]:.2f}); "
              f"batch {batch} per half, {size}x{size}, C={c}, {layers} cells, ops {ops or 'all 8'}, "
              f"conv_impl {conv_impl}, PC-DARTS K={k}; {vers}."), "",
             "| method | hypergradient | ms/step | x darts first order | compile s |", "|---|---|---|---|---|"]
    for r in results:
        hg = "none (no α)" if r["label"] == "random" else r["hypergradient"]
        lines.append(f"| {r['label']} | {hg} | {r['step_ms']:.1f} | {r['step_ms'] / base:.2f} | {r['compile_s']:.1f} |")
    if len(results) < planned:
        lines.append(f"\nPartial: {len(results)} of {planned} rows measured (the run stopped early).")
    return "\n".join([*lines, end])

if __name__ == "__main__":
    sys.exit(main())
