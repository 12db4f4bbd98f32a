"""DARTS search: supernet, bi-level hypergradients, mitigations, genotype derivation, resumable search.

XLA:CPU compiles the second-order steps slowly, so the hypergradient checks run on a one-cell supernet with
one node and three ops, in float64 so that central finite differences are exact to many digits.
"""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from nas_jax.data import Dataset, load_dataset
from nas_jax.models.genotypes import get_genotype, primitives
from nas_jax.models.ops import ReLUConvBN
from nas_jax.models.searchers import SEARCHERS
from nas_jax.models.supernet import ARCH, SearchCell, Supernet, skip_scaled
from nas_jax.search import darts
from nas_jax.search.genotype import derive_cell, derive_genotype, save_genotype
from nas_jax.search.pipeline import SearchSpecMismatchError, run_search

sys.path.insert(0, str(Path(__file__).parent))
from train_worker import fast_jit

from nas_jax.config_loader import load_config_file

ROOT = Path(__file__).resolve().parents[1]
OPS = ("none", "skip_connect", "avg_pool_3x3")
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def tiny_supernet(**kw) -> Supernet:
    """One (reduction) cell, one node fed by two MixedOps over ``OPS``: α is (2, 3) per cell type."""
    return Supernet(4, MEAN, STD, init_channels=2, layers=1, steps=1, multiplier=1, op_names=OPS, conv_impl="xla",
                    **kw)


def random_variables(model, shape, seed=0, dtype=np.float64):
    """Variables of ``model`` without compiling its init: shapes from eval_shape, values from numpy."""
    abstract = jax.eval_shape(lambda k: model.init({"params": k}, jnp.zeros((2, *shape), jnp.float32), train=False),
                              jax.random.key(0))
    rng = np.random.default_rng(seed)
    fill = {"params": lambda s: 0.5 * rng.standard_normal(s.shape), "batch_stats": lambda s: np.zeros(s.shape),
            ARCH: lambda s: rng.standard_normal(s.shape)}  # α far from 0: a non-trivial softmax
    return {k: jax.tree_util.tree_map(lambda s, f=f: jnp.asarray(f(s), dtype), abstract[k]) for k, f in fill.items()}


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def tree_axpy(a, x, y):
    return jax.tree_util.tree_map(lambda x, y: a * x + y, x, y)


# ----------------------------------------------------------------------------
# Supernet
# ----------------------------------------------------------------------------


def test_supernet_parameter_count_and_alpha_shapes():
    """docs/protocol.md §b.6: C=16, 8 cells, 10 classes -> 1,930,618 weights, α excluded; α is (14, 8) per cell type."""
    model = Supernet(10, MEAN, STD, conv_impl="xla")
    v = jax.eval_shape(lambda k: model.init({"params": k}, jnp.zeros((2, 8, 8, 3)), train=False), jax.random.key(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(v["params"])) == 1_930_618
    assert {k: a.shape for k, a in v[ARCH].items()} == {"normal": (14, 8), "reduce": (14, 8)}
    assert all(k.startswith(("cell_", "stem", "classifier")) for k in v["params"])


def test_search_cell_is_eqn3_with_skip_suppression():
    """Eqn 3 with γ (§f.4 reading a): node = Σ_e [γ w_skip(e) s_e + w_avg(e) BN(avgpool(s_e))], no renormalisation,
    with s_0, s_1 the ReLUConvBN-preprocessed cell inputs; the `none` op adds nothing."""
    cell = SearchCell(2, reduction=False, reduction_prev=False, ops=OPS, steps=1, multiplier=1, conv_impl="xla")
    x0, x1 = jax.random.normal(jax.random.key(0), (2, 4, 8, 8, 3))
    alpha = jax.random.normal(jax.random.key(1), (2, 3))
    weights = skip_scaled(SEARCHERS["darts"].weights(alpha), 0.3, OPS)
    np.testing.assert_allclose(weights[:, 1], 0.3 * jax.nn.softmax(alpha, -1)[:, 1], rtol=1e-6)
    capture = lambda mdl, _: isinstance(mdl, ReLUConvBN)

    @jax.jit
    def run(x0, x1, weights):
        v = cell.init(jax.random.key(2), x0, x1, weights, True)
        out, inter = cell.apply(v, x0, x1, weights, True, capture_intermediates=capture,
                                mutable=["intermediates", "batch_stats"])
        return out, [inter["intermediates"][f"ReLUConvBN_{i}"]["__call__"][0] for i in (0, 1)]

    out, s = run(x0, x1, weights)

    def bn(y):  # train-mode BN without affine parameters, PyTorch eps
        return (y - y.mean((0, 1, 2))) / jnp.sqrt(y.var((0, 1, 2)) + 1e-5)

    expected = sum(weights[e, 1] * s[e] + weights[e, 2] * bn(_avg_pool_no_pad(s[e])) for e in (0, 1))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def _avg_pool_no_pad(x):
    """3x3 average pool, stride 1, pad 1, the padding not counted (docs/protocol.md §b.1)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    def window(a):
        return jax.lax.reduce_window(jnp.pad(a, pad), 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "VALID")
    return window(x) / window(jnp.ones_like(x[..., :1]))


# ----------------------------------------------------------------------------
# Hypergradients (Eqn 4; docs/protocol.md §g)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hyper():
    """Exact and DARTS-FD hypergradients of the tiny supernet (float64) and the functions behind them."""
    model = tiny_supernet()
    keys = jax.random.split(jax.random.key(3), 4)
    with jax.enable_x64(True):
        v = random_variables(model, (8, 8, 3))
        params, bs, arch = v["params"], v["batch_stats"], v[ARCH]
        momentum = jax.tree_util.tree_map(lambda p: 0.3 * jnp.sin(3.0 * p), params)  # a non-zero buffer
        xs = jax.random.uniform(keys[0], (1, 8, 8, 8, 3), jnp.float64)
        ys = jax.random.randint(keys[1], (1, 8), 0, 4)
        val = (jax.random.uniform(keys[2], (8, 8, 8, 3), jnp.float64), jax.random.randint(keys[3], (8,), 0, 4))

        def make(hypergradient):
            def g(a, lr, eps):
                sc = darts.StepConfig(hypergradient=hypergradient, fd_epsilon=eps)
                return darts.hypergradient(model, sc, params, momentum, bs, a, lr, (xs, ys), val)[0]

            return fast_jit(g, arch, 0.5, 0.01)

        exact, fd = make("exact"), make("finite_difference")

        def through_step(a, lr):  # L_val(w'(α), α): one virtual step written out by hand (docs/protocol.md §g step 1)
            g = jax.grad(lambda w: darts.batch_loss(model, w, bs, a, xs[0], ys[0])[0])(params)
            w1 = jax.tree_util.tree_map(lambda w, m, g: w - lr * (0.9 * m + g + 3e-4 * w), params, momentum, g)
            return darts.batch_loss(model, w1, bs, a, *val)[0]

        a0, unflat = ravel_pytree(arch)
        h, basis = 1e-5, np.eye(a0.size)
        central = fast_jit(jax.vmap(lambda d, lr: (through_step(unflat(a0 + d), lr) - through_step(unflat(a0 - d), lr))
                                    / (2 * h), in_axes=(0, None)), h * basis, 0.5)
        out = {}
        for lr in (0.5, 0.01):
            out[f"exact_{lr}"] = flat(exact(arch, lr, 0.01))
            out[f"fd_{lr}"] = flat(fd(arch, lr, 0.01))
            out[f"central_{lr}"] = np.asarray(central(h * basis, lr))
        out["fd_small_eps"] = flat(fd(arch, 0.5, 1e-5))
        out["dalpha"] = flat(exact(arch, 0.0, 0.01))  # ξ = 0: w' = w, the first-order ∂_α L_val(w, α)
    return out


def test_exact_hypergradient_matches_central_difference(hyper):
    """jax.grad through the virtual step = the central difference of α ↦ L_val(w'(α), α), coordinate by coordinate."""
    for lr in (0.5, 0.01):
        exact, central = hyper[f"exact_{lr}"], hyper[f"central_{lr}"]
        np.testing.assert_allclose(exact, central, rtol=1e-5, atol=1e-9)
    # the normal-cell α of this one-cell (reduction) supernet has no effect; the reduce α does
    n = exact.size // 2
    assert np.all(hyper["exact_0.5"][:n] == 0) and np.abs(hyper["exact_0.5"][n:]).max() > 1e-3
    # the second-order term is not negligible at lr 0.5: the hypergradient is not ∂_α L_val at w
    second = hyper["exact_0.5"] - hyper["dalpha"]
    assert np.linalg.norm(second) > 0.2 * np.linalg.norm(hyper["exact_0.5"])


def test_darts_finite_difference_approximates_exact(hyper):
    """DARTS' Hessian-vector finite difference (docs/protocol.md §g step 3): exact in the limit ε -> 0, and at the
    protocol's ε = 0.01 close to the exact hypergradient for a small weight lr."""
    np.testing.assert_allclose(hyper["fd_small_eps"], hyper["exact_0.5"], rtol=1e-4, atol=1e-7)
    err = np.linalg.norm(hyper["fd_0.01"] - hyper["exact_0.01"]) / np.linalg.norm(hyper["exact_0.01"])
    assert err < 0.02, err
    err_big = np.linalg.norm(hyper["fd_0.5"] - hyper["exact_0.5"]) / np.linalg.norm(hyper["exact_0.5"])
    assert err <= err_big


# ----------------------------------------------------------------------------
# n_step (mitigation i) and the optimisers
# ----------------------------------------------------------------------------


def test_unrolled_steps_equal_repeated_single_steps_and_real_sgd():
    """n_step = k (lax.scan) = k PyTorch SGD steps on consecutive batches, carrying the momentum
    (m ← μm + g + λw, w ← w − ξm; docs/protocol.md §g step 1, §f.4); and the search's weight optimiser holds that
    momentum buffer and the update count where the virtual step reads them."""
    model = tiny_supernet()
    v = random_variables(model, (8, 8, 3), dtype=np.float32)
    params, bs, arch = v["params"], v["batch_stats"], v[ARCH]
    k, lr = 3, 0.05
    xs = jax.random.uniform(jax.random.key(4), (k, 8, 8, 8, 3))
    ys = jax.random.randint(jax.random.key(5), (k, 8), 0, 4)
    sc = darts.StepConfig(hypergradient="exact", n_step=k, grad_clip=0.0, epochs=2, steps_per_epoch=10, lr=lr)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    unrolled = fast_jit(lambda p, m: darts.unrolled_weights(model, sc, p, m, bs, arch, lr, xs, ys), params, zeros)
    grad = fast_jit(jax.grad(lambda w, x, y: darts.batch_loss(model, w, bs, arch, x, y)[0]), params, xs[0], ys[0])
    w, m, grads = flat(params), np.zeros(flat(params).size), []
    unflat = ravel_pytree(params)[1]
    for i in range(k):
        grads.append(flat(grad(unflat(w), xs[i], ys[i])))
        m = sc.momentum * m + grads[-1] + sc.weight_decay * w
        w = w - lr * m
    np.testing.assert_allclose(flat(unrolled(params, zeros)), w, rtol=2e-5, atol=2e-6)
    assert np.abs(w - flat(params)).max() > 1e-3

    wopt = darts.weight_optimizer(sc)
    update = fast_jit(lambda g, st, p: wopt.update(g, st, p), params, wopt.init(params), params)
    state, p, m = wopt.init(params), params, np.zeros(flat(params).size)
    for i in range(2):
        g = grad(p, xs[i], ys[i])
        m = sc.momentum * m + flat(g) + sc.weight_decay * flat(p)
        updates, state = update(g, state, p)
        p = optax.apply_updates(p, updates)
    buffer, count = darts.momentum_and_count(state)
    assert int(count) == 2
    np.testing.assert_allclose(flat(buffer), m, rtol=1e-5, atol=1e-7)
    assert float(darts.weight_schedule(sc)(count)) == pytest.approx(lr)  # epoch 0 of the cosine


# ----------------------------------------------------------------------------
# Genotype derivation and γ (mitigation ii)
# ----------------------------------------------------------------------------


def test_derive_cell_on_hand_set_weights():
    """Top-2 incoming edges by the strongest non-none weight (ties to the lower input), argmax non-none op."""
    ops = primitives()  # none, max, avg, skip, sep3, sep5, dil3, dil5
    w = np.full((14, 8), 0.01)
    w[:, 0] = 0.9  # `none` dominates every edge and must be ignored
    hand = {(2, 0): ("sep_conv_3x3", 0.5), (2, 1): ("skip_connect", 0.4),
            (3, 0): ("dil_conv_5x5", 0.2), (3, 1): ("max_pool_3x3", 0.3), (3, 2): ("sep_conv_5x5", 0.6),
            (4, 0): ("avg_pool_3x3", 0.3), (4, 1): ("dil_conv_3x3", 0.3), (4, 3): ("sep_conv_3x3", 0.3),  # tie
            (5, 4): ("skip_connect", 0.7), (5, 2): ("dil_conv_3x3", 0.35), (5, 3): ("sep_conv_3x3", 0.34)}
    start = {2: 0, 3: 2, 4: 5, 5: 9}
    for (node, src), (op, val) in hand.items():
        w[start[node] + src, ops.index(op)] = val
    cell = derive_cell(w, ops)
    assert cell == (("sep_conv_3x3", 0), ("skip_connect", 1),
                    ("sep_conv_5x5", 2), ("max_pool_3x3", 1),
                    ("avg_pool_3x3", 0), ("dil_conv_3x3", 1),
                    ("skip_connect", 4), ("dil_conv_3x3", 2))
    g = derive_genotype({"normal": np.log(w), "reduce": np.log(w)})  # softmax(log w) ∝ w: same choices
    assert g.normal == cell and g.normal_concat == (2, 3, 4, 5) and g.reduce == cell
    with pytest.raises(ValueError, match="do not fit"):
        derive_cell(w[:10], ops)


def test_gamma_lowers_skip_share_and_skip_count():
    """γ < 1 scales the skip column of every edge's mixing weights and, in a constructed case where skip narrowly
    wins four edges, removes those skips from the derived genotype (the same scaling as in the search)."""
    ops = primitives()
    rng = np.random.default_rng(0)
    alpha = 0.1 * rng.standard_normal((14, 8))
    alpha[:, ops.index("skip_connect")] = 1.0
    alpha[:, ops.index("sep_conv_3x3")] = 0.8
    share = lambda w: float(w[:, 3].sum() / w.sum())
    shares = [share(np.asarray(skip_scaled(SEARCHERS["darts"].weights(alpha), g, ops))) for g in (1.0, 0.75, 0.5, 0.25)]
    assert shares == sorted(shares, reverse=True) and shares[-1] < 0.5 * shares[0]
    counts = [sum(op == "skip_connect" for op, _ in derive_genotype({"normal": alpha, "reduce": alpha}, g).normal)
              for g in (1.0, 0.5)]
    assert counts == [8, 0]


def test_saved_genotype_is_usable_as_genotype_path(tmp_path):
    g = derive_genotype({"normal": np.eye(14, 8), "reduce": np.eye(14, 8)[::-1]})
    path = save_genotype(g, tmp_path / "genotype.json")
    assert get_genotype(f"genotype:{path}") == g
    assert set(json.loads(path.read_text())) == {"normal", "normal_concat", "reduce", "reduce_concat"}


# ----------------------------------------------------------------------------
# The resumable pipeline
# ----------------------------------------------------------------------------


def _search_config(workdir_tmp):
    c = load_config_file(ROOT / "configs" / "search.py", "quick")
    c.arch.init_channels, c.arch.layers, c.arch.conv_impl = 2, 1, "xla"
    c.search.steps, c.search.primitives = 1, OPS
    c.search.hypergradient = "first_order"
    c.train.epochs, c.train.batch_size = 2, 16
    return c


@pytest.fixture(scope="module")
def small_digits():
    ds = load_dataset("digits", native=True)
    return Dataset("digits", ds.x_train[:96], ds.y_train[:96], ds.x_test[:8], ds.y_test[:8], ds.num_classes, ds.mean,
                   ds.std)


def test_search_resumes_exactly_after_a_kill(tmp_path, small_digits):
    c = _search_config(tmp_path)
    full = run_search(c, tmp_path / "full", dataset=small_digits, progress=False)
    assert not full["interrupted"] and full["step"] == 2 * 3  # 48 images per half, batch 16
    # killed at step 1 (no checkpoint yet), then at step 5 (mid-epoch 1, after the step-4 checkpoint)
    c.train.checkpoint_every_steps = 2
    first = run_search(c, tmp_path / "resumed", dataset=small_digits, max_steps=1, progress=False)
    second = run_search(c, tmp_path / "resumed", dataset=small_digits, max_steps=5, progress=False)
    assert first["interrupted"] and second["interrupted"] and second["step"] == 5
    c.train.checkpoint_every_steps = 0  # not part of the search spec
    resumed = run_search(c, tmp_path / "resumed", dataset=small_digits, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(full["state"]), jax.tree_util.tree_leaves(resumed["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]
    assert strip(full["log"]) == strip(resumed["log"]) and len(full["log"]) == 2
    assert full["genotype"] == resumed["genotype"] == get_genotype(f"genotype:{tmp_path / 'full' / 'genotype.json'}")
    assert all(Path(p).stat().st_size > 0 for p in full["figures"]) and len(full["figures"]) == 4  # α x2, λ_max, cells
    # α moved from its 1e-3·N(0, 1) init; a finished search restores instead of searching again
    init = darts.create_search_state(full["model"], darts.step_config(c, 3), c.seed, (8, 8, 3))
    assert np.abs(flat(full["state"].arch) - flat(init.arch)).max() > 1e-3
    again = run_search(c, tmp_path / "full", dataset=small_digits, progress=False)
    assert again["step"] == full["step"] and strip(again["log"]) == strip(full["log"])
    c.search.skip_gamma = 0.5
    with pytest.raises(SearchSpecMismatchError, match="skip_gamma"):
        run_search(c, tmp_path / "full", dataset=small_digits, progress=False)


SHARDED_STEP_WORKER = """
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[2])
from nas_jax import parallel
from nas_jax.models.supernet import Supernet
from nas_jax.search import darts
model = Supernet(4, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), init_channels=2, layers=1, steps=1, multiplier=1,
                 op_names=("none", "skip_connect", "avg_pool_3x3"), conv_impl="xla")
sc = darts.StepConfig(hypergradient="exact", epochs=2, steps_per_epoch=2, crop_padding=1)
state = darts.create_search_state(model, sc, 0, (8, 8, 3))
step = darts.make_search_step(model, sc, 0, parallel.data_mesh())
rng = np.random.default_rng(0)
batches = [(rng.integers(0, 256, (1, 8, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, (1, 8)),
            rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, (8,))) for _ in range(2)]
step = step.lower(state, *batches[0]).compile(compiler_options={"xla_backend_optimization_level": 0})
for batch in batches:
    state, metrics = step(state, *batch)
leaves = [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves((state.params, state.arch))]
json.dump({"devices": jax.device_count(), "metrics": np.asarray(metrics, np.float64).tolist(),
           "values": np.concatenate(leaves).tolist()}, open(sys.argv[1], "w"))
"""


def test_search_step_on_four_devices_matches_one(tmp_path):
    """The compiled bi-level step (exact hypergradient) shards its batches over a 4-device 'data' mesh (simulated
    on CPU) and reaches the weights and α of the one-device step, two steps on."""
    import os
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", SHARDED_STEP_WORKER, str(tmp_path / f"{n}.json"), str(ROOT)],
                              env=dict(os.environ, JAX_PLATFORMS="cpu",
                                       XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")) for n in (1, 4)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    one, four = (json.loads((tmp_path / f"{n}.json").read_text()) for n in (1, 4))
    assert (one["devices"], four["devices"]) == (1, 4)
    np.testing.assert_allclose(four["metrics"], one["metrics"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(four["values"], one["values"], rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(one["values"])).max() > 0


@pytest.mark.parametrize("method", ["darts", "pc_darts"])
def test_scanned_edges_equal_vmapped_edges(method):
    """The edges as lax.scan over their stacked variables (the default) = the vmapped edge groups, on the same
    variables: train-mode logits, new BN statistics, weight and α gradients (normal and reduction cells). The
    edge groups are the mixed ops (DARTS: EdgeGroup) and the partial-channel ones (PartialEdgeGroup); the other
    methods differ only in the edge weights, an input of the scan."""
    steps = 2  # two nodes: the second reads the first from the scan's node buffer
    ops = ("none", "skip_connect", "max_pool_3x3", "dil_conv_3x3")
    kw = {"init_channels": 4, "layers": 3, "steps": steps, "multiplier": steps, "op_names": ops,
          "searcher": SEARCHERS[method],
          "partial_k": 2}  # conv_impl auto: 'shifted' (its custom VJP inside the rematerialised scan) on CPU
    scanned, vmapped = Supernet(4, MEAN, STD, **kw), Supernet(4, MEAN, STD, scan_edges=False, **kw)
    v = random_variables(scanned, (8, 8, 3), dtype=np.float32)
    v["batch_stats"] = jax.tree_util.tree_map(lambda s: s + 0.1, v["batch_stats"])
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    y = jnp.arange(4) % 4

    def run(model):
        def loss(params, arch):
            logits, new = model.apply({"params": params, "batch_stats": v["batch_stats"], ARCH: arch}, x, train=True,
                                      mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, new["batch_stats"])

        (_, aux), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(v["params"], v[ARCH])
        return aux, grads

    (logits_s, stats_s), grads_s = fast_jit(lambda: run(scanned))()
    (logits_v, stats_v), grads_v = fast_jit(lambda: run(vmapped))()
    assert jax.tree_util.tree_structure(stats_s) == jax.tree_util.tree_structure(v["batch_stats"])
    # float32, and the shifted convolutions sum in another order inside a vmap: ~1e-5 relative
    np.testing.assert_allclose(logits_s, logits_v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flat(stats_s), flat(stats_v), rtol=1e-4, atol=1e-5)
    for gs, gv in zip(grads_s, grads_v):
        scale = np.abs(flat(gv)).max()
        np.testing.assert_allclose(flat(gs), flat(gv), atol=1e-5 * scale)
    assert np.abs(flat(grads_s[1])).max() > 0  # α reaches the loss
