"""Knockoff Nets functionality stealing (paper §2 Eqn 8, §3.2 Figure 9 and Table 2; docs/protocol.md §e.5).

Orekondy, Schiele & Fritz, "Knockoff Nets: Stealing Functionality of Black-Box Models" (CVPR 2019), with ART's
gradient-bandit formulation [library], through ``query_fn(images) -> probabilities`` only, never exceeding the
budget B: ``random`` queries B pool images drawn without replacement [artifact]; ``adaptive`` runs B rounds of a
gradient bandit over the pool's classes (docs/protocol.md §e.5 steps 1–3: a class from softmax(H), a random image
of it, one query, one SGD step of the thief, a ``cert``/``div``/``loss``/``all`` reward updating H) in a compiled
``lax.scan``. The thief is then trained on the B pairs with soft labels (−Σ p_v log softmax(f*), the paper) or
hard ones. ACE, the paper's metric, is the mean cross entropy between victim and thief test predictions; its floor
is the victim's mean prediction entropy (ACE − floor = mean KL(victim ‖ thief)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax import files
from nas_jax.data import Dataset
from nas_jax.data.augment import crop_flip, sample_params, to_float
from nas_jax.train import trainer
from nas_jax.train.checkpoint import Checkpointer

SAMPLING = ("random", "adaptive")
REWARDS = ("cert", "div", "loss", "all")
LABELS = ("soft", "hard")
QueryFn = Callable[[jax.Array], jax.Array]  # images in [0, 1] -> probabilities (the black box)


class BudgetExceededError(RuntimeError):
    """A query would take the victim past the attack's query budget."""


@dataclasses.dataclass(frozen=True)
class KnockoffConfig:
    """One Knockoff run (docs/protocol.md §e.5 table). ``scan_chunk``: adaptive rounds per compiled scan call."""

    budget: int
    sampling: str = "adaptive"
    reward: str = "all"
    labels: str = "soft"
    query_batch_size: int = 96
    scan_chunk: int = 250

    def __post_init__(self):
        for name, valid in (("sampling", SAMPLING), ("reward", REWARDS), ("labels", LABELS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown Knockoff {name} {getattr(self, name)!r}; valid: {valid}.")
        if self.budget < 1 or self.query_batch_size < 1 or self.scan_chunk < 1:
            raise ValueError(f"budget={self.budget}, query_batch_size={self.query_batch_size} and "
                             f"scan_chunk={self.scan_chunk} must be >= 1.")


class QueryCounter:
    """Counts victim queries and refuses any that would exceed ``budget``."""

    def __init__(self, budget: int):
        self.budget, self.used = budget, 0

    def charge(self, n: int) -> None:
        if self.used + n > self.budget:
            raise BudgetExceededError(f"{n} more queries would exceed the budget ({self.used} of {self.budget} used).")
        self.used += n


# ----------------------------------------------------------------------------
# Rewards and the gradient bandit (docs/protocol.md §e.5, ART's formulation)
# ----------------------------------------------------------------------------


class RewardStats(NamedTuple):
    """Running means: victim output ȳ (div), and mean/variance of (cert, div, loss) (all)."""

    y_mean: jax.Array  # [K]
    mu: jax.Array  # [3]
    var: jax.Array  # [3]


class Bandit(NamedTuple):
    h: jax.Array  # preferences H [A]
    counts: jax.Array  # N_a [A]
    mean_reward: jax.Array  # r̄
    probs: jax.Array  # π = softmax(H)


def init_reward_stats(num_classes: int) -> RewardStats:
    return RewardStats(jnp.zeros(num_classes), jnp.zeros(3), jnp.zeros(3))


def init_bandit(num_actions: int) -> Bandit:
    return Bandit(jnp.zeros(num_actions), jnp.zeros(num_actions), jnp.zeros(()), jnp.full(num_actions, 1 / num_actions))


def compute_reward(kind: str, p_victim: jax.Array, thief_logits: jax.Array, stats: RewardStats,
                   i: jax.Array) -> tuple[jax.Array, RewardStats]:
    """Round ``i`` (1-based) reward of type ``kind`` and the updated running statistics.

    ``cert``: top-1 minus top-2 victim probability; ``div``: Σ_k max(0, y_k − ȳ_k) with ȳ already updated with
    this round's output; ``loss``: the cross entropy −Σ_k p_v,k log softmax(thief)_k. ``all``: r = (cert, div,
    loss); μ ← μ + (r − μ)/i, var ← var + ((r − μ)² − var)/i; the mean of (r − μ)/√var (components with var = 0
    count 0) for i > 1, of r clipped to [0, 1] for i = 1.
    """
    i = jnp.asarray(i, jnp.float32)
    y_mean = stats.y_mean + (p_victim - stats.y_mean) / i
    top = jax.lax.top_k(p_victim, 2)[0]
    r = jnp.stack([top[0] - top[1], jnp.sum(jnp.maximum(0.0, p_victim - y_mean)),
                   -jnp.sum(p_victim * jax.nn.log_softmax(thief_logits))])
    mu = stats.mu + (r - stats.mu) / i
    var = stats.var + ((r - mu) ** 2 - stats.var) / i
    z = jnp.where(var > 0, (r - mu) / jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)
    combined = jnp.mean(jnp.where(i > 1, z, jnp.clip(r, 0.0, 1.0)))
    value = {"cert": r[0], "div": r[1], "loss": r[2], "all": combined}[kind]
    return value, RewardStats(y_mean, mu, var)


def bandit_update(bandit: Bandit, action: jax.Array, reward: jax.Array, i: jax.Array) -> Bandit:
    """r̄ ← r̄ + (r − r̄)/i; N_a += 1; H ← H + (r − r̄)/N_a · (1[b = a] − π_b); π = softmax(H)."""
    mean = bandit.mean_reward + (reward - bandit.mean_reward) / jnp.asarray(i, jnp.float32)
    counts = bandit.counts.at[action].add(1.0)
    onehot = jnp.arange(bandit.h.shape[0]) == action
    h = bandit.h + (reward - mean) / counts[action] * (onehot - bandit.probs)
    return Bandit(h, counts, mean, jax.nn.softmax(h))


# ----------------------------------------------------------------------------
# Query pool and query collection
# ----------------------------------------------------------------------------


def make_pool(images_u8: np.ndarray, crop_padding: int, flip: bool, seed: int) -> np.ndarray:
    """The query pool: images passed once through crop (and flip) augmentation, then frozen [artifact]."""
    if crop_padding == 0 and not flip:
        return np.asarray(images_u8)
    n, h, w, _ = images_u8.shape
    params = sample_params(jax.random.key(seed), n, h, w, crop_padding=crop_padding)
    flips = params.flip if flip else jnp.zeros((n,), bool)
    return np.asarray(jax.jit(crop_flip, static_argnames="padding")(
        jnp.asarray(images_u8), params.offset_y, params.offset_x, flips, padding=crop_padding))


@jax.jit
def _query(query_fn, images_u8):
    return query_fn(to_float(images_u8))


def victim_probabilities(query_fn: QueryFn, images_u8: np.ndarray, batch_size: int,
                         counter: QueryCounter | None = None) -> np.ndarray:
    """Victim outputs for a uint8 array, ``batch_size`` at a time; each row is charged to ``counter``."""
    out = []
    for start in range(0, len(images_u8), batch_size):
        batch = images_u8[start : start + batch_size]
        if counter is not None:
            counter.charge(len(batch))
        out.append(np.asarray(_query(query_fn, batch)))
    return np.concatenate(out)


class AdaptiveOutput(NamedTuple):
    indices: np.ndarray  # [B] pool indices, in query order
    probs: np.ndarray  # [B, K] victim outputs
    actions: np.ndarray  # [B] arm (pool class) of each round
    rewards: np.ndarray  # [B]
    variables: dict  # the thief after the B single-sample steps


class _Recipe(NamedTuple):
    """The hashable optimiser fields of a train config (for :func:`trainer.make_optimizer`)."""

    lr_schedule: str
    lr: float
    epochs: int
    grad_clip: float
    weight_decay: float
    momentum: float


@functools.partial(jax.jit, static_argnames=("model", "recipe", "kind", "hard", "length"))
def _adaptive_chunk(carry, query_fn, pool, arm_counts, arm_starts, order, key, *, model, recipe, kind, hard, length):
    """``length`` bandit rounds in one scan; ``carry = (state, bandit, stats, i)`` with i the last round done."""
    tx = trainer.make_optimizer(recipe, 1)

    def round_(carry, _):
        state, bandit, stats, i = carry
        i = i + 1
        k_arm, k_img, k_drop = jax.random.split(jax.random.fold_in(key, i), 3)
        action = jax.random.categorical(k_arm, jnp.log(bandit.probs))
        idx = order[arm_starts[action] + jax.random.randint(k_img, (), 0, arm_counts[action])]
        x = to_float(jax.lax.dynamic_slice_in_dim(pool, idx, 1))
        p_victim = query_fn(x)  # the round's only victim query
        labels = jnp.argmax(p_victim, -1) if hard else p_victim

        def loss_fn(params):
            logits, mutated = model.apply({**state.variables, "params": params}, x, train=True,
                                          rngs={"dropout": k_drop}, mutable=["batch_stats"])
            return trainer.cross_entropy(logits, labels), mutated.get("batch_stats", {})

        grads, new_stats = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=new_stats, opt_state=opt_state)
        thief_logits = model.apply(state.variables, x, train=False)[0]
        reward, stats = compute_reward(kind, p_victim[0], thief_logits, stats, i)
        bandit = bandit_update(bandit, action, reward, i)
        return (state, bandit, stats, i), (idx, p_victim[0], action, reward)

    return jax.lax.scan(round_, carry, None, length=length)


@functools.partial(jax.jit, static_argnames=("model", "recipe", "image_shape"))
def _initial_state(key, *, model, recipe, image_shape):
    """``trainer.create_state`` under one cached ``jit`` (compiled once per model, not once per call)."""
    return trainer.create_state(model, trainer.make_optimizer(recipe, 1), key, image_shape)


def adaptive_queries(query_fn: QueryFn, pool_u8: np.ndarray, pool_labels: np.ndarray, num_classes: int, model,
                     thief_train_config, key: jax.Array, kcfg: KnockoffConfig, counter: QueryCounter) -> AdaptiveOutput:
    """The gradient-bandit rounds of adaptive Knockoff (docs/protocol.md §e.5 step 2): exactly ``kcfg.budget`` queries.

    The thief starts from ``trainer.create_state`` with ``thief_train_config`` (its optimiser, seed); each round
    takes one SGD step on the queried image with the victim's soft (or hard) label.
    """
    # Arms = the pool's distinct classes; round i draws from the pool indices sorted by class.
    pool_labels = np.asarray(pool_labels)
    classes, counts = np.unique(pool_labels, return_counts=True)
    order, starts = np.argsort(pool_labels, kind="stable"), np.concatenate([[0], np.cumsum(counts)[:-1]])
    recipe = _Recipe(*(getattr(thief_train_config.train, f) for f in _Recipe._fields))
    state = _initial_state(trainer.init_key(thief_train_config.seed), model=model, recipe=recipe,
                           image_shape=tuple(pool_u8.shape[1:]))
    carry = (state, init_bandit(len(classes)), init_reward_stats(num_classes), jnp.int32(0))
    arrays = (jnp.asarray(pool_u8), jnp.asarray(counts, jnp.int32), jnp.asarray(starts, jnp.int32),
              jnp.asarray(order, jnp.int32))
    outs, done = [], 0
    while done < kcfg.budget:
        length = min(kcfg.scan_chunk, kcfg.budget - done)
        counter.charge(length)  # one victim query per round
        carry, out = _adaptive_chunk(carry, query_fn, *arrays, key, model=model, recipe=recipe, kind=kcfg.reward,
                                     hard=kcfg.labels == "hard", length=length)
        outs.append(jax.tree_util.tree_map(np.asarray, out))
        done += length
    idx, probs, actions, rewards = (np.concatenate(parts) for parts in zip(*outs))
    return AdaptiveOutput(idx, probs, classes[actions], rewards, carry[0].variables)


# ----------------------------------------------------------------------------
# The attack and its metrics
# ----------------------------------------------------------------------------


def stealing_metrics(victim_probs: np.ndarray, thief_logits: np.ndarray, labels: np.ndarray) -> dict:
    """ACE = mean −Σ_k p_v,k log softmax(f*)_k (docs/protocol.md §e.5), its floor (the victim's mean entropy), their
    difference (mean KL(victim ‖ thief)), thief accuracy and victim–thief top-1 agreement."""
    p = jnp.asarray(victim_probs, jnp.float32)
    ace = -jnp.sum(p * jax.nn.log_softmax(jnp.asarray(thief_logits, jnp.float32)), -1).mean()
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1).mean()
    thief_pred, victim_pred = np.argmax(thief_logits, -1), np.argmax(victim_probs, -1)
    return {"ace": float(ace), "victim_entropy": float(entropy), "kl": float(ace - entropy),
            "replica_accuracy": float(np.mean(thief_pred == labels)),
            "agreement": float(np.mean(thief_pred == victim_pred)),
            "victim_accuracy": float(np.mean(victim_pred == labels))}


def _host_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key's data (a jitted threefry permutation compiles for seconds on CPU)."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def _collect(query_fn, pool_u8, pool_labels, dataset, model, thief_config, key, kcfg, run_dir: Path):
    """The B queries (cached in ``run_dir`` so a resumed run never re-queries the victim)."""
    cache, bandit_dir = run_dir / "queries.npz", run_dir / "adaptive_thief"
    variables = None  # the adaptive thief after its bandit rounds
    if cache.exists():
        if kcfg.sampling == "adaptive":
            tx = trainer.make_optimizer(thief_config.train, 1)
            template = jax.eval_shape(lambda: trainer.create_state(model, tx, trainer.init_key(thief_config.seed),
                                                                   pool_u8.shape[1:]).variables)
            with contextlib.closing(Checkpointer(bandit_dir)) as ckpt:
                variables = ckpt.restore(template)
        return dict(np.load(cache)), variables, 0
    counter = QueryCounter(kcfg.budget)
    if kcfg.sampling == "random":
        if kcfg.budget > len(pool_u8):
            raise ValueError(f"random sampling draws without replacement: budget {kcfg.budget} exceeds the pool's "
                             f"{len(pool_u8)} images; lower the budget or use sampling='adaptive'.")
        idx = _host_rng(key).permutation(len(pool_u8))[: kcfg.budget]
        data = {"indices": idx, "probs": victim_probabilities(query_fn, pool_u8[idx], kcfg.query_batch_size, counter)}
    else:
        out = adaptive_queries(query_fn, pool_u8, pool_labels, dataset.num_classes, model, thief_config, key, kcfg,
                               counter)
        data = {"indices": out.indices, "probs": out.probs, "actions": out.actions, "rewards": out.rewards}
        variables = out.variables
        with contextlib.closing(Checkpointer(bandit_dir)) as ckpt:
            ckpt.save(kcfg.budget, variables)
    if counter.used != kcfg.budget:
        raise RuntimeError(f"internal error: {counter.used} victim queries for a budget of {kcfg.budget}.")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "queries.tmp.npz"
    np.savez(tmp, **data)
    tmp.replace(cache)
    return data, variables, counter.used


def knockoff(query_fn: QueryFn, pool_u8: np.ndarray, pool_labels: np.ndarray | None, dataset: Dataset, model,
             thief_config, key: jax.Array, kcfg: KnockoffConfig, run_dir: str | Path, progress: bool = False,
             name: str = "thief") -> dict:
    """Steal ``query_fn`` into a fresh ``model`` (docs/protocol.md §e.5); resumable from ``run_dir``.

    ``pool_u8``: the transfer set; ``pool_labels``: its classes (arms of ``adaptive``); ``dataset``: its test set is
    logged; ``thief_config``: the thief's ``train`` recipe and ``seed``. Returns the thief's variables, its queries
    (pool indices, victim outputs) and ``queries_issued`` (victim queries of this call, 0 when cached).
    """
    run_dir = Path(run_dir)
    if kcfg.sampling == "adaptive" and pool_labels is None:
        raise ValueError("adaptive sampling needs the pool's class labels (its arms); pass pool_labels or use "
                         "sampling='random'.")
    if kcfg.budget < thief_config.train.batch_size:
        raise ValueError(f"budget {kcfg.budget} is smaller than one thief batch ({thief_config.train.batch_size}); "
                         "raise the budget or lower the thief's batch_size.")
    data, initial, issued = _collect(query_fn, pool_u8, pool_labels, dataset, model, thief_config, key, kcfg, run_dir)
    probs = data["probs"].astype(np.float32)
    labels = probs if kcfg.labels == "soft" else np.argmax(probs, -1).astype(np.int32)
    transfer = dataclasses.replace(dataset, x_train=pool_u8[data["indices"]], y_train=labels)
    out = trainer.train(model, transfer, thief_config, run_dir / "train", progress=progress, name=name,
                        initial_variables=initial)
    files.write_json(run_dir / "knockoff.json", {**dataclasses.asdict(kcfg), "queries": len(probs)})
    return {"variables": out["state"].variables, "indices": data["indices"], "probs": probs,
            "queries_issued": issued, "queries": len(probs), "log": out.get("log", [])}

