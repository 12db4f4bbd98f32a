"""FGSM against the zoo's victims: a task from outside the package (docs/extending.md).

  python launch/main.py --config=examples/custom_attack/config.py
  python launch/main.py --config=configs/study.py \
      --config.study.tasks="('train','pgd','examples/custom_attack/config.py')"

``task_module`` names the file that defines the task; its settings class gives the section's defaults.
"""

from pathlib import Path

from nas_jax.config import base_config
from nas_jax.models.registry import paper_zoo
from nas_jax.tasks import task_from_file

TASK_MODULE = Path(__file__).with_name("fgsm.py")


def get_config(preset: str = "quick"):
    c = base_config("fgsm", preset)
    c.task_module = str(TASK_MODULE)
    c.models = ("darts", "snas", "resnet", "vgg") if c.preset == "quick" else paper_zoo()
    c.fgsm = task_from_file(TASK_MODULE).settings.section(c.preset)
    return c
