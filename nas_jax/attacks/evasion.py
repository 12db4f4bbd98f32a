"""Shared pieces of the evasion attacks: configuration, targets, success, and the restart/iteration driver.

docs/protocol.md §e.1 (PGD: targets, success, restarts, per-sample freezing; the ASR of Eqn 9 is
``result.success.mean()``) and §e.2 (NES: "the same driver as §e.1" with a query-only gradient); Appendix A
items 1–5 are the tests' oracles. :func:`run_evasion` is one traceable function: nested ``lax.while_loop``s with
per-example masks that stop only when every example is finished, all per-example work elementwise or per row, so
shapes stay fixed, nothing syncs with the host and a batch-sharded ``x`` stays sharded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

TARGET_MODES = ("most_likely", "least_likely", "untargeted", "kth", "given")
NORMS = ("linf", "l2")


@struct.dataclass
class EvasionConfig:
    """Attack budget (docs/protocol.md §e.1 table). A frozen, hashable dataclass *and* a pytree.

    Only ``norm`` is static, so ``cfg`` may be a static jit argument or a traced one (sweeps over ε, iterations or
    restarts, Fig 3, reuse one compiled attack). ``restarts = 0`` runs once from ``x``; ``R > 0`` runs R times from
    uniform random starts in the ball. ``confidence > 0`` also requires p_target > confidence (the artifact: 0.99).
    """

    eps: float = 8 / 255
    step_size: float = 2 / 255
    iterations: int = 7
    restarts: int = 5
    norm: str = struct.field(pytree_node=False, default="linf")
    confidence: float = 0.0

    def __post_init__(self):
        # Leaves may be tracers (or placeholders) when jax rebuilds the pytree: check Python numbers only.
        check_norm(self.norm)
        for name in ("iterations", "restarts"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name}={value} must be >= 0; restarts=0 means one run without a random start.")

    @classmethod
    def from_config(cls, section, prefix: str = "", **overrides) -> EvasionConfig:
        """The budget of a config section (``pgd``, ``nes``, ``adv_train``, ``autoattack``): each field is read
        as ``section[prefix + field]``, else ``section[field]`` (the section's shared budget, e.g. ``eps``),
        else this class's default; ``overrides`` (e.g. the per-target ``iterations``) win over all three."""
        values = {}
        for f in dataclasses.fields(cls):
            for key in (prefix + f.name, f.name):
                if key in section:
                    values[f.name] = section[key]
                    break
        values.update(overrides)
        return cls(**values)


@struct.dataclass
class EvasionResult:
    """Per-example outcome of an evasion attack (a pytree).

    ``iterations``: k of the first successful check in its restart (0: before any step), ``restart``: its 0-based
    restart, both -1 on failure. ``queries``: model evaluations over all restarts (PGD: each check and gradient 1;
    NES: exact queries). ``x_adv``: the frozen success, or a failure's last iterate of its last restart.
    """

    x_adv: jax.Array
    success: jax.Array
    iterations: jax.Array
    restart: jax.Array
    targets: jax.Array
    queries: jax.Array


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}.")


def check_mode(mode: str) -> None:
    if mode not in TARGET_MODES:
        raise ValueError(f"unknown target mode {mode!r}; choose one of {TARGET_MODES}.")


def resolve_mode(mode: str, targets: jax.Array | None) -> str:
    """Passing ``targets`` selects mode ``'given'`` (allowed with ``mode='given'`` or the default)."""
    check_mode(mode)
    if targets is not None:
        if mode not in ("given", "most_likely"):
            raise ValueError(f"targets were passed together with mode={mode!r}; pass mode='given' with targets.")
        return "given"
    if mode == "given":
        raise ValueError("mode='given' needs targets=...; or pick one of most_likely, least_likely, kth, untargeted.")
    return mode


def needs_prediction(mode: str) -> bool:
    """Whether the targets depend on the ranking of the clean prediction."""
    return mode in ("most_likely", "least_likely", "kth")


def select_targets(logits: jax.Array | None, mode: str, labels: jax.Array, k: int = 2,
                   given: jax.Array | None = None) -> jax.Array:
    """Targets of docs/protocol.md §e.1 from the clean outputs (logits or probabilities; only the ranking matters).

    most_likely: the runner-up c2; least_likely: the last class cm; kth: the k-th most likely (k=1 is the
    prediction); untargeted: ``labels``; given: ``given``.
    """
    check_mode(mode)
    if mode == "untargeted":
        return jnp.asarray(labels, jnp.int32)
    if mode == "given":
        if given is None:
            raise ValueError("mode='given' needs given=... (int targets, one per example).")
        return jnp.asarray(given, jnp.int32)
    num_classes = logits.shape[-1]
    rank = {"most_likely": 2, "least_likely": num_classes, "kth": k}[mode]
    if isinstance(rank, int) and not 1 <= rank <= num_classes:  # a traced k (one executable for all k) is clipped
        raise ValueError(f"k={k} is out of range for {num_classes} classes; choose 1 <= k <= {num_classes}.")
    return ranked_class(logits, jnp.clip(rank, 1, num_classes))


def ranked_class(logits: jax.Array, rank) -> jax.Array:
    """The ``rank``-th most likely class per example (rank 1 = the prediction); ``rank`` may be traced."""
    order = jnp.argsort(-logits, axis=-1, stable=True)
    return jnp.take(order, rank - 1, axis=-1).astype(jnp.int32)


def is_success(probs: jax.Array, targets: jax.Array, labels: jax.Array, targeted: bool,
               confidence: float | jax.Array) -> jax.Array:
    """Success per example (docs/protocol.md §e.1), judged against the original target/label.

    Targeted: argmax = t, and p_t > confidence when confidence > 0. Untargeted: argmax != y, and the
    probability of the new (argmax) class > confidence when confidence > 0.
    """
    pred = jnp.argmax(probs, axis=-1)
    if targeted:
        hit = pred == targets
        p = jnp.take_along_axis(probs, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]
    else:
        hit = pred != labels
        p = jnp.max(probs, axis=-1)
    return hit & ((confidence <= 0) | (p > confidence))


# ----------------------------------------------------------------------------
# Geometry: random starts and steps in pixel space (G1)
# ----------------------------------------------------------------------------


def is_key_batch(key: jax.Array) -> bool:
    """Whether ``key`` is one key per example (typed keys of shape (N,), raw uint32 keys of shape (N, 2))."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    return key.ndim == (1 if typed else 2)


def example_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    """One key per example, ``fold_in(key, index)``: give an example its global index (its position in the
    whole attacked array) and its random starts and noise no longer depend on the batch it is run in."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(indices, jnp.uint32))


def fold_in(key: jax.Array, data) -> jax.Array:
    """``jax.random.fold_in`` for one key or for a batch of per-example keys."""
    if is_key_batch(key):
        return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)
    return jax.random.fold_in(key, data)


def split(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jax.random.split(key)`` into two, for one key or for a batch of per-example keys."""
    if is_key_batch(key):
        both = jax.vmap(jax.random.split)(key)
        return both[:, 0], both[:, 1]
    a, b = jax.random.split(key)
    return a, b


def per_example(mask: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcast a per-example vector against a batch ``x``."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def _row_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim))))


def batch_noise(sampler: Callable[..., jax.Array], key: jax.Array, x: jax.Array, **kwargs) -> jax.Array:
    """``sampler(key, shape)`` shaped like ``x``, drawn as [N, d] then reshaped: batch axis leading, and a faster
    XLA:CPU compile than threefry on rank-4 shapes. With per-example keys (:func:`example_keys`) row i uses key i.
    """
    if is_key_batch(key):
        return jax.vmap(lambda k: sampler(k, (x[0].size,), x.dtype, **kwargs))(key).reshape(x.shape)
    return sampler(key, (x.shape[0], x[0].size), x.dtype, **kwargs).reshape(x.shape)


def random_start(key: jax.Array, x: jax.Array, cfg: EvasionConfig) -> jax.Array:
    """Uniform noise in the ball: L∞ U(−ε, ε)^d; L2 Gaussian direction with radius ε·U^{1/d}."""
    if cfg.norm == "linf":
        return batch_noise(jax.random.uniform, key, x, minval=-1.0, maxval=1.0) * cfg.eps
    dkey, rkey = split(key)
    direction = batch_noise(jax.random.normal, dkey, x)
    direction = direction / per_example(jnp.maximum(_row_norm(direction), 1e-12), x)
    if is_key_batch(rkey):
        u = jax.vmap(lambda k: jax.random.uniform(k, (), x.dtype))(rkey)
    else:
        u = jax.random.uniform(rkey, (x.shape[0],), x.dtype)
    radius = cfg.eps * u ** (1.0 / x[0].size)
    return direction * per_example(radius, x)


def project(x0: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x_adv = clip(x0 + noise, 0, 1) and noise = x_adv − x0, so box and ball stay consistent (§e.1 step 4)."""
    x_adv = optax.projections.projection_box(x0 + noise, 0.0, 1.0)
    return x_adv, x_adv - x0


def descent_step(x0: jax.Array, noise: jax.Array, grad: jax.Array, cfg: EvasionConfig) -> tuple[jax.Array, jax.Array]:
    """One descent step on the loss, projected on the ε-ball then the box.

    L∞: noise ← clip(noise − α·sign(g), −ε, ε) (sign(0) = 0). L2: noise ← Proj_{‖·‖₂≤ε}(noise − α·g/‖g‖₂) per
    example; a zero gradient gives no step.
    """
    if cfg.norm == "linf":
        noise = optax.projections.projection_linf_ball(noise - cfg.step_size * jnp.sign(grad), cfg.eps)
    else:
        gnorm = _row_norm(grad)
        unit = grad / per_example(jnp.where(gnorm > 0, gnorm, 1.0), grad)
        ball = jax.vmap(lambda v: optax.projections.projection_l2_ball(v, cfg.eps))
        noise = ball(noise - cfg.step_size * unit)
    return project(x0, noise)


# ----------------------------------------------------------------------------
# The driver (docs/protocol.md §e.1 algorithm, shared by §e.2)
# ----------------------------------------------------------------------------

CheckFn = Callable[[jax.Array], jax.Array]  # x_adv -> success bool[N]
GradFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_adv, key) -> gradient of the loss to descend
FusedFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]  # (x_adv, key) -> (success, gradient)


class _Record(NamedTuple):
    x_out: jax.Array
    done: jax.Array  # succeeded in some restart
    stopped: jax.Array  # out of query budget, never attacked again
    iterations: jax.Array
    restart: jax.Array
    queries: jax.Array


def _record(rec: _Record, active: jax.Array, ok: jax.Array, x_adv: jax.Array, r, k, check_cost: int) -> _Record:
    """Account one success check of the ``active`` examples; freeze the new successes with (r, k)."""
    new = active & ok
    return rec._replace(
        x_out=jnp.where(per_example(new, x_adv), x_adv, rec.x_out),
        done=rec.done | new,
        iterations=jnp.where(new, k, rec.iterations),
        restart=jnp.where(new, r, rec.restart),
        queries=rec.queries + check_cost * active.astype(jnp.int32),
    )


def run_evasion(check_fn: CheckFn, grad_fn: GradFn | None, x: jax.Array, key: jax.Array, cfg: EvasionConfig, *,
                fused_fn: FusedFn | None = None, check_cost: int = 1, grad_cost: int = 1,
                query_budget: int | jax.Array = 0, initial_queries: int = 0) -> _Record:
    """Restarts × iterations of docs/protocol.md §e.1 with per-example masks.

    ``key``: one for the batch or one per example (:func:`example_keys`: results independent of batch size and
    device count); restart r uses ``fold_in(key, r)`` and attacks only examples neither successful nor out of
    budget. At k = 0..K ``x_adv`` is checked, successes frozen with (r, k); for k < K the others take a
    :func:`descent_step`. ``fused_fn`` (PGD; ``grad_fn`` None) gives check and gradient in one pass; else the
    gradient (NES) is skipped when no example steps. With ``query_budget > 0`` an example stops for good when its
    next check, or next estimate plus check, would exceed it; ``initial_queries`` were spent already (NES: the
    target-ranking query).
    """
    n = x.shape[0]
    num_restarts, num_iters = jnp.maximum(cfg.restarts, 1), cfg.iterations

    def affordable(queries, cost):
        return (query_budget <= 0) | (queries + cost <= query_budget)

    def restart_body(carry):
        r, rec = carry
        init_key, iter_key = split(fold_in(key, r))
        noise = jnp.where(cfg.restarts > 0, random_start(init_key, x, cfg), 0.0)
        x_adv, noise = project(x, noise)
        want = ~rec.done & ~rec.stopped
        attacked = want & affordable(rec.queries, check_cost)
        rec = rec._replace(stopped=rec.stopped | (want & ~attacked))

        def iter_body(c):
            k, x_adv, noise, active, rec = c
            kkey = fold_in(iter_key, k)
            if fused_fn is not None:
                ok, grad = fused_fn(x_adv, kkey)
            else:
                ok = check_fn(x_adv)
            rec = _record(rec, active, ok, x_adv, r, k, check_cost)
            still = active & ~ok
            steps = still & affordable(rec.queries, grad_cost + check_cost)
            rec = rec._replace(stopped=rec.stopped | (still & ~steps),
                               queries=rec.queries + grad_cost * steps.astype(jnp.int32))
            if fused_fn is None:
                grad = jax.lax.cond(jnp.any(steps), lambda: grad_fn(x_adv, kkey), lambda: jnp.zeros_like(x_adv))
            new_x, new_noise = descent_step(x, noise, grad, cfg)
            mask = per_example(steps, x)
            return k + 1, jnp.where(mask, new_x, x_adv), jnp.where(mask, new_noise, noise), steps, rec

        def iter_cond(c):
            k, _, _, active, _ = c
            return (k < num_iters) & jnp.any(active)

        k, x_adv, _, active, rec = jax.lax.while_loop(iter_cond, iter_body, (jnp.int32(0), x_adv, noise, attacked, rec))
        # The check after the last step (k = K); a no-op when the loop ended because nothing is active.
        ok = jax.lax.cond(jnp.any(active), check_fn, lambda v: jnp.zeros((n,), bool), x_adv)
        rec = _record(rec, active, ok, x_adv, r, k, check_cost)
        # Failures keep the last iterate of the last restart that attacked them.
        rec = rec._replace(x_out=jnp.where(per_example(attacked & ~rec.done, x), x_adv, rec.x_out))
        return r + 1, rec

    def restart_cond(carry):
        r, rec = carry
        return (r < num_restarts) & jnp.any(~rec.done & ~rec.stopped)

    minus_one = jnp.full((n,), -1, jnp.int32)
    rec = _Record(x, jnp.zeros((n,), bool), jnp.zeros((n,), bool), minus_one, minus_one,
                  jnp.full((n,), initial_queries, jnp.int32))
    _, rec = jax.lax.while_loop(restart_cond, restart_body, (jnp.int32(0), rec))
    return rec


def to_result(rec: _Record, targets: jax.Array) -> EvasionResult:
    return EvasionResult(x_adv=rec.x_out, success=rec.done, iterations=rec.iterations, restart=rec.restart,
                         targets=targets, queries=rec.queries)
