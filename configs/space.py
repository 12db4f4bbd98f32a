"""The vulnerability of the whole DARTS search space (beyond the paper; docs/space.md).

  python launch/main.py --config=configs/space.py                                  # quick: digits
  python launch/main.py --config=configs/space.py:small                            # the CIFAR-10 npz, small scale
  python launch/main.py --config=configs/space.py --config.space.n_random=1000 --config.seeds="(0,1,2)"
  python launch/main.py --config=configs/space.py --config.space.shard=1/4         # the 2nd of 4 parts

Samples ``space.n_random`` genotypes of the DARTS space (written as genotype JSON under {workdir}/genotypes),
measures their properties at initialisation in one compiled program per shape, trains and attacks the first
``space.n_trained`` of them and the ``space.named`` NAS cells through the study grid ({workdir}/grid), and
writes {workdir}/report.md: each property's rank correlation with the PGD ASR, the NAS cells' percentiles among
the random cells, and whether their ASR is higher at matched clean accuracy. Resumable: a rerun skips the
genotypes and cells already measured.
"""

from nas_jax.config import base_config
from nas_jax.tasks.space import SpaceSettings


def get_config(preset: str = "quick"):
    c = base_config("space", preset)
    c.space = SpaceSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/space.py
    c.seeds = (0,)
    # The trained cells too run in their shape's one program: no compile per genotype (docs/space.md: on a
    # 2-core CPU about as fast as a network per genotype); False trains each as its own network.
    c.arch.space_network = True
    return c
