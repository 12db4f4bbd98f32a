"""The shared config schema and its two presets, plus validation.

Every ``configs/<task>.py`` starts from :func:`base_config` and adds its own section. ``quick``: CPU minutes on
the bundled ``digits`` data at small widths. ``small``: CIFAR-10 at the reduced scale of the authors' PyTorch
reproduction (NAS C=16, 8 cells; manual width 0.25; 4 epochs, lr 0.025 cosine, wd 3e-4, clip 5, batch 96, crop +
flip, no cutout), other task settings at their paper values. ``paper``: CIFAR-10, Table 5 (docs/protocol.md §d).
Configs hold primitives only; names resolve through the registries.
"""

from __future__ import annotations

import math
import warnings
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
    # The seeds a measurement is repeated over: the task runs once per seed (its records per seed, then
    # each model's mean and interval over them); the study grid's seeds. () -> the single seed ``seed``.
    c.seeds = ()
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
    # Compute dtype of the activations: 'float32' | 'bfloat16'. Parameters, optimiser state, BN
    # statistics, the loss and attack perturbations stay float32; a bfloat16 victim is its own zoo entry.
    c.arch.dtype = "float32"
    # NAS genotypes in the one compiled program of their shape (models/space.py): every genotype of a shape
    # shares its train step, evaluation and attacks instead of compiling its own. Other initial weights than
    # the per-genotype network's, so its own zoo entry ({preset}_space). docs/space.md says where it pays.
    c.arch.space_network = False

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
    # An execution switch: the victims of several seeds (``seeds``) train together in one compiled program
    # (vmap over the seed axis), each stored as its own zoo entry; False trains them one after another. The
    # weights are the same either way (tests/test_population.py).
    c.train.population = True
    # Per-model overrides of train fields, applied when a victim is trained into the zoo (and part
    # of its spec). quick: VGG's N(0, 0.01) classifier needs 12 epochs to leave its saddle
    # (docs/sharp_edges.md). Edit in a config file, e.g. c.train_overrides.densenet = {"epochs": 20}.
    c.train_overrides = ml_collections.ConfigDict({"vgg": {"epochs": 12}} if quick else {})

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    return c


def validate(config: ml_collections.ConfigDict, victims: tuple[str, ...] = (), needs_victims: bool = True,
             trains: float = 1.0) -> None:
    """Fail early (before any data, victim or training), with the valid choices, on names and values that cannot
    work (:class:`~nas_jax.errors.UserError`); cheap (genotype files parsed, npz headers read); values that look wrong
    are warned about. ``victims``: more model names to check; ``needs_victims``: False skips their depth check;
    ``trains``: the task's share of the training set (0: no batch size, budget or input-count checks)."""
    try:
        _validate(config, victims, needs_victims, trains)
    except UserError:
        raise
    except ValueError as e:  # registries' unknown-name errors
        raise UserError(str(e)) from e


def _validate(config: ml_collections.ConfigDict, victims: tuple[str, ...], needs_victims: bool,
              trains: float) -> None:
    from nas_jax.data import DATASETS
    from nas_jax.models.common import compute_dtype
    from nas_jax.models.ops import CONV_IMPLS
    from nas_jax.models.registry import model_family

    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; valid: {PRESETS}.")
    if config.dataset not in DATASETS and not config.dataset.startswith("npz:"):
        raise ValueError(f"unknown dataset {config.dataset!r}; valid: {list(DATASETS)} or npz:PATH.")
    check_models(config, victims, needs_victims)
    seeds = list(config.get("seeds", ()))
    if len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"seeds={tuple(seeds)} must list distinct integers (each repeats the measurement once), "
                        "e.g. --config.seeds=\"(0,1,2)\".")
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
    if not trains:
        return
    from nas_jax.data import dataset_info

    info = dataset_info(config.dataset)  # fixed sizes, or an npz file's array headers
    check_batch_sizes(config, info, trains)
    check_budgets(config, info)
    check_input_counts(config, info)


# ----------------------------------------------------------------------------
# Models, batch sizes, budgets and input counts against the dataset
# ----------------------------------------------------------------------------

# Config fields that hold model names (a name or a tuple of names).
MODEL_FIELDS = ("model", "models", "study.models", "zoo.models")


def _get(config: ml_collections.ConfigDict, path: str):
    """``config.a.b`` for path 'a.b', None where a part is missing."""
    node = config
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


def check_models(config: ml_collections.ConfigDict, victims: tuple[str, ...] = (), needs_victims: bool = True) -> None:
    """Every name of :data:`MODEL_FIELDS` and ``victims`` is known and every ``genotype:PATH`` file parses (a
    broken file among several victims fails before the first is trained); the victims' NAS networks have >= 3
    cells."""
    from nas_jax.models.genotypes import get_genotype
    from nas_jax.models.registry import model_family

    for value in [*(_get(config, path) for path in MODEL_FIELDS), victims]:
        for name in [value] if isinstance(value, str) else value or ():
            if model_family(name) == "nas" and name.startswith("genotype:"):
                get_genotype(name)
    if needs_victims:
        check_nas_depth([*(config.get("models", None) or [config.model]), *victims], config.arch.layers,
                        "arch.layers")


def check_nas_depth(names, layers: int, field: str) -> None:
    """A NAS network of ``layers`` cells needs >= 3 (its reduction cells sit at 1/3 and 2/3 of the depth)."""
    from nas_jax.models.registry import model_family

    nas = [n for n in names if model_family(n) == "nas"]
    if nas and layers < 3:
        raise UserError(f"invalid config: {field}={layers}, but the NAS network{'s' * (len(nas) > 1)} {nas} need at "
                        "least 3 cells (the cells at 1/3 and 2/3 of the depth are the reduction cells); set "
                        f"--config.{field}=3 or more (presets: quick 5, small 8, paper 20).")


def check_batch_sizes(config: ml_collections.ConfigDict, info, share: float = 1.0) -> None:
    """``train.batch_size`` and every ``train_overrides.<model>.batch_size`` fit the ``share`` of the training set
    the task trains on (the search: its weight half) and split evenly over the devices and the data slices
    (``parallel.check_batch_size``, ``EpochSampler``)."""
    import jax

    n_dev, n_proc = jax.device_count(), jax.process_count()
    slices = config.train.data_slices or n_proc
    if slices < 0 or slices % n_proc:
        raise UserError(f"invalid config: train.data_slices={slices} must be a multiple of the {n_proc} processes "
                        f"(0: one slice per process); set --config.train.data_slices={n_proc}.")
    n_train = int(info.n_train * share)
    part = f" ({share:.0%} of them, the part the task trains on)" if share < 1 else ""
    where = f"the {n_train} training images of {config.dataset}{part}"
    step = math.lcm(n_dev, slices)
    sizes = {"train.batch_size": config.train.batch_size}
    sizes.update({f"train_overrides.{m}.batch_size": f["batch_size"] for m, f in config.train_overrides.items()
                  if "batch_size" in f})
    for field, size in sizes.items():
        if size > n_train:
            raise UserError(f"invalid config: {field}={size} is larger than {where}, so no batch fits in an epoch; "
                            f"lower it, e.g. --config.{field}={max(step, n_train // step * step)}.")
        if size % step:
            raise UserError(f"invalid config: {field}={size} is not divisible by the {n_dev} device(s) and "
                            f"{slices} data slice(s) it is split over; choose a multiple of {step}, e.g. "
                            f"--config.{field}={(size // step + 1) * step}.")


# Plausible attack budgets: above them a radius is warned about (likely a unit mistake), not refused.
LINF_PLAUSIBLE = 32 / 255
L2_PLAUSIBLE_FRACTION = 0.25  # of the image diameter
NORM_NAMES = {"linf": "L∞", "l2": "L2"}


def check_budgets(config: ml_collections.ConfigDict, info) -> None:
    """Perturbation radii (``eps``, ``*_eps``, ``eps_grid_255`` in units of 1/255) against the pixel range [0, 1],
    in the section's ``norm`` (default linf). Refused above what the ball can reach: L∞ 1, L2 the image diameter
    sqrt(H·W·C) (all-black to all-white). Warned above a plausible budget: L∞ 32/255 (4x the paper's 8/255), L2 a
    quarter of the diameter (13.9 on 32x32x3)."""
    diameter = math.sqrt(math.prod(info.image_shape))
    for section, body in _sections(config):
        norm = body.get("norm", "linf")
        limit, plausible = (1.0, LINF_PLAUSIBLE) if norm == "linf" else (diameter, L2_PLAUSIBLE_FRACTION * diameter)
        for field, value in body.items():
            if not _is_radius(field):
                continue
            for eps in [v / 255 if field == "eps_grid_255" else v for v in _values(value)]:
                what = f"{section}.{field}={value!r}: an {NORM_NAMES[norm]} radius of {eps:.4g}"
                units = ("in pixel units, e.g. the paper's 8/255 = 0.0314" if norm == "linf" else
                         "in pixel units, e.g. 0.5 on 32x32x3 images") + ("; eps_grid_255 counts steps of 1/255"
                                                                          if field == "eps_grid_255" else "")
                if eps > limit:
                    reach = ("1, the whole pixel range [0, 1]" if norm == "linf" else f"{diameter:.4g}, the L2 "
                             f"distance from an all-black to an all-white {'x'.join(map(str, info.image_shape))} image")
                    raise UserError(f"invalid config: {what} exceeds {reach}, so the attack is unconstrained; radii "
                                    f"are {units}. Set it with --config.{section}.{field}=VALUE.")
                if eps > plausible:
                    warnings.warn(f"{what} is above {plausible:.4g}, far beyond usual attack budgets; check the units "
                                  f"(radii are {units}).", stacklevel=2)


def check_input_counts(config: ml_collections.ConfigDict, info) -> None:
    """``n_inputs`` above the test set is warned about with the number that will be used; membership's
    ``n_members`` / ``n_nonmembers`` above the training / test set are refused (their sampling would fail)."""
    for section, body in _sections(config):
        n = body.get("n_inputs", None)
        if _is_number(n) and n > info.n_test:
            warnings.warn(f"{section}.n_inputs={n} is more than the {info.n_test} test images of {config.dataset}: "
                          f"at most {info.n_test} will be used (fewer where a model misclassifies some).", stacklevel=2)
        for field, available, split in (("n_members", info.n_train, "training"),
                                        ("n_nonmembers", info.n_test, "test")):
            n = body.get(field, None)
            if _is_number(n) and n > available:
                raise UserError(f"invalid config: {section}.{field}={n} is more than the {available} {split} images "
                                f"of {config.dataset}; set --config.{section}.{field}={available} or less.")


# ----------------------------------------------------------------------------
# Attack and analysis sections (every section but the shared ones)
# ----------------------------------------------------------------------------

NORMS = ("linf", "l2")
NOT_SECTIONS = ("arch", "train", "distributed", "train_overrides")


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _values(value) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _named(*names: str, suffixes: tuple[str, ...] = (), prefixes: tuple[str, ...] = ()) -> Callable[[str], bool]:
    return lambda f: f in names or f.endswith(suffixes) or f.startswith(prefixes)


def _sections(config: ml_collections.ConfigDict):
    """(name, body) of every attack/analysis section."""
    for section, body in config.items():
        if section not in NOT_SECTIONS and isinstance(body, ml_collections.ConfigDict):
            yield section, body


_is_radius = _named("eps", "eps_grid_255", suffixes=("_eps",))


# (which fields, test of one value, what is allowed). Applied to every field of every section whose name
# matches, so a new task's section is checked by its field names; a task's own checks live in its settings
# class (nas_jax/study/seam.py).
SECTION_RULES: list[tuple[Callable[[str], bool], Callable[[object], bool], str]] = [
    (_is_radius, lambda v: v > 0, "> 0 (a perturbation radius; upper bounds: check_budgets)"),
    (_named("step_size", "sigma", suffixes=("_step_size",)), lambda v: v > 0, "> 0"),
    (_named("iterations", suffixes=("_iterations",), prefixes=("iterations_",)),
     lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    (_named("restarts", suffixes=("_restarts",)), lambda v: isinstance(v, int) and v >= 0,
     "an integer >= 0 (0: one run without a random start)"),
    (_named("batch_size", "chunk_size", "n_inputs", "n_members", "n_nonmembers", suffixes=("_batch_size",)),
     lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    (_named("query_budget"), lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: no budget)"),
    (_named("confidence"), lambda v: 0 <= v < 1, "in [0, 1) (0: argmax only)"),
]


def validate_sections(config: ml_collections.ConfigDict) -> None:
    """Check every attack/analysis section by its field names (:data:`SECTION_RULES`) and a known ``norm``
    (the task's settings class checks the rest): e.g. ``pgd.eps=-1`` fails here, before victims load."""
    for section, body in _sections(config):
        for field, value in body.items():
            if field == "norm" and value not in NORMS:
                raise UserError(f"invalid config: {section}.norm={value!r}; valid norms: {NORMS}.")
            values = _values(value)
            for applies, ok, allowed in SECTION_RULES:
                if applies(field) and not all(_is_number(v) and ok(v) for v in values):
                    raise UserError(f"invalid config: {section}.{field}={value!r} must be {allowed}; "
                                    f"set it with --config.{section}.{field}=VALUE.")
