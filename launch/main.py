"""nas_jax launcher: one command per experiment.

  python launch/main.py --config=configs/<task>.py[:preset] [--workdir=DIR] [--config.key=value ...]

Dispatches on ``config.task``; results go to ``{workdir}/results.jsonl``,
figures to ``{workdir}/figures``, TensorBoard events to ``{workdir}/tb``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Task config file, e.g. configs/train.py:quick.", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (default: workdir/<task>).")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; pass options as --config.key=value.")
    from nas_jax import parallel
    from nas_jax.config import validate
    from nas_jax.tasks import get_task

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep orbax's per-checkpoint INFO lines out of the progress bar
    config = flags.FLAGS.config
    d = config.distributed
    parallel.initialize_distributed(d.coordinator_address, d.num_processes, d.process_id)
    parallel.enable_compilation_cache(config.jit_cache_dir)
    validate(config)
    run = get_task(config.task)
    workdir = flags.FLAGS.workdir or str(Path("workdir") / config.task)
    run(config, workdir)


if __name__ == "__main__":
    app.run(main)
