"""Every input is checked before any work: genotype files, NAS depth, batch sizes, attack budgets, input counts,
npz pixels and the JAX backend fail (or warn) in config validation, as one `error:` paragraph."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from nas_jax.config import PRESETS
from nas_jax.errors import UserError
from nas_jax.models import genotypes
from nas_jax.study import grid, victims
from nas_jax.tasks import TASKS
from nas_jax.tasks import check_config as validate  # the shared checks and the task's own settings

ROOT = Path(__file__).resolve().parents[1]


def _launch(*args, cwd, env=None):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _pgd(**pgd):
    c = grid.task_config("pgd", "quick")
    c.pgd.update(pgd)
    return c


def _no_warnings(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(config)


def test_a_bad_genotype_file_after_a_good_victim_fails_before_training(tmp_path):
    bad = tmp_path / "bad.json"
    d = genotypes.get_genotype("darts").to_json()
    d["normal"][3] = 1  # an int where an [op, input] pair belongs
    bad.write_text(json.dumps(d))
    out = _launch(f"--config={ROOT}/configs/pgd.py", f"--workdir={tmp_path / 'w'}", "--config.jit_cache_dir=",
                  f"--config.models=('resnet','genotype:{bad}')", "--config.train.epochs=1", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert str(bad) in out.stderr and "item 3 is 1, not an [op, input_index] pair" in out.stderr
    assert not (tmp_path / "zoo").exists()  # resnet, listed first, was not trained


def test_genotype_files_are_parsed_in_validation_naming_the_file(tmp_path):
    good = genotypes.get_genotype("pdarts").to_json()
    cases = {
        "syntax.json": ('{"normal": [["sep_conv_3x3", 0]', r"not valid JSON \(Expecting .* at line 1, column 32\)"),
        "list.json": ("[1, 2]", "holds a JSON list, not an object"),
        "short.json": (json.dumps({**good, "reduce": [["max_pool_3x3"], ["skip_connect", 1]]}),
                       r"\(reduce cell\): item 0 is \['max_pool_3x3'\], not an \[op, input_index\] pair"),
        "index.json": (json.dumps({**good, "reduce_concat": ["2"]}), r"\(reduce_concat\).*not a list of node indices"),
        "keys.json": (json.dumps({"normal": good["normal"]}), "missing keys"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        for field, value in (("models", ("resnet", f"genotype:{tmp_path / name}")),
                             ("model", f"genotype:{tmp_path / name}")):
            c = grid.task_config("pgd", "quick")
            c[field] = value
            with pytest.raises(UserError, match=message) as e:
                validate(c)
            assert str(tmp_path / name) in str(e.value)
    keys = str(pytest.raises(UserError, validate, _with(grid.task_config("train", "quick"), "model",
                                                        f"genotype:{tmp_path / 'keys.json'}")).value)
    assert "reference/" not in keys and "normal_concat" in keys and "nas_jax/models/genotypes.json" in keys
    assert "[op, input_index] pairs, two per intermediate node" in keys
    # other model-name fields: cells.genotypes, stealing.matrix_models, zoo.models, study.models
    bad = f"genotype:{tmp_path / 'list.json'}"
    for task, field in (("cells", "genotypes"), ("stealing", "matrix_models"), ("zoo", "models"), ("study", "models")):
        c = grid.task_config(task, "quick")
        c[task][field] = ("darts", bad)
        with pytest.raises(UserError, match="list.json"):
            validate(c)
    with pytest.raises(FileNotFoundError, match="missing.json"):  # still a FileNotFoundError, and a UserError
        validate(_with(grid.task_config("pgd", "quick"), "models", (f"genotype:{tmp_path / 'missing.json'}",)))
    # the format's example parses; the content hash is stable and tells genotypes apart
    example = json.loads(genotypes.FORMAT.split("e.g. ")[1].split(" (the bundled")[0])
    genotypes.genotype_from_dict(example)
    (tmp_path / "ok.json").write_text(json.dumps(good))
    assert genotypes.genotype_sha256(genotypes.get_genotype(f"genotype:{tmp_path / 'ok.json'}")) == \
        genotypes.genotype_sha256(genotypes.get_genotype("pdarts")) != genotypes.genotype_sha256(
            genotypes.get_genotype("darts"))


def _with(config, key, value):
    config[key] = value
    return config


def test_nas_victims_need_three_layers():
    c = grid.task_config("pgd", "quick")
    c.arch.layers = 2
    with pytest.raises(UserError, match=r"arch.layers=2, but the NAS networks \['darts', 'snas'\] need at least 3"):
        validate(c)
    c.models = ("resnet", "vgg")  # manual models have no cells
    validate(c)
    c = grid.task_config("zoo", "quick")
    c.zoo.layers = 2
    with pytest.raises(UserError, match="zoo.layers=2"):
        validate(c)


def test_seeds_are_distinct_integers():
    c = grid.task_config("pgd", "quick")
    c.seeds = (0, 1, 2)
    validate(c)
    for bad in ((0, 0), (0, "1")):
        c.seeds = bad
        with pytest.raises(UserError, match="must list distinct integers"):
            validate(c)


def test_model_names_in_a_tasks_settings_are_checked_with_the_models(tmp_path):
    """A settings field made with seam.model_names (stealing's Table 2 matrix) is checked as ``models`` is: an
    unknown name, a broken genotype file or too few cells fail before any work."""
    c = grid.task_config("stealing", "quick")
    validate(c)
    c.stealing.matrix_models = ("darts", "nosuch")
    with pytest.raises(UserError, match="unknown model 'nosuch'"):
        validate(c)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    c.stealing.matrix_models = ("darts", f"genotype:{broken}")
    with pytest.raises(UserError, match="broken.json"):
        validate(c)
    c.stealing.matrix_models, c.models, c.arch.layers = ("darts",), ("resnet",), 2
    with pytest.raises(UserError, match=r"arch.layers=2, but the NAS network \['darts'\]"):
        validate(c)


def test_batch_size_must_fit_the_training_set_and_the_devices(monkeypatch):
    c = grid.task_config("train", "quick")
    c.train.batch_size = 1440  # digits: 1,437 training images
    with pytest.raises(UserError, match="train.batch_size=1440 is larger than the 1437 training images of digits"):
        validate(c)
    c = grid.task_config("train", "quick")
    c.train_overrides.vgg.batch_size = 2000
    with pytest.raises(UserError, match="train_overrides.vgg.batch_size=2000"):
        validate(c)
    c = grid.task_config("search", "quick")
    c.train.batch_size = 720  # the weight half: 718
    with pytest.raises(UserError, match="718 training images of digits \\(50% of them, the part the task trains on\\)"):
        validate(c)
    c = grid.task_config("pgd", "paper")  # fixed CIFAR-10 sizes: no data needed
    c.train.batch_size = 50_008
    with pytest.raises(UserError, match="50000 training images of cifar10"):
        validate(c)

    import jax

    monkeypatch.setattr(jax, "device_count", lambda: 3)
    c = grid.task_config("train", "quick")
    c.train.batch_size = 100
    with pytest.raises(UserError, match="not divisible by the 3 device.*multiple of 3.*batch_size=102"):
        validate(c)
    c.train.batch_size = 99
    validate(c)


def test_attack_budgets_are_checked_against_the_pixel_range():
    for task in TASKS:  # the shipped configs validate, without a warning
        for preset in PRESETS:
            _no_warnings(grid.task_config(task, preset))
    with pytest.raises(UserError, match=r"pgd.eps=1000000000.0: an L∞ radius of 1e\+09 exceeds 1"):
        validate(_pgd(eps=1e9))
    c = grid.task_config("pgd_sweep", "quick")
    c.pgd_sweep.eps_grid_255 = (8, 306)  # units of 1/255
    with pytest.raises(UserError, match=r"eps_grid_255=\(8, 306\): an L∞ radius of 1.2 exceeds 1"):
        validate(c)
    with pytest.raises(UserError, match="L2 radius of 56 exceeds 55.43, the L2 distance .* 32x32x3 image"):
        validate(_pgd(norm="l2", eps=56.0))
    c = grid.task_config("adv_train", "quick")  # no norm field: L∞
    c.adv_train.eval_eps = 2.0
    with pytest.raises(UserError, match="adv_train.eval_eps=2.0"):
        validate(c)
    with pytest.warns(UserWarning, match=r"pgd.eps=0.2: an L∞ radius of 0.2 is above 0.1255"):
        validate(_pgd(eps=0.2))
    with pytest.warns(UserWarning, match="L2 radius of 20 is above 13.86"):
        validate(_pgd(norm="l2", eps=20.0))
    _no_warnings(_pgd(norm="l2", eps=0.5))


def test_input_counts_above_the_dataset_warn_with_the_number_used():
    with pytest.warns(UserWarning, match="pgd.n_inputs=1000 is more than the 360 test images of digits: at most 360"):
        validate(_pgd(n_inputs=1000))
    c = grid.task_config("membership", "quick")
    c.membership.n_members = 1500
    with pytest.raises(UserError, match="membership.n_members=1500 is more than the 1437 training images"):
        validate(c)
    correct = np.array([True, False, True, False])
    with pytest.warns(UserWarning, match="5 attack inputs requested, 2 used: only 2 of the 4 test inputs"):
        assert list(victims.correct_inputs(correct, np.array([3, 2, 1, 0]), 5)) == [2, 0]


def test_npz_sizes_come_from_the_headers_and_bad_pixels_are_named(tmp_path):
    from nas_jax.data import dataset_info, load_dataset

    path = tmp_path / "d.npz"
    x = np.zeros((12, 8, 8, 1), np.float32)
    np.savez(path, x_train=x, y_train=np.arange(12) % 2, x_test=x[:5], y_test=np.arange(5) % 2)
    info = dataset_info(f"npz:{path}")
    assert (info.n_train, info.n_test, info.image_shape) == (12, 5, (8, 8, 3))
    digits = load_dataset("digits")
    assert dataset_info("digits") == type(info)(len(digits.y_train), len(digits.y_test), digits.image_shape)
    c = grid.task_config("pgd", "quick")
    c.dataset = f"npz:{path}"
    with pytest.raises(UserError, match="train.batch_size=96 is larger than the 12 training images"):
        validate(c)
    c.dataset = f"npz:{tmp_path / 'absent.npz'}"
    with pytest.raises(UserError, match="absent.npz' not found"):
        validate(c)

    x[3, 1, 2, 0], x[4, 0, 0, 0] = np.nan, np.inf
    np.savez(path, x_train=x, y_train=np.arange(12) % 2, x_test=x[:5], y_test=np.arange(5) % 2)
    with pytest.raises(UserError, match=r"x_train holds 1 NaN and 1 infinite pixel values \(first at index "
                                        r"\(3, 1, 2, 0\)\)"):
        load_dataset(f"npz:{path}")


def test_an_unusable_jax_platform_is_one_paragraph(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "tpu"}
    out = _launch(f"--config={ROOT}/configs/train.py", f"--workdir={tmp_path / 'w'}", cwd=tmp_path, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.startswith("error: JAX could not start the backend requested by JAX_PLATFORMS=tpu (")
    assert "Unset JAX_PLATFORMS or set it to one of the platforms this machine has (cpu" in out.stderr
