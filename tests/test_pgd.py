"""PGD evasion (docs/protocol.md §e.1) and the shared evasion pieces, against Appendix A items 1–4.

Tiny linear softmax models only, so the optimum is analytic; every attack call goes through ``pgd_attack_jit``
with fixed shapes and a traced config, so hypothesis examples reuse a few compiled executables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_jax.attacks import EvasionConfig, is_success, pgd_attack_jit, select_targets
from nas_jax.models.common import batch_norm

N, D, C = 32, 8, 5  # examples, input features, classes: one shape for (almost) all tests, few compilations
FAR = -100.0  # bias that keeps a class out of play
SETTINGS = settings(max_examples=12, deadline=None)


def linear_apply(variables, x):
    """Linear softmax model: logits = flatten(x) @ w + b."""
    return x.reshape(x.shape[0], -1) @ variables["w"] + variables["b"]


def two_class_problem(seed: int, eps: float, ratios, norm: str, scale: float = 0.5):
    """Classes 0 (label) and 1 (target) in play, the others parked at FAR.

    Row i sits at L∞/L2 distance ``ratios[i] * eps`` from the decision boundary between 0 and 1 (minimum-norm
    perturbation of the linear model, ignoring the box), and well inside [0, 1].
    """
    rng = np.random.default_rng(seed)
    w = np.zeros((D, C), np.float32)
    w[:, 0] = rng.normal(size=D) * scale
    w[:, 1] = rng.normal(size=D) * scale
    dw = w[:, 1] - w[:, 0]
    center = 0.5 + 0.1 * rng.uniform(-1, 1, size=D)
    b = np.full((C,), FAR, np.float32)
    b[0], b[1] = float(dw @ center), 0.0  # margin 0 at the center
    dual = np.abs(dw).sum() if norm == "linf" else np.linalg.norm(dw)
    margins = np.asarray(ratios) * eps * dual  # logit_0 - logit_1 at each row
    x = center[None] - margins[:, None] * dw[None] / (dw @ dw)
    return {"w": jnp.asarray(w), "b": jnp.asarray(b)}, jnp.asarray(x, jnp.float32), dw


def ce(variables, x, labels):
    return optax.softmax_cross_entropy_with_integer_labels(linear_apply(variables, x), labels)


# ----------------------------------------------------------------------------
# Targets and success
# ----------------------------------------------------------------------------


def test_select_targets_on_hand_logits():
    logits = jnp.array([[1.0, 3.0, 2.0, 0.0], [0.5, 0.1, 0.9, 0.2]])
    labels = jnp.array([1, 2])
    np.testing.assert_array_equal(select_targets(logits, "most_likely", labels), [2, 0])
    np.testing.assert_array_equal(select_targets(logits, "least_likely", labels), [3, 1])
    np.testing.assert_array_equal(select_targets(logits, "kth", labels, k=1), [1, 2])
    np.testing.assert_array_equal(select_targets(logits, "kth", labels, k=3), [0, 3])
    np.testing.assert_array_equal(select_targets(logits, "untargeted", labels), labels)
    np.testing.assert_array_equal(select_targets(logits, "given", labels, given=jnp.array([0, 1])), [0, 1])
    # Probabilities rank the same as logits.
    np.testing.assert_array_equal(select_targets(jax.nn.softmax(logits), "most_likely", labels), [2, 0])
    with pytest.raises(ValueError, match="unknown target mode"):
        select_targets(logits, "second", labels)
    with pytest.raises(ValueError, match="out of range"):
        select_targets(logits, "kth", labels, k=5)
    with pytest.raises(ValueError, match="needs given"):
        select_targets(logits, "given", labels)


def test_is_success_with_and_without_confidence():
    probs = jnp.array([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2], [0.005, 0.995, 0.0]])
    targets, labels = jnp.array([1, 1, 1]), jnp.array([0, 0, 0])
    np.testing.assert_array_equal(is_success(probs, targets, labels, True, 0.0), [True, False, True])
    np.testing.assert_array_equal(is_success(probs, targets, labels, True, 0.99), [False, False, True])
    np.testing.assert_array_equal(is_success(probs, targets, labels, False, 0.0), [True, False, True])
    np.testing.assert_array_equal(is_success(probs, targets, labels, False, 0.99), [False, False, True])


def test_config_validates_static_fields():
    with pytest.raises(ValueError, match="unknown norm"):
        EvasionConfig(norm="l1")
    with pytest.raises(ValueError, match="restarts=-1 must be >= 0"):
        EvasionConfig(restarts=-1)


# ----------------------------------------------------------------------------
# Appendix A item 1: the ball and the box
# ----------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**16), eps=st.floats(0.01, 0.4), norm=st.sampled_from(["linf", "l2"]),
       mode=st.sampled_from(["least_likely", "untargeted"]), restarts=st.sampled_from([0, 2]),
       iterations=st.integers(0, 4))
def test_adversarial_examples_stay_in_ball_and_box(seed, eps, norm, mode, restarts, iterations):
    rng = np.random.default_rng(seed)
    variables = {"w": jnp.asarray(rng.normal(size=(D, C)), jnp.float32), "b": jnp.zeros((C,))}
    x = rng.uniform(size=(N, D)).astype(np.float32)
    x[:8] = np.round(x[:8])  # saturated pixels exercise the box
    x = jnp.asarray(x)
    labels = jnp.argmax(linear_apply(variables, x), -1)
    cfg = EvasionConfig(eps=eps, step_size=eps / 2, iterations=iterations, restarts=restarts, norm=norm)
    res = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(seed), cfg, mode=mode)
    delta = np.asarray(res.x_adv - x)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps + 1e-6)
    assert np.all((np.asarray(res.x_adv) >= 0) & (np.asarray(res.x_adv) <= 1))
    assert res.x_adv.shape == x.shape and res.success.dtype == jnp.bool_


# ----------------------------------------------------------------------------
# Appendix A item 3: the optimum of a linear model
# ----------------------------------------------------------------------------

RATIOS = (0.5, 0.8, 0.8, 0.9, 1.1, 1.25, 1.5, 2.0) * 4  # min-norm perturbation / eps
REACHABLE = np.array(RATIOS) < 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
@SETTINGS
@given(seed=st.integers(0, 2**16), eps=st.floats(0.01, 0.05))
def test_targeted_pgd_reaches_target_iff_min_norm_solution_fits(norm, seed, eps):
    variables, x, _ = two_class_problem(seed, eps, RATIOS, norm)
    labels = jnp.zeros((N,), jnp.int32)
    assert np.all(np.asarray(jnp.argmax(linear_apply(variables, x), -1)) == 0)
    cfg = EvasionConfig(eps=eps, step_size=eps / 4, iterations=20, restarts=1, norm=norm)
    res = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(seed), cfg, mode="most_likely")
    np.testing.assert_array_equal(res.targets, np.ones(N))
    np.testing.assert_array_equal(res.success, REACHABLE)
    np.testing.assert_array_equal(jnp.argmax(linear_apply(variables, res.x_adv), -1), REACHABLE.astype(int))
    np.testing.assert_array_equal(res.iterations[~REACHABLE], -1)
    np.testing.assert_array_equal(res.restart, np.where(REACHABLE, 0, -1))
    np.testing.assert_array_equal(res.queries[~REACHABLE], 2 * 20 + 1)  # R·(2K + 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@SETTINGS
@given(seed=st.integers(0, 2**16), eps=st.floats(0.01, 0.2))
def test_untargeted_loss_rises_and_target_probability_rises(norm, seed, eps):
    """CE is convex in x for a linear model, so every in-box ascent step raises CE(y) (A3)."""
    rng = np.random.default_rng(seed)
    variables = {"w": jnp.asarray(rng.normal(size=(D, C)), jnp.float32), "b": jnp.asarray(rng.normal(size=C))}
    x = jnp.asarray(rng.uniform(0.3, 0.7, size=(N, D)), jnp.float32)
    labels = jnp.argmax(linear_apply(variables, x), -1)
    cfg = EvasionConfig(eps=eps, step_size=eps / 3, iterations=5, restarts=0, norm=norm)
    key = jax.random.key(0)
    res = pgd_attack_jit(linear_apply, variables, x, labels, key, cfg, mode="untargeted")
    assert np.all(np.asarray(ce(variables, res.x_adv, labels)) >= np.asarray(ce(variables, x, labels)) - 1e-5)
    res = pgd_attack_jit(linear_apply, variables, x, labels, key, cfg, mode="most_likely")
    t = res.targets
    assert np.all(np.asarray(ce(variables, res.x_adv, t)) <= np.asarray(ce(variables, x, t)) + 1e-5)


# ----------------------------------------------------------------------------
# Success bookkeeping: first iteration, confidence, overshoot (A4), restarts (A4)
# ----------------------------------------------------------------------------


def steep_problem(ratios):
    """Two live classes with α·‖Δw‖₁ = ln(99)/2.25, rows ``ratios`` L∞ steps of α from the boundary."""
    signs = np.array([1, -1, 1, 1, -1, 1, -1, -1], np.float32)
    step = 0.02
    dw = signs * (np.log(99) / 2.25) / (step * D)
    w = np.zeros((D, C), np.float32)
    w[:, 1] = dw
    center = np.full(D, 0.5, np.float32)
    b = np.full((C,), FAR, np.float32)
    b[0], b[1] = float(dw @ center), 0.0
    margins = np.asarray(ratios) * step * np.abs(dw).sum()
    x = center[None] - margins[:, None] * dw[None] / (dw @ dw)
    return {"w": jnp.asarray(w), "b": jnp.asarray(b)}, jnp.asarray(x, jnp.float32), step


def test_success_is_recorded_at_first_iteration_and_confidence_delays_it():
    # Rows need ratio + 2.25 steps more to pass p_t > 0.99: first success at floor(ratio)+1 (or 0), and
    # floor(ratio + 2.25) + 1 with confidence 0.99.
    variables, x, step = steep_problem([-0.5, 0.5, 1.5, 2.5] * (N // 4))
    first = np.tile([0, 1, 2, 3], N // 4)
    labels, targets = jnp.zeros((N,), jnp.int32), jnp.ones((N,), jnp.int32)
    cfg = EvasionConfig(eps=10 * step, step_size=step, iterations=10, restarts=0)
    res = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(0), cfg, mode="given", targets=targets)
    assert np.all(np.asarray(res.success))
    np.testing.assert_array_equal(res.iterations, first)
    np.testing.assert_array_equal(res.queries, 1 + 2 * first)
    strict = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(0), cfg.replace(confidence=0.99),
                            mode="given", targets=targets)
    np.testing.assert_array_equal(strict.iterations, first + 2)
    p_t = jax.nn.softmax(linear_apply(variables, strict.x_adv))[:, 1]
    assert np.all(np.asarray(p_t) > 0.99)
    # The frozen example is the one of the first success: exactly k steps of α along sign(Δw).
    np.testing.assert_allclose(np.abs(np.asarray(res.x_adv - x)).max(1), step * first, atol=1e-6)
    # Out of reach of the confidence requirement within 1 iteration: failure.
    short = cfg.replace(confidence=0.99, iterations=1)
    strict = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(0), short, mode="given",
                            targets=targets)
    assert not np.any(np.asarray(strict.success))


def test_success_then_overshoot_keeps_the_successful_example():
    """1-D model with classes A | t | C along x; the step overshoots the thin t region (A4)."""
    variables = {"w": jnp.array([[0.0, 20.0, 40.0]]), "b": jnp.array([0.0, -9.0, -19.0])}
    x = jnp.array([[0.42], [0.43]])
    labels, targets = jnp.zeros((2,), jnp.int32), jnp.ones((2,), jnp.int32)
    cfg = EvasionConfig(eps=0.2, step_size=0.06, iterations=4, restarts=0)
    res = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(0), cfg, mode="given", targets=targets)
    np.testing.assert_array_equal(res.success, [True, True])
    np.testing.assert_array_equal(res.iterations, [1, 1])
    np.testing.assert_allclose(res.x_adv, x + 0.06, atol=1e-6)
    np.testing.assert_array_equal(jnp.argmax(linear_apply(variables, res.x_adv), -1), [1, 1])


def test_restarts_never_lose_a_success():
    """K = 0: each restart is one random start; success flags only grow with R and are never overwritten."""
    variables, x, dw = two_class_problem(3, 0.05, [0.0] * N, "linf")
    # Shift every row so that a random start succeeds with probability ~0.3.
    spread = 0.05 * np.linalg.norm(dw) / np.sqrt(3)
    x = x - 0.5 * spread * jnp.asarray(dw / (dw @ dw), jnp.float32)[None]
    labels = jnp.zeros((N,), jnp.int32)
    key = jax.random.key(7)
    runs = {}
    for restarts in (1, 3, 8):
        cfg = EvasionConfig(eps=0.05, step_size=0.01, iterations=0, restarts=restarts)
        runs[restarts] = pgd_attack_jit(linear_apply, variables, x, labels, key, cfg, mode="most_likely")
    s1, s3, s8 = (np.asarray(runs[r].success) for r in (1, 3, 8))
    assert np.all(s1 <= s3) and np.all(s3 <= s8) and s1.sum() < s3.sum() < s8.sum() < N
    assert np.any(np.asarray(runs[8].restart) == 1), "the case needs some success at restart 1"
    for r in (3, 8):  # an earlier success is kept as it was, whatever later restarts do
        np.testing.assert_array_equal(runs[r].restart[s1], runs[1].restart[s1])
        np.testing.assert_array_equal(runs[r].x_adv[s1], runs[1].x_adv[s1])
    np.testing.assert_array_equal(runs[8].x_adv[s3], runs[3].x_adv[s3])
    np.testing.assert_array_equal(runs[8].restart[s3], runs[3].restart[s3])
    np.testing.assert_array_equal(jnp.argmax(linear_apply(variables, runs[8].x_adv[s8]), -1), np.ones(s8.sum()))
    np.testing.assert_array_equal(runs[8].iterations[s8], np.zeros(s8.sum()))
    # Queries: 1 check per restart up to and including the successful one.
    np.testing.assert_array_equal(runs[8].queries, np.where(s8, np.asarray(runs[8].restart) + 1, 8))


def test_same_seed_same_result():
    variables, x, _ = two_class_problem(1, 0.05, RATIOS, "linf")
    labels = jnp.zeros((N,), jnp.int32)
    cfg = EvasionConfig(eps=0.05, step_size=0.05 / 4, iterations=20, restarts=1)  # shares the executable above
    a = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(5), cfg)
    b = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(5), cfg)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    c = pgd_attack_jit(linear_apply, variables, x, labels, jax.random.key(6), cfg)
    assert not np.array_equal(a.x_adv, c.x_adv)


# ----------------------------------------------------------------------------
# Appendix A item 2: eval mode, BN statistics untouched
# ----------------------------------------------------------------------------


class TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = batch_norm(train)(nn.Dense(6)(x.reshape(x.shape[0], -1)))
        return nn.Dense(4)(nn.relu(h))


def bn_eval_apply(variables, x):
    return TinyBN().apply(variables, x, train=False)


def bn_train_apply(variables, x):
    return TinyBN().apply(variables, x, train=True)


@jax.jit
def bn_variables(key, x):
    """Initialised, with running statistics moved away from (0, 1) by one train-mode step (one compilation)."""
    variables = TinyBN().init(key, x)
    _, updates = TinyBN().apply(variables, x * 3 + 1, train=True, mutable=["batch_stats"])
    return {"params": variables["params"], "batch_stats": updates["batch_stats"]}


def test_attack_does_not_touch_bn_statistics():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, D)), jnp.float32)
    variables = bn_variables(jax.random.key(1), x)
    before = jax.tree.map(np.array, variables)
    logits = bn_eval_apply(variables, x)
    labels = jnp.argmax(logits, -1)
    cfg = EvasionConfig(eps=0.1, step_size=0.03, iterations=3, restarts=2)
    a = pgd_attack_jit(bn_eval_apply, variables, x, labels, jax.random.key(2), cfg)
    b = pgd_attack_jit(bn_eval_apply, variables, x, labels, jax.random.key(2), cfg)
    jax.tree.map(np.testing.assert_array_equal, variables, before)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    np.testing.assert_array_equal(bn_eval_apply(variables, x), logits)
    with pytest.raises(Exception, match="batch_stats"):  # a train-mode model cannot silently update BN
        pgd_attack_jit(bn_train_apply, variables, x, labels, jax.random.key(2), cfg)


# ----------------------------------------------------------------------------
# Batch sharding over 4 simulated devices: same numbers, output stays sharded
# ----------------------------------------------------------------------------

SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from nas_jax import parallel
    from nas_jax.attacks import EvasionConfig, pgd_attack_jit

    def apply(v, x):
        return x.reshape(x.shape[0], -1) @ v["w"]

    rng = np.random.default_rng(0)  # numpy data: no eager jax ops to compile
    mesh = parallel.data_mesh()
    v = {"w": rng.normal(size=(48, 5)).astype(np.float32)}
    x = rng.uniform(size=(8, 4, 4, 3)).astype(np.float32)
    y = np.argmax(x.reshape(8, -1) @ v["w"], -1)
    # L2: per-example norms, vmapped projection and Gaussian-direction random starts.
    cfg = EvasionConfig(eps=1.5, step_size=0.5, iterations=3, restarts=2, norm="l2")
    one = pgd_attack_jit(apply, v, x, y, jax.random.key(2), cfg, mode="least_likely")
    xs, ys = jax.device_put((x, y), parallel.batch_sharded(mesh))
    vs = jax.device_put(v, parallel.replicated(mesh))
    many = pgd_attack_jit(apply, vs, xs, ys, jax.random.key(2), cfg, mode="least_likely")
    # Per-input keys: batches of 4 over 4 devices give what the whole array gives unsharded.
    from nas_jax.attacks.evasion import example_keys
    from nas_jax.study.victims import AttackBatches
    ref = pgd_attack_jit(apply, v, x, y, example_keys(jax.random.key(2), np.arange(8)), cfg, mode="least_likely")
    run = AttackBatches(4, per_example_keys=True).run(
        lambda a, b, k: pgd_attack_jit(apply, vs, a, b, k, cfg, mode="least_likely"), x, y, jax.random.key(2))
    json.dump({
        "keys_max_diff": float(np.abs(np.asarray(ref.x_adv) - run.x_adv).max()),
        "keys_same_flags": bool(np.array_equal(ref.success, run.success) & np.array_equal(ref.queries, run.queries)),
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
    assert out["max_diff"] <= 1e-6 and out["same_flags"] and out["some_success"] and out["sharded"], out
    assert out["keys_max_diff"] <= 1e-6 and out["keys_same_flags"], out


def test_result_does_not_depend_on_the_batch_size():
    """Per-example keys (fold_in(key, input index)): the same input and seed give the same result in batches of
    7 and of 32 (the launcher's chunking); per-chunk keys (the old behaviour) do not."""
    from nas_jax.study.victims import AttackBatches

    variables, x, _ = two_class_problem(2, 0.05, RATIOS, "linf")
    x, labels = np.asarray(x), np.zeros((N,), np.int32)
    cfg = EvasionConfig(eps=0.05, step_size=0.05 / 4, iterations=4, restarts=3)

    def attack(xb, yb, kb):
        return pgd_attack_jit(linear_apply, variables, xb, yb, kb, cfg, mode="untargeted")

    small, big = (AttackBatches(bs, per_example_keys=True).run(attack, x, labels, jax.random.key(3)) for bs in (7, 32))
    for name in ("success", "iterations", "restart", "queries"):
        np.testing.assert_array_equal(getattr(small, name), getattr(big, name))
    np.testing.assert_allclose(small.x_adv, big.x_adv, atol=1e-6)
    assert 0 < small.success.mean() < 1
    old_small, old_big = (AttackBatches(bs).run(attack, x, labels, jax.random.key(3)) for bs in (7, 32))
    assert not np.allclose(old_small.x_adv, old_big.x_adv, atol=1e-6)
