"""Table 3 (cell depth, width, #skip connects) and cell drawings (§5.1, Table 3; docs/protocol.md §c.4).

  python launch/main.py --config=configs/cells.py
  python launch/main.py --config=configs/cells.py --config.cells.genotypes="('darts','genotype:my_cell.json')"

Seconds on a CPU (no models are built). Prints the computed normal-cell depth, widths W1/W2/W3 and #skip
(plus the reduction cell's depth and #skip) next to the paper's Table 3 values, and the averages (paper
text: depth 2.8, width 3.3c; the table itself gives 26/9 = 2.89). Output: `task: "cells"` records and
{workdir}/figures/cells/<genotype>.png. Expected: depth matches Table 3 for all nine models; only the W3
width reading matches; #skip differs for DARTS (2 vs 3) and NASNet (2 vs 1).
"""

from nas_jax.config import base_config
from nas_jax.tasks.cells import CellsSettings


def get_config(preset: str = "quick"):
    c = base_config("cells", preset)
    c.cells = CellsSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/cells.py
    return c
