"""The run directory shared by training and search (nas_jax.train.run_dir): spec.json written then refused
with the differing keys, a damaged log refused with the fix, the log rewritten and truncated at an epoch."""

import json

import pytest

from nas_jax.errors import UserError
from nas_jax.search.pipeline import SearchSpecMismatchError
from nas_jax.search.pipeline import check_spec as search_check_spec
from nas_jax.train import run_dir, zoo


def test_spec_written_then_refused_on_a_differing_key(tmp_path):
    d = tmp_path / "run"
    spec = {"model": "darts", "train": {"lr": 0.025, "epochs": 4}, "shape": (8, 8, 3)}
    kw = {"refusal": f"the run {d} has another config", "fix": "Use another --workdir."}
    run_dir.check_spec(d, spec, **kw)
    assert json.loads((d / "spec.json").read_text()) == {**spec, "shape": [8, 8, 3]}
    run_dir.check_spec(d, spec, **kw)  # the same spec (tuples as stored lists) resumes
    (d / "checkpoints" / "1").mkdir(parents=True)  # the run has started: its spec binds
    with pytest.raises(UserError) as e:
        run_dir.check_spec(d, {**spec, "train": {"lr": 0.1, "epochs": 4}, "seed": 1}, **kw)
    message = str(e.value)
    assert "train.lr: stored 0.025, requested 0.1" in message and "seed: stored None, requested 1" in message
    assert "epochs" not in message and message.startswith(f"the run {d} has another config")
    assert message.endswith("Use another --workdir.")
    # each caller keeps its exception type and wording
    with pytest.raises(zoo.ZooMismatchError, match=r"was trained with a different config:\n  train.lr(.|\n)*zoo_dir"):
        zoo.check_spec(d, {**spec, "train": {"lr": 0.1, "epochs": 4}})
    with pytest.raises(SearchSpecMismatchError, match=r"holds a search(.|\n)*model: stored 'darts'(.|\n)*--workdir"):
        search_check_spec(d, {**spec, "model": "enas"})
    assert issubclass(SearchSpecMismatchError, UserError)
    (d / "spec.json").write_text('{"model": ')
    with pytest.raises(zoo.ZooEntryError, match=f"spec.json is damaged.*Delete {d}"):
        zoo.check_spec(d, spec)


def test_damaged_log_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "lo')
    with pytest.raises(UserError, match="train_log.jsonl is damaged.*Delete it"):
        run_dir.read_log(path, 5)
    path.write_text('{"loss": 1.0}\n')  # a row without its epoch
    with pytest.raises(UserError, match="is damaged \\(KeyError"):
        run_dir.read_log(path, 5)


def test_log_round_trip_truncated_at_an_epoch(tmp_path):
    path = tmp_path / "search_log.jsonl"
    assert run_dir.read_log(path, 3) == []  # no log yet
    rows = [{"epoch": e, "step": 10 * (e + 1), "loss": 1.0 / (e + 1), "genotype": {"normal": [["skip", 0]]}}
            for e in range(4)]
    run_dir.write_log(path, rows)
    assert not path.with_suffix(".tmp").exists()
    assert run_dir.read_log(path, 4) == rows
    kept = run_dir.read_log(path, 2)  # a run resumed at epoch 2 keeps epochs 0 and 1
    assert kept == rows[:2]
    run_dir.write_log(path, kept + [{"epoch": 2, "step": 30, "loss": 0.5}])
    assert [r["epoch"] for r in run_dir.read_log(path, 10)] == [0, 1, 2]
    assert len(path.read_text().splitlines()) == 3


class _Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


def test_scalars_and_bar(tmp_path):
    w = _Writer()
    row = {"epoch": 3, "step": 40, "train_loss": 0.5, "lr": 0.1}
    run_dir.write_scalars(w, "darts", row, 3)
    run_dir.write_scalars(w, "search", row, 3, ("lr", "hessian_eigenvalue"))
    assert w.scalars == [("darts/train_loss", 0.5, 3), ("darts/lr", 0.1, 3), ("search/lr", 0.1, 3)]
    run_dir.write_scalars(None, "x", row, 3)  # no writer: nothing to do
    assert run_dir.tensorboard_writer(None) is None
    assert run_dir.progress_bar(10, 4, "train", enabled=False).disable
    bar = run_dir.progress_bar(10, 4, "train")
    assert bar.n == 4 and bar.total == 10
    bar.close()


def test_the_step_bar_says_compiling_and_leaves_the_first_step_out_of_its_rate():
    """The first step compiles (here: a 0.5 s pause); the rate and ETA after it count the fast steps only."""
    import io
    import time

    from nas_jax.train.run_dir import StepBar

    out = io.StringIO()
    bar = StepBar(total=20, initial=4, desc="train", file=out, mininterval=0)
    assert "compiling" in out.getvalue()
    time.sleep(0.5)
    bar.update(1)
    for _ in range(4):
        time.sleep(0.01)
        bar.update(1)
    info = bar.format_dict
    rate = (info["n"] - info["initial"]) / info["elapsed"]
    assert info["n"] == 9 and info["initial"] == 5 and info["elapsed"] < 0.4 and rate > 10
    assert "compiling" not in out.getvalue().rsplit("\r", 1)[-1]
    bar.close()
