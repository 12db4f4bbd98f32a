"""AutoAttack (APGD-CE, APGD-T, FAB-T, Square) on tiny models: an analytic case, properties, exact queries."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog, minimize

from nas_jax.attacks.apgd import apgd_attack_jit, checkpoint_schedule
from nas_jax.attacks.autoattack import STANDARD, AutoAttackConfig, autoattack_jit
from nas_jax.attacks.fab import hyperplane_box_projection
from nas_jax.attacks.square import square_attack_jit
from nas_jax.config_loader import load_config_file
from nas_jax.tasks.autoattack import autoattack_figure, masking_metrics

# ---------------------------------------------------------------- APGD-CE on a linear softmax model


def _linear(v, x):
    return x.reshape(x.shape[0], -1) @ v["w"] + v["b"]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_reaches_the_analytic_boundary(norm):
    """Two classes, logit difference m(x) = (w_y − w_j)ᵀx + (b_y − b_j): with the box inactive (x ± ε inside
    [0, 1]) the closest boundary point lies at distance m / ‖w_y − w_j‖_q (q = 1 for L∞, 2 for L2). APGD-CE
    must fool exactly the inputs whose boundary lies inside the ball (a 3% band around ε is left out)."""
    rng = np.random.default_rng(0)
    d = 12
    w = rng.normal(size=(d, 2))
    x = rng.uniform(0.4, 0.6, size=(64, 2, 2, 3))
    b = np.array([-(w[:, 0] - w[:, 1]) @ x.reshape(64, -1).mean(0), 0.0])  # margins around 0
    v = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    x = jnp.asarray(x, jnp.float32)
    logits = np.asarray(_linear(v, x))
    y = logits.argmax(-1)
    dw = w[:, 0] - w[:, 1]
    dual = np.abs(dw).sum() if norm == "linf" else np.sqrt((dw**2).sum())
    distance = np.abs(logits[:, 0] - logits[:, 1]) / dual
    eps = float(np.median(distance))  # half the inputs have their boundary inside the ball
    assert eps < 0.4  # each coordinate moves by at most eps: the box [0, 1] is never reached
    out = apgd_attack_jit(_linear, v, x, jnp.asarray(y), jax.random.key(0), eps, norm, 10)
    fooled = np.asarray(out.fooled)
    clear = np.abs(distance - eps) > 0.03 * eps
    assert clear.sum() > 20 and 0 < (distance < eps).sum() < 64
    np.testing.assert_array_equal(fooled[clear], (distance < eps)[clear])
    assert np.all(np.asarray(_linear(v, out.x_adv)).argmax(-1)[fooled] != y[fooled])


def test_checkpoints_follow_the_paper():
    """p_j = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (§3.2) for N = 100."""
    flags, _ = checkpoint_schedule(100)
    assert [i + 1 for i, f in enumerate(flags) if f] == [22, 41, 57, 70, 80, 87, 93, 99]


# ---------------------------------------------------------------- the FAB projection


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_box_projection_matches_scipy(norm):
    rng = np.random.default_rng(1)
    p, w = rng.uniform(size=(4, 6)), rng.normal(size=(4, 6))
    c = np.array([0.3, -0.5, 1.2, -0.05])
    delta = np.asarray(jax.jit(hyperplane_box_projection, static_argnums=3)(jnp.asarray(p, jnp.float32), jnp.asarray(w, jnp.float32),
                                                 jnp.asarray(c, jnp.float32), norm))
    for i in range(4):
        bounds = list(zip(-p[i], 1 - p[i]))
        np.testing.assert_allclose(w[i] @ delta[i], c[i], atol=1e-5)
        assert np.all(p[i] + delta[i] >= -1e-6) and np.all(p[i] + delta[i] <= 1 + 1e-6)
        if norm == "linf":  # min t s.t. |d_k| <= t, wᵀd = c, box
            a_ub = np.block([[np.eye(6), -np.ones((6, 1))], [-np.eye(6), -np.ones((6, 1))]])
            res = linprog(np.r_[np.zeros(6), 1.0], A_ub=a_ub, b_ub=np.zeros(12), A_eq=np.r_[w[i], 0.0][None],
                          b_eq=[c[i]], bounds=bounds + [(0, None)])
            np.testing.assert_allclose(np.abs(delta[i]).max(), res.fun, rtol=1e-4, atol=1e-6)
        else:
            res = minimize(lambda d: d @ d, np.zeros(6), jac=lambda d: 2 * d, bounds=bounds, method="SLSQP",
                           constraints=[{"type": "eq", "fun": lambda d, i=i: w[i] @ d - c[i]}], tol=1e-12)
            np.testing.assert_allclose(np.linalg.norm(delta[i]), np.sqrt(res.fun), rtol=1e-4)


# ---------------------------------------------------------------- properties on a tiny BN model


class TinyBNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(5)(nn.relu(x).reshape(x.shape[0], -1))


MODEL = TinyBNNet()
APPLY = MODEL.apply  # eval mode by default; created once (a static jit argument)
N_QUERIES = 12
SMALL = {"apgd_iter": 4, "fab_iter": 3, "n_target_classes": 2, "n_queries": N_QUERIES}


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(size=(16, 5, 5, 1)), jnp.float32)
    variables = MODEL.init(jax.random.key(0), x)
    _, upd = MODEL.apply(variables, x, train=True, mutable=["batch_stats"])  # non-trivial running statistics
    variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
    y = np.asarray(APPLY(variables, x)).argmax(-1)
    y[:2] = (y[:2] + 1) % 5  # two inputs misclassified from the start
    return variables, x, jnp.asarray(y)


def _check(result, variables, before, x, y, eps, norm):
    robust, first = np.asarray(result.robust), np.asarray(result.first_attack)
    delta = np.asarray(result.x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(-1) if norm == "linf" else np.sqrt((delta**2).sum(-1))
    assert np.all(size <= eps * (1 + 1e-5) + 1e-7)
    assert np.asarray(result.x_adv).min() >= 0 and np.asarray(result.x_adv).max() <= 1
    # Monotone robust flags: robust <=> no attack fooled it; misclassified clean inputs are never robust.
    np.testing.assert_array_equal(robust, first == -1)
    np.testing.assert_array_equal(first[:2], 0)
    pred = np.asarray(APPLY(variables, result.x_adv)).argmax(-1)
    np.testing.assert_array_equal(pred == np.asarray(y), robust)  # eval-mode forward of x_adv agrees
    # Square's queries: exact budget for inputs it attacked and could not fool, 1..budget when it fooled them.
    q, j = np.asarray(result.queries), STANDARD.index("square") + 1
    ran = (first == -1) | (first >= j)
    assert np.all(q[~ran] == 0) and np.all(q[robust] == N_QUERIES) and np.all((q[first == j] >= 1)
                                                                             & (q[first == j] <= N_QUERIES))
    # BN statistics untouched.
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.device_get(variables["batch_stats"]))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_autoattack_properties(tiny, norm):
    variables, x, y = tiny
    before = jax.device_get(variables["batch_stats"])

    @settings(max_examples=4, deadline=None)
    @given(seed=st.integers(0, 2**16), eps_scale=st.floats(0.2, 3.0))
    def check(seed, eps_scale):
        eps = (0.05 if norm == "linf" else 0.4) * eps_scale
        cfg = AutoAttackConfig(eps=eps, norm=norm, **SMALL)
        result = autoattack_jit(APPLY, variables, x, y, jax.random.key(seed), cfg)  # eps traced: one compile
        _check(result, variables, before, x, y, eps, norm)

    check()


def test_prefix_of_the_sequence_and_same_seed(tiny):
    """Attack j uses fold_in(key, j): running the first two attacks alone gives the same outcome for the inputs
    they fool, and inputs robust after the prefix stay robust or are fooled later, never the reverse."""
    variables, x, y = tiny
    full_cfg = AutoAttackConfig(eps=0.08, **SMALL)
    full = autoattack_jit(APPLY, variables, x, y, jax.random.key(7), full_cfg)
    again = autoattack_jit(APPLY, variables, x, y, jax.random.key(7), full_cfg)
    jax.tree_util.tree_map(np.testing.assert_array_equal, full, again)
    prefix = autoattack_jit(APPLY, variables, x, y, jax.random.key(7),
                            AutoAttackConfig(eps=0.08, attacks=STANDARD[:2], version="custom", **SMALL))
    f_full, f_pre = np.asarray(full.first_attack), np.asarray(prefix.first_attack)
    np.testing.assert_array_equal(np.where(f_full <= 2, f_full, -1), f_pre)
    assert np.all(np.asarray(full.robust) <= np.asarray(prefix.robust))
    assert not np.asarray(prefix.robust).all() or not np.asarray(full.robust).all()


def test_square_counts_every_query():
    """A model that never changes its mind costs exactly the budget; inactive inputs cost nothing; inputs
    misclassified at the start cost one query."""
    b = jnp.asarray([3.0, 0.0, 0.0, 0.0], jnp.float32)

    def constant(v, x):
        return jnp.broadcast_to(v, (x.shape[0], 4)) + 0.0 * jnp.sum(x, axis=(1, 2, 3))[:, None]

    x = jnp.full((6, 4, 4, 3), 0.5, jnp.float32)
    y = jnp.asarray([0, 0, 0, 0, 1, 2])
    active = jnp.asarray([True, True, True, False, True, True])
    out = square_attack_jit(constant, b, x, y, jax.random.key(0), 0.1, "linf", 9, active=active)
    np.testing.assert_array_equal(out.queries, [9, 9, 9, 0, 1, 1])
    np.testing.assert_array_equal(out.fooled, [False, False, False, False, True, True])


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="choose a non-empty list"):
        AutoAttackConfig(attacks=("apgd-ce", "pgd"), version="custom")
    with pytest.raises(ValueError, match="version='custom' needs attacks"):
        AutoAttackConfig(version="custom")
    with pytest.raises(ValueError, match="unknown norm"):
        AutoAttackConfig(norm="l1")


# ---------------------------------------------------------------- the task's metrics and figure


def test_masking_metrics_and_figure(tmp_path):
    robust = np.array([True, False, False, False])
    first = np.array([-1, 1, 2, 4])
    pgd = np.array([False, True, False, False])
    m = masking_metrics(robust, first, STANDARD, pgd, threshold=0.1)
    assert m["robust_accuracy"] == 0.25 and m["aa_success"] == 0.75 and m["pgd_success"] == 0.25
    assert m["success_apgd-ce"] == m["success_apgd-t"] == m["success_square"] == 0.25 and m["success_fab-t"] == 0
    assert m["masking_gap"] == 0.5 and m["aa_only"] == 0.5 and m["pgd_only"] == 0 and m["gradient_masking_flag"]
    rows = [{"model": name, "family": fam, **m} for name, fam in (("darts", "nas"), ("resnet", "manual"))]
    path = autoattack_figure(rows, tmp_path / "aa.png", "AutoAttack vs PGD-7")
    assert path.stat().st_size > 0


def test_apgd_rejects_bad_settings():
    v = {"w": jnp.zeros((12, 3)), "b": jnp.zeros(3)}
    x, y = jnp.zeros((2, 2, 2, 3)), jnp.zeros(2, jnp.int32)
    with pytest.raises(ValueError, match="at least 4 classes"):
        apgd_attack_jit(_linear, v, x, y, jax.random.key(0), 0.1, "linf", 2, loss="dlr_targeted", n_target_classes=2)
    with pytest.raises(ValueError, match="unknown APGD loss"):
        apgd_attack_jit(partial(_linear), v, x, y, jax.random.key(0), 0.1, "linf", 2, loss="hinge")


def test_autoattack_section_is_validated_before_any_work():
    """Square's n_queries is a budget (odd is fine; NES's even-pairs rule does not apply); a setting that
    AutoAttackConfig refuses fails in config validation with a UserError, before victims load."""
    from pathlib import Path

    from nas_jax.errors import UserError
    from nas_jax.tasks import check_config as validate

    c = load_config_file(Path(__file__).parents[1] / "configs" / "autoattack.py", "quick")
    c.autoattack.n_queries = 1001
    validate(c)
    c.autoattack.apgd_restarts = 0
    with pytest.raises(UserError, match="apgd_restarts=0 must be >= 1"):
        validate(c)
