"""Training through the space network (``arch.space_network``): through the zoo a second genotype of a shape
compiles nothing and its entry computes its own genotype; a population of seeds shares one genotype and each
member steps as its seed alone; per-op dropout and drop-path act as in the per-genotype cell (same distribution,
other draws) and the auxiliary head gives the per-genotype network's logits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.models import space
from nas_jax.models.darts import DartsNetwork
from nas_jax.models.genotypes import get_genotype

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import tiny_config, tiny_dataset

KW = {"num_classes": 10, "mean": (0.5, 0.4, 0.3), "std": (0.25, 0.2, 0.3), "init_channels": 2, "layers": 3,
      "conv_impl": "xla"}

ZOO_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
import jax, numpy as np
from train_worker import tiny_config, tiny_dataset
from nas_jax.models import space
from nas_jax.models.genotypes import get_genotype
from nas_jax.train import zoo

events = []
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
c = tiny_config(zoo_dir=sys.argv[1])
c.arch.init_channels, c.arch.space_network, c.train.epochs = 2, True, 1
ds = tiny_dataset()
out = {}
for name in ("darts", "snas", "snas"):
    n0 = len(events)
    e = zoo.get_or_train(c, name, ds, progress=False)
    x = ds.x_test[:8] / 255.0
    own = e.model.apply({k: e.variables[k] for k in ("params", "batch_stats")}, x)  # its genotype as constants
    want = space.genotype_arrays(get_genotype(name), e.model.space_ops)
    out.setdefault(name, []).append({
        "requests": events[n0:].count("/jax/compilation_cache/compile_requests_use_cache"),
        "hits": events[n0:].count("/jax/compilation_cache/cache_hits"), "folder": e.run_dir.name,
        "spec_space": json.loads((e.run_dir / "spec.json").read_text())["arch"]["space_network"],
        "genotype": all(np.array_equal(e.variables["genotype"][k], v) for k, v in want.items()),
        "max_diff": float(np.max(np.abs(e.model.apply(e.variables, x) - own))),
        "digest": float(sum(np.sum(np.abs(v)) for v in jax.tree_util.tree_leaves(e.variables["params"])))})
print(json.dumps(out))
"""


def test_a_second_genotype_trains_in_the_first_ones_programs_and_its_entry_is_its_genotype(tmp_path):
    """A fresh process with its own persistent compilation cache trains darts, then snas (the same shape): every
    program snas needs (init, train step, evaluation) is a cache hit; its zoo entry (``quick_space``, spec with
    ``space_network``) carries snas's genotype, computes snas's network, and restores unchanged."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    run = subprocess.run([sys.executable, "-c", ZOO_SCRIPT, str(tmp_path / "zoo"), str(Path(__file__).parent)],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    first, (trained, restored) = out["darts"][0], out["snas"]
    assert first["requests"] > first["hits"]  # darts compiled the shape's programs
    assert trained["requests"] >= 3 and trained["hits"] == trained["requests"]  # snas compiled nothing
    for entry in (first, trained, restored):
        assert entry["folder"] == "quick_space" and entry["spec_space"] is True and entry["genotype"]
        assert entry["max_diff"] < 1e-5
    assert restored["digest"] == trained["digest"] != first["digest"]


def test_a_population_shares_its_genotype_and_each_member_steps_as_its_seed_alone():
    """Two seeds stacked: the genotype stays one (a per-member genotype would make every slot's switch run all its
    ops under vmap); one population step equals each seed's step alone."""
    from nas_jax import parallel
    from nas_jax.train import trainer

    c, ds = tiny_config(zoo_dir=""), tiny_dataset()
    model = space.SpaceNetwork(get_genotype("snas"), dropout=0.0, **KW)
    tx = trainer.make_optimizer(c.train, 8)
    states = [trainer.create_state(model, tx, trainer.init_key(s), ds.x_train.shape[1:]) for s in (0, 1)]
    stacked = trainer.stack(states)
    assert stacked.fixed["genotype"]["normal_ops"].shape == (8,) and stacked.params["classifier"]["bias"].shape[0] == 2
    batches = [(ds.x_train[i * 32:(i + 1) * 32], ds.y_train[i * 32:(i + 1) * 32]) for i in (0, 1)]
    mesh = parallel.data_mesh()
    together, _ = trainer.make_train_step(model, tx, c.train, c.arch, 8, (0, 1), mesh)(
        stacked, np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches]))
    alone_step = trainer.make_train_step(model, tx, c.train, c.arch, 8, 0, mesh)
    for i, seed in enumerate((0, 1)):
        step = alone_step if seed == 0 else trainer.make_train_step(model, tx, c.train, c.arch, 8, seed, mesh)
        alone, _ = step(states[i], *batches[i])
        member = trainer.member(together, i)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                               member.variables, alone.variables)


def _train_logits(model, variables, x, keys, **kwargs):
    """Train-mode logits for each dropout key (K, N, classes)."""
    def one(key):
        return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"], **kwargs)[0]

    return np.asarray(jax.jit(jax.vmap(one))(keys))


def _same_distribution(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two samples (K draws of the same logits) agree in mean (every |z| < 4 over the 40 logits) and in
    mean variance (ratio in [0.93, 1.075]; three independent samples of one network gave 0.997-1.029)."""
    k = len(a)
    z = (a.mean(0) - b.mean(0)) / np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / k)
    ratio = a.var(0, ddof=1).mean() / b.var(0, ddof=1).mean()
    return bool(np.max(np.abs(z)) < 4 and 0.93 <= ratio <= 1.075)


def test_dropout_and_drop_path_act_as_in_the_genotype_cell():
    """With the same variables, the train-mode logits of 1,024 dropout keys have the per-genotype network's mean
    and spread (dropout 0.3 and drop-path 0.2 on every op but an identity skip_connect); the check tells them
    from dropout 0.4 (|z| 4.7, variance ratio 0.87) and from no drop-path (|z| 7.7, ratio 2.2)."""
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    nets = {(p, dp): DartsNetwork(get_genotype("darts_v2"), dropout=p, use_drop_path=dp, **KW)
            for p, dp in ((0.3, True), (0.4, True), (0.3, False))}
    net = space.SpaceNetwork(get_genotype("darts_v2"), dropout=0.3, use_drop_path=True, **KW)
    v = nets[(0.3, True)].init(jax.random.key(2), x)
    w = space.variables_from_network(nets[(0.3, True)], v, net.init(jax.random.key(1), x))
    got = _train_logits(net, w, x, jax.random.split(jax.random.key(5), 1024), drop_path_prob=0.2)
    want = {k: _train_logits(n, v, x, jax.random.split(jax.random.key(6), 1024), drop_path_prob=0.2)
            for k, n in nets.items()}
    assert _same_distribution(got, want[(0.3, True)])
    assert not _same_distribution(got, want[(0.4, True)]) and not _same_distribution(got, want[(0.3, False)])
    np.testing.assert_allclose(net.apply(w, x), nets[(0.3, True)].apply(v, x), rtol=1e-5, atol=1e-6)  # eval mode


def test_the_auxiliary_head_is_the_genotype_networks():
    """Train-mode logits and auxiliary logits (32-pixel images: the head pools an 8x8 map) with the same variables."""
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    reference = DartsNetwork(get_genotype("pc_darts"), auxiliary=True, dropout=0.0, **KW)
    net = space.SpaceNetwork(get_genotype("darts_v2"), auxiliary=True, dropout=0.0, **KW)
    v = reference.init(jax.random.key(2), x)
    w = space.variables_from_network(reference, v, net.init(jax.random.key(1), x))
    (want, want_vars), (got, got_vars) = (m.apply(u, x, train=True, mutable=["batch_stats", "intermediates"])
                                          for m, u in ((reference, v), (net, w)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)  # float32, BN over 2 images
    np.testing.assert_allclose(got_vars["intermediates"]["aux_logits"][0], want_vars["intermediates"]["aux_logits"][0],
                               rtol=1e-4, atol=2e-5)
    assert jnp.all(jnp.isfinite(got))
