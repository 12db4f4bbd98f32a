"""The victim zoo: trained models cached at ``{zoo_dir}/{dataset}/{model}/{preset}/``.

Each entry holds ``spec.json`` (everything that determines the trained
weights: model, architecture knobs, data, recipe, seed), orbax checkpoints and
``train_log.jsonl``; ``final.json`` marks a finished run. Any task that needs a
trained victim calls :func:`get_or_train`: it restores a finished entry,
resumes an unfinished one, or trains a new one. An entry whose spec differs
from the request is refused with the differing keys, never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax

from nas_jax.data import Dataset, load_dataset
from nas_jax.models.registry import build_from_config, model_family
from nas_jax.train import trainer
from nas_jax.train.checkpoint import Checkpointer


class ZooMismatchError(ValueError):
    """A zoo entry exists for this path but was trained with a different spec."""


@dataclasses.dataclass
class ZooEntry:
    name: str
    family: str
    model: nn.Module
    variables: dict
    dataset: Dataset
    test_accuracy: float
    run_dir: Path
    log: list[dict]

    def apply_fn(self, variables, images, train: bool = False):
        return self.model.apply(variables, images, train=train)


def slug(name: str) -> str:
    """A path-safe, unique directory or file name for a model or dataset name: 'resnet' -> 'resnet',
    'npz:/a/b.npz' -> 'npz_a_b_<6 hex>'. The hash of the path as given keeps files with one name apart (every
    search writes a genotype.json: 'genotype:runs/darts/genotype.json' and '.../darts_ii/genotype.json')."""
    if ":" in name:
        kind, path = name.split(":", 1)
        digest = hashlib.sha1(path.encode()).hexdigest()[:6]
        name = f"{kind}_{Path(path).parent.name}_{Path(path).stem}_{digest}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run_dir(config, model_name: str) -> Path:
    return Path(config.zoo_dir) / slug(config.dataset) / slug(model_name) / config.preset


def model_config(config, model_name: str):
    """``config`` with ``config.train_overrides[model_name]`` applied to its train fields."""
    overrides = config.get("train_overrides", {}).get(model_name)
    if not overrides:
        return config
    out = config.copy_and_resolve_references()
    out.train.update(overrides.to_dict() if hasattr(overrides, "to_dict") else dict(overrides))
    return out


def training_spec(config, model_name: str) -> dict:
    """Everything that determines the trained weights (and nothing else)."""
    config = model_config(config, model_name)
    arch = config.arch.to_dict()
    arch.pop("conv_impl")  # an implementation choice, numerically equivalent
    if model_family(model_name) == "manual":
        for key in ("init_channels", "layers", "auxiliary", "aux_weight", "dropout", "drop_path", "drop_path_prob"):
            arch.pop(key)
    else:
        arch.pop("width_multiplier")
    train = config.train.to_dict()
    for key in ("eval_batch_size", "eval_every_epochs", "checkpoint_every_steps"):
        train.pop(key)
    return {"model": model_name, "dataset": config.dataset, "seed": config.seed, "arch": arch, "train": train}


def spec_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The keys (dotted paths) where two nested spec dicts differ, as 'key: stored A, requested B' lines."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += spec_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: stored {va!r}, requested {vb!r}")
    return out


def check_spec(directory: Path, spec: dict) -> None:
    """Write the spec of a new entry, or refuse an entry trained differently."""
    path = directory / "spec.json"
    if path.exists():
        stored = json.loads(path.read_text())
        diffs = spec_diff(stored, spec)
        if diffs:
            raise ZooMismatchError(
                f"the zoo entry {directory} was trained with a different config:\n  " + "\n  ".join(diffs)
                + "\nUse another --config.zoo_dir, or delete that directory to retrain it with the new config."
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        path.write_text(json.dumps(spec, indent=2, sort_keys=True))


def get_or_train(config, model_name: str | None = None, dataset: Dataset | None = None,
                 tb_dir: str | Path | None = None, progress: bool = True) -> ZooEntry:
    """Restore the trained ``model_name`` from the zoo, or train (resume) it first."""
    model_name = model_name or config.model
    config = model_config(config, model_name)
    dataset = dataset or load_dataset(config.dataset, config.data_dir or None)
    model = build_from_config(model_name, config.arch, dataset.num_classes, dataset.mean, dataset.std)
    directory = run_dir(config, model_name)
    check_spec(directory, training_spec(config, model_name))
    final = directory / "final.json"
    if final.exists():
        info = json.loads(final.read_text())
        variables = restore_variables(model, config, dataset, directory)
        log = trainer._read_log(directory / "train_log.jsonl", config.train.epochs)
        return ZooEntry(model_name, model_family(model_name), model, variables, dataset,
                        info["test_accuracy"], directory, log)
    out = trainer.train(model, dataset, config, directory, tb_dir=tb_dir, progress=progress, name=model_name)
    if jax.process_index() == 0:
        final.write_text(json.dumps({"test_accuracy": out["test_accuracy"], "step": out["step"]}))
    return ZooEntry(model_name, model_family(model_name), model, out["state"].variables, dataset,
                    out["test_accuracy"], directory, out["log"])


def restore_variables(model: nn.Module, config, dataset: Dataset, directory: Path) -> dict[str, Any]:
    """Load the final params and batch_stats of a finished entry."""
    from nas_jax.train.sampler import EpochSampler

    spe = EpochSampler(len(dataset.y_train), config.train.batch_size,
                       config.train.data_slices or jax.process_count(), config.seed).steps_per_epoch
    tx = trainer.make_optimizer(config.train, spe)
    template = jax.eval_shape(lambda: trainer.create_state(model, tx, trainer.init_key(config.seed),
                                                           dataset.x_train.shape[1:]))
    ckpt = Checkpointer(directory / "checkpoints")
    try:
        return ckpt.restore(template).variables
    finally:
        ckpt.close()
