"""Model × phase × BN-state iteration shared by the per-model analyses (gradient variance, Figure 12; NTK):
:func:`measure_variants`.

A phase is ``init`` (the model's own initialisation from the zoo's init key: the exact starting point of the
trained victim) or ``trained`` (the zoo victim); a BN state is ``raw`` (running statistics as stored) or
``calibrated`` (re-estimated on a few un-augmented training batches).
"""

from __future__ import annotations

import jax
import numpy as np

from nas_jax.analysis.grad_variance import calibrate_batch_stats
from nas_jax.data import to_float
from nas_jax.models.registry import build_from_config, model_family
from nas_jax.report import results
from nas_jax.train import trainer, zoo

PHASES = ("init", "trained")
BN_MODES = ("raw", "calibrated")


def check_choices(values, valid: tuple[str, ...], name: str) -> None:
    bad = [v for v in values if v not in valid]
    if bad or not values:
        raise ValueError(f"invalid {name} {tuple(values)}: choose one or more of {valid}.")


def sample_indices(n_total: int, n: int, seed: int, stream: int) -> np.ndarray:
    """The first ``n`` of a seeded permutation, shared by all models (G5)."""
    return np.random.default_rng([seed, stream]).permutation(n_total)[:n]


def calibration_batches(dataset, n_batches: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """``n_batches`` disjoint, un-augmented training batches (float) for BN re-estimation."""
    idx = sample_indices(len(dataset.y_train), n_batches * batch_size, seed, 13)
    return [to_float(dataset.x_train[idx[i : i + batch_size]]) for i in range(0, len(idx), batch_size)]


def model_variables(config, name: str, phase: str, dataset):
    """(model, family, variables) at initialisation (the zoo's init key) or trained (from the zoo)."""
    if phase == "trained":
        entry = zoo.get_or_train(config, name, dataset)
        return entry.model, entry.family, entry.variables
    model = build_from_config(name, config.arch, dataset.num_classes, dataset.mean, dataset.std)
    return model, model_family(name), trainer.init_variables(model, trainer.init_key(config.seed),
                                                             dataset.x_train.shape[1:])


def bn_variables(model, variables, bn: str, batches, seed: int):
    if bn == "raw":
        return variables
    return calibrate_batch_stats(model.apply, variables, batches, jax.random.key(seed))


def accuracy(model, variables, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Eval-mode accuracy on float images (a sanity check of a BN state)."""
    return float((trainer.model_logits(model, variables, x, batch_size).argmax(-1) == y).mean())


def measure_variants(config, s, dataset, workdir, task: str, n: int, measure, setting, describe):
    """Measure every model of ``config.models`` in each phase of ``s.phases`` and BN state of ``s.bn`` (calibrated
    on ``s.calibration_batches`` training batches): ``measure(model, variables) -> metrics``, one ``task`` record
    each over ``n`` inputs with setting family, phase, bn and ``setting(bn)``, and its progress line
    ``describe(metrics)``. Returns the records and the rows (model, family, phase, bn and the metrics)."""
    batches = calibration_batches(dataset, s.calibration_batches, config.train.batch_size, config.seed)
    records, rows = [], []
    for i, name in enumerate(config.models):
        for phase in s.phases:
            print(f"[{i + 1}/{len(config.models)}] {name} ({phase})", flush=True)
            model, family, variables = model_variables(config, name, phase, dataset)
            for bn in s.bn:
                start = results.now()
                metrics = measure(model, bn_variables(model, variables, bn, batches, config.seed))
                records.append(results.store(workdir, config, task=task, model=name, metrics=metrics, n=n,
                                             setting={"family": family, "phase": phase, "bn": bn, **setting(bn)},
                                             start_time=start))
                rows.append({"model": name, "family": family, "phase": phase, "bn": bn, **metrics})
                print(f"  {name} {phase} bn={bn}: {describe(metrics)}", flush=True)
    return records, rows
