"""The victim zoo: trained models cached at ``{zoo_dir}/{dataset}/{model}/{preset}/`` (docs/provenance.md).

An entry holds ``spec.json`` (all that determines the weights), orbax checkpoints, ``train_log.jsonl`` and, last
and atomically, ``final.json`` (finished; how it was trained). :func:`get_or_train` restores a finished entry
(read only: a read-only mount serves), resumes an unfinished one or trains a new one. Identity is content: an
``npz:`` dataset by its SHA-256, a ``genotype:PATH`` model by its normalised genotype (which names its folder). A
started entry with another spec is refused with the differing keys; a finished one restores exactly the step
``final.json`` names (a damaged ``final.json`` is rebuilt from the final checkpoint). One process trains an
entry at a time; another waits on ``.lock``, printing the holder's pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import re
import socket
import warnings
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax

from nas_jax import files
from nas_jax.data import Dataset, load_dataset
from nas_jax.errors import UserError
from nas_jax.models import genotypes
from nas_jax.models.registry import build_from_config, model_family
from nas_jax.train import run_dir as rundir
from nas_jax.train import trainer
from nas_jax.train.checkpoint import Checkpointer
from nas_jax.train.sampler import EpochSampler

# What the models' BatchNorm does, part of every spec: entries trained before BN took PyTorch's unbiased
# running variance hold other eval-mode statistics and are refused, not mixed with new ones.
BATCH_NORM = "pytorch: unbiased running variance, momentum 0.1, eps 1e-5"
# The checkpoint format, part of every spec: entries of the earlier packed format with DARTS cells stored one by
# one are refused by their spec (the differing key says so), never read.
CHECKPOINT = "orbax pytree, scanned DARTS cells stacked (format 2)"


class ZooMismatchError(UserError):
    """A zoo entry exists for this path but was trained with a different spec."""


class ZooEntryError(UserError):
    """A zoo entry's files are damaged or inconsistent."""


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


def leaf_prefix(config, model_name: str) -> str:
    """``{preset}``, ``{preset}_{dtype}`` for a compute dtype other than float32, ``…_space`` for a NAS model in
    the space network: a bfloat16 or space-network victim is its own entry next to the float32 one."""
    dtype = config.arch.get("dtype", "float32")
    prefix = config.preset if dtype == "float32" else f"{config.preset}_{dtype}"
    space = config.arch.get("space_network", False) and model_family(model_name) == "nas"
    return f"{prefix}_space" if space else prefix


def model_folder(model_name: str) -> str:
    """The folder of a model's trained runs: its slug, or for ``genotype:PATH`` the file's stem and the hash
    of its normalised genotype (content, not path: an edited file trains a new entry)."""
    if not model_name.startswith("genotype:"):
        return slug(model_name)
    stem = Path(model_name.removeprefix("genotype:")).stem
    return slug(f"genotype_{stem}_{genotypes.genotype_sha256(genotypes.get_genotype(model_name))[:12]}")


def run_dir(config, model_name: str) -> Path:
    """``{zoo_dir}/{dataset}/{model}/{preset}``, ``{preset}_seed{s}`` for a seed other than 0 (seed 0 keeps the
    path of the single-seed zoo; every seed is its own victim); ``{preset}_bfloat16…`` for bf16 compute,
    ``{preset}_space…`` for a NAS model in the space network (:func:`leaf_prefix`)."""
    prefix = leaf_prefix(config, model_name)
    leaf = prefix if int(config.seed) == 0 else f"{prefix}_seed{int(config.seed)}"
    return Path(config.zoo_dir) / slug(config.dataset) / model_folder(model_name) / leaf


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
    if arch.get("dtype", "float32") == "float32":
        arch.pop("dtype", None)  # float32 specs stay as they were before mixed precision (stored entries keep loading)
    if not arch.get("space_network", False):
        arch.pop("space_network", None)  # specs of per-genotype networks stay as they were before the space network
    if model_family(model_name) == "manual":
        for key in ("init_channels", "layers", "auxiliary", "aux_weight", "dropout", "drop_path", "drop_path_prob",
                    "space_network"):
            arch.pop(key, None)
    else:
        arch.pop("width_multiplier")
    train = config.train.to_dict()
    for key in ("eval_batch_size", "eval_every_epochs", "checkpoint_every_steps"):
        train.pop(key)
    train.pop("population", None)  # how the seeds are trained (together or not) does not change the weights
    spec = {"model": model_name, "dataset": config.dataset, "seed": config.seed, "arch": arch, "train": train,
            "batch_norm": BATCH_NORM, "checkpoint": CHECKPOINT}
    if config.dataset.startswith("npz:"):
        spec["dataset_sha256"] = dataset_sha256(config.dataset)
    if model_name.startswith("genotype:"):
        spec["genotype"] = genotypes.get_genotype(model_name).to_json()
    return spec


def spec_sha256(spec: dict) -> str:
    """The content hash (16 hex digits) of a training spec: a victim's identity."""
    return files.json_sha256(spec, 16)


def dataset_sha256(name: str) -> str | None:
    """SHA-256 of an ``npz:`` dataset's file (None for the named datasets, whose content is fixed by name)."""
    return file_sha256(os.path.expanduser(name[len("npz:"):])) if name.startswith("npz:") else None


def victim_record(config, model_name: str) -> dict | None:
    """What a record says of the victim it measured: the zoo entry, its training spec and the spec's hash, and
    how the entry was trained (``final.json``'s ``trained``; None before it exists). None for a name that is
    not a zoo model (a table's mean row, a list of models)."""
    try:
        spec = training_spec(config, model_name)
        directory = run_dir(config, model_name)
    except (ValueError, OSError):
        return None
    trained = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        trained = json.loads((directory / "final.json").read_text()).get("trained")
    return {"zoo_entry": str(directory), "spec_sha256": spec_sha256(spec), "spec": spec, "trained": trained}


def how_trained(population_seeds: tuple[int, ...] = ()) -> dict:
    """``final.json``'s ``trained``: alone or as a member of a population (its seeds), devices and processes.
    A population member equals its run alone only to float tolerance per step (docs/provenance.md)."""
    how = {"how": "population", "population_seeds": list(population_seeds)} if population_seeds else {"how": "alone"}
    return {**how, "devices": jax.device_count(), "processes": jax.process_count()}


def write_final(directory: Path, test_accuracy: float, step: int, trained: dict) -> None:
    """Mark an entry finished (atomically, process 0): its test accuracy, final step and how it was trained."""
    if jax.process_index() == 0:
        files.write_json(directory / "final.json", {"test_accuracy": test_accuracy, "step": step,
                                                    "trained": trained})


def read_final(directory: Path) -> dict | None:
    """``final.json`` of an entry; None when absent or damaged (an empty or torn file, missing keys): the
    entry is then finished again from its checkpoints (:func:`get_or_train`)."""
    try:
        info = json.loads((directory / "final.json").read_text())
        float(info["test_accuracy"]), int(info["step"])
        return info
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        warnings.warn(f"{directory / 'final.json'} is damaged; rebuilding it from the entry's final checkpoint "
                      "(training resumes if that checkpoint is not the last step).", stacklevel=3)
        return None


def file_sha256(path: str) -> str:
    """SHA-256 of a file's contents (cached by path, inode, size and change times)."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@functools.lru_cache(maxsize=32)
def _sha256(path: str, _stat: tuple) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_spec(directory: Path, spec: dict) -> None:
    """Write the spec of a new entry, or refuse an entry trained differently (:func:`rundir.check_spec`)."""
    rundir.check_spec(directory, spec, refusal=f"the zoo entry {directory} was trained with a different config",
                      fix="Use another --config.zoo_dir, or delete that directory to retrain it with the new config.",
                      error=ZooMismatchError, damaged=ZooEntryError)


@contextlib.contextmanager
def entry_lock(directory: Path):
    """Exclusive use of one zoo entry (two identical runs would write the same orbax checkpoints): a second
    process waits, printing who holds the lock. Only process 0 of a multi-process run locks."""
    if jax.process_index() != 0:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            print(f"zoo entry {directory} is in use by {holder}; waiting for it to finish "
                  f"(or stop that process; the lock is released when it exits).", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def get_or_train(config, model_name: str | None = None, dataset: Dataset | None = None,
                 tb_dir: str | Path | None = None, progress: bool = True) -> ZooEntry:
    """Restore the trained ``model_name`` from the zoo, or train (resume) it first."""
    model_name = model_name or config.model
    config = model_config(config, model_name)
    dataset = dataset or load_dataset(config.dataset, config.data_dir or None)
    model = build_from_config(model_name, config.arch, dataset.num_classes, dataset.mean, dataset.std)
    directory = run_dir(config, model_name)
    spec = training_spec(config, model_name)

    def restored(info: dict) -> ZooEntry:
        variables = restore_variables(model, config, dataset, directory, step=info.get("step"))
        log = rundir.read_log(directory / "train_log.jsonl", config.train.epochs)
        return ZooEntry(model_name, model_family(model_name), model, variables, dataset, info["test_accuracy"],
                        directory, log)

    if info := read_final(directory):  # finished: read only, no lock
        check_spec(directory, spec)
        return restored(info)
    with entry_lock(directory):
        check_spec(directory, spec)
        files.clean_temp_files(directory)
        if info := read_final(directory):  # finished by another process while this one waited
            return restored(info)
        out = trainer.train(model, dataset, config, directory, tb_dir=tb_dir, progress=progress, name=model_name)
        rebuilt = (directory / "final.json").exists()
        write_final(directory, out["test_accuracy"], out["step"],
                    {"how": "unknown (final.json rebuilt from the final checkpoint)"} if rebuilt else how_trained())
    return ZooEntry(model_name, model_family(model_name), model, out["state"].variables, dataset,
                    out["test_accuracy"], directory, out["log"])


def is_trained(config, model_name: str) -> bool:
    """Whether ``model_name`` at ``config.seed`` is a finished zoo entry (restored, not trained, by the tasks)."""
    return (run_dir(model_config(config, model_name), model_name) / "final.json").exists()


def with_seed(config, seed: int):
    out = config.copy_and_resolve_references()
    out.seed = int(seed)
    return out


def get_or_train_population(config, model_name: str | None, seeds, dataset: Dataset | None = None,
                            progress: bool = True) -> list[ZooEntry]:
    """The zoo entries of ``model_name`` for every seed of ``seeds``: with ``train.population`` the
    missing ones are trained together in one compiled program (:func:`trainer.train_population`, resumable in
    ``{preset}_population_{seeds}``) and then stored as ordinary single-seed entries, which every task restores
    as if each had been trained alone."""
    model_name = model_name or config.model
    seeds = tuple(int(s) for s in seeds)
    if len(seeds) == 1 or not config.train.get("population", True):
        return [get_or_train(with_seed(config, s), model_name, dataset, progress=progress) for s in seeds]
    config = model_config(config, model_name)
    dataset = dataset or load_dataset(config.dataset, config.data_dir or None)
    configs = [with_seed(config, s) for s in seeds]
    dirs = [run_dir(c, model_name) for c in configs]
    with contextlib.ExitStack() as locks:
        for d in dirs:
            locks.enter_context(entry_lock(d))
        for c, d in zip(configs, dirs, strict=True):
            check_spec(d, training_spec(c, model_name))
        missing = [i for i, d in enumerate(dirs) if not read_final(d)]
        if missing:
            model = build_from_config(model_name, config.arch, dataset.num_classes, dataset.mean, dataset.std)
            todo = tuple(seeds[i] for i in missing)
            pop_dir = dirs[0].parent / f"{leaf_prefix(config, model_name)}_population_{'-'.join(map(str, todo))}"
            out = trainer.train_population(model, dataset, config, todo, pop_dir, progress=progress, name=model_name)
            for i, state, acc, log in zip(missing, out["states"], out["test_accuracy"], out["logs"], strict=True):
                store_entry(dirs[i], state, out["step"], acc, log, how_trained(seeds))
    return [get_or_train(c, model_name, dataset, progress=progress) for c in configs]


def store_entry(directory: Path, state, step: int, test_accuracy: float, log: list[dict], trained: dict) -> None:
    """Write a finished entry (checkpoint of ``step``, train_log.jsonl, then final.json) from a trained state."""
    with contextlib.closing(Checkpointer(directory / "checkpoints")) as ckpt:
        ckpt.save(step, state)
    if jax.process_index() == 0:
        rundir.write_log(directory / "train_log.jsonl", log)
    write_final(directory, test_accuracy, step, trained)


def restore_variables(model: nn.Module, config, dataset: Dataset, directory: Path,
                      step: int | None = None) -> dict[str, Any]:
    """Load the final params and batch_stats of a finished entry: the checkpoint of ``step`` (final.json's),
    never an older one (its weights would not match the stored accuracy)."""
    spe = EpochSampler(len(dataset.y_train), config.train.batch_size,
                       config.train.data_slices or jax.process_count(), config.seed).steps_per_epoch
    tx = trainer.make_optimizer(config.train, spe)
    template = jax.eval_shape(lambda: trainer.create_state(model, tx, trainer.init_key(config.seed),
                                                           dataset.x_train.shape[1:]))
    with contextlib.closing(Checkpointer(directory / "checkpoints", read_only=True)) as ckpt:
        if step is not None and step not in ckpt.all_steps():
            raise ZooEntryError(
                f"the zoo entry {directory} is finished at step {step} (final.json), but that checkpoint is "
                f"missing (stored steps: {ckpt.all_steps()}). Older weights would not match the stored test "
                f"accuracy, so they are not loaded. Delete {directory} to retrain the model.")
        return ckpt.restore(template, step).variables
