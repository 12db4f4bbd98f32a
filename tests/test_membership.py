"""HopSkipJump and label-only membership inference (docs/protocol.md §e.6; Appendix A items 6 and 7).

Oracles: the analytic distance to a hyperplane, the analytic crossing of a blend line, an explicit per-input
Python loop of the algorithm (ART's structure) that must give the same points and the *same query counts* as the
batched, masked implementation, and AUCs of hand-made score sets.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.attacks.hopskipjump import HSJConfig, LabelOracle, binary_search, hopskipjump_jit, search_steps, theta
from nas_jax.attacks.membership import baseline_auc, boundary_scores, membership_auc, roc, sample_members
from nas_jax.data import load_dataset


def _linear(v, x):
    z = x.reshape(x.shape[0], -1) @ v["w"] + v["b"]
    return jnp.stack([z, -z], -1)  # class 0 where w·x + b > 0


def _slab(v, x):
    z = jnp.abs(x.reshape(x.shape[0], -1) @ v["w"] + v["b"]) - v["half_width"]
    return jnp.stack([z, -z], -1)  # class 1 inside a thin slab: long steps cross it, so the step search halves


def _hyperplane_case(n=8, d=64, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    b = -0.5 * w.sum()  # the plane passes through the centre of the cube
    x = np.clip(0.5 + 0.05 * rng.normal(size=(n, d)), 0, 1)
    target = rng.uniform(0.1, 0.4, n) * np.where(np.arange(n) % 2, 1, -1)  # both sides of the plane
    x = x - np.outer(x @ w + b - target, w)
    assert 0 < x.min() and x.max() < 1  # the projections stay inside the box, so the box does not bind
    oracle = LabelOracle(_linear, {"w": jnp.asarray(w, jnp.float32), "b": jnp.float32(b)})
    return oracle, jnp.asarray(x.reshape(n, 8, 8, 1), jnp.float32), np.abs(target), w, b


def test_distance_matches_hyperplane():
    oracle, x, true, _, _ = _hyperplane_case()
    cfg = HSJConfig(max_iter=40, init_eval=100, init_size=20, final_search=True, chunk_size=100)
    res = jax.tree_util.tree_map(np.asarray, hopskipjump_jit(oracle, x, jax.random.key(0, impl="rbg"), cfg=cfg))
    assert res.initialized.all()
    np.testing.assert_allclose(res.distance_l2, true, rtol=0.02)
    assert np.all(res.distance_l2 >= true - 1e-4)  # no point inside the original class's half-space
    assert np.all(np.asarray(oracle(jnp.asarray(res.x_adv))) != res.label)  # every returned point is adversarial
    assert np.all(res.queries <= cfg.max_queries(64))
    assert 0 <= res.x_adv.min() and res.x_adv.max() <= 1


def test_binary_search_meets_tolerance():
    rng = np.random.default_rng(1)
    oracle, _, _, w, b = _hyperplane_case()
    n, d = 32, 64
    x = rng.uniform(0, 1, (n, d))
    cur = rng.uniform(0, 1, (n, d))
    keep = np.sign(x @ w + b) != np.sign(cur @ w + b)  # pairs across the plane
    x, cur = x[keep], cur[keep]
    tol = theta(d)
    search = jax.jit(binary_search, static_argnames=("tolerance", "budget"))
    label = oracle(jnp.asarray(x, jnp.float32))
    point, upper, queries = jax.tree_util.tree_map(np.asarray, search(
        oracle, jnp.asarray(x, jnp.float32), jnp.asarray(cur, jnp.float32), label, jnp.ones(len(x), bool),
        tolerance=tol, queries=jnp.zeros(len(x), jnp.int32)))
    zx, zc = x @ w + b, cur @ w + b
    crossing = zx / (zx - zc)  # the blend coefficient where w·((1-α)x + αc) + b = 0
    assert np.all(upper >= crossing - 1e-6) and np.all(upper - crossing <= tol + 1e-6)
    assert np.all(queries == search_steps(tol)) and search_steps(tol) == math.ceil(math.log2(1 / tol))
    assert np.all(np.asarray(oracle(jnp.asarray(point))) != np.asarray(label))


# ----------------------------------------------------------------------------
# An explicit per-input loop of the same algorithm (ART's structure, no masks)
# ----------------------------------------------------------------------------


class _Draws:
    """The batched attack's random numbers (whole-batch draws), cached so each is generated once."""

    def __init__(self, key, shape, chunk_size):
        self.key, self.shape, self.chunk_size, self.cache = key, shape, chunk_size, {}

    def uniform(self, k):
        if ("u", k) not in self.cache:
            key = jax.random.fold_in(jax.random.fold_in(self.key, 0), k)
            self.cache["u", k] = np.asarray(jax.random.uniform(key, self.shape))
        return self.cache["u", k]

    def normal(self, t, c):
        if ("n", t, c) not in self.cache:
            key = jax.random.fold_in(jax.random.fold_in(self.key, t + 1), c)
            self.cache["n", t, c] = np.asarray(jax.random.normal(key, (self.shape[0], self.chunk_size,
                                                                        *self.shape[1:])))
        return self.cache["n", t, c]


def _reference(classify, x_all, draws: _Draws, cfg: HSJConfig, i):
    """HopSkipJump on row i alone, drawing the same random numbers as the batched attack."""
    x = np.asarray(x_all[i])
    shape, d = x_all.shape[1:], x.size
    th, budget = theta(d), cfg.query_budget or math.inf
    label = classify(x)
    q = 1

    def adv(p):
        return classify(np.clip(p, 0, 1)) != label

    def bsearch(cur, tol, q):
        lo, hi = np.float32(0), np.float32(1)
        while hi - lo > tol and q + 1 <= budget:
            mid = (lo + hi) / np.float32(2)
            q += 1
            if adv((1 - mid) * x + mid * cur):
                hi = mid
            else:
                lo = mid
        return (1 - hi) * x + hi * cur, q

    cur, found = x, False
    for k in range(cfg.init_size):
        if q + 1 > budget:
            break
        u = draws.uniform(k)[i]
        q += 1
        if adv(u):
            cur, found = u, True
            break
    if not found:
        return x, q, False
    cur, q = bsearch(cur, cfg.init_tolerance, q)
    running = True
    for t in range(cfg.max_iter):
        delta = np.float32(0.1) if t == 0 else np.float32(math.sqrt(d) * th) * np.linalg.norm(cur - x)
        cur, q = bsearch(cur, th, q)
        n_t = cfg.n_evals()[t]
        if q + n_t > budget:
            running = False
            break
        sum_su, sum_u, sum_s = np.zeros(shape, np.float32), np.zeros(shape, np.float32), 0.0
        for c in range(math.ceil(n_t / cfg.chunk_size)):
            noise = draws.normal(t, c)[i]
            for jj in range(cfg.chunk_size):
                if c * cfg.chunk_size + jj >= n_t:
                    break
                u = noise[jj] / np.linalg.norm(noise[jj])
                p = np.clip(cur + delta * u, 0, 1)
                u = (p - cur) / delta
                s = 1.0 if adv(p) else -1.0
                sum_su, sum_u, sum_s = sum_su + s * u, sum_u + u, sum_s + s
        q += n_t
        mean_s = sum_s / n_t
        g = sum_su / n_t if abs(mean_s) == 1 else sum_su / n_t - mean_s * sum_u / n_t
        if np.linalg.norm(g) == 0:
            continue
        direction = g / np.linalg.norm(g)
        eps = 2 * np.linalg.norm(cur - x) / np.sqrt(t + 1)
        for h in range(cfg.max_halvings):
            if q + 1 > budget:
                running = False
                break
            eps, q = eps / 2, q + 1
            trial = cur + eps * direction
            if adv(trial):
                cur = np.clip(trial, 0, 1)
                break
        if not running:
            break
    if cfg.final_search and running:
        cur, q = bsearch(cur, th, q)
    return cur, q, True


@pytest.fixture(scope="module")
def slab_case():
    """Inputs on both sides of a thin slab (the adversarial region), a budget that stops some of them mid-walk,
    a halving cap that some steps hit, and few enough init draws that one input finds no start."""
    rng = np.random.default_rng(2)
    n, d = 12, 16
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    b = -0.5 * w.sum()
    x = np.clip(0.5 + 0.08 * rng.normal(size=(n, d)), 0, 1)
    x = x - np.outer(x @ w + b - rng.uniform(0.2, 0.45, n) * np.where(np.arange(n) % 2, 1, -1), w)
    oracle = LabelOracle(_slab, {"w": jnp.asarray(w, jnp.float32), "b": jnp.float32(b),
                                 "half_width": jnp.float32(0.06)})
    cfg = HSJConfig(max_iter=6, max_eval=20, init_eval=8, init_size=16, max_halvings=3, chunk_size=6,
                    query_budget=166)
    key = jax.random.key(3, impl="rbg")
    x = x.astype(np.float32).reshape(n, 4, 4, 1)
    res = jax.tree_util.tree_map(np.asarray, hopskipjump_jit(oracle, jnp.asarray(x), key, cfg=cfg))
    return oracle, x, key, cfg, res


def test_matches_per_input_loop_with_exact_query_counts(slab_case):
    oracle, x, key, cfg, res = slab_case
    w, b, hw = (np.asarray(oracle.variables[k], np.float32) for k in ("w", "b", "half_width"))

    def classify(p):  # _slab in numpy
        return int(np.abs(np.asarray(p, np.float32).reshape(-1) @ w + b) - hw < 0)

    draws = _Draws(key, x.shape, cfg.chunk_size)
    for i in range(len(x)):
        point, queries, initialized = _reference(classify, x, draws, cfg, i)
        assert bool(res.initialized[i]) == initialized, i
        assert int(res.queries[i]) == queries, (i, int(res.queries[i]), queries)
        np.testing.assert_allclose(res.x_adv[i], point, atol=1e-5, err_msg=f"input {i}")
    # the case covers what it should: an init failure, capped step searches, and walks the budget cut short
    assert (~res.initialized).sum() == 1 and res.halving_capped.sum() > 0
    shortest_full_walk = 2 + search_steps(cfg.init_tolerance) + sum(search_steps(theta(16)) + n + 1
                                                                   for n in cfg.n_evals())
    assert (res.queries[res.initialized] < shortest_full_walk).any() and cfg.max_queries(16) > cfg.query_budget


def test_budget_adversarial_and_determinism(slab_case):
    oracle, x, key, cfg, res = slab_case
    assert np.all(res.queries <= cfg.query_budget)
    labels = np.asarray(oracle(jnp.asarray(res.x_adv)))
    assert np.all(labels[res.initialized] != res.label[res.initialized])  # every returned point is adversarial
    assert np.all(res.distance_l2[~res.initialized] == 0) and np.array_equal(res.x_adv[~res.initialized],
                                                                             x[~res.initialized])
    again = jax.tree_util.tree_map(np.asarray, hopskipjump_jit(oracle, jnp.asarray(x), key, cfg=cfg))
    assert np.array_equal(again.x_adv, res.x_adv) and np.array_equal(again.queries, res.queries)
    other = jax.tree_util.tree_map(np.asarray, hopskipjump_jit(oracle, jnp.asarray(x),
                                                               jax.random.key(4, impl="rbg"), cfg=cfg))
    assert not np.array_equal(other.x_adv, res.x_adv)


# ----------------------------------------------------------------------------
# Scores and AUC
# ----------------------------------------------------------------------------


def test_auc_orientation_separable_and_exchangeable():
    member = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    far, near = np.linspace(1, 2, 50), np.linspace(0, 0.9, 50)
    assert membership_auc(member, np.r_[far, near]) == {"auc": 1.0, "auc_max": 1.0}
    assert membership_auc(member, np.r_[near, far]) == {"auc": 0.0, "auc_max": 1.0}  # raw value keeps the sign
    same = np.random.default_rng(0).uniform(size=50)
    assert membership_auc(member, np.r_[same, same])["auc"] == 0.5  # exchangeable: identical score sets
    iid = np.random.default_rng(1).exponential(size=4000)
    assert abs(membership_auc(np.arange(4000) < 2000, iid)["auc"] - 0.5) < 0.03
    fpr, tpr = roc(member, np.r_[far, near])
    assert fpr[0] == 0 and tpr[-1] == 1 and np.any((fpr == 0) & (tpr == 1))


def test_scores_and_baseline():
    member = np.array([1, 1, 1, 0, 0, 0], bool)
    correct = np.array([1, 1, 0, 1, 0, 0], bool)
    result = {"distance_l2": np.array([3.0, 2, 5, 1, 7, 7]), "distance_linf": np.array([0.3, 0.2, 0.5, 0.1, 0.7, 0.7])}
    np.testing.assert_array_equal(boundary_scores(result, correct), [3, 2, 0, 1, 0, 0])
    np.testing.assert_array_equal(boundary_scores(result, correct, "linf"), [0.3, 0.2, 0, 0.1, 0, 0])
    # gap attack by hand: P(score_member > score_non) + 0.5 P(tie) over the 9 pairs = (2·2 + 2·0.5 + 1·0.5 ... )
    pairs = [(m, nm) for m in correct[member] for nm in correct[~member]]
    expected = np.mean([1.0 if m > nm else 0.5 if m == nm else 0.0 for m, nm in pairs])
    assert baseline_auc(member, correct) == pytest.approx(expected)
    with pytest.raises(ValueError, match="distance"):
        boundary_scores(result, correct, "l1")


def test_sample_members_is_seeded_and_balanced():
    ds = load_dataset("digits", native=True)
    a, b = sample_members(ds, 30, 20, seed=0), sample_members(ds, 30, 20, seed=0)
    assert np.array_equal(a["indices"], b["indices"]) and a["is_member"].sum() == 30 and len(a["labels"]) == 50
    np.testing.assert_array_equal(a["images"][:30], ds.x_train[a["indices"][:30]])  # members are not augmented
    np.testing.assert_array_equal(a["images"][30:], ds.x_test[a["indices"][30:]])
    with pytest.raises(ValueError, match="non-members"):
        sample_members(ds, 10, 10_000, seed=0)
