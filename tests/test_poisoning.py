"""Label-flipping poisoning (docs/protocol.md §e.3): exact flip count, never the own label, uniform wrong labels, nested
seeded subsets, CAD, and 40% poisoning lowering accuracy on native 8x8 digits with a tiny CNN."""

from decimal import ROUND_HALF_UP, Decimal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import parallel
from nas_jax.attacks.poisoning import clean_accuracy_drop, flip_labels, num_flipped, poison_dataset
from nas_jax.config import base_config
from nas_jax.data import load_dataset
from nas_jax.tasks.poison import PoisonSettings
from nas_jax.train import trainer


def _round_half_up(x: str) -> int:
    return int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize("n,k,p", [(1437, 10, "0.4"), (1437, 10, "0.05"), (50000, 10, "0.1"), (10, 2, "0.25"),
                                   (7, 3, "0.5"), (100, 100, "0.2"), (33, 10, "0"), (33, 10, "1")])
def test_flip_count_is_exact_and_never_the_own_label(n, k, p):
    labels = np.random.default_rng(n + k).integers(0, k, n).astype(np.int32)
    new, flipped = flip_labels(labels, float(p), k, seed=3)
    want = _round_half_up(str(Decimal(p) * n))  # exact decimal arithmetic: 10 * 0.25 = 2.5 -> 3
    changed = np.nonzero(new != labels)[0]
    assert len(changed) == want == num_flipped(float(p), n)
    np.testing.assert_array_equal(changed, flipped)  # every chosen example changes: never its own label
    assert new.dtype == labels.dtype and new.min() >= 0 and new.max() < k
    np.testing.assert_array_equal(flip_labels(labels, float(p), k, seed=3)[0], new)  # seeded


def test_wrong_labels_are_uniform_and_subsets_nested():
    k, n = 5, 40000
    labels = np.random.default_rng(0).integers(0, k, n)
    new, flipped = flip_labels(labels, 1.0, k, seed=0)
    offsets = (new - labels) % k
    counts = np.bincount(offsets, minlength=k)
    assert counts[0] == 0
    expected = n / (k - 1)  # each wrong class 10,000 times; 4.5 binomial sd ≈ 390
    assert np.all(np.abs(counts[1:] - expected) < 4.5 * np.sqrt(expected * (1 - 1 / (k - 1)))), counts
    # one seeded draw: smaller fractions flip a subset, with the same wrong labels; another seed, another subset
    small, f_small = flip_labels(labels, 0.1, k, seed=0)
    mid, f_mid = flip_labels(labels, 0.4, k, seed=0)
    assert set(f_small) <= set(f_mid) and len(f_small) == 4000
    np.testing.assert_array_equal(small[f_small], mid[f_small])
    assert set(flip_labels(labels, 0.1, k, seed=1)[1]) != set(f_small)


def test_poison_dataset_errors_and_cad():
    ds = load_dataset("digits", native=True)
    polluted, flipped = poison_dataset(ds, 0.2, seed=0)
    assert len(flipped) == round(0.2 * len(ds.y_train)) == np.sum(polluted.y_train != ds.y_train)
    assert polluted.x_train is ds.x_train and polluted.y_test is ds.y_test  # labels replaced, nothing added
    assert clean_accuracy_drop(0.9, 0.75) == pytest.approx(0.15)
    assert PoisonSettings(fractions=(0.4, 0.1)).fractions == (0.0, 0.1, 0.4)  # p = 0 (the reference) always added
    with pytest.raises(ValueError, match="lie in"):
        PoisonSettings(fractions=(0.1, 1.0))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="must be in"):
            flip_labels(ds.y_train, bad, 10, 0)
    with pytest.raises(ValueError, match="lie in"):
        flip_labels(np.array([0, 3]), 0.5, 3, 0)


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = (x - 0.3) / 0.4
        for i, c in enumerate((16, 32)):
            x = nn.Conv(c, (3, 3), strides=1 + i, use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        return nn.Dense(10, name="classifier")(x.mean((1, 2)))


def test_poisoning_40_percent_lowers_digits_accuracy():
    """Same model, init, recipe, batch order and compiled step; only 40% of the labels differ."""
    ds = load_dataset("digits", native=True)
    model = TinyNet()
    tcfg = base_config("train", "quick").train
    tcfg.crop_padding, tcfg.cutout, tcfg.grad_clip, tcfg.lr, tcfg.epochs, tcfg.batch_size = 0, 0, 0.0, 0.3, 12, 128
    spe = len(ds.y_train) // tcfg.batch_size
    tx = trainer.make_optimizer(tcfg, spe)
    v = trainer.init_variables(model, trainer.init_key(0), ds.image_shape)
    step = trainer.make_train_step(model, tx, tcfg, base_config("train").arch, spe, 0, parallel.data_mesh())
    predict = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))
    accuracy = {}
    for p in (0.0, 0.4):
        y = poison_dataset(ds, p, seed=0)[0].y_train
        w = jax.tree_util.tree_map(jnp.array, v)  # fresh buffers: the step donates its state
        state = trainer.TrainState(jnp.zeros((), jnp.int32), w["params"], w["batch_stats"], tx.init(w["params"]))
        rng = np.random.default_rng(0)
        for _ in range(tcfg.epochs):
            perm = rng.permutation(len(y))
            for s in range(spe):
                i = perm[s * tcfg.batch_size : (s + 1) * tcfg.batch_size]
                state, _ = step(state, ds.x_train[i], y[i])
        pred = predict(state.variables, jnp.asarray(ds.x_test, jnp.float32) / 255.0)
        accuracy[p] = float(np.mean(np.asarray(pred) == ds.y_test))
    assert accuracy[0.0] > 0.9, accuracy
    assert clean_accuracy_drop(accuracy[0.0], accuracy[0.4]) > 0.03, accuracy
