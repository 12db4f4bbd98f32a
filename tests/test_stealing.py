"""Knockoff Nets (docs/protocol.md §e.5; Appendix A item 8).

Oracles: rewards and bandit updates computed by hand, an independent count of the victim's calls (a callback
inside the black box), and ACE's floor (the victim's own entropy) on 8x8 digits with a tiny replica of the
victim's architecture.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from nas_jax.attacks.stealing import (
    BudgetExceededError,
    KnockoffConfig,
    QueryCounter,
    adaptive_queries,
    bandit_update,
    compute_reward,
    init_bandit,
    init_reward_stats,
    knockoff,
    stealing_metrics,
    victim_probabilities,
)
from nas_jax.config import base_config
from nas_jax.data import load_dataset, to_float
from nas_jax.train import trainer

# ----------------------------------------------------------------------------
# Rewards and the gradient bandit, by hand
# ----------------------------------------------------------------------------


def _rewards(kind, rounds):
    stats, out = init_reward_stats(3), []
    for i, (p, logits) in enumerate(rounds, start=1):
        r, stats = compute_reward(kind, jnp.asarray(p), jnp.asarray(logits, jnp.float32), stats, i)
        out.append(float(r))
    return out


ROUNDS = [([0.7, 0.2, 0.1], np.log([0.5, 0.25, 0.25])), ([0.1, 0.3, 0.6], [0.0, 0.0, 0.0])]


def test_rewards_match_hand_computation():
    # round 1: cert 0.7 − 0.2; ȳ = y so div 0; loss −(0.7 ln .5 + 0.3 ln .25)
    # round 2: cert 0.6 − 0.3; ȳ = (0.4, 0.25, 0.35) so div 0.05 + 0.25; loss ln 3 (uniform thief)
    loss1 = -(0.7 * math.log(0.5) + 0.3 * math.log(0.25))
    assert _rewards("cert", ROUNDS) == pytest.approx([0.5, 0.3], abs=1e-6)
    assert _rewards("div", ROUNDS) == pytest.approx([0.0, 0.3], abs=1e-6)
    assert _rewards("loss", ROUNDS) == pytest.approx([loss1, math.log(3)], abs=1e-5)
    # all: round 1 clips each component to [0, 1] and averages; round 2 z-normalises with μ, var updated first,
    # which at i = 2 gives z = ±√2 (r − μ = Δ/2, var = Δ²/8): here (−√2, +√2, +√2)
    assert _rewards("all", ROUNDS) == pytest.approx([(0.5 + 0.0 + min(loss1, 1.0)) / 3, math.sqrt(2) / 3], abs=1e-5)
    # var = 0 is guarded: a repeated round has zero variance in every component, so each z counts 0
    assert _rewards("all", [ROUNDS[0], ROUNDS[0]])[1] == 0.0


def test_bandit_update_matches_hand_computation():
    b = init_bandit(3)
    b = bandit_update(b, 1, jnp.float32(0.6), 1)  # r̄ = 0.6 = r: no change
    np.testing.assert_allclose(b.h, [0, 0, 0], atol=1e-7)
    b = bandit_update(b, 0, jnp.float32(1.0), 2)  # r̄ = 0.8, N_0 = 1: H_0 += 0.2·(2/3), H_b −= 0.2·(1/3)
    np.testing.assert_allclose(b.h, [0.2 * 2 / 3, -0.2 / 3, -0.2 / 3], atol=1e-6)
    p0 = math.exp(0.2) / (math.exp(0.2) + 2)  # softmax of (0.2, 0, 0) after shifting by 0.2/3
    np.testing.assert_allclose(b.probs, [p0, (1 - p0) / 2, (1 - p0) / 2], atol=1e-6)
    b = bandit_update(b, 0, jnp.float32(0.2), 3)  # r̄ = 0.6, N_0 = 2: step (0.2 − 0.6)/2 = −0.2
    np.testing.assert_allclose(b.h, [0.4 / 3 - 0.2 * (1 - p0), -0.2 / 3 + 0.2 * (1 - p0) / 2,
                                     -0.2 / 3 + 0.2 * (1 - p0) / 2], atol=1e-6)
    np.testing.assert_allclose(b.counts, [2, 1, 0])
    assert float(b.mean_reward) == pytest.approx(0.6)


# ----------------------------------------------------------------------------
# A tiny victim on 8x8 digits, reachable only through a counting black box
# ----------------------------------------------------------------------------


class TinyMLP(nn.Module):
    """The victim's architecture (and the replica's)."""

    hidden: int = 32

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(h)


CALLS: list[int] = []
STEPS = 100


@struct.dataclass
class CountingBlackBox:
    """Probabilities of the victim; every row it answers is recorded by a host callback (independent count)."""

    apply_fn: Any = struct.field(pytree_node=False)
    variables: Any = None

    def __call__(self, images):
        jax.debug.callback(lambda n: CALLS.append(int(n)), jnp.int32(images.shape[0]))
        return jax.nn.softmax(self.apply_fn(self.variables, images), -1)


@pytest.fixture(scope="module")
def victim():
    """A TinyMLP fitted full-batch (Adam, STEPS steps) on digits: ~95% test accuracy, non-trivial output entropy."""
    ds = load_dataset("digits", native=True)
    model = TinyMLP()
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    x, y, tx = to_float(ds.x_train), jnp.asarray(ds.y_train), optax.adam(0.003)

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, opt = carry
            grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": p}, x), y).mean())(params)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), None

        return jax.lax.scan(step, (params, tx.init(params)), None, length=STEPS)[0][0]

    variables = {"params": fit(params), "batch_stats": {}}
    test_probs = victim_probabilities(CountingBlackBox(model.apply, variables), ds.x_test, 500)
    return ds, model, variables, test_probs


def _thief_config(epochs=10, lr=0.15):
    c = base_config("stealing", "quick")
    c.model, c.seed = "tiny_mlp", 1
    c.train.update(dict(epochs=epochs, lr=lr, lr_schedule="constant", grad_clip=0.0, crop_padding=0, flip=False,
                        cutout=0, batch_size=96, eval_every_epochs=1000))
    return c


def _numpy_probs(variables, images_u8):
    """The victim's forward pass in NumPy."""
    p = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in variables["params"].items()}
    h = np.maximum(images_u8.reshape(len(images_u8), -1) / 255.0 @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    z = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_query_budget_exact_and_deterministic(victim):
    ds, model, variables, test_probs = victim
    np.testing.assert_allclose(test_probs, _numpy_probs(variables, ds.x_test), atol=1e-5)
    box = CountingBlackBox(model.apply, variables)
    # batched queries (random sampling): each batch is charged before the call; nothing past the budget
    CALLS.clear()
    counter = QueryCounter(200)
    victim_probabilities(box, ds.x_train[:192], 96, counter)
    with pytest.raises(BudgetExceededError):
        victim_probabilities(box, ds.x_train[:96], 96, counter)
    jax.effects_barrier()
    assert CALLS == [96, 96] and counter.used == 192
    # adaptive: exactly one single-image query per bandit round, across scan chunks (50 = 25 + 25)
    kcfg = KnockoffConfig(budget=50, scan_chunk=25)
    tc = _thief_config(lr=0.005)
    runs = []
    for _ in range(2):
        CALLS.clear()
        counter = QueryCounter(kcfg.budget)
        runs.append(adaptive_queries(box, ds.x_train, ds.y_train, 10, model, tc, jax.random.key(7), kcfg, counter))
        jax.effects_barrier()
        assert CALLS == [1] * 50 and counter.used == 50
    a, b = runs
    assert len(a.indices) == 50 and np.array_equal(ds.y_train[a.indices], a.actions)  # image drawn from its arm
    np.testing.assert_allclose(a.probs, _numpy_probs(variables, ds.x_train[a.indices]), atol=1e-5)
    for field in ("indices", "probs", "actions", "rewards"):  # the same seed gives the same run
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    jax.tree_util.tree_map(np.testing.assert_array_equal, a.variables, b.variables)
    assert np.isfinite(a.rewards).all() and len(np.unique(a.actions)) > 1
    with pytest.raises(BudgetExceededError):  # the second chunk of 25 would take a 49-query budget past it
        adaptive_queries(box, ds.x_train, ds.y_train, 10, model, tc, jax.random.key(7), kcfg, QueryCounter(49))


def test_soft_labels_reach_the_floor_and_beat_hard_labels(victim, tmp_path):
    """Replica = victim architecture, ample queries (14 batches of the 1,437-image pool): soft-label training
    brings ACE to its floor (the victim's mean entropy, i.e. KL(victim ‖ replica) ≈ 0) and closer than hard
    labels do."""
    ds, model, variables, test_probs = victim
    box = CountingBlackBox(model.apply, variables)
    metrics = {}
    for labels in ("soft", "hard"):
        kcfg = KnockoffConfig(budget=14 * 96, sampling="random", labels=labels)
        CALLS.clear()
        out = knockoff(box, ds.x_train, None, ds, TinyMLP(), _thief_config(), jax.random.key(0), kcfg,
                       tmp_path / labels, progress=False)
        jax.effects_barrier()
        assert sum(CALLS) == out["queries"] == out["queries_issued"] == kcfg.budget
        assert len(np.unique(out["indices"])) == kcfg.budget  # without replacement
        np.testing.assert_allclose(out["probs"], _numpy_probs(variables, ds.x_train[out["indices"]]), atol=1e-5)
        logits = trainer.model_logits(model, out["variables"], ds.x_test)
        metrics[labels] = stealing_metrics(test_probs, logits, ds.y_test)
    soft, hard = metrics["soft"], metrics["hard"]
    assert soft["victim_accuracy"] > 0.9 and soft["victim_entropy"] > 0.1
    assert soft["ace"] - soft["victim_entropy"] == pytest.approx(soft["kl"])
    assert 0 <= soft["kl"] < 0.1 * soft["victim_entropy"], soft
    assert hard["kl"] > 3 * soft["kl"] and hard["ace"] > soft["ace"] + 0.02, (soft, hard)
    assert soft["agreement"] > 0.95


def test_stealing_metrics_by_hand():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    logits = np.log(np.array([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]]))
    m = stealing_metrics(p, logits, np.array([0, 1]))
    assert m["ace"] == pytest.approx((math.log(4) + math.log(2)) / 2, abs=1e-6)
    assert m["victim_entropy"] == pytest.approx(math.log(2) / 2, abs=1e-6)  # 0·log 0 = 0
    assert m["agreement"] == 0.5 and m["replica_accuracy"] == 0.0 and m["victim_accuracy"] == 0.5
