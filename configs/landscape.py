"""Loss contours in parameter and input space (§4, Eqns 12–13, Figure 11; docs/protocol.md §f.1–f.2).

  python launch/main.py --config=configs/landscape.py           # quick: digits, darts, snas, resnet, 21x21
  python launch/main.py --config=configs/landscape.py:paper     # CIFAR-10, 20 images, 41x41 grids
  python launch/main.py --config=configs/landscape.py:paper --config.dataset=cifar100   # next row of Fig 11

Trains missing victims into the zoo first. Parameter space: the first convolution's weights along ±1
orthogonal directions on [−0.5, 0.5]² (the authors'; `--config.landscape.directions=filter_normalized`
for Li et al.'s all-layer directions on [−1, 1]², 51x51). Input space: ±1 orthogonal directions per image
on [−0.02, 0.02]² and [−0.2, 0.2]². Output: a smoothness table, `task: "landscape"` records, grids under
{workdir}/landscape/ and figures {workdir}/figures/landscape_*.png (rows: every dataset run into the same
workdir; columns: models). Quick preset: a few minutes on 2 CPU cores once the victims are trained.
Paper result: NAS models (DARTS, ENAS) have flatter contours than ResNet and DenseNet in both spaces.
"""

from nas_jax.config import base_config
from nas_jax.tasks.landscape import LandscapeSettings


def get_config(preset: str = "quick"):
    c = base_config("landscape", preset)
    # Paper (Fig 11): DARTS, ENAS, ResNet, DenseNet. Quick: the pgd quick victims (shared zoo entries).
    c.models = ("darts", "snas", "resnet") if c.preset == "quick" else ("darts", "enas", "resnet", "densenet")
    c.landscape = LandscapeSettings.section(c.preset)  # the settings' defaults: nas_jax/tasks/landscape.py
    return c
