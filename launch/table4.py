"""Table 4 of a workdir's records, one row per victim, its columns those of the registered tasks (§5.2).

  python launch/table4.py WORKDIR [--models darts,darts_i] [--out table4.md]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_jax.report.summary import main, summaries
from nas_jax.tasks import study_metrics

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], summaries(study_metrics())))
