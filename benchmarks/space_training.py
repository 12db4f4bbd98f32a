"""Training genotypes of the DARTS space through the zoo: the one program of their shape (``arch.space_network``)
against one network per genotype (the default), as the space study's train cells do.

Each path runs in a fresh process with its own empty zoo and compilation cache (the launcher's settings: programs
compiled in under 0.5 s are not stored) and trains ``--genotypes`` genotypes, darts and then random ones of the
space, one after the other with ``zoo.get_or_train`` at the quick recipe (digits, 8 epochs, C=8, 5 cells). Per
genotype: the wall seconds, the programs it asked for and how many the persistent cache served, and the
training images per second after the first epoch. The one program's first genotype compiles the shape's
programs; every later genotype loads them.

    python benchmarks/space_training.py                      # 4 genotypes per path, writes BENCHMARKS.md
    python benchmarks/space_training.py --smoke --no-write   # C=2, 3 cells, 1 epoch, 2 genotypes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model, loadavg, markers, publish

NAME = "space_training"
PATHS = {"space": "one program per shape (SpaceNetwork)", "genotype": "one network per genotype (DartsNetwork)"}


def worker(mode: str, genotypes: int, smoke: bool, folder: Path) -> list[dict]:
    """Train the genotypes in this process (``mode``: 'space' or 'genotype'); one row per genotype."""
    import jax

    from nas_jax.config import base_config
    from nas_jax.data import load_dataset
    from nas_jax.models import space
    from nas_jax.search.genotype import save_genotype
    from nas_jax.search.random_search import random_genotypes
    from nas_jax.train import zoo

    events: list[str] = []
    jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
    c = base_config("train", "quick")
    c.zoo_dir, c.arch.space_network = str(folder / "zoo"), mode == "space"
    if smoke:
        c.arch.init_channels, c.arch.layers, c.train.epochs = 2, 3, 1
    names = ["darts"]
    for i, g in enumerate(random_genotypes(0, genotypes - 1, ops=space.SPACE_OPS)):
        save_genotype(g, folder / f"random_{i}.json")
        names.append(f"genotype:{folder / f'random_{i}.json'}")
    dataset = load_dataset("digits")
    rows = []
    for name in names:
        start, t0 = len(events), time.perf_counter()
        entry = zoo.get_or_train(c, name, dataset, progress=False)
        asked = events[start:]
        later = [r["images_per_s"] for r in entry.log[1:]] or [entry.log[0]["images_per_s"]]
        rows.append({"model": Path(name).stem, "seconds": time.perf_counter() - t0,
                     "programs": asked.count("/jax/compilation_cache/compile_requests_use_cache"),
                     "cache_hits": asked.count("/jax/compilation_cache/cache_hits"),
                     "images_per_s": statistics.median(later), "test_accuracy": entry.test_accuracy})
        print(f"  {mode}: {rows[-1]}", flush=True)
    return rows


def run_path(mode: str, a) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(Path(tmp) / "xla"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
        out = Path(tmp) / "rows.json"
        subprocess.run([sys.executable, __file__, "--worker", mode, "--out", str(out), "--genotypes",
                        str(a.genotypes), *(["--smoke"] if a.smoke else [])], env=env, check=True)
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--genotypes", type=int, default=4)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--worker", choices=tuple(PATHS), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.smoke:
        a.genotypes = 2
    if a.worker:
        with tempfile.TemporaryDirectory() as folder:
            rows = worker(a.worker, a.genotypes, a.smoke, Path(folder))
        Path(a.out).write_text(json.dumps(rows))
        return
    import jax

    load_before = loadavg()[0]
    results = {mode: run_path(mode, a) for mode in PATHS}
    load_after = loadavg()[0]
    machine = f"{cpu_model()}, {jax.device_count()} × {jax.devices()[0].platform}, jax {jax.__version__}"
    command = f"`python benchmarks/space_training.py{' --smoke' if a.smoke else ''} --genotypes {a.genotypes}`"
    scale = "C=2, 3 cells, 1 epoch" if a.smoke else "the quick recipe: C=8, 5 cells, 8 epochs, batch 96"
    lines = [markers(NAME)[0], f"## Training genotypes: one program vs one network per genotype ({NAME})", "",
             (f"{command} — {machine}; load average {load_before:.2f} before, {load_after:.2f} after. Digits, "
              f"{scale}; each path in a fresh process with an empty zoo and compilation cache, the genotypes trained "
              "one after the other through the zoo."), "",
             "| path | genotype | s | programs (cache hits) | images/s | test accuracy |", "|---|---|---|---|---|---|"]
    for mode, rows in results.items():
        lines += [f"| {PATHS[mode]} | {r['model']} | {r['seconds']:.1f} | {r['programs']} ({r['cache_hits']}) | "
                  f"{r['images_per_s']:.0f} | {r['test_accuracy']:.3f} |" for r in rows]
    later = {mode: statistics.mean(r["seconds"] for r in rows[1:]) for mode, rows in results.items()}
    first = {mode: rows[0]["seconds"] for mode, rows in results.items()}
    lines += ["", (f"After the first genotype, a genotype takes **{later['space']:.0f} s** in the one program and "
                   f"{later['genotype']:.0f} s as its own network (ratio {later['space'] / later['genotype']:.2f}); "
                   f"the first takes {first['space']:.0f} s and {first['genotype']:.0f} s."), markers(NAME)[1]]
    publish(NAME, lines, write=not a.no_write)


if __name__ == "__main__":
    main()
