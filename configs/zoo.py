"""Parameter counts and cell metrics of the whole zoo (Table 3 + counts).

  python launch/main.py --config=configs/zoo.py

Writes {workdir}/zoo.json; seconds on a CPU (shapes only). Expected: darts
3,349,342 and resnet 11,173,962 parameters at C=36, 20 layers, 10 classes.
"""

import ml_collections

from nas_jax.config import base_config


def get_config(preset: str = "quick"):
    c = base_config("zoo", preset)
    c.zoo = ml_collections.ConfigDict()
    c.zoo.models = ()  # () -> every model of the registry
    c.zoo.init_channels = 36
    c.zoo.layers = 20
    c.zoo.num_classes = 10
    c.zoo.auxiliary = False
    return c
