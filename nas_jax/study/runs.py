"""Training runs a task owns (not zoo victims): trained once into a run directory, or restored.

Poisoning (§3.2, Figure 6), backdoor fine-tuning (Figures 7-8) and adversarial training (§5.2, Figure 14) each
run at ``{workdir}/runs/{task}/{dataset}/{model}[/seed{s}]/{parts...}``, with the zoo's training spec plus the
attack's settings in ``spec.json`` (another spec is refused); they resume after a kill.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax.data import Dataset
from nas_jax.models.registry import build_from_config
from nas_jax.train import trainer, zoo


@dataclasses.dataclass
class TrainedRun:
    name: str
    model: nn.Module
    variables: dict | None  # None when restored with need_variables=False
    test_accuracy: float
    run_dir: Path


def task_run_dir(workdir: str | Path, task: str, config, model_name: str, *parts: str) -> Path:
    """``{workdir}/runs/{task}/{dataset}/{model}/{parts...}``: where a task's own trainings live; for a seed other
    than 0, ``.../{model}/seed{s}/{parts...}`` (each seed's victim has its own poisoned, backdoored or
    adversarially trained copy)."""
    seed = [] if int(config.seed) == 0 else [f"seed{int(config.seed)}"]
    return Path(workdir, "runs", task, zoo.slug(config.dataset), zoo.model_folder(model_name), *seed, *parts)


def cached_training(config, model_name: str, dataset: Dataset, run_dir: Path, spec_extra: dict, *,
                    need_variables: bool = True, batch_transform=None, initial_variables: dict | None = None,
                    progress: bool = True, label: str | None = None) -> TrainedRun:
    """Train ``model_name`` on ``dataset`` with ``config.train`` into ``run_dir`` (resumable), or restore the
    finished run. ``spec_extra`` (the attack's settings) joins the zoo's training spec in ``spec.json``: a
    directory trained with a different spec is refused with the differing keys."""
    config = zoo.model_config(config, model_name)
    model = build_from_config(model_name, config.arch, dataset.num_classes, dataset.mean, dataset.std)
    run_dir = Path(run_dir)
    zoo.check_spec(run_dir, {**zoo.training_spec(config, model_name), **spec_extra})
    if info := zoo.read_final(run_dir):
        variables = zoo.restore_variables(model, config, dataset, run_dir) if need_variables else None
        return TrainedRun(model_name, model, variables, info["test_accuracy"], run_dir)
    if initial_variables is not None:  # the train step donates its state: never hand it the caller's buffers
        initial_variables = jax.tree_util.tree_map(jnp.array, initial_variables)
    out = trainer.train(model, dataset, config, run_dir, progress=progress, name=label or model_name,
                        batch_transform=batch_transform, initial_variables=initial_variables)
    zoo.write_final(run_dir, out["test_accuracy"], out["step"], zoo.how_trained())
    return TrainedRun(model_name, model, out["state"].variables, out["test_accuracy"], run_dir)
