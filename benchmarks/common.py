"""Shared plumbing of the side-by-side benchmarks: machine description, load
checks, a child-process worker protocol, and updating one section of BENCHMARKS.md.

Benchmark scripts run as ``python benchmarks/<name>.py`` (this directory is then
on ``sys.path``) and import what they need from here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


# ----------------------------------------------------------------------------
# Machine and load
# ----------------------------------------------------------------------------



# The victims of every benchmark: 10 classes, CIFAR-10 normalisation constants (as nas_jax.data uses).
NUM_CLASSES = 10
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)

def loadavg() -> tuple[float, float, float]:
    return tuple(float(v) for v in Path("/proc/loadavg").read_text().split()[:3])


def wait_for_quiet(threshold: float, max_wait: float, poll: float = 15.0) -> tuple[float, float]:
    """Poll the 1-minute load average until it is below ``threshold``; return (load, waited_s)."""
    t0 = time.monotonic()
    while True:
        one = loadavg()[0]
        waited = time.monotonic() - t0
        if one < threshold or waited >= max_wait:
            return one, waited
        print(f"  load average {one:.2f} >= {threshold}; waiting ({waited:.0f}/{max_wait:.0f} s)", flush=True)
        time.sleep(min(poll, max_wait - waited))


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds used by this process's finished children (the benchmark workers)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(packages: tuple[str, ...] = ("jax", "jaxlib", "flax", "torch")) -> dict:
    """Installed versions of ``packages`` ('not installed' where missing) and Python's."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = platform.python_version()
    return out


# ----------------------------------------------------------------------------
# Child-process workers: one framework and one model per process, so that the
# two sides never share a process (threads, allocator, compilation caches)
# ----------------------------------------------------------------------------


def serve(info: dict, run) -> None:
    """Worker side: print ``info`` as one JSON line, then answer each stdin line
    ``run [N]`` with {"t": seconds of ``run(N)``} (N defaults to 1); stop at ``quit``
    or end of input."""
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        t0 = time.perf_counter()
        run(int(cmd[1]) if len(cmd) > 1 else 1)
        print(json.dumps({"t": time.perf_counter() - t0}), flush=True)


class Worker:
    """Parent side: a child process running ``script`` with ``argv`` that speaks :func:`serve`."""

    def __init__(self, script: str | Path, argv: list[str], name: str):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(script), *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"{self.name} exited (code {self.proc.wait()}); see its stderr above")

    def run(self, n: int = 1) -> float:
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        return self._read()["t"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def alternate(make_a, make_b, reps: int, n: int = 1) -> tuple[dict, dict]:
    """Start worker A then worker B (compilation/warm-up one after the other), then
    alternate their timed repetitions (A, B, A, B, ...) so that slow drifts in the
    background load hit both sides alike. Returns each side's info with ``times``."""
    a = make_a()
    try:
        b = make_b()
        try:
            ta, tb = [], []
            for _ in range(reps):
                ta.append(a.run(n))
                tb.append(b.run(n))
        finally:
            b.close()
    finally:
        a.close()
    return {**a.info, "times": ta}, {**b.info, "times": tb}


# ----------------------------------------------------------------------------
# BENCHMARKS.md: each script owns one section between HTML comment markers
# ----------------------------------------------------------------------------


def markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


SECTIONS_ENV = "NAS_JAX_BENCH_SECTIONS"  # set (a folder): sections go to {folder}/{name}.md, not BENCHMARKS.md


def publish(name: str, lines: list[str], write: bool) -> None:
    """Print the section ``lines`` (markers included) and, with ``write`` or under benchmarks/gpu_suite.sh, store
    it (:func:`update_benchmarks_md`)."""
    section = "\n".join(lines) + "\n"
    print(section)
    if write or SECTIONS_ENV in os.environ:
        update_benchmarks_md(name, section)


def update_benchmarks_md(name: str, section: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name``; ``section`` must start and end with its markers.

    With ``$NAS_JAX_BENCH_SECTIONS`` set (benchmarks/gpu_suite.sh), the section is written to
    ``$NAS_JAX_BENCH_SECTIONS/{name}.md`` instead; ``benchmarks/merge_sections.py`` merges such a folder later.
    """
    begin, end = markers(name)
    if not (section.startswith(begin) and section.rstrip().endswith(end)):
        raise ValueError(f"a section for {name!r} must start with {begin!r} and end with {end!r}")
    if os.environ.get(SECTIONS_ENV):
        folder = Path(os.environ[SECTIONS_ENV])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.md").write_text(section.rstrip("\n") + "\n")
        return
    text = path.read_text() if path.exists() else ""
    if not text.strip():
        text = ("# Benchmarks\n\nEach section names the command that produced it (from the repository root "
                "with the project's venv; `pip install -e .[bench]` for the PyTorch side).\n\n")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.write_text(text)
