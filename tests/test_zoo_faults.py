"""Zoo entries under faults: a changed npz file, a deleted or damaged checkpoint or JSON
file, two runs on one entry."""

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from nas_jax.train import zoo

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import tiny_config, tiny_dataset  # noqa: E402


def test_npz_entry_keys_on_the_file_contents(tmp_path):
    path = tmp_path / "data.npz"
    x = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(4) % 2, x_test=x, y_test=np.arange(4) % 2)
    config = tiny_config(zoo_dir=str(tmp_path / "zoo"))
    config.dataset = f"npz:{path}"
    spec = zoo.training_spec(config, "darts")
    assert spec["dataset_sha256"] == zoo.file_sha256(str(path))
    zoo.check_spec(tmp_path / "entry", spec)
    (tmp_path / "entry" / "checkpoints" / "8").mkdir(parents=True)  # training started: the spec binds
    time.sleep(0.01)
    np.savez(path, x_train=x, y_train=np.arange(4) % 2, x_test=x, y_test=1 - np.arange(4) % 2)  # same path
    changed = zoo.training_spec(config, "darts")
    with pytest.raises(zoo.ZooMismatchError, match="dataset_sha256: stored"):
        zoo.check_spec(tmp_path / "entry", changed)


def test_finished_entry_restores_only_its_final_step_and_damage_is_a_clear_error(tmp_path):
    config = tiny_config(zoo_dir=str(tmp_path / "zoo"))  # 2 epochs of 8 steps: checkpoints 8 and 16
    ds = tiny_dataset()
    first = zoo.get_or_train(config, dataset=ds, progress=False)
    directory = first.run_dir
    assert json.loads((directory / "final.json").read_text())["step"] == 16

    # A second run on an entry that is still in training waits for the lock, then restores what the first
    # finished (a finished entry is read without the lock: a read-only zoo serves it).
    got = {}
    with zoo.entry_lock(directory):
        final = (directory / "final.json").rename(directory / "final.json.away")
        worker = threading.Thread(target=lambda: got.update(entry=zoo.get_or_train(config, dataset=ds,
                                                                                     progress=False)))
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and not got  # still waiting
        final.rename(directory / "final.json")
    worker.join(timeout=120)
    assert got["entry"].test_accuracy == first.test_accuracy

    final = (directory / "final.json").read_text()
    (directory / "final.json").write_text('{"test_accuracy": 0.9')  # torn: rebuilt from the final checkpoint
    with pytest.warns(UserWarning, match="final.json is damaged; rebuilding it"):
        assert zoo.get_or_train(config, dataset=ds, progress=False).test_accuracy == first.test_accuracy
    assert json.loads((directory / "final.json").read_text())["step"] == 16
    (directory / "final.json").write_text(final)

    shutil.rmtree(directory / "checkpoints" / "16")  # the last checkpoint deleted: 8 is still there
    with pytest.raises(zoo.ZooEntryError, match=r"finished at step 16.*missing \(stored steps: \[8\]\)"):
        zoo.get_or_train(config, dataset=ds, progress=False)
    for f in (directory / "checkpoints" / "8").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    (directory / "final.json").write_text(json.dumps({**json.loads(final), "step": 8}))
    from nas_jax.train.checkpoint import CheckpointCorruptError

    with pytest.raises(CheckpointCorruptError, match="checkpoints/8 cannot be read"):
        zoo.get_or_train(config, dataset=ds, progress=False)
    assert jax.process_index() == 0
