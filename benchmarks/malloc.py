"""Whole quick trainings under glibc's malloc and under TCMalloc, alternated in one run.

The launcher preloads TCMalloc when the machine has it (launch/main.py, ``_preload_tcmalloc``);
``NAS_JAX_MALLOC=system`` keeps glibc's malloc. Each repetition trains the quick darts victim
(``configs/train.py``: digits, C=8, 5 cells, 8 epochs) into a fresh zoo, once per allocator, with a shared warm
compilation cache (one untimed warm-up run fills it). Reports the wall time, the kernel (system) CPU time and
minor page faults of each run, the training's images/s, and the ratio glibc / TCMalloc of the median wall times.

    python benchmarks/malloc.py                  # 2 repetitions per allocator, about 6 minutes on 2 cores
    python benchmarks/malloc.py --reps 1 --no-write
"""

from __future__ import annotations

import argparse
import ctypes.util
import datetime as dt
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model, loadavg, update_benchmarks_md, versions

NAME = "malloc"
ROOT = Path(__file__).resolve().parents[1]
ALLOCATORS = {"glibc": "system", "tcmalloc": "tcmalloc"}


def train_once(allocator: str, tmp: Path, tag: str) -> dict:
    """One launcher training of the quick darts victim into a fresh zoo; wall, system CPU, faults, images/s."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "launch/main.py", "--config=configs/train.py", "--config.model=darts",
         f"--workdir={tmp / tag}", f"--config.zoo_dir={tmp / tag / 'zoo'}", f"--config.jit_cache_dir={tmp / 'xla'}"],
        cwd=ROOT, env={**os.environ, "NAS_JAX_MALLOC": ALLOCATORS[allocator]}, capture_output=True, text=True,
        check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"training under {allocator} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    row = re.search(r"^darts\s+nas\s+\d+\s+[\d.]+\s+([\d.]+)\s+(\d+)\s*$", out.stdout, re.M)
    return {"wall": wall, "sys": after.ru_stime - before.ru_stime, "user": after.ru_utime - before.ru_utime,
            "faults": after.ru_minflt - before.ru_minflt, "test_accuracy": float(row.group(1)),
            "images_per_s": float(row.group(2))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    if ctypes.util.find_library("tcmalloc_minimal") is None and ctypes.util.find_library("tcmalloc") is None:
        sys.exit("TCMalloc is not installed (e.g. `sudo apt install libtcmalloc-minimal4`); nothing to compare.")
    load_before = loadavg()[0]
    runs = {name: [] for name in ALLOCATORS}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        train_once("tcmalloc", tmp, "warmup")  # fills the compilation cache
        for rep in range(a.reps):
            for name in ALLOCATORS if rep % 2 == 0 else reversed(list(ALLOCATORS)):
                runs[name].append(train_once(name, tmp, f"{name}{rep}"))
                r = runs[name][-1]
                print(f"{name} rep {rep}: {r['wall']:.1f} s wall, {r['sys']:.1f} s system, {r['faults']:,} faults, "
                      f"{r['images_per_s']:.0f} images/s", flush=True)
    med = {n: statistics.median(r["wall"] for r in rs) for n, rs in runs.items()}
    accuracies = {r["test_accuracy"] for rs in runs.values() for r in rs}
    rows = "\n".join(
        f"| {n} | {med[n]:.1f} | {statistics.median(r['sys'] for r in rs):.1f} | "
        f"{statistics.median(r['user'] for r in rs):.1f} | {statistics.median(r['faults'] for r in rs):,.0f} | "
        f"{statistics.median(r['images_per_s'] for r in rs):.0f} |" for n, rs in runs.items())
    v = versions(("jax", "jaxlib"))
    section = f"""<!-- BEGIN {NAME} -->
## Memory allocator: glibc malloc vs TCMalloc (benchmarks/malloc.py)

Command: `python benchmarks/malloc.py --reps {a.reps}`

The quick darts training (`python launch/main.py --config=configs/train.py --config.model=darts`: digits, C=8,
5 cells, 8 epochs) into a fresh zoo, {a.reps} run(s) per allocator alternated, compilation cache warm. Medians.

| allocator | wall s | system CPU s | user CPU s | minor page faults | images/s |
|---|---:|---:|---:|---:|---:|
{rows}

Ratio glibc / TCMalloc (wall): **{med['glibc'] / med['tcmalloc']:.2f}x**. Test accuracy of every run:
{sorted(accuracies)} (one value: the allocator does not change the numbers).

- Date (UTC): {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}
- Machine: {cpu_model()}, {os.cpu_count()} cores; {platform.system()} {platform.machine()}
- Versions: jax {v['jax']}, jaxlib {v['jaxlib']}, Python {v['python']}
- Load average (1 min) before: {load_before:.2f}

Why: under glibc, allocations above its mmap threshold (at most 32 MiB) are mapped on every call and
returned on free, so XLA's large per-step buffers are page-faulted in again at every step (the kernel time
above); glibc's tunables (mmap/trim thresholds, arena count) did not change the fault count. TCMalloc keeps
freed memory for reuse. The launcher preloads it when present; `NAS_JAX_MALLOC=system` opts out.
<!-- END {NAME} -->
"""
    print(section)
    if not a.no_write:
        update_benchmarks_md(NAME, section)


if __name__ == "__main__":
    main()
