"""Provenance of reported numbers: every measurement is kept and readers show the newest of each identity,
identity is content, half-made artifacts block nothing, damaged study cells are recomputed, readers survive
partial records (docs/provenance.md)."""

import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from nas_jax.config import base_config
from nas_jax.models import genotypes
from nas_jax.report import results, summary
from nas_jax.report import study as study_report
from nas_jax.tasks import study_metrics
from nas_jax.study.seam import Task
from nas_jax.train import zoo

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import cheap_genotype, tiny_config, tiny_dataset  # noqa: E402

TABLE = summary.summaries(study_metrics())


def _pgd_config(zoo_dir, n_inputs: int):
    c = base_config("pgd")
    c.zoo_dir = str(zoo_dir)
    c.pgd = ml_collections.ConfigDict({"n_inputs": n_inputs, "eps": 8 / 255})
    return c


def _pgd_record(config, model: str, asr: float):
    return results.make_record(config, task="pgd", model=model, n=config.pgd.n_inputs, start_time=results.now(),
                               metrics={"clean_accuracy": 0.9, "asr_most_likely": asr, "asr_least_likely": asr / 2},
                               setting={"family": "nas"})


def test_a_then_b_then_a_shows_a_and_names_the_setting_that_differs(tmp_path):
    a20, b10 = _pgd_config(tmp_path, 20), _pgd_config(tmp_path, 10)
    for config, asr in ((a20, 0.5), (b10, 0.6), (a20, 0.7)):  # the rerun of A measures anew
        results.append_record(tmp_path, _pgd_record(config, "darts", asr))
    stored = results.read_records(tmp_path)
    assert len(stored) == 3  # none dropped
    first, _, third = stored
    assert first["identity_sha256"] == third["identity_sha256"] != stored[1]["identity_sha256"]
    (row,) = summary.summarize(stored, TABLE)  # one victim: the newest measurement of it
    assert row["pgd_m"] == 0.7 and row["settings"] is None
    # two settings of one model side by side (another victim's rows): each names its n_inputs
    results.append_record(tmp_path, _pgd_record(b10, "resnet", 0.1))
    rows = summary.summarize(results.read_records(tmp_path), TABLE)
    assert [(r["model"], r["pgd_m"], r["settings"]) for r in rows] == [
        ("darts", 0.7, "pgd.n_inputs=20"), ("resnet", 0.1, "pgd.n_inputs=10")]
    assert "pgd.n_inputs=20" in summary.render(rows, TABLE)


def test_records_name_the_victim_its_training_and_the_versions(tmp_path):
    c = _pgd_config(tmp_path, 20)
    rec = _pgd_record(c, "darts", 0.5)
    spec = zoo.training_spec(c, "darts")
    assert rec["victim"]["spec_sha256"] == zoo.spec_sha256(spec) == rec["identity"]["victim_spec_sha256"]
    assert rec["victim"]["zoo_entry"] == str(zoo.run_dir(c, "darts")) and rec["victim"]["trained"] is None
    assert rec["identity"]["dtype"] == "float32" and rec["identity"]["task_settings"]["pgd.n_inputs"] == 20
    assert {"python", "jax", "flax", "optax", "numpy"} <= set(rec["versions"]) and rec["code_version"]
    # a bfloat16 victim of the same model is another identity and another row, named by its dtype
    bf16 = _pgd_config(tmp_path, 20)
    bf16.arch.dtype = "bfloat16"
    other = _pgd_record(bf16, "darts", 0.9)
    assert other["identity_sha256"] != rec["identity_sha256"]
    rows = summary.summarize([rec, other], TABLE)
    assert [(r["pgd_m"], r["settings"]) for r in rows] == [(0.5, "arch.dtype=float32"), (0.9, "arch.dtype=bfloat16")]
    # how the victim was trained comes from the entry's final.json
    directory = zoo.run_dir(c, "darts")
    zoo.write_final(directory, 0.9, 16, zoo.how_trained((0, 1)))
    trained = _pgd_record(c, "darts", 0.5)["victim"]["trained"]
    assert trained["how"] == "population" and trained["population_seeds"] == [0, 1] and trained["devices"] >= 1


def test_a_retrained_victims_new_accuracy_is_what_the_study_report_shows(tmp_path):
    c = base_config("train")
    for accuracy in (0.91, 0.87):  # the same victim trained again (its entry deleted, new code): a new number
        results.append_record(tmp_path, results.make_record(
            c, task="train", model="darts", n=1, start_time=results.now(), metrics={"test_accuracy": accuracy},
            setting={"family": "nas"}))
    records = study_report.collect_records(tmp_path)
    values = study_report.per_seed_values(records, ["darts"], study_metrics())
    assert values["clean_accuracy"] == {"darts": {0: 0.87}}


def test_an_edited_genotype_file_is_a_new_entry_and_its_label_is_the_stem(tmp_path):
    path = tmp_path / "mycell.json"
    g = cheap_genotype()
    path.write_text(json.dumps(g.to_json()))
    name = f"genotype:{path}"
    c = tiny_config(str(tmp_path / "zoo"))
    before, spec = zoo.run_dir(c, name), zoo.training_spec(c, name)
    edited = g.to_json()
    edited["normal"][3][0] = "avg_pool_3x3"  # max_pool -> avg_pool
    path.write_text(json.dumps(edited))
    assert zoo.run_dir(c, name) != before  # the old weights are not found, let alone loaded
    assert zoo.training_spec(c, name)["genotype"]["normal"][3] == ["avg_pool_3x3", 0] != spec["genotype"]["normal"][3]
    # the same content under another path is the same entry
    copy = tmp_path / "elsewhere" / "mycell.json"
    copy.parent.mkdir()
    copy.write_text(json.dumps(edited, indent=4))
    assert zoo.run_dir(c, f"genotype:{copy}") == zoo.run_dir(c, name)
    rec = results.make_record(c, task="train", model=name, n=1, start_time=results.now(), metrics={"a": 1.0})
    path.write_text(json.dumps(g.to_json()))
    old = results.make_record(c, task="train", model=name, n=1, start_time=results.now(), metrics={"a": 1.0})
    rows = summary.summarize([old, rec], TABLE)  # two cells under one name: two rows, each named by its content hash
    assert [(r["label"], r["settings"]) for r in rows] == [
        ("mycell", f"genotype={genotypes.genotype_sha256(g)[:12]}"),
        ("mycell", f"genotype={genotypes.genotype_sha256(genotypes.genotype_from_dict(edited))[:12]}")]
    assert before.parent.name == f"genotype_mycell_{genotypes.genotype_sha256(g)[:12]}"


def test_a_failed_training_leaves_no_binding_spec(tmp_path):
    c = tiny_config(str(tmp_path / "zoo"))
    c.train.batch_size = 512  # more than the 256 training images: the sampler refuses it before any step
    with pytest.raises(ValueError, match="smaller than one batch"):
        zoo.get_or_train(c, dataset=tiny_dataset(), progress=False)
    directory = zoo.run_dir(c, "darts")
    assert (directory / "spec.json").exists()  # written, but not binding: nothing was trained
    c.train.batch_size = 32
    zoo.check_spec(directory, zoo.training_spec(c, "darts"))  # the corrected command is not refused
    assert json.loads((directory / "spec.json").read_text())["train"]["batch_size"] == 32
    (directory / "checkpoints" / "8").mkdir(parents=True)  # once training has started, the spec binds
    c.train.batch_size = 64
    with pytest.raises(zoo.ZooMismatchError, match="train.batch_size: stored 32, requested 64"):
        zoo.check_spec(directory, zoo.training_spec(c, "darts"))


def test_writers_leave_no_temporary_files_and_json_is_atomic(tmp_path, monkeypatch):
    from nas_jax import files

    (tmp_path / ".results.jsonl.abc.tmp").write_text("left by a killed writer")
    (tmp_path / ".zoo.json.xyz.tmp").write_text("another writer's, in flight")
    results.append_record(tmp_path, _pgd_record(_pgd_config(tmp_path, 5), "darts", 0.5))
    assert [p.name for p in tmp_path.glob(".*.tmp")] == [".zoo.json.xyz.tmp"]  # only the results file's is cleaned
    (tmp_path / ".zoo.json.xyz.tmp").unlink()
    files.write_json(tmp_path / "final.json", {"step": 1})
    import os

    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        files.write_json(tmp_path / "final.json", {"step": 2})
    assert json.loads((tmp_path / "final.json").read_text()) == {"step": 1}  # the old file, whole
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_that_cannot_be_written_is_one_paragraph_and_leaves_no_temporary_directory(tmp_path,
                                                                                                  monkeypatch):
    import numpy as np

    from nas_jax.errors import UserError
    from nas_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1, {"w": np.ones(3)})

    def full_disk(step, args, force):
        (tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp-99").mkdir()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt._manager, "save", full_disk)
    with pytest.raises(UserError, match="could not write checkpoint .*/2 .*No space left.*resumes from its last"):
        ckpt.save(2, {"w": np.ones(3)})
    monkeypatch.undo()

    ckpt.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
    (tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-7").mkdir()  # a save killed mid-way: the next run removes it
    Checkpointer(tmp_path / "checkpoints").close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]

    def background_write_fails():
        raise OSError(28, "No space left on device")

    ckpt = Checkpointer(tmp_path / "checkpoints")  # a write that fails in the background: reported when waited for
    ckpt.save(4, {"w": np.ones(3)})
    monkeypatch.setattr(ckpt._manager, "wait_until_finished", background_write_fails)
    with pytest.raises(UserError, match="could not write checkpoint .*/4 .*No space left"):
        ckpt.close()


def _cell(tmp_path, n: int = 2):
    cell = tmp_path / "cells" / "pgd" / "darts" / "seed0"
    c = _pgd_config(tmp_path, 5)
    out = []
    for i in range(n):
        rec = _pgd_record(c, "darts" if i == 0 else "resnet", 0.5 + i / 10)
        results.append_record(cell, rec)
        out.append(rec)
    marker = {"cell": "pgd/darts/seed0", "config_hash": "h", "records": n, "record_ids": [r["record_id"] for r in out]}
    (cell / results.MARKER_FILE).write_text(json.dumps(marker))
    return cell


def test_a_damaged_study_cell_is_not_finished_and_is_recomputed(tmp_path):
    from nas_jax.tasks.study import _finished

    cell = _cell(tmp_path)
    assert _finished(cell, "h") and not _finished(cell, "other config")
    assert len(study_report.collect_records(tmp_path)) == 2
    lines = (cell / results.RESULTS_FILE).read_text().splitlines()
    (cell / results.RESULTS_FILE).write_text(lines[0] + "\n" + lines[1][:40] + "\n")  # the second record torn
    assert not _finished(cell, "h")  # recomputed on the next run
    with pytest.warns(UserWarning, match=r"1 study cell\(s\) without a complete result.*pgd/darts/seed0"):
        assert study_report.collect_records(tmp_path) == []  # its half is not reported as the cell's result
    (cell / results.RESULTS_FILE).unlink()
    assert not _finished(cell, "h")


def test_readers_skip_count_and_name_partial_records(tmp_path, capsys):
    good = _pgd_record(_pgd_config(tmp_path, 5), "darts", 0.5)
    lines = [json.dumps(good), json.dumps({**good, "model": None}), json.dumps({k: v for k, v in good.items()
                                                                                  if k != "model"}),
             json.dumps({**good, "metrics": None}), json.dumps({**good, "setting": None, "model": "resnet"})]
    (tmp_path / results.RESULTS_FILE).write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable line\(s\).*without task / model / metrics.*"
                                         r"\[2, 3, 4\]"):
        assert summary.main([str(tmp_path)], TABLE) == 0
    out = capsys.readouterr().out
    assert "darts" in out and "resnet" in out
    with pytest.warns(UserWarning, match="skipped 3"):
        assert study_report.write_report(tmp_path, study_metrics()).exists()


def _mount_read_only(src: Path, target: Path) -> bool:
    target.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(target)], capture_output=True).returncode == 0
    return ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], capture_output=True).returncode == 0


def test_a_read_only_zoo_serves_a_finished_victim_and_a_damaged_final_json_is_rebuilt(tmp_path):
    import os

    c = tiny_config(str(tmp_path / "zoo"))
    ds = tiny_dataset()
    first = zoo.get_or_train(c, dataset=ds, progress=False)
    info = json.loads((first.run_dir / "final.json").read_text())
    assert info["trained"]["how"] == "alone" and info["step"] == 16

    (first.run_dir / "final.json").write_text("")  # emptied (a kill before atomic writes): rebuilt, not retrained
    with pytest.warns(UserWarning, match="final.json is damaged; rebuilding"):
        again = zoo.get_or_train(c, dataset=ds, progress=False)
    assert again.test_accuracy == first.test_accuracy
    assert json.loads((first.run_dir / "final.json").read_text())["step"] == 16

    read_only = tmp_path / "ro"
    if os.geteuid() == 0:
        assert _mount_read_only(tmp_path / "zoo", read_only), "root could not bind-mount the zoo read-only"
    else:  # without root, permissions make the copy read-only
        import shutil

        shutil.copytree(tmp_path / "zoo", read_only)
        for p in [read_only, *read_only.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        with pytest.raises(OSError):
            (read_only / "probe").write_text("x")
        c.zoo_dir = str(read_only)
        served = zoo.get_or_train(c, dataset=ds, progress=False)
        assert served.test_accuracy == first.test_accuracy
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(read_only)], check=False)


def test_a_task_over_two_seeds_keeps_every_record_and_figure_and_writes_one_aggregate(tmp_path, monkeypatch,
                                                                                       capsys):
    """Each seed's run writes figures/pgd_asr.png; none overwrites another, and one table and one figure give
    each model's mean and interval over the seeds."""
    import nas_jax.tasks as tasks
    from nas_jax.report import plots

    def fake_pgd(config, workdir):
        recs = []
        for model, family, asr in (("darts", "nas", 0.6), ("resnet", "manual", 0.2)):
            rec = _pgd_record(config, model, asr + 0.1 * config.seed)
            rec["setting"] = {"family": family}
            results.append_record(workdir, rec)
            recs.append(rec)
        fig, ax = plots.plt.subplots()
        ax.set_title(f"seed {config.seed}")
        plots.save_figure(fig, Path(workdir) / "figures" / "pgd_asr.png")
        return recs

    monkeypatch.setattr(tasks, "task_of", lambda config: Task("pgd", fake_pgd))
    config = _pgd_config(tmp_path / "zoo", 10)
    config.seeds = (0, 1)
    records = tasks.run_task(config, tmp_path)
    assert len(records) == 4 and len(results.read_records(tmp_path)) == 4  # every per-seed record kept
    figures = sorted(str(p.relative_to(tmp_path / "figures")) for p in (tmp_path / "figures").rglob("*.png"))
    assert figures == ["pgd_seeds.png", "seed0/pgd_asr.png", "seed1/pgd_asr.png"]
    out = capsys.readouterr().out
    table = out[out.index("pgd over seeds [0, 1]"):]
    darts = next(line for line in table.splitlines() if line.startswith("darts"))
    assert "0.650 [" in darts and darts.split()[2] == "2"  # mean of 0.6 and 0.7 over 2 seeds, with an interval
    from nas_jax.report import seeds as over_seeds

    (row, _) = over_seeds.aggregate(records)
    ci = row["metrics"]["asr_most_likely"]
    assert 0.0 <= ci.low < 0.65 < ci.high <= 1.0  # inside the proportion's range


def test_each_seed_of_a_task_owned_training_has_its_own_run_directory(tmp_path):
    """Backdoor, poisoning and adversarial training fine-tune or train a copy per victim: the copies of seeds 0
    and 1 must not share a directory (seed 1 would find seed 0's spec and stop), and seed 0 keeps its old path."""
    from nas_jax.config import base_config
    from nas_jax.study.runs import task_run_dir

    c = base_config("backdoor")
    zero = task_run_dir(tmp_path, "backdoor", c, "darts", "trojannn_n2")
    c.seed = 1
    one = task_run_dir(tmp_path, "backdoor", c, "darts", "trojannn_n2")
    assert zero == tmp_path / "runs" / "backdoor" / "digits" / "darts" / "trojannn_n2"
    assert one == tmp_path / "runs" / "backdoor" / "digits" / "darts" / "seed1" / "trojannn_n2"


def test_seeds_group_by_what_was_asked_and_rows_are_told_apart_by_what_differs():
    """Backdoor records over 3 seeds: each seed's victim has its own target neurons (an outcome, in metrics), so
    the rows are one per (model, attack) with 3 seeds each, labelled by the key that differs (the attack)."""
    from nas_jax.report import seeds as over_seeds

    records = []
    for seed in range(3):
        for attack, asr in (("trojannn", 0.4 + 0.1 * seed), ("badnet", 0.9)):
            records.append({"task": "backdoor", "model": "darts", "seed": seed,
                            "setting": {"family": "nas", "attack": attack, "target": 0, "lr": 0.01},
                            "metrics": {"asr": asr, "cad": 0.01, "neurons": [seed, seed + 1]}})
    rows = over_seeds.aggregate(records)
    assert [(r["setting"], r["seeds"]) for r in rows] == [("attack=trojannn", [0, 1, 2]), ("attack=badnet", [0, 1, 2])]
    assert rows[0]["metrics"]["asr"].value == pytest.approx(0.5) and "neurons" not in rows[0]["metrics"]
