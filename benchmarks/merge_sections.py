"""Merge the sections a benchmark run wrote to a folder (``benchmarks/gpu_suite.sh``) into BENCHMARKS.md.

    python benchmarks/merge_sections.py gpu_results/sections            # replaces/appends each section
    python benchmarks/merge_sections.py gpu_results/sections --prefix gpu_   # keep the CPU sections: gpu_{name}

Each ``{name}.md`` must hold one section between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` (what
``common.update_benchmarks_md`` writes under ``$NAS_JAX_BENCH_SECTIONS``). ``--prefix`` renames the markers so
that GPU sections sit next to the CPU ones instead of replacing them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import BENCHMARKS_MD, SECTIONS_ENV, markers, update_benchmarks_md


def merge(folder: Path, target: Path = BENCHMARKS_MD, prefix: str = "") -> list[str]:
    files = sorted(folder.glob("*.md"))
    if not files:
        raise SystemExit(f"no section files (*.md) in {folder}; run benchmarks/gpu_suite.sh first.")
    os.environ.pop(SECTIONS_ENV, None)  # write the target file itself
    names = []
    for f in files:
        name, text = f.stem, f.read_text()
        begin, end = markers(name)
        if not (text.startswith(begin) and text.rstrip().endswith(end)):
            raise SystemExit(f"{f} is not one section: it must start with {begin!r} and end with {end!r}.")
        if prefix:
            new_begin, new_end = markers(prefix + name)
            text = new_begin + text[len(begin):].rstrip().removesuffix(end) + new_end + "\n"
            name = prefix + name
        update_benchmarks_md(name, text, target)
        names.append(name)
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--prefix", default="", help="prefix for the merged section names (e.g. gpu_)")
    p.add_argument("--target", type=Path, default=BENCHMARKS_MD)
    a = p.parse_args(argv)
    print("merged:", ", ".join(merge(a.folder, a.target, a.prefix)), "into", a.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
