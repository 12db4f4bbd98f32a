"""nas_jax launcher: one command per experiment.

  python launch/main.py --config=configs/<task>.py[:preset] [--workdir=DIR] [--config.key=value ...]
  python launch/main.py --config=configs/pgd.py --help     # that config's keys and values

Dispatches on ``config.task``; results go to ``{workdir}/results.jsonl``,
figures to ``{workdir}/figures``, TensorBoard events to ``{workdir}/tb``. Float settings take
arithmetic as papers write it: ``--config.pgd.eps=4/255``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string("workdir", None, "Output directory (default: workdir/<task>).")
CONFIG = []  # the loaded config (nas_jax.config.load of --config and its --config.KEY=VALUE overrides)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; pass options as --config.key=value.")
    from nas_jax.errors import UserError

    try:
        _run()
    except UserError as e:
        if flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1:
            raise  # the full traceback
        _fail(str(e))


def _warning_line(message, category, *_args, **_kwargs) -> str:
    """Our warnings (input checks, damaged files being repaired) as one line, not Python's two with source."""
    return f"warning: {message}\n" if issubclass(category, UserWarning) else f"{category.__name__}: {message}\n"


def _run():
    import warnings

    warnings.formatwarning = _warning_line
    from nas_jax import parallel
    from nas_jax.report.results import check_workdir
    from nas_jax.tasks import check_config, run_task

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep orbax's per-checkpoint INFO lines out of the progress bar
    config = CONFIG[0]
    d = config.distributed
    parallel.initialize_distributed(d.coordinator_address, d.num_processes, d.process_id)
    parallel.enable_compilation_cache(config.jit_cache_dir)
    _start_backend()
    check_config(config)  # the shared checks and the task's own settings, before any work
    workdir = flags.FLAGS.workdir or str(Path("workdir") / config.task)
    check_workdir(workdir)  # before any training or attack: an unusable workdir fails now
    run_task(config, workdir)


def _start_backend() -> None:
    """Start JAX's backend now: one that cannot start (e.g. JAX_PLATFORMS=tpu on a CPU machine) is a UserError."""
    import jax

    from nas_jax.errors import UserError

    try:
        jax.devices()
    except RuntimeError as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        requested = os.environ.get("JAX_PLATFORMS", "")
        jax.config.update("jax_platforms", None)  # let JAX find what this machine has, to name it in the fix
        try:
            available = ", ".join(sorted({dev.platform for dev in jax.devices()}))
        except RuntimeError:
            available = "none could start"
        if requested:
            raise UserError(f"JAX could not start the backend requested by JAX_PLATFORMS={requested} ({reason}). "
                            "Unset JAX_PLATFORMS or set it to one of the platforms this machine has "
                            f"({available}).") from e
        raise UserError(f"JAX could not start its backend ({reason}). Platforms this machine has: {available}; "
                        "set JAX_PLATFORMS to one of them, or reinstall jax/jaxlib for this machine.") from e


def _fail(message: str) -> None:
    print(f"error: {message}\n(Run with --verbosity=1 for the full traceback.)", file=sys.stderr)
    sys.exit(2)


HELP_FLAGS = ("--help", "-h", "-help", "--helpshort", "-?")


def _usage(spec: str | None) -> str:
    """What --help prints: how to run, the tasks and presets, and the keys of the config given (if any)."""
    from nas_jax.config import PRESETS
    from nas_jax.config_loader import load
    from nas_jax.tasks import TASKS

    text = [__doc__.strip(), "", "tasks (configs/<task>.py): " + ", ".join(sorted(TASKS)),
            "presets (--config=configs/<task>.py:PRESET): " + ", ".join(PRESETS) + " (default quick)",
            "flags: --config=FILE[:preset] (required), --workdir=DIR (default workdir/<task>), "
            "--config.KEY=VALUE (any key below), --verbosity=1 (full tracebacks)"]
    if spec is not None:
        text += ["", f"keys of {spec} (set with --config.KEY=VALUE):", str(load(spec))]
    else:
        text += ["", "The keys of a config: python launch/main.py --config=configs/pgd.py --help"]
    return "\n".join(text)


def _parse_flags(argv):
    """``--config=FILE[:preset]`` and its ``--config.KEY=VALUE`` overrides go to the one config loader
    (:func:`nas_jax.config.load`), the other flags to absl. ``--help`` prints :func:`_usage` and exits 0."""
    from nas_jax.config_loader import load, split_argv
    from nas_jax.errors import UserError

    spec, overrides, rest = split_argv(argv[1:])
    if any(a in HELP_FLAGS for a in rest):
        try:
            print(_usage(spec))
        except Exception as e:  # a config that does not load: say so, still exit 0 with the general help
            print(_usage(None) + f"\n\n(could not load {spec}: {e})")
        sys.exit(0)
    rest = app.parse_flags_with_usage([argv[0], *rest])
    if spec is None:
        _fail("--config=FILE[:preset] is required, e.g. --config=configs/pgd.py (python launch/main.py --help).")
    try:
        CONFIG.append(load(spec, overrides))
    except UserError as e:
        _fail(str(e))
    return rest


MALLOC_ENV = "NAS_JAX_MALLOC"  # 'system' keeps the C library's malloc


def _preload_tcmalloc() -> None:
    """Restart this process with TCMalloc preloaded when the machine has it (``apt install libtcmalloc-minimal4``).

    Under glibc's malloc, XLA's large per-step buffers on CPU are mapped and page-faulted in again at every
    step: a quick darts training spent 43 s of its 129 CPU-seconds in the kernel and ran 1.5x slower
    (BENCHMARKS.md, benchmarks/malloc.py). Results are bit-identical. ``NAS_JAX_MALLOC=system`` turns this off."""
    import ctypes.util

    if os.environ.get(MALLOC_ENV, "tcmalloc") != "tcmalloc" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    library = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    if library is None:
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD", "")]))
    env = {**os.environ, "LD_PRELOAD": preload, MALLOC_ENV: "tcmalloc",
           "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": os.environ.get("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD",
                                                                   str(1 << 40))}
    os.execve(sys.executable, sys.orig_argv, env)  # the same command, interpreter options included


if __name__ == "__main__":
    _preload_tcmalloc()
    app.run(main, flags_parser=_parse_flags)
