"""The shared config schema and its two presets, plus validation.

Every ``configs/<task>.py`` starts from :func:`base_config` and adds its own
section. ``quick``: CPU minutes on the bundled ``digits`` data with small
widths. ``paper``: the study's settings on CIFAR-10 (Table 5, PROTOCOL §d).
Configs hold primitives only; names resolve through the registries.
"""

from __future__ import annotations

import ml_collections

PRESETS = ("quick", "paper")


def base_config(task: str, preset: str = "quick") -> ml_collections.ConfigDict:
    preset = preset or "quick"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {PRESETS} (e.g. --config=configs/{task}.py:paper).")
    quick = preset == "quick"
    c = ml_collections.ConfigDict()
    c.task = task
    c.preset = preset
    c.seed = 0
    c.dataset = "digits" if quick else "cifar10"
    c.data_dir = ""  # '' -> the dataset's default directory ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    c.model = "darts"
    c.zoo_dir = "zoo"  # trained victims: {zoo_dir}/{dataset}/{model}/{preset}/
    c.jit_cache_dir = "~/.cache/nas_jax/xla"  # JAX's persistent compilation cache ('' disables)

    c.arch = ml_collections.ConfigDict()
    c.arch.init_channels = 8 if quick else 36  # C (NAS models)
    c.arch.layers = 5 if quick else 20  # L cells (NAS models)
    c.arch.auxiliary = False  # auxiliary head (§b.4), off as in the artifact
    c.arch.aux_weight = 0.4
    # per-op dropout of the artifact (§b.4). quick: off — on a C=8 network trained 12 epochs it
    # shifts the BN variance between train and eval mode (test accuracy 88% instead of 98% for darts).
    c.arch.dropout = 0.0 if quick else 0.2
    c.arch.drop_path = False
    c.arch.drop_path_prob = 0.2
    c.arch.width_multiplier = 0.25 if quick else 1.0  # manual models
    c.arch.conv_impl = "auto"  # 'auto' | 'xla' | 'shifted' (depthwise/pointwise implementation)

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 8 if quick else 600
    c.train.batch_size = 96
    c.train.lr = 0.05 if quick else 0.025  # quick: few epochs on 1.4k images
    c.train.lr_schedule = "cosine"
    c.train.momentum = 0.9
    c.train.weight_decay = 5e-4
    c.train.grad_clip = 5.0
    c.train.crop_padding = 4
    c.train.flip = not quick  # a mirrored digit is another symbol
    c.train.cutout = 0 if quick else 16  # quick: a 16-px hole erases half a digit
    c.train.eval_batch_size = 500
    c.train.eval_every_epochs = 1
    c.train.checkpoint_every_steps = 0  # 0: checkpoint at epoch ends only
    c.train.data_slices = 0  # 0: one slice per process
    # Per-model overrides of train fields, applied when a victim is trained into the zoo (and part
    # of its spec). quick: VGG's N(0, 0.01) classifier needs 12 epochs to leave its saddle
    # (docs/sharp_edges.md). Edit in a config file, e.g. c.train_overrides.densenet = {"epochs": 20}.
    c.train_overrides = ml_collections.ConfigDict({"vgg": {"epochs": 12}} if quick else {})

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """Fail early, with the valid choices, on names and values that cannot work."""
    from nas_jax.data import DATASETS
    from nas_jax.models.ops import CONV_IMPLS
    from nas_jax.models.registry import model_family

    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; valid: {PRESETS}.")
    if config.dataset not in DATASETS and not config.dataset.startswith("npz:"):
        raise ValueError(f"unknown dataset {config.dataset!r}; valid: {list(DATASETS)} or npz:PATH.")
    for name in config.get("models", None) or [config.model]:
        model_family(name)
    if config.arch.conv_impl not in CONV_IMPLS:
        raise ValueError(f"unknown arch.conv_impl {config.arch.conv_impl!r}; valid: {CONV_IMPLS}.")
    t = config.train
    checks = [
        (t.epochs >= 1, "train.epochs must be >= 1"),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.lr > 0, "train.lr must be > 0"),
        (0 <= t.momentum < 1, "train.momentum must be in [0, 1)"),
        (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (t.grad_clip >= 0, "train.grad_clip must be >= 0 (0 disables clipping)"),
        (t.cutout >= 0 and t.crop_padding >= 0, "train.cutout and train.crop_padding must be >= 0"),
        (0 <= config.arch.dropout < 1, "arch.dropout must be in [0, 1)"),
        (config.arch.init_channels >= 1 and config.arch.width_multiplier > 0, "arch widths must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"invalid config: {message}.")
    for name, fields in config.get("train_overrides", {}).items():
        model_family(name)
        unknown = sorted(set(fields) - set(t))
        if unknown:
            raise ValueError(f"train_overrides.{name}: unknown train fields {unknown}; valid: {sorted(t)}.")
