"""The DARTS bi-level step: hypergradients, the in-NAS mitigations and the optimisers.

Paper §2.1 / Eqn 4 (DARTS, Liu et al. 2019) and §5.2 (mitigations; Table 4, Figures 15–17); docs/protocol.md §g
and §f.4. α minimises L_val(w*(α), α) with w*(α) minimising L_train(w, α). Three hypergradients of α:

- ``first_order``: ∇_α L_val(w, α) (DARTS-V1).
- ``finite_difference``: DARTS' second-order approximation: a virtual step w' = w − ξ(μm + ∇_w L_train + λw),
  then dα − ξ·h with h = (∇_α L_train(w + Rv) − ∇_α L_train(w − Rv)) / 2R, v = ∇_{w'} L_val, R = ε / ‖v‖
  (docs/protocol.md §g, ε = 0.01).
- ``exact``: jax.grad of α ↦ L_val(w'(α), α) through the virtual step, exactly what DARTS approximates.

Mitigation (i), ``n_step``: the virtual step becomes ``n_step`` unrolled SGD steps (``lax.scan``, momentum
carried) and the exact hypergradient differentiates through all of them; with ``first_order`` it means n_step
real weight updates per α update (``alternate``). Mitigation (ii), γ: the supernet's ``skip_gamma``.

A step (DARTS reference order): the α update on a valid batch, then the weight update(s) with the new α, BN in
train mode throughout; only the real weight update keeps its running statistics. One ``jit``, batch-sharded over
the ``'data'`` mesh (:mod:`nas_jax.parallel`). Other searchers (:mod:`nas_jax.models.searchers`) use the same step
with their record: sampling keys come from the step counter (same seed, same search), τ follows the record's
schedule, a regulariser (DrNAS) joins the α objective, and a searcher that does not train α (random search) makes
each step one weight update on a sampled path plus a val pass for the log.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from nas_jax import parallel
from nas_jax.data.augment import augment_batch
from nas_jax.errors import UserError
from nas_jax.models.searchers import SEARCHERS, Searcher, resolve
from nas_jax.models.supernet import ARCH
from nas_jax.train.trainer import cosine_per_epoch, cross_entropy, init_key

HYPERGRADIENTS = ("first_order", "finite_difference", "exact")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything the compiled step depends on (hashable: one compiled step per value)."""

    hypergradient: str = "exact"
    n_step: int = 1
    epochs: int = 50
    steps_per_epoch: int = 390  # real weight updates per epoch (lr schedule)
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4
    arch_b1: float = 0.5
    arch_b2: float = 0.999
    arch_weight_decay: float = 1e-3
    fd_epsilon: float = 0.01
    crop_padding: int = 4
    flip: bool = True
    searcher: Searcher = SEARCHERS["darts"]
    settings: tuple = ()  # the searcher's settings as sorted (name, value) pairs (hashable)

    def __post_init__(self):
        if not self.searcher.trains_alpha and self.n_step != 1:
            raise UserError(f"search.method={self.searcher.name!r} has no hypergradient and no α update: "
                            "search.n_step (mitigation i) does not apply; leave it at 1.")
        if self.hypergradient not in HYPERGRADIENTS:
            raise ValueError(f"unknown search.hypergradient {self.hypergradient!r}; valid: {HYPERGRADIENTS}.")
        if self.n_step < 1:
            raise ValueError(f"search.n_step must be >= 1, got {self.n_step}.")
        if self.n_step > 1 and self.hypergradient == "finite_difference":
            raise ValueError("search.n_step > 1 needs search.hypergradient='exact' (differentiate through the "
                             "unrolled steps) or 'first_order' (n_step real weight updates per α update); the "
                             "finite-difference approximation is defined for one virtual step only.")

    @property
    def real_updates(self) -> int:
        """Weight updates per step: n_step for first order (the 'alternate' reading), else 1."""
        return self.n_step if self.hypergradient == "first_order" else 1

    def tau(self, count):
        """Temperature at weight-update ``count``: the searcher's schedule over the epochs done (1 without one)."""
        if self.searcher.temperature is None:
            return jnp.float32(1.0)
        done = jnp.minimum(count // self.steps_per_epoch, self.epochs - 1) / max(self.epochs - 1, 1)
        return self.searcher.temperature(done, dict(self.settings))


def step_config(config, steps_per_epoch: int) -> StepConfig:
    """The :class:`StepConfig` of a search config (``config.train`` and ``config.search``)."""
    t, s = config.train, config.search
    searcher, settings = resolve(s)
    return StepConfig(
        hypergradient=s.hypergradient, n_step=int(s.n_step), epochs=int(t.epochs), steps_per_epoch=steps_per_epoch,
        lr=float(t.lr), lr_min=float(t.lr_min), momentum=float(t.momentum), weight_decay=float(t.weight_decay),
        grad_clip=float(t.grad_clip), arch_lr=float(s.arch_lr), arch_b1=float(s.arch_b1), arch_b2=float(s.arch_b2),
        arch_weight_decay=float(s.arch_weight_decay), fd_epsilon=float(s.fd_epsilon),
        crop_padding=int(t.crop_padding), flip=bool(t.flip), searcher=searcher,
        settings=tuple(sorted(settings.items())))


# ----------------------------------------------------------------------------
# Optimisers and state
# ----------------------------------------------------------------------------


def weight_schedule(sc: StepConfig):
    """lr per weight update: cosine per epoch from ``lr`` to ``lr_min`` (docs/protocol.md §g)."""
    return cosine_per_epoch(sc.lr, sc.epochs, sc.steps_per_epoch, final_lr=sc.lr_min)


def weight_optimizer(sc: StepConfig) -> optax.GradientTransformation:
    """SGD as in PyTorch: clip the raw gradient, add coupled weight decay, momentum, lr.

    The state is ``(clip, decay, TraceState(trace), ScaleByScheduleState(count))``:
    the virtual step reads the momentum buffer and the current lr from it.
    """
    clip = optax.clip_by_global_norm(sc.grad_clip) if sc.grad_clip > 0 else optax.identity()
    return optax.chain(clip, optax.add_decayed_weights(sc.weight_decay), optax.trace(decay=sc.momentum),
                       optax.scale_by_learning_rate(weight_schedule(sc)))


def arch_optimizer(sc: StepConfig) -> optax.GradientTransformation:
    """Adam(3e-4, betas (0.5, 0.999)) with coupled L2 1e-3 on α (docs/protocol.md §g)."""
    return optax.chain(optax.add_decayed_weights(sc.arch_weight_decay),
                       optax.adam(sc.arch_lr, b1=sc.arch_b1, b2=sc.arch_b2))


def momentum_and_count(w_opt_state) -> tuple[Any, jax.Array]:
    """(momentum buffer, update count) of a :func:`weight_optimizer` state."""
    return w_opt_state[2].trace, w_opt_state[3].count


class SearchState(flax.struct.PyTreeNode):
    step: jax.Array  # α updates so far
    params: Any
    batch_stats: Any
    arch: Any
    w_opt_state: Any
    a_opt_state: Any

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats, ARCH: self.arch}


def create_search_state(model: nn.Module, sc: StepConfig, seed: int, image_shape: tuple[int, ...]) -> SearchState:
    """Initial weights, α (1e-3·N(0,1)) and both optimiser states."""
    return _init_fn(model, sc, tuple(image_shape))(init_key(seed))


@functools.cache
def _init_fn(model: nn.Module, sc: StepConfig, image_shape: tuple[int, ...]):
    """The jitted initialiser, compiled once per (model, config, shape): a resumed or
    repeated search in the same process does not compile it again."""

    @jax.jit
    def init(key):
        v = model.init({"params": key}, jnp.zeros((2, *image_shape), jnp.float32), train=False)
        return SearchState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], v[ARCH],
                           weight_optimizer(sc).init(v["params"]), arch_optimizer(sc).init(v[ARCH]))

    return init


# ----------------------------------------------------------------------------
# Losses, the virtual step and the hypergradients
# ----------------------------------------------------------------------------


def batch_loss(model: nn.Module, params, batch_stats, arch, x, y, key=None, tau=1.0):
    """Train-mode cross-entropy -> (loss, (logits, updated batch_stats)); ``key``: the supernet's
    ``'sample'`` RNG (None: its deterministic relaxation), ``tau`` its temperature."""
    kw = {} if key is None else {"rngs": {"sample": key}, "tau": tau}
    logits, mutated = model.apply({"params": params, "batch_stats": batch_stats, ARCH: arch}, x, train=True,
                                  mutable=["batch_stats"], **kw)
    return cross_entropy(logits, y), (logits, mutated["batch_stats"])


def virtual_step(model: nn.Module, sc: StepConfig, params, momentum, batch_stats, arch, lr, x, y, key=None,
                 tau=1.0):
    """One virtual SGD step w' = w − ξ(μm + ∇_w L_train(w, α) + λw), m' = μm + ∇ + λw (no clipping)."""
    g = jax.grad(lambda w: batch_loss(model, w, batch_stats, arch, x, y, key, tau)[0])(params)
    m = jax.tree_util.tree_map(lambda m, g, w: sc.momentum * m + g + sc.weight_decay * w, momentum, g, params)
    return jax.tree_util.tree_map(lambda w, m: w - lr * m, params, m), m


def unrolled_weights(model: nn.Module, sc: StepConfig, params, momentum, batch_stats, arch, lr, xs, ys, keys=None,
                     tau=1.0):
    """``len(xs)`` virtual steps with ``lax.scan`` (mitigation i); returns the final weights."""

    def body(carry, batch):
        x, y, key = batch
        return virtual_step(model, sc, *carry, batch_stats, arch, lr, x, y, key, tau), None

    (w, _), _ = jax.lax.scan(body, (params, momentum), (xs, ys, keys))
    return w


def hypergradient(model: nn.Module, sc: StepConfig, params, momentum, batch_stats, arch, lr, train_batches,
                  val_batch, keys=None, tau=1.0):
    """g_α of ``sc.hypergradient`` -> (g_α, val loss, val logits).

    ``train_batches = (xs, ys)`` has a leading axis of ``n_step`` batches; ``val_batch = (x, y)``; the val loss is
    taken at w (first order) or the virtual weights. ``keys = (train keys (n_step,), val key)`` for the sampling
    methods (None: deterministic); a searcher's regulariser (DrNAS) adds its gradient.
    """
    xs, ys = train_batches
    vx, vy = val_batch
    train_keys, val_key = keys if keys is not None else (None, None)

    def val_loss(w, a):
        loss, (logits, _) = batch_loss(model, w, batch_stats, a, vx, vy, val_key, tau)
        return loss, logits

    if sc.hypergradient == "first_order":
        (loss, logits), g = jax.value_and_grad(val_loss, argnums=1, has_aux=True)(params, arch)
    elif sc.hypergradient == "exact":
        def outer(a):
            return val_loss(unrolled_weights(model, sc, params, momentum, batch_stats, a, lr, xs, ys, train_keys,
                                             tau), a)

        (loss, logits), g = jax.value_and_grad(outer, has_aux=True)(arch)
    else:  # finite_difference: one virtual step (n_step == 1 is checked by StepConfig)
        k1 = None if train_keys is None else train_keys[:1]
        w1 = unrolled_weights(model, sc, params, momentum, batch_stats, arch, lr, xs[:1], ys[:1], k1, tau)
        (loss, logits), (v, d_arch) = jax.value_and_grad(val_loss, argnums=(0, 1), has_aux=True)(w1, arch)
        r = sc.fd_epsilon / optax.global_norm(v)

        def train_arch_grad(sign):
            w = jax.tree_util.tree_map(lambda p, v: p + sign * r * v, params, v)
            k0 = None if train_keys is None else train_keys[0]
            return jax.grad(lambda a: batch_loss(model, w, batch_stats, a, xs[0], ys[0], k0, tau)[0])(arch)

        plus, minus = train_arch_grad(1.0), train_arch_grad(-1.0)
        g = jax.tree_util.tree_map(lambda d, p, m: d - lr * (p - m) / (2 * r), d_arch, plus, minus)
    if sc.searcher.regulariser is not None:
        extra = jax.grad(lambda a: sc.searcher.regulariser(a, dict(sc.settings)))(arch)
        g = jax.tree_util.tree_map(jnp.add, g, extra)
    return g, loss, logits


# ----------------------------------------------------------------------------
# The compiled step
# ----------------------------------------------------------------------------


def search_update(model: nn.Module, sc: StepConfig, state: SearchState, train_batches, val_batch, key=None):
    """One bi-level step on float batches -> (state, metrics[6]).

    metrics = [train loss sum, train correct, train count, val loss sum, val correct, val count].
    ``key``: this step's sampling key (the sampling methods; None: deterministic).
    """
    w_tx, a_tx = weight_optimizer(sc), arch_optimizer(sc)
    momentum, count = momentum_and_count(state.w_opt_state)
    lr, tau = weight_schedule(sc)(count), sc.tau(count)
    n = train_batches[0].shape[0]
    if key is None:
        virtual_keys = real_keys = val_key = None
    else:
        k_virtual, k_real, val_key = jax.random.split(key, 3)
        virtual_keys, real_keys = jax.random.split(k_virtual, n), jax.random.split(k_real, n)
    if not sc.searcher.trains_alpha:  # no α update; the val pass is for the log only
        val_loss, (val_logits, _) = batch_loss(model, state.params, state.batch_stats, state.arch, *val_batch,
                                               val_key, tau)
        arch, a_opt_state = state.arch, state.a_opt_state
    else:
        keys = None if key is None else (virtual_keys, val_key)
        g_arch, val_loss, val_logits = hypergradient(model, sc, state.params, momentum, state.batch_stats,
                                                     state.arch, lr, train_batches, val_batch, keys, tau)
        a_updates, a_opt_state = a_tx.update(g_arch, state.a_opt_state, state.arch)
        arch = optax.apply_updates(state.arch, a_updates)

    def sums(loss, logits, y):  # [loss sum, correct, count] of a batch
        return jnp.stack([loss * y.shape[0], jnp.sum(jnp.argmax(logits, -1) == y), y.shape[0]]).astype(jnp.float32)

    def weight_update(carry, batch):
        params, batch_stats, opt_state = carry
        x, y, k = batch
        (loss, (logits, stats)), g = jax.value_and_grad(
            lambda w: batch_loss(model, w, batch_stats, arch, x, y, k, tau), has_aux=True)(params)
        updates, opt_state = w_tx.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), sums(loss, logits, y)

    xs, ys = train_batches
    n = sc.real_updates
    ks = None if real_keys is None else real_keys[:n]
    (params, batch_stats, w_opt_state), m = jax.lax.scan(
        weight_update, (state.params, state.batch_stats, state.w_opt_state), (xs[:n], ys[:n], ks))
    metrics = jnp.concatenate([m.sum(0), sums(val_loss, val_logits, val_batch[1])])
    new_state = SearchState(state.step + 1, params, batch_stats, arch, w_opt_state, a_opt_state)
    return new_state, metrics


def stacked_sharding(mesh) -> NamedSharding:
    """(n_step, batch, ...) arrays: the batch axis sharded over ``'data'``."""
    return NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))


@functools.cache
def make_search_step(model: nn.Module, sc: StepConfig, seed: int, mesh):
    """``step(state, train_x_u8 (n, B, H, W, C), train_y (n, B), val_x_u8 (B, ...), val_y)``.

    Augments every batch on the device (crop + flip, keys from the step counter so a resumed run replays it) and runs
    :func:`search_update`; one ``jit`` over ``mesh``, cached per (model, config).
    """
    base_key = jax.random.key(seed)

    def step(state: SearchState, train_x, train_y, val_x, val_y):
        t_key, v_key = jax.random.split(jax.random.fold_in(base_key, state.step))
        aug = functools.partial(augment_batch, crop_padding=sc.crop_padding, flip=sc.flip, cutout=0)
        xs = jax.vmap(aug)(jax.random.split(t_key, train_x.shape[0]), train_x)
        s_key = None if sc.searcher.sample is None else jax.random.fold_in(
            jax.random.fold_in(base_key, 2**30), state.step)
        return search_update(model, sc, state, (xs, train_y), (aug(v_key, val_x), val_y), s_key)

    rep, data, stacked = parallel.replicated(mesh), parallel.batch_sharded(mesh), stacked_sharding(mesh)
    return jax.jit(step, in_shardings=(rep, stacked, stacked, data, data), out_shardings=(rep, rep),
                   donate_argnums=(0,))
