"""The launcher, configs and results store: one command per task, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas_jax.config import base_config, validate
from nas_jax.config_loader import load_config_file
from nas_jax.report import results
from nas_jax.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def _launch(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_zoo_task_reports_reference_counts(tmp_path):
    out = _launch(f"--config={ROOT}/configs/zoo.py", f"--workdir={tmp_path}",
                  "--config.zoo.models=('darts','enas','resnet')", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    zoo = json.loads((tmp_path / "zoo.json").read_text())
    assert zoo["config"] == {"init_channels": 36, "layers": 20, "num_classes": 10, "auxiliary": False}
    rows = {m["name"]: m for m in zoo["models"]}
    assert rows["darts"]["params"] == 3_349_342 and rows["resnet"]["params"] == 11_173_962
    assert (rows["darts"]["cell_depth"], rows["darts"]["cell_width"], rows["darts"]["skip_connects"]) == (3, 3, 2)
    assert rows["resnet"]["family"] == "manual" and rows["resnet"]["cell_depth"] is None
    assert rows["enas"]["family"] == "nas"
    assert "3,349,342" in out.stdout
    records = results.read_records(tmp_path, task="zoo")
    assert {r["model"] for r in records} == {"darts", "enas", "resnet"}


@pytest.mark.parametrize("arg,message", [
    ("--config.modle=darts", "modle"),
    ("--config.model=dartz", "valid models"),
    ("--config.dataset=mnist", "valid: "),
    ("--config.train.epochs=0", "train.epochs must be >= 1"),
    ("--config.train.epochz=3", "Valid keys under 'train': ['batch_size',"),  # was AttributeError: 'epochz'
])
def test_bad_input_fails_with_a_clear_message(tmp_path, arg, message):
    out = _launch(f"--config={ROOT}/configs/train.py", f"--workdir={tmp_path}", arg, cwd=tmp_path)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr  # one paragraph with the fix
    assert not (tmp_path / "zoo").exists()  # nothing was trained or written


def test_unknown_preset_and_task():
    with pytest.raises(ValueError, match="valid presets"):
        base_config("train", "full")
    with pytest.raises(ValueError, match="valid tasks"):
        get_task("trian")


def test_validate_accepts_presets_and_npz(tmp_path):
    import numpy as np

    for preset in ("quick", "paper"):
        validate(base_config("train", preset))
    x = np.zeros((96, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "file.npz", x_train=x, y_train=np.zeros(96, int), x_test=x[:8], y_test=np.zeros(8, int))
    c = base_config("train")
    c.dataset = f"npz:{tmp_path / 'file.npz'}"  # validation reads its array headers (sizes, image shape)
    validate(c)


def test_results_store_appends_and_skips_torn_lines(tmp_path):
    c = base_config("train")
    rec = results.make_record(c, task="train", model="darts", metrics={"test_accuracy": 0.9}, n=10,
                              start_time=results.now())
    assert {"task", "model", "dataset", "preset", "setting", "metrics", "n", "seed", "config_hash",
            "code_version", "start_time", "end_time"} <= set(rec)
    results.append_record(tmp_path, rec)
    with open(tmp_path / results.RESULTS_FILE, "a") as f:
        f.write('{"task": "train", "mod')  # a run killed mid-write
    results.append_record(tmp_path, results.make_record(c, task="train", model="resnet", n=10, start_time=results.now(),
                                                        metrics={"test_accuracy": 0.9}))
    assert [r["model"] for r in results.read_records(tmp_path)] == ["darts", "resnet"]
    assert results.config_hash(c) == results.config_hash(base_config("train"))
    # every measurement is appended (none dropped); readers show the newest record of each identity
    rerun = {**rec, "metrics": {"test_accuracy": 0.8}, "end_time": "later"}
    other = results.make_record(c, task="train", model="darts", metrics={"test_accuracy": 0.7}, n=10,
                                setting={"fraction": 0.1}, start_time=results.now())
    results.append_record(tmp_path, rerun)
    results.append_record(tmp_path, other)
    stored = results.read_records(tmp_path)
    assert [r["model"] for r in stored] == ["darts", "resnet", "darts", "darts"]
    shown = results.newest(stored)
    assert [(r["model"], r["metrics"]["test_accuracy"]) for r in shown] == [("resnet", 0.9), ("darts", 0.8),
                                                                             ("darts", 0.7)]


def test_train_overrides_apply_per_model_and_enter_the_spec():
    from nas_jax.train import zoo

    c = base_config("pgd")
    assert zoo.training_spec(c, "vgg")["train"]["epochs"] == 12  # quick: VGG's saddle (sharp_edges)
    assert zoo.training_spec(c, "darts")["train"]["epochs"] == c.train.epochs == 8
    assert zoo.model_config(c, "darts") is c
    c.train_overrides.vgg.lr = 0.1
    assert zoo.model_config(c, "vgg").train.lr == 0.1 and c.train.lr == 0.05
    c.train_overrides.vgg.epochz = 3
    with pytest.raises(ValueError, match="unknown train fields.*epochz.*valid"):
        validate(c)
    assert base_config("pgd", "paper").train_overrides.to_dict() == {}


def test_zoo_slug_keeps_files_with_one_name_apart():
    from nas_jax.train.zoo import slug

    a, b = slug("genotype:runs/darts/genotype.json"), slug("genotype:runs/darts_ii/genotype.json")
    assert a != b and a.startswith("genotype_darts_genotype_") and b.startswith("genotype_darts_ii_genotype_")
    assert slug("resnet") == "resnet" and slug("genotype:runs/darts/genotype.json") == a  # stable
    assert "/" not in slug("npz:/data/x y.npz") and ":" not in slug("npz:/data/x y.npz")


def _record(model="darts"):
    return results.make_record(base_config("train"), task="train", model=model, metrics={"test_accuracy": 0.9}, n=10,
                               start_time=results.now())


def test_results_short_writes_complete_and_failed_writes_leave_the_file_whole(tmp_path, monkeypatch):
    import errno
    import os

    from nas_jax.errors import UserError

    results.append_record(tmp_path, _record("darts"))
    before = (tmp_path / results.RESULTS_FILE).read_bytes()
    real_write = os.write

    def one_byte(fd, data):  # a short write each call: the writer must loop until all bytes are out
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", one_byte)
    results.append_record(tmp_path, _record("resnet"))
    monkeypatch.setattr(os, "write", real_write)
    assert [r["model"] for r in results.read_records(tmp_path)] == ["darts", "resnet"]
    before = (tmp_path / results.RESULTS_FILE).read_bytes()

    calls = []

    def full_disk(fd, data):  # the disk fills after a few bytes of the record
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(UserError, match="No space left on device.*not stored"):
        results.append_record(tmp_path, _record("vgg"))
    monkeypatch.setattr(os, "write", lambda fd, data: 0)  # no progress at all is an error too
    with pytest.raises(UserError, match="not stored"):
        results.append_record(tmp_path, _record("vgg"))
    monkeypatch.setattr(os, "write", real_write)
    assert (tmp_path / results.RESULTS_FILE).read_bytes() == before  # whole records only, nothing torn
    assert sorted(p.name for p in tmp_path.iterdir()) == [results.RESULTS_FILE, results.RESULTS_FILE + ".lock"]


def test_unreadable_result_lines_are_skipped_and_reported(tmp_path):
    results.append_record(tmp_path, _record("darts"))
    with open(tmp_path / results.RESULTS_FILE, "a") as f:
        f.write("garbage\n[1, 2]\n42\n")
    results.append_record(tmp_path, _record("resnet"))
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable line\(s\).*\[2, 3, 4\]"):
        assert [r["model"] for r in results.read_records(tmp_path)] == ["darts", "resnet"]
    with pytest.warns(UserWarning, match="will be skipped"):
        assert results.check_workdir(tmp_path) == [2, 3, 4]


def test_unusable_workdir_fails_before_any_work(tmp_path):
    from nas_jax.errors import UserError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        results.check_workdir(tmp_path / "afile")
    with pytest.raises(UserError, match="cannot be created or written"):
        results.check_workdir(tmp_path / "afile" / "sub")
    (tmp_path / "w" / results.RESULTS_FILE).mkdir(parents=True)
    with pytest.raises(UserError, match="not a file"):
        results.check_workdir(tmp_path / "w")
    results.check_workdir(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()
    # the launcher checks before it trains anything
    out = _launch(f"--config={ROOT}/configs/train.py", f"--workdir={tmp_path / 'afile'}", cwd=tmp_path)
    assert out.returncode != 0 and "not a directory" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("key,value,message", [
    ("eps", -1.0, r"pgd.eps=-1.0 must be > 0"),
    ("step_size", 0.0, r"pgd.step_size=0.0 must be > 0"),
    ("iterations_most_likely", 0, r"iterations_most_likely=0 must be an integer >= 1"),
    ("batch_size", 0, r"pgd.batch_size=0 must be an integer >= 1"),
    ("norm", "l3", r"valid norms: \('linf', 'l2'\)"),
    ("restarts", -1, r"restarts=-1 must be an integer >= 0"),
])
def test_attack_sections_are_validated_before_victims_load(key, value, message):
    from nas_jax.errors import UserError

    c = load_config_file(ROOT / "configs" / "pgd.py")
    validate(c)
    c.pgd[key] = value
    with pytest.raises(UserError, match=message):
        validate(c)
    c = load_config_file(ROOT / "configs" / "pgd.py")
    c.models = ("darts", "resnet", "darts")
    with pytest.raises(UserError, match=r"lists \['darts'\] more than once"):
        validate(c)


def test_verbosity_1_shows_the_traceback_of_an_expected_error(tmp_path):
    out = _launch(f"--config={ROOT}/configs/train.py", f"--workdir={tmp_path}", "--config.train.epochs=0",
                  "--verbosity=1", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr and "UserError: invalid config" in out.stderr


def test_help_exits_zero_and_lists_tasks_presets_and_a_configs_keys(tmp_path):
    general = _launch("--help", cwd=tmp_path)
    assert general.returncode == 0, general.stderr
    assert "pgd" in general.stdout and "quick, small, paper" in general.stdout and "--help" in general.stdout
    keys = _launch(f"--config={ROOT / 'configs' / 'pgd.py'}", "--help", cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr
    assert "restarts: 5" in keys.stdout and "n_inputs: 100" in keys.stdout


def _launcher_module():
    """launch/main.py as a module (once per process: it defines absl flags)."""
    import importlib.util

    if "nas_jax_launcher" not in sys.modules:
        spec = importlib.util.spec_from_file_location("nas_jax_launcher", ROOT / "launch" / "main.py")
        sys.modules["nas_jax_launcher"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["nas_jax_launcher"])
    return sys.modules["nas_jax_launcher"]


def test_one_loader_reads_each_override_by_the_type_its_key_holds():
    """--config.pgd.eps=4/255 is 4/255 (absl alone refuses it); a string key keeps its text ('1/4' shards); a
    tuple takes a literal, a bool true/false; anything that is not arithmetic on numbers is never evaluated; a
    wrong type or an unknown key is refused with the fix. The launcher, the grid and the Ray driver share it."""
    from nas_jax.config_loader import load, numeric_expression, split_argv
    from nas_jax.errors import UserError

    spec, overrides, rest = split_argv([f"--config={ROOT / 'configs' / 'study.py'}:quick", "--config.study.shard=1/4",
                                        "--config.study.overrides.pgd=('pgd.eps=4/255',)", "--workdir=w"])
    assert rest == ["--workdir=w"] and spec.endswith("study.py:quick")
    c = load(spec, overrides)
    assert c.study.shard == "1/4" and c.study.overrides.pgd == ("pgd.eps=4/255",)
    c = load(ROOT / "configs" / "pgd.py", ["pgd.eps=4/255", "seed=3", "models=('darts','vgg')", "train.flip=false"])
    assert (c.pgd.eps, c.seed, c.models, c.train.flip) == (4 / 255, 3, ("darts", "vgg"), False)
    assert load(ROOT / "configs" / "pgd.py", ["models=darts"]).models == load(ROOT / "configs" / "pgd.py",
                                                                             ["models=('darts')"]).models == ("darts",)
    assert numeric_expression("2*8/255") == 16 / 255 and numeric_expression("-1e-3") == -0.001
    assert numeric_expression("__import__('os')") is None and numeric_expression("1/0") is None
    for bad, message in [("pgd.eps=four", "holds a number"), ("pgd.n_inputs=1.5", "holds an integer"),
                         ("pgd.epz=1", "Valid keys under 'pgd'"),
                         ("pgd=1", "is a section"), ("train.seeds=(0,1)", "moved: set --config.seeds")]:
        with pytest.raises(UserError, match=message):
            load(ROOT / "configs" / "pgd.py", [bad])


def test_the_launcher_restarts_once_with_tcmalloc_when_the_machine_has_it(monkeypatch):
    """The same command again with TCMalloc preloaded; not when it is already preloaded, when the user keeps the
    system's malloc (NAS_JAX_MALLOC=system), or when the machine has no TCMalloc."""
    import ctypes.util

    launcher = _launcher_module()
    restarts = []
    monkeypatch.setattr(launcher.os, "execve", lambda path, argv, env: restarts.append((argv, env)))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libtcmalloc_minimal.so.4"
                        if name == "tcmalloc_minimal" else None)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("NAS_JAX_MALLOC", raising=False)
    launcher._preload_tcmalloc()
    (argv, env), = restarts
    assert argv == sys.orig_argv and env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4"
    monkeypatch.setenv("LD_PRELOAD", env["LD_PRELOAD"])  # the restarted process
    launcher._preload_tcmalloc()
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("NAS_JAX_MALLOC", "system")
    launcher._preload_tcmalloc()
    monkeypatch.delenv("NAS_JAX_MALLOC")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    launcher._preload_tcmalloc()
    assert len(restarts) == 1
