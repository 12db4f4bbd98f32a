"""Model registry: every zoo name resolves here (docs/protocol.md §c).

NAS models are the DARTS evaluation network with a stored genotype (``darts``, ``enas``, ...) or a user genotype
(``genotype:PATH``); manual models are the seven of ``nas_jax.models.manual``. Unknown names list the valid ones.
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn

from nas_jax.models import genotypes
from nas_jax.models.common import compute_dtype
from nas_jax.models.darts import DartsNetwork
from nas_jax.models.manual import MANUAL_MODELS
from nas_jax.models.space import SpaceNetwork, program_ops

# The 7 manual models of the study (§c.3), in the paper's Table 1 order.
MANUAL_ZOO = ("bit", "densenet", "dla", "resnet", "resnext", "vgg", "wideresnet")


def nas_names() -> tuple[str, ...]:
    """Every stored genotype, with DARTS V2 listed under its study name 'darts'."""
    return tuple("darts" if n == "darts_v2" else n for n in genotypes.zoo_names())


def model_names() -> tuple[str, ...]:
    return nas_names() + MANUAL_ZOO


def paper_zoo() -> tuple[str, ...]:
    """The 17 models of the study: 10 NAS (§c.1) + 7 manual (§c.3)."""
    return genotypes.paper_nas_zoo() + MANUAL_ZOO


def display_name(name: str) -> str:
    """A model's label in tables and figures: its zoo name, or a genotype file's stem (the folder's name for the
    ``genotype.json`` every search writes)."""
    if not name.startswith("genotype:"):
        return name
    path = Path(name.removeprefix("genotype:"))
    return path.parent.name or path.stem if path.stem == "genotype" else path.stem


def model_family(name: str) -> str:
    """'nas' or 'manual'; raises with the valid names for anything else."""
    if name in MANUAL_MODELS:
        return "manual"
    if genotypes.is_genotype_name(name):
        return "nas"
    raise ValueError(
        f"unknown model {name!r}; valid models: {list(model_names())} (aliases: "
        f"{sorted(genotypes._data()['aliases'])}), or genotype:PATH for a JSON genotype file."
    )


def build_model(name: str, *, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                init_channels: int = 36, layers: int = 20, auxiliary: bool = False, dropout: float = 0.2,
                drop_path: bool = False, width_multiplier: float = 1.0, conv_impl: str = "auto",
                dtype: str = "float32", space_network: bool = False) -> nn.Module:
    """Build a zoo model. NAS knobs: init_channels (C), layers (L), auxiliary,
    dropout (per-op), drop_path, and ``space_network``: the genotype runs in the one program of its shape
    (:class:`~nas_jax.models.space.SpaceNetwork`: the same network, initialised differently). Manual knob:
    width_multiplier. Both: ``dtype`` ('float32' | 'bfloat16'), the compute dtype of the activations
    (parameters, BN statistics and logits stay float32)."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    dt = compute_dtype(dtype)
    if model_family(name) == "manual":
        return MANUAL_MODELS[name](num_classes=num_classes, mean=mean, std=std, width_multiplier=width_multiplier,
                                   dtype=dt)
    if layers < 3:
        raise ValueError(f"a NAS network needs at least 3 layers (two are reduction cells), got {layers}.")
    g = genotypes.get_genotype(name)
    kwargs = {"init_channels": init_channels, "layers": layers, "auxiliary": auxiliary, "dropout": dropout,
              "use_drop_path": drop_path, "conv_impl": conv_impl, "dtype": dt}
    if space_network:
        return SpaceNetwork(g, num_classes=num_classes, mean=mean, std=std, space_ops=program_ops([g]), **kwargs)
    return DartsNetwork(g, num_classes=num_classes, mean=mean, std=std, **kwargs)


# The fields of a config's ``arch`` section that are build_model's arguments of the same name.
ARCH_FIELDS = ("init_channels", "layers", "auxiliary", "dropout", "drop_path", "width_multiplier", "conv_impl")


def build_from_config(name: str, arch, num_classes: int, mean, std) -> nn.Module:
    """Build from a config's ``arch`` section (see configs/common.py)."""
    # configs stored before mixed precision have no arch.dtype, before the space network no arch.space_network
    return build_model(name, num_classes=num_classes, mean=mean, std=std, dtype=arch.get("dtype", "float32"),
                       space_network=arch.get("space_network", False), **{field: arch[field] for field in ARCH_FIELDS})
