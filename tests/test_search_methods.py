"""Other NAS searchers on the DARTS machinery: PC-DARTS, GDAS, SNAS, DrNAS, random search.

Tiny supernets (C = 2-4, one or two cells, 8x8 inputs, batch 4) against independent references: the DARTS
mixed op, a hand-computed straight-through gradient, the analytic gradient of a Dirichlet expectation.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nas_jax.config_loader import load_config_file
from nas_jax.data import Dataset, load_dataset
from nas_jax.errors import UserError
from nas_jax.models.genotypes import genotype_from_dict
from nas_jax.models.search_space import edge_normalisation, num_edges
from nas_jax.models.searchers import SEARCHERS, dirichlet_kl, resolve
from nas_jax.models.supernet import MixedOp, PartialMixedOp, Supernet, channel_shuffle
from nas_jax.search import darts
from nas_jax.search.genotype import derive_genotype
from nas_jax.search.pipeline import SearchSpecMismatchError, run_search

ROOT = Path(__file__).resolve().parents[1]
OPS = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3")
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
# whole searches: parameter-free ops compile in a fraction of a sep_conv's time; the preprocessing convs still train
SEARCH_OPS = ("none", "skip_connect", "avg_pool_3x3", "max_pool_3x3")


def test_pc_darts_with_k1_is_the_darts_mixed_op_and_shuffle_is_a_transpose():
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 4))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(1), (len(OPS),)))
    ref = MixedOp(4, 1, OPS, True, "xla")
    v = ref.init(jax.random.key(2), x, w)
    expected, _ = ref.apply(v, x, w, mutable=["batch_stats"])
    pc = PartialMixedOp(4, 1, OPS, True, "xla", k=1)
    got, _ = pc.apply({k: {"mixed": t} for k, t in v.items()}, x, w, mutable=["batch_stats"])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # channel shuffle: channel g*(C/G) + i goes to i*G + g
    y = channel_shuffle(jnp.arange(8.0).reshape(1, 1, 1, 8), 2)
    np.testing.assert_array_equal(np.ravel(y), [0, 4, 1, 5, 2, 6, 3, 7])
    # K = 2: the second half bypasses the op (shuffled to the odd channels); max-pooled on a stride-2 edge
    pc2 = PartialMixedOp(4, 2, OPS, True, "xla", k=2)
    v2 = pc2.init(jax.random.key(3), x, w)
    out, _ = pc2.apply(v2, x, w, mutable=["batch_stats"])
    assert out.shape == (4, 4, 4, 4)
    np.testing.assert_allclose(out[..., 1::2], jax.lax.reduce_window(x[..., 2:], -jnp.inf, jax.lax.max,
                                                                       (1, 2, 2, 1), (1, 2, 2, 1), "VALID"))
    # edge normalisation: uniform β -> 1/(inputs of the node)
    np.testing.assert_allclose(edge_normalisation(jnp.zeros(num_edges(3)), 3),
                               [1 / 2] * 2 + [1 / 3] * 3 + [1 / 4] * 4, rtol=1e-6)


def _net(method, **kw):
    return Supernet(4, MEAN, STD, init_channels=2, layers=1, steps=2, multiplier=2, op_names=OPS, conv_impl="xla",
                    searcher=SEARCHERS[method], **kw)


def test_gdas_runs_one_op_per_edge_and_its_gradient_is_straight_through():
    net, x, y = _net("gdas"), jax.random.uniform(jax.random.key(0), (4, 8, 8, 3)), jnp.array([0, 1, 2, 3])
    v = jax.jit(net.init)({"params": jax.random.key(1)}, x)
    # forward: one lax.switch (cond) per edge, nothing else chooses between ops
    jaxpr = jax.make_jaxpr(lambda v, k: net.apply(v, x, train=True, tau=2.0, rngs={"sample": k},
                                                  mutable=["batch_stats"]))(v, jax.random.key(2))
    conds = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond"]
    assert len(conds) == num_edges(2) and all(len(e.params["branches"]) == len(OPS) for e in conds)

    def loss_of_weights(w):
        logits, _ = net.apply(v, x, train=True, weights=w, mutable=["batch_stats"])
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])

    alpha = {k: jax.random.normal(jax.random.key(3 + i), (num_edges(2), len(OPS))) for i, k in
             enumerate(("normal", "reduce"))}
    key, tau = jax.random.key(9), 2.0

    def sampled(a):
        return {k: SEARCHERS["gdas"].weights(a[k], jax.random.fold_in(key, i), tau, 2, OPS)
                for i, k in enumerate(("normal", "reduce"))}

    got = jax.jit(jax.grad(lambda a: loss_of_weights(sampled(a))))(alpha)
    # by hand: hard one-hot of argmax(α + g) forward; dL/dα = J_softmax((α+g)/τ)ᵀ dL/dW at W = hard
    hard, soft = {}, {}
    for i, k in enumerate(("normal", "reduce")):
        g = jax.random.gumbel(jax.random.fold_in(key, i), alpha[k].shape)
        soft[k] = np.asarray(jax.nn.softmax((alpha[k] + g) / tau), np.float64)
        hard[k] = np.asarray(jax.nn.one_hot(jnp.argmax(alpha[k] + g, -1), len(OPS)))
    np.testing.assert_allclose(sampled(alpha)["normal"], hard["normal"], atol=1e-6)
    dw = jax.jit(jax.grad(loss_of_weights))({k: jnp.asarray(h) for k, h in hard.items()})
    for k in hard:
        assert np.all(np.asarray(dw[k])[hard[k] == 0] == 0)  # unsampled ops were not evaluated
        s, d = soft[k], np.asarray(dw[k], np.float64)
        hand = (s * d - s * (s * d).sum(-1, keepdims=True)) / tau
        np.testing.assert_allclose(got[k], hand, rtol=1e-4, atol=1e-7)


def test_drnas_reparameterised_gradient_matches_the_dirichlet_mean():
    """E_{w ~ Dir(c)} <w, v> = <c / Σc, v> with c = elu(α) + 1: the Monte-Carlo gradient through
    jax.random.dirichlet (implicit reparameterisation of its gamma draws) matches the analytic one."""
    alpha, v = jnp.array([0.3, -0.5, 1.2, 0.0]), jnp.array([1.0, -2.0, 0.5, 3.0])
    keys = jax.random.split(jax.random.key(0), 40_000)

    def mc(a):
        w = jax.vmap(lambda k: SEARCHERS["drnas"].weights(a[None], k, 1.0, 1, OPS)[0])(keys)
        return jnp.mean(w @ v)

    def exact(a):
        c = jax.nn.elu(a) + 1.0
        return jnp.dot(c / c.sum(), v)

    np.testing.assert_allclose(mc(alpha), exact(alpha), atol=0.02)
    np.testing.assert_allclose(jax.grad(mc)(alpha), jax.grad(exact)(alpha), atol=0.03)
    # the regulariser KL(Dir(β) || Dir(1)): zero at β = 1 (α = 0), its gradient by central differences
    arch = {"normal": jnp.zeros((2, 4)), "reduce": jnp.zeros((2, 4))}
    assert abs(float(dirichlet_kl(arch))) < 1e-5
    a = {"normal": jnp.array([[0.3, -0.2, 0.5, 0.1], [0.0, 0.4, -0.3, 0.2]], jnp.float32), "reduce": arch["reduce"]}
    g = jax.grad(dirichlet_kl)(a)["normal"][0, 0]
    eps = 1e-2
    plus = {**a, "normal": a["normal"].at[0, 0].add(eps)}
    minus = {**a, "normal": a["normal"].at[0, 0].add(-eps)}
    fd = (dirichlet_kl(plus) - dirichlet_kl(minus)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-2)


def test_snas_is_a_relaxed_gumbel_softmax_and_gdas_tau_anneals():
    a, key = jnp.array([[0.1, 0.5, -0.3, 0.2]]), jax.random.key(4)
    g = jax.random.gumbel(key, a.shape)
    np.testing.assert_allclose(SEARCHERS["snas"].weights(a, key, 0.5, 1, OPS),
                               jax.nn.softmax((a + g) / 0.5), rtol=1e-6)
    gdas, settings = resolve(ml_collections.ConfigDict({"method": "gdas"}))  # the record's defaults: 10 -> 0.1
    sc = darts.StepConfig(searcher=gdas, epochs=5, steps_per_epoch=10, settings=tuple(settings.items()))
    assert [float(sc.tau(e * 10)) for e in range(5)] == pytest.approx([10, 7.525, 5.05, 2.575, 0.1], rel=1e-5)
    snas = darts.StepConfig(searcher=SEARCHERS["snas"], epochs=3, steps_per_epoch=10,
                            settings=(("tau_max", 1.0), ("tau_min", 0.01)))
    assert [float(snas.tau(e * 10)) for e in range(3)] == pytest.approx([1, 0.1, 0.01], rel=1e-5)  # geometric
    assert float(darts.StepConfig().tau(15)) == 1.0  # DARTS has no temperature
    with pytest.raises(UserError, match="valid"):
        resolve(ml_collections.ConfigDict({"method": "enas"}))
    with pytest.raises(UserError, match="tau_min"):
        resolve(ml_collections.ConfigDict({"method": "snas", "snas": {"tau_max": 0.1, "tau_min": 1.0}}))
    with pytest.raises(UserError, match="n_step"):
        darts.StepConfig(searcher=SEARCHERS["random"], n_step=2)


def _search_config(method):
    c = load_config_file(ROOT / "configs" / "search.py", "quick")
    c.arch.init_channels, c.arch.layers, c.arch.conv_impl = 2, 1, "xla"
    c.search.steps, c.search.primitives, c.search.method = 2, SEARCH_OPS, method
    c.search.hypergradient, c.search.pc_darts.k = "first_order", 2
    c.search.hessian_iterations, c.search.hessian_batches = 1, 1
    c.search.random.candidates, c.search.random.eval_batches = 4, 1
    c.train.epochs, c.train.batch_size = 1, 16
    return c


@pytest.fixture(scope="module")
def small_digits():
    ds = load_dataset("digits", native=True)
    return Dataset("digits", ds.x_train[:64], ds.y_train[:64], ds.x_test[:8], ds.y_test[:8], ds.num_classes, ds.mean,
                   ds.std)


@pytest.mark.parametrize("method", ["pc_darts", "gdas", "snas", "drnas", "random"])
def test_every_method_searches_a_valid_genotype_reproducibly(tmp_path, small_digits, method):
    c = _search_config(method)
    out = run_search(c, tmp_path / "a", dataset=small_digits, progress=False)
    g = genotype_from_dict(out["genotype"].to_json(), "test")
    assert len(g.normal) == 4 and all(op != "none" for op, _ in g.normal + g.reduce)
    assert np.isfinite(out["log"][-1]["hessian_eigenvalue"]) and np.isfinite(out["log"][-1]["val_loss"])
    assert (tmp_path / "a" / "genotype.json").exists()
    again = run_search(c, tmp_path / "b", dataset=small_digits, progress=False)  # same seed, same genotype
    assert again["genotype"] == out["genotype"]
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(again["state"].arch)[0],
                                  jax.tree_util.tree_leaves(out["state"].arch)[0])
    if method == "random":
        assert out["log"][-1]["candidate_val_accuracy"] >= 0
    else:
        assert out["genotype"] == derive_genotype(jax.device_get(out["state"].arch), 1.0, SEARCH_OPS, 2, 2,
                                                   SEARCHERS[method])
    other = _search_config("darts")  # the method is part of the spec: resuming with another one is refused
    with pytest.raises(SearchSpecMismatchError, match="method"):
        run_search(other, tmp_path / "a", dataset=small_digits, progress=False)


def test_method_and_mitigation_errors(tmp_path, small_digits):
    c = _search_config("nope")
    with pytest.raises(UserError, match="pc_darts"):
        run_search(c, tmp_path / "x", dataset=small_digits, progress=False)
    c = _search_config("random")
    c.search.skip_gamma = 0.5
    with pytest.raises(UserError, match="skip_gamma"):
        run_search(c, tmp_path / "y", dataset=small_digits, progress=False)
    c = _search_config("pc_darts")
    c.search.pc_darts.k = 3
    with pytest.raises(UserError, match="pc_darts.k"):
        run_search(c, tmp_path / "z", dataset=small_digits, progress=False)


def test_random_genotypes_of_the_space_are_valid_uniform_and_reproducible():
    """The space's random cells (random search's sampling): every node two distinct earlier inputs with a non-none
    op; op choices and node 5's input pairs uniform (chi-square on 200 genotypes, fixed seed); genotype i depends
    on the seed and i only."""
    from scipy import stats

    from nas_jax.search.random_search import random_genotypes

    cells = random_genotypes(0, 200)
    assert random_genotypes(0, 7) == cells[:7] and random_genotypes(1, 7) != cells[:7]
    pairs = {}
    for g in cells:
        assert genotype_from_dict(g.to_json(), "random") == g and g.normal_concat == (2, 3, 4, 5)
        for cell in (g.normal, g.reduce):
            for j in range(4):
                (op_a, a), (op_b, b) = cell[2 * j : 2 * j + 2]
                assert a != b and max(a, b) < j + 2 and "none" not in (op_a, op_b)
            key = tuple(sorted(i for _, i in cell[6:]))
            pairs[key] = pairs.get(key, 0) + 1
    ops = [op for g in cells for op, _ in g.normal + g.reduce]
    counts = [ops.count(o) for o in sorted(set(ops))]
    assert len(counts) == 7 and stats.chisquare(counts).pvalue > 0.01
    assert len(pairs) == 10 and stats.chisquare(list(pairs.values())).pvalue > 0.01  # C(5, 2) pairs
