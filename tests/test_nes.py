"""NES black-box evasion (docs/protocol.md §e.2, paper Eqn 10) against Appendix A item 5.

The estimator is checked on functions with known gradients; the attack on tiny linear softmax models through
``BlackBox`` (probabilities only), with exact per-example query accounting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_jax.attacks import BlackBox, EvasionConfig, nes_attack_jit, nes_gradient
from nas_jax.attacks.nes import query_loss
from nas_jax.attacks.pgd import evasion_loss

D, C = 8, 5
FAR = -100.0
nes_gradient_jit = jax.jit(nes_gradient, static_argnames=("loss_fn", "n_queries", "chunk_size"))


def linear_apply(variables, x):
    return x.reshape(x.shape[0], -1) @ variables["w"] + variables["b"]


def cosine(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ----------------------------------------------------------------------------
# The estimator
# ----------------------------------------------------------------------------

SCALES = jnp.tile(jnp.array([1.0, 1000.0, 1.0, 0.01]), 4)  # very different per-example losses: nothing may leak
CENTERS = jax.random.uniform(jax.random.key(10), (16, 16))


def quadratic(x):
    """Per-example ℓ_i(x) = ½·s_i·‖x_i − c_i‖², gradient s_i·(x_i − c_i)."""
    return 0.5 * SCALES * jnp.sum(jnp.square(x - CENTERS), -1)


def same_quadratic(x):
    """The same ℓ(x) = ½‖x − c‖² for every row."""
    return 0.5 * jnp.sum(jnp.square(x - CENTERS[0]), -1)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_quadratic_estimate_points_along_the_gradient_with_the_right_length(seed):
    x = jnp.asarray(np.random.default_rng(seed).uniform(size=(16, 16)), jnp.float32)
    g, queries = nes_gradient_jit(quadratic, x, jax.random.key(seed), n_queries=1000, sigma=1e-3)
    true = np.asarray(SCALES[:, None] * (x - CENTERS))
    assert np.all(cosine(np.asarray(g), true) > 0.9)  # E[cos] ≈ 0.985 for d = 16, 500 pairs (min ≈ 0.95)
    # ‖ĝ‖/‖∇ℓ‖ ≈ sqrt(1 + (d+1)/m) ≈ 1.015 with std ≈ 0.063 per row: a per-row bound of 0.2 fails ~0.4% of rows.
    ratio = np.linalg.norm(g, axis=-1) / np.linalg.norm(true, axis=-1)
    assert np.all(np.abs(ratio - 1) < 0.3) and abs(ratio.mean() - 1) < 0.1, ratio
    np.testing.assert_array_equal(queries, np.full(16, 1000))


def test_linear_estimate_is_unbiased_and_scaled_by_one_over_two_sigma():
    """Rows of one batch are independent estimates; their mean is the gradient, whatever σ (1/(2σ) factor)."""
    a = jax.random.normal(jax.random.key(0), (32,))
    x = jnp.full((2000, 32), 0.5)

    def linear(v):
        return v @ a

    means = []
    for sigma in (1e-3, 1e-2):
        g, _ = nes_gradient_jit(linear, x, jax.random.key(1), n_queries=20, sigma=sigma)
        means.append(np.asarray(g).mean(0))
        assert np.linalg.norm(means[-1] - a) / np.linalg.norm(a) < 0.12
    # For a linear loss the antithetic difference is exactly 2σ·a·u: the same key gives the same estimate.
    np.testing.assert_allclose(means[0], means[1], rtol=0, atol=2e-3 * float(np.abs(a).max()))


def test_noise_is_not_shared_and_chunking_does_not_change_the_estimate():
    x = jnp.tile(jax.random.uniform(jax.random.key(3), (1, 16)), (16, 1))
    g, _ = nes_gradient_jit(same_quadratic, x, jax.random.key(4), n_queries=100, sigma=1e-3)
    # Identical inputs and losses in one batch: only independent noise makes the estimates differ.
    assert not np.allclose(g[0], g[1]) and len(np.unique(np.asarray(g[:, 0]))) == 16
    for chunk in (7, 50):  # with a remainder; one chunk for all pairs
        other, _ = nes_gradient_jit(same_quadratic, x, jax.random.key(4), n_queries=100, sigma=1e-3,
                                    chunk_size=chunk)
        np.testing.assert_allclose(other, g, rtol=1e-4, atol=1e-4 * float(np.abs(g).max()))


def test_query_loss_is_the_pgd_loss_from_probabilities():
    """Targeted −log p_t = CE(t); untargeted +log p_y = −CE(y): both descended, as in PGD (§e.1, §e.2)."""
    logits = jnp.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = jnp.array([0, 2])
    for targeted in (True, False):
        np.testing.assert_allclose(query_loss(jax.nn.softmax(logits), labels, targeted),
                                   evasion_loss(logits, labels, targeted), rtol=1e-5)


def test_invalid_query_counts_are_refused():
    with pytest.raises(ValueError, match="even number"):
        nes_gradient(quadratic, jnp.zeros((4, 16)), jax.random.key(0), n_queries=7)


# ----------------------------------------------------------------------------
# The attack: query accounting, budget, success, determinism
# ----------------------------------------------------------------------------


def accounting_problem():
    """Rows: already at the target; reachable (three rows); target parked at FAR bias (two rows)."""
    rng = np.random.default_rng(0)
    w = np.zeros((D, C), np.float32)
    w[:, 1] = rng.normal(size=D)
    b = np.full((C,), FAR, np.float32)
    b[0], b[1] = 0.0, -float(w[:, 1] @ np.full(D, 0.5)) - 0.2  # class 0 wins near the centre by 0.2
    x = 0.5 + 0.01 * rng.uniform(-1, 1, size=(6, D))
    variables = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    return BlackBox(linear_apply, variables), jnp.asarray(x, jnp.float32), jnp.array([0, 1, 1, 1, 2, 2])


R, K, N_Q = 2, 3, 10


def expected_queries(res):
    """1 check per restart start, n + 1 per iteration; earlier restarts are complete (docs/protocol.md §e.2)."""
    per_restart = K * (N_Q + 1) + 1
    done = np.asarray(res.restart) * per_restart + 1 + np.asarray(res.iterations) * (N_Q + 1)
    return np.where(np.asarray(res.success), done, R * per_restart)


def test_query_counts_are_exact():
    box, x, targets = accounting_problem()
    labels = jnp.zeros((6,), jnp.int32)
    cfg = EvasionConfig(eps=0.1, step_size=0.05, iterations=K, restarts=R)
    res = nes_attack_jit(box, x, labels, jax.random.key(0), cfg, mode="given", targets=targets, n_queries=N_Q)
    success = np.asarray(res.success)
    np.testing.assert_array_equal(success, [True, True, True, True, False, False])
    assert res.iterations[0] == 0 and res.queries[0] == 1
    assert np.any(np.asarray(res.iterations)[1:4] >= 1)
    np.testing.assert_array_equal(res.queries, expected_queries(res))
    np.testing.assert_array_equal(res.queries[4:], [R * (K * (N_Q + 1) + 1)] * 2)


@pytest.mark.parametrize("budget,spent", [(50, 46), (34, 34), (5, 1), (1, 1), (10_000, 68)])
def test_query_budget_is_never_exceeded(budget, spent):
    box, x, targets = accounting_problem()
    labels = jnp.zeros((6,), jnp.int32)
    cfg = EvasionConfig(eps=0.1, step_size=0.05, iterations=K, restarts=R)
    res = nes_attack_jit(box, x, labels, jax.random.key(0), cfg, mode="given", targets=targets, n_queries=N_Q,
                         query_budget=budget)
    assert np.all(np.asarray(res.queries) <= budget)
    # The unreachable rows spend exactly what fits: the restart check, then whole steps (estimate + check).
    np.testing.assert_array_equal(res.queries[4:], [spent, spent])
    assert not np.any(np.asarray(res.success)[4:])
    assert res.success[0] and res.queries[0] == 1


def test_target_selection_query_is_counted_and_budgeted():
    """most/least-likely targets need one clean query per input: counted, and paid from the budget."""
    box, x, _ = accounting_problem()
    labels = jnp.zeros((6,), jnp.int32)
    cfg = EvasionConfig(eps=0.1, step_size=0.05, iterations=K, restarts=R)
    least = nes_attack_jit(box, x, labels, jax.random.key(0), cfg, mode="least_likely", n_queries=N_Q)
    given = nes_attack_jit(box, x, labels, jax.random.key(0), cfg, mode="given", targets=least.targets,
                           n_queries=N_Q)
    np.testing.assert_array_equal(least.queries, np.asarray(given.queries) + 1)
    capped = nes_attack_jit(box, x, labels, jax.random.key(0), cfg, mode="least_likely", n_queries=N_Q,
                            query_budget=12)
    assert np.all(np.asarray(capped.queries) <= 12)


def easy_problem():
    rng = np.random.default_rng(1)
    variables = {"w": jnp.asarray(rng.normal(size=(48, C)) * 0.3, jnp.float32), "b": jnp.zeros((C,))}
    x = jnp.asarray(rng.uniform(0.2, 0.8, size=(8, 4, 4, 3)), jnp.float32)
    return BlackBox(linear_apply, variables), x


def test_nes_attack_succeeds_on_an_easy_linear_model():
    box, x = easy_problem()
    labels = jnp.argmax(box(x), -1)
    cfg = EvasionConfig(eps=0.15, step_size=0.03, iterations=10, restarts=1)
    res = nes_attack_jit(box, x, labels, jax.random.key(0), cfg, mode="most_likely", n_queries=50)
    assert np.all(np.asarray(res.success))
    np.testing.assert_array_equal(jnp.argmax(box(res.x_adv), -1), res.targets)
    assert np.all(np.abs(np.asarray(res.x_adv - x)) <= 0.15 + 1e-6)
    assert np.all((np.asarray(res.x_adv) >= 0) & (np.asarray(res.x_adv) <= 1))
    # Same seed, same everything; another seed, other queries.
    again = nes_attack_jit(box, x, labels, jax.random.key(0), cfg, mode="most_likely", n_queries=50)
    jax.tree.map(np.testing.assert_array_equal, res, again)
    other = nes_attack_jit(box, x, labels, jax.random.key(1), cfg, mode="most_likely", n_queries=50)
    assert not np.array_equal(res.x_adv, other.x_adv)


def test_black_box_returns_probabilities_and_is_a_pytree():
    box, x = easy_problem()
    probs = box(x)
    np.testing.assert_allclose(probs.sum(-1), np.ones(8), rtol=1e-6)
    assert len(jax.tree.leaves(box)) == 2  # w and b are traced; the function is static


# ----------------------------------------------------------------------------
# Batch sharding over 4 simulated devices
# ----------------------------------------------------------------------------

SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from nas_jax import parallel
    from nas_jax.attacks import BlackBox, EvasionConfig, nes_attack_jit

    def apply(v, x):
        return x.reshape(x.shape[0], -1) @ v["w"]

    rng = np.random.default_rng(0)  # numpy data: no eager jax ops to compile
    mesh = parallel.data_mesh()
    box = BlackBox(apply, {"w": rng.normal(size=(48, 5)).astype(np.float32)})
    x = rng.uniform(size=(8, 4, 4, 3)).astype(np.float32)
    y = np.argmax(x.reshape(8, -1) @ box.variables["w"], -1)
    cfg = EvasionConfig(eps=0.1, step_size=0.05, iterations=3, restarts=2)
    kw = dict(mode="most_likely", n_queries=20, chunk_size=5)
    one = nes_attack_jit(box, x, y, jax.random.key(2), cfg, **kw)
    xs, ys = jax.device_put((x, y), parallel.batch_sharded(mesh))
    many = nes_attack_jit(jax.device_put(box, parallel.replicated(mesh)), xs, ys, jax.random.key(2), cfg, **kw)
    json.dump({
        "devices": len(jax.devices()),
        "max_diff": float(np.abs(np.asarray(one.x_adv) - np.asarray(many.x_adv)).max()),
        "same_flags": bool(np.array_equal(one.success, many.success) & np.array_equal(one.queries, many.queries)),
        "some_success": bool(np.any(one.success) & ~np.all(one.success)),
        "sharded": many.x_adv.sharding.is_equivalent_to(parallel.batch_sharded(mesh), 4),
    }, sys.stdout)
""")



def test_batch_sharded_attack_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["devices"] == 4
    assert out["max_diff"] <= 1e-5 and out["same_flags"] and out["some_success"] and out["sharded"], out


def test_per_example_keys_make_the_estimate_independent_of_the_batch():
    """With one key per example (``example_keys``), row i's estimate depends on its key alone: the first 5 rows
    estimated alone equal the same rows estimated in the batch of 16."""
    from nas_jax.attacks.evasion import example_keys

    x = jnp.asarray(np.random.default_rng(1).uniform(size=(16, 16)), jnp.float32)
    keys = example_keys(jax.random.key(4), jnp.arange(16))

    def row_loss(v):  # the same per-row loss for any batch size
        return 0.5 * jnp.sum(jnp.square(v - CENTERS[0]), -1)

    full, _ = nes_gradient(row_loss, x, keys, n_queries=20, sigma=1e-2, chunk_size=5)
    part, _ = nes_gradient(row_loss, x[:5], keys[:5], n_queries=20, sigma=1e-2, chunk_size=5)
    np.testing.assert_allclose(part, full[:5], rtol=1e-5, atol=1e-6)
    shared, _ = nes_gradient(row_loss, x[:5], jax.random.key(4), n_queries=20, sigma=1e-2, chunk_size=5)
    assert not np.allclose(shared, full[:5], atol=1e-3)
