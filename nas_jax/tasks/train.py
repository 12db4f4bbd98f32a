"""Task ``train``: train (or restore) one zoo model and record its accuracy (Table 1)."""

from __future__ import annotations

from pathlib import Path

import jax

from nas_jax.report import results
from nas_jax.report.study import Metric
from nas_jax.report.tables import format_table
from nas_jax.study.seam import Task
from nas_jax.train import zoo


def run(config, workdir: str | Path) -> list[dict]:
    """Train ``config.model`` at ``config.seed``, or at every seed of ``config.seeds`` (together with
    ``train.population``)."""
    start = results.now()
    if config.seeds:
        seeds = tuple(config.seeds)
        entries = zoo.get_or_train_population(config, config.model, seeds)
        return [rec for seed, entry in zip(seeds, entries, strict=True)
                for rec in _record(zoo.with_seed(config, seed), entry, workdir, start)]
    return _record(config, zoo.get_or_train(config, tb_dir=Path(workdir) / "tb"), workdir, start)


def _record(config, entry, workdir, start) -> list[dict]:
    last = entry.log[-1] if entry.log else {}
    metrics = {
        "test_accuracy": entry.test_accuracy,
        "train_accuracy": last.get("train_accuracy"),
        "train_loss": last.get("train_loss"),
        "epochs": zoo.model_config(config, entry.name).train.epochs,
        "images_per_s": last.get("images_per_s"),
    }
    record = results.store(workdir, config, task="train", model=entry.name, metrics=metrics,
                           n=len(entry.dataset.y_test), start_time=start,
                           setting={"family": entry.family})  # the entry itself: record["victim"]
    if jax.process_index() == 0:
        print(format_table([{"model": entry.name, "family": entry.family, **metrics}], [
            ("model", "model", None), ("family", "family", None), ("epochs", "epochs", None),
            ("train_accuracy", "train acc", ".4f"), ("test_accuracy", "test acc", ".4f"),
            ("images_per_s", "images/s", ".0f")]))
    return [record]


def _clean_accuracy(records, row):
    """The trained victim's test accuracy (its ``train`` record), else the clean accuracy an attack measured."""
    train = [r for r in records if r["task"] == "train"]
    return train[-1]["metrics"]["test_accuracy"] if train else row.get("clean_accuracy")


def _take_target(config, model: str, models) -> None:
    config.model = model


TASK = Task("train", run, cost_minutes=0.0, in_study=("quick", "paper"), take_target=_take_target,
            makes_victims=True, metrics=(Metric("clean_accuracy", "clean accuracy (Table 1)", _clean_accuracy, 0, 0),))
