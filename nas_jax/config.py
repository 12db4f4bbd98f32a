"""The shared config schema and its two presets, plus validation.

Every ``configs/<task>.py`` starts from :func:`base_config` and adds its own
section. ``quick``: CPU minutes on the bundled ``digits`` data with small
widths. ``small``: real CIFAR-10 at the reduced scale at which the authors' PyTorch
code was reproduced (NAS C=16, 8 cells, no per-op dropout; manual models at width
0.25; 4 epochs, lr 0.025 cosine, weight decay 3e-4, clip 5, batch 96, crop + flip, no
cutout); task sections not set for it take their paper values. ``paper``: the study's
settings on CIFAR-10 (Table 5, PROTOCOL §d).
Configs hold primitives only; names resolve through the registries.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from nas_jax.errors import UserError

PRESETS = ("quick", "small", "paper")


def base_config(task: str, preset: str = "quick") -> ml_collections.ConfigDict:
    preset = preset or "quick"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {PRESETS} (e.g. --config=configs/{task}.py:paper).")
    quick = preset == "quick"

    def pick(quick_value, small_value, paper_value):
        return {"quick": quick_value, "small": small_value, "paper": paper_value}[preset]

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
    c.arch.init_channels = pick(8, 16, 36)  # C (NAS models)
    c.arch.layers = pick(5, 8, 20)  # L cells (NAS models)
    c.arch.auxiliary = False  # auxiliary head (§b.4), off as in the artifact
    c.arch.aux_weight = 0.4
    # per-op dropout of the artifact (§b.4). quick: off — on a C=8 network trained 12 epochs it
    # shifts the BN variance between train and eval mode (test accuracy 88% instead of 98% for darts).
    c.arch.dropout = pick(0.0, 0.0, 0.2)
    c.arch.drop_path = False
    c.arch.drop_path_prob = 0.2
    c.arch.width_multiplier = pick(0.25, 0.25, 1.0)  # manual models
    c.arch.conv_impl = "auto"  # 'auto' | 'xla' | 'shifted' (depthwise/pointwise implementation)
    # Compute dtype of the activations (issue 13): 'float32' | 'bfloat16'. Parameters, optimiser state, BN
    # statistics, the loss and attack perturbations stay float32; a bfloat16 victim is its own zoo entry.
    c.arch.dtype = "float32"

    c.train = ml_collections.ConfigDict()
    c.train.epochs = pick(8, 4, 600)
    c.train.batch_size = 96
    c.train.lr = 0.05 if quick else 0.025  # quick: few epochs on 1.4k images
    c.train.lr_schedule = "cosine"
    c.train.momentum = 0.9
    c.train.weight_decay = pick(5e-4, 3e-4, 5e-4)
    c.train.grad_clip = 5.0
    c.train.crop_padding = 4
    c.train.flip = not quick  # a mirrored digit is another symbol
    c.train.cutout = pick(0, 0, 16)  # quick: a 16-px hole erases half a digit
    c.train.eval_batch_size = 500
    c.train.eval_every_epochs = 1
    c.train.checkpoint_every_steps = 0  # 0: checkpoint at epoch ends only
    c.train.data_slices = 0  # 0: one slice per process
    # Population training (issue 13): e.g. (0, 1, 2, 3) trains these seeds of a model together (vmap over
    # the model axis), each stored as its own zoo entry; attack/analysis tasks then run once per seed.
    # () -> the single seed ``seed``.
    c.train.seeds = ()
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
    """Fail early (before any data, victim or training), with the valid choices, on names and values that
    cannot work; every failure is a :class:`~nas_jax.errors.UserError`."""
    try:
        _validate(config)
    except UserError:
        raise
    except ValueError as e:  # registries' unknown-name errors
        raise UserError(str(e)) from e


def _validate(config: ml_collections.ConfigDict) -> None:
    from nas_jax.data import DATASETS
    from nas_jax.models.common import compute_dtype
    from nas_jax.models.ops import CONV_IMPLS
    from nas_jax.models.registry import model_family

    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; valid: {PRESETS}.")
    if config.dataset not in DATASETS and not config.dataset.startswith("npz:"):
        raise ValueError(f"unknown dataset {config.dataset!r}; valid: {list(DATASETS)} or npz:PATH.")
    for name in config.get("models", None) or [config.model]:
        model_family(name)
    models = list(config.get("models", None) or [])
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise UserError(f"config.models lists {repeated} more than once ({tuple(models)}); each model would be "
                        "attacked (and reported) twice. List every model once, e.g. "
                        f"--config.models=\"{tuple(dict.fromkeys(models))}\".")
    if config.arch.conv_impl not in CONV_IMPLS:
        raise ValueError(f"unknown arch.conv_impl {config.arch.conv_impl!r}; valid: {CONV_IMPLS}.")
    compute_dtype(config.arch.get("dtype", "float32"))  # UserError listing the valid dtypes
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
            raise UserError(f"invalid config: {message}.")
    validate_sections(config)
    for name, fields in config.get("train_overrides", {}).items():
        model_family(name)
        unknown = sorted(set(fields) - set(t))
        if unknown:
            raise UserError(f"train_overrides.{name}: unknown train fields {unknown}; valid: {sorted(t)}.")


# ----------------------------------------------------------------------------
# Attack and analysis sections (pgd, nes, adv_train, backdoor, membership, ...)
# ----------------------------------------------------------------------------

NORMS = ("linf", "l2")
NOT_SECTIONS = ("arch", "train", "distributed", "train_overrides")


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _named(*names: str, suffixes: tuple[str, ...] = (), prefixes: tuple[str, ...] = ()) -> Callable[[str], bool]:
    return lambda f: f in names or f.endswith(suffixes) or f.startswith(prefixes)


# (which fields, test of one value, what is allowed). Applied to every field of every section whose name
# matches, so a new section (e.g. ``autoattack``) is checked by its field names; append rules for new kinds.
SECTION_RULES: list[tuple[Callable[[str], bool], Callable[[object], bool], str]] = [
    (_named("eps", "eps_grid_255", suffixes=("_eps",)), lambda v: v > 0, "> 0 (a perturbation radius)"),
    (_named("step_size", "sigma", suffixes=("_step_size",)), lambda v: v > 0, "> 0"),
    (_named("iterations", suffixes=("_iterations",), prefixes=("iterations_",)),
     lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    (_named("restarts", suffixes=("_restarts",)), lambda v: isinstance(v, int) and v >= 0,
     "an integer >= 0 (0: one run without a random start)"),
    (_named("batch_size", "chunk_size", "n_inputs", "n_members", "n_nonmembers", suffixes=("_batch_size",)),
     lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    (_named("n_queries"), lambda v: isinstance(v, int) and v >= 2 and v % 2 == 0,
     "an even integer >= 2 (antithetic pairs)", ("nes",)),  # NES only: Square's n_queries is a budget
    (_named("query_budget"), lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: no budget)"),
    (_named("confidence"), lambda v: 0 <= v < 1, "in [0, 1) (0: argmax only)"),
]

def _build_attack_config(name: str, section: ml_collections.ConfigDict) -> None:
    """Build the attack config(s) of section ``name`` with the ``from_config`` its task uses (imported lazily)."""
    from nas_jax.attacks.adversarial_training import TrainingPGDConfig
    from nas_jax.attacks.autoattack import AutoAttackConfig
    from nas_jax.attacks.backdoor import BackdoorConfig
    from nas_jax.attacks.evasion import EvasionConfig
    from nas_jax.attacks.hopskipjump import HSJConfig
    from nas_jax.attacks.nes import NESQueryConfig
    from nas_jax.attacks.poisoning import PoisonConfig
    from nas_jax.attacks.stealing import KnockoffConfig

    if name == "autoattack":
        AutoAttackConfig.from_config(section)
        EvasionConfig.from_config(section, prefix="pgd_")
    elif name == "pgd":
        EvasionConfig.from_config(section)
    elif name == "nes":
        EvasionConfig.from_config(section)
        NESQueryConfig.from_config(section)
    elif name == "adv_train":
        TrainingPGDConfig.from_config(section)
        EvasionConfig.from_config(section, prefix="eval_")
    elif name == "membership":
        HSJConfig.from_config(section)
    elif name == "poison":
        PoisonConfig.from_config(section)
    elif name == "backdoor":
        BackdoorConfig.from_config(section)
    elif name == "stealing":
        for budget in section.get("budgets", ()):
            KnockoffConfig.from_config(section, budget)


def _attack_validator(name: str) -> Callable[[ml_collections.ConfigDict], None]:
    def check(section: ml_collections.ConfigDict) -> None:
        try:
            _build_attack_config(name, section)
        except ValueError as e:
            raise UserError(f"invalid config: {name}: {e} Set it with --config.{name}.FIELD=VALUE.") from e

    return check


# Per-section checks beyond the field rules: SECTION_VALIDATORS[name](section) raises UserError.
SECTION_VALIDATORS: dict[str, Callable[[ml_collections.ConfigDict], None]] = {
    name: _attack_validator(name)
    for name in ("autoattack", "pgd", "nes", "adv_train", "membership", "stealing", "poison", "backdoor")}


def validate_sections(config: ml_collections.ConfigDict) -> None:
    """Check every attack/analysis section by its field names (:data:`SECTION_RULES`), a known ``norm``,
    then the section's own validator, if any: e.g. ``pgd.eps=-1`` fails here, before victims load."""
    for section, body in config.items():
        if section in NOT_SECTIONS or not isinstance(body, ml_collections.ConfigDict):
            continue
        for field, value in body.items():
            if field == "norm" and value not in NORMS:
                raise UserError(f"invalid config: {section}.norm={value!r}; valid norms: {NORMS}.")
            values = value if isinstance(value, tuple | list) else (value,)
            for applies, ok, allowed, *only in SECTION_RULES:  # an optional 4th item: the sections it is for
                if only and section not in only[0]:
                    continue
                if applies(field) and not all(_is_number(v) and ok(v) for v in values):
                    raise UserError(f"invalid config: {section}.{field}={value!r} must be {allowed}; "
                                    f"set it with --config.{section}.{field}=VALUE.")
        if section in SECTION_VALIDATORS:
            SECTION_VALIDATORS[section](body)


def check_override_keys(config: ml_collections.ConfigDict, keys: list[str]) -> None:
    """Refuse command-line overrides (``--config.a.b=...``, given as 'a.b') of keys the config does not
    have, naming the key and the valid ones at that level."""
    for key in keys:
        node, path = config, []
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(path)
                valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                raise UserError(f"unknown config key {key!r}: {where + '.' if where else ''}{part} does not exist. "
                                f"Valid keys{' under ' + repr(where) if where else ''}: {valid}.")
            node, path = node[part], [*path, part]
