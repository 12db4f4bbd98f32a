"""Backdoor injection (docs/protocol.md §e.4): trigger blend, neuron selection, trigger optimisation, the in-step
poisoning stream, ASR/CAD, and TrojanNN on native 8x8 digits with a tiny CNN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import parallel
from nas_jax.attacks import backdoor as bd
from nas_jax.config import base_config
from nas_jax.data import load_dataset
from nas_jax.train import trainer

SHAPE = (8, 8, 3)


class TinyNet(nn.Module):
    """conv-BN-ReLU ×2, global average pool (the sown penultimate features), Dense ``classifier``."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = (x - 0.3) / 0.4
        for i, c in enumerate((16, 32)):
            x = nn.Conv(c, (3, 3), strides=1 + i, use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        feats = x.mean((1, 2))
        self.sow("intermediates", "features", feats)
        return nn.Dense(10, name="classifier")(feats)


def _fit(model, ds, tcfg, epochs, transform=None, init=None):
    """The trainer's compiled step (with ``batch_transform``) over seeded epochs, without checkpoints."""
    spe = len(ds.y_train) // tcfg.batch_size
    tx = trainer.make_optimizer(tcfg, spe)
    v = init if init is not None else trainer.init_variables(model, trainer.init_key(0), SHAPE)
    state = trainer.TrainState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], tx.init(v["params"]))
    step = trainer.make_train_step(model, tx, tcfg, base_config("train").arch, spe, 0, parallel.data_mesh(), transform)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        perm = rng.permutation(len(ds.y_train))
        for s in range(spe):
            i = perm[s * tcfg.batch_size : (s + 1) * tcfg.batch_size]
            state, _ = step(state, ds.x_train[i], ds.y_train[i])
    return jax.device_get(state.variables)


def _recipe(lr, schedule, epochs, batch_size=128):
    t = base_config("train", "quick").train
    t.crop_padding, t.cutout, t.grad_clip, t.lr, t.lr_schedule, t.epochs = 0, 0, 0.0, lr, schedule, epochs
    t.batch_size = batch_size
    return t


@pytest.fixture(scope="module")
def victim():
    ds = load_dataset("digits", native=True)
    model = TinyNet()
    variables = _fit(model, ds, _recipe(0.3, "cosine", 12), 12)
    predict = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))
    return ds, model, variables, predict


# ----------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------


def test_stamp_is_exact_at_transparency_0_and_1():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(5, *SHAPE)), jnp.float32)
    mark = jnp.asarray(rng.uniform(size=SHAPE), jnp.float32)
    mask = jnp.asarray(bd.trigger_mask(SHAPE, 3, 1, 2))
    inside = np.asarray(mask[..., 0], bool)
    opaque = np.asarray(bd.stamp(x, mark, mask, 0.0))
    np.testing.assert_array_equal(opaque[:, inside], np.broadcast_to(np.asarray(mark)[inside], opaque[:, inside].shape))
    np.testing.assert_array_equal(opaque[:, ~inside], np.asarray(x)[:, ~inside])
    np.testing.assert_array_equal(np.asarray(bd.stamp(x, mark, mask, 1.0)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(bd.stamp(x, mark, mask, jnp.float32(1.0))), np.asarray(x))  # traced a
    # a = 0.7: 30% mark, 70% image inside M, x' = x + (1 − a)·M ⊙ (m − x) (float64 reference)
    xd, md = np.asarray(x, np.float64), np.asarray(mark, np.float64)
    want = xd + 0.3 * np.asarray(mask, np.float64) * (md - xd)
    np.testing.assert_allclose(np.asarray(bd.stamp(x, mark, mask, 0.7)), want, atol=1e-6)
    with pytest.raises(ValueError, match="transparency"):
        bd.stamp(x, mark, mask, 1.5)


def test_trigger_mask_geometry():
    m = bd.trigger_mask((32, 32, 3))
    assert m.shape == (32, 32, 1) and m.sum() == 9 and m[:3, :3].all()  # top-left 3x3 [artifact]
    assert bd.trigger_mask(SHAPE, 2, 6, 6)[6:, 6:].all()
    with pytest.raises(ValueError, match="does not fit"):
        bd.trigger_mask(SHAPE, 3, 6, 0)


def test_neuron_selection_hand_cases():
    kernel = np.array([[1.0, -1.0], [0.0, 0.5], [-3.0, 0.0], [2.0, 0.0], [0.1, 0.1]])  # row |sums| 2, .5, 3, 2, .2
    np.testing.assert_array_equal(bd.select_neurons("strongest_connected", 1, kernel=kernel), [2])
    np.testing.assert_array_equal(bd.select_neurons("strongest_connected", 3, kernel=kernel), [2, 0, 3])  # tie: 0 < 3
    acts = np.array([0.5, 0.0, 2.0, 0.0, 0.1])
    np.testing.assert_array_equal(bd.select_neurons("least_activated", 3, mean_activation=acts), [1, 3, 4])
    with pytest.raises(ValueError, match="valid"):
        bd.select_neurons("random", 1, kernel=kernel)
    with pytest.raises(ValueError, match="n_neuron"):
        bd.select_neurons("strongest_connected", 6, kernel=kernel)


def test_poison_transform_appends_stamped_target_copies():
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.uniform(size=(8, *SHAPE)), jnp.float32)
    labels = jnp.asarray([3, 1, 0, 2, 5, 6, 7, 9], jnp.int32)
    mark, mask = bd.white_mark(SHAPE), bd.trigger_mask(SHAPE)
    # r·B = 2 exactly: always 2 stamped copies of the first 2 examples, relabelled to the target 4
    out_x, out_y = jax.jit(bd.poison_transform(mark, mask, 0.7, 4, 0.25), static_argnums=1)(
        jax.random.key(0), None, images, labels)
    assert out_x.shape == (10, *SHAPE)
    np.testing.assert_array_equal(out_x[:8], images)
    np.testing.assert_array_equal(out_y, [3, 1, 0, 2, 5, 6, 7, 9, 4, 4])
    np.testing.assert_allclose(out_x[8:], bd.stamp(images[:2], mark, mask, 0.7), atol=1e-6)  # jit may fuse (FMA)
    # r·B = 0.96 (the artifact's 1% of 96): k = 0 + Bernoulli(0.96) stamped rows, the slot is a clean copy otherwise
    images96 = jnp.broadcast_to(images[:1], (96, *SHAPE))
    labels96 = jnp.full((96,), 3, jnp.int32)
    transform = bd.poison_transform(mark, mask, 0.7, 4, 0.01)
    keys = jax.random.split(jax.random.key(2), 2000)
    ys = jax.jit(jax.vmap(lambda k: transform(k, None, images96, labels96)[1]))(keys)
    assert ys.shape == (2000, 97)
    hits = np.asarray(ys[:, 96] == 4)
    assert abs(hits.mean() - 0.96) < 0.015, hits.mean()
    assert np.all(np.asarray(ys[~hits, 96]) == 3)


def test_backdoor_metrics_hand_case():
    labels = np.array([0, 1, 2, 3, 4])
    victim = np.array([0, 1, 2, 3, 0])  # 4/5 correct
    trojan = np.array([0, 1, 2, 0, 0])  # 3/5 correct
    triggered = np.array([0, 0, 0, 3, 0])  # target 0: 3 of the 4 non-target inputs flip to it
    m = bd.backdoor_metrics(labels, victim, trojan, triggered, target=0)
    # docs/protocol.md §e.4: the headline ASR counts every stamped input (the target-class one too) [artifact]
    assert m["asr"] == pytest.approx(4 / 5) and m["asr_excluding_target"] == pytest.approx(3 / 4)
    assert "asr_including_target" not in m
    assert m["cad"] == pytest.approx(0.2) and m["clean_accuracy_trojan"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="target class"):
        bd.backdoor_metrics(np.zeros(3, int), np.zeros(3, int), np.zeros(3, int), np.zeros(3, int), target=0)


# ----------------------------------------------------------------------------
# On a trained tiny victim
# ----------------------------------------------------------------------------


def test_trigger_optimisation_raises_target_neurons(victim):
    ds, model, variables, _ = victim
    mask = bd.trigger_mask(SHAPE)
    neurons = bd.select_neurons("strongest_connected", 2, kernel=bd.classifier_kernel(variables))
    features = jax.jit(lambda x: bd.penultimate_features(model.apply, variables, x))
    assert features(np.zeros((2, *SHAPE), np.float32)).shape == (2, 32)

    def target_feats(m):
        return np.asarray(features((m * mask)[None])[0][neurons])

    start = bd.white_mark(SHAPE)
    mark, info = bd.optimize_trigger(model.apply, variables, start, mask, neurons, step_size=0.015, iterations=20,
                                     target_value=10.0, threshold=5.0)
    before, after = target_feats(start), target_feats(mark)
    assert np.all(before < 10.0)  # below the target value, so the objective pulls them up
    # the objective moves the selected neurons jointly towards v: their total activation rises
    assert after.sum() > before.sum() + 0.05, (before, after)
    assert info["objective_final"] < info["objective_initial"] and info["steps"] == 20
    assert np.array_equal(mark[mask[..., 0] == 0], start[mask[..., 0] == 0])  # only pixels inside M move
    assert mark.min() >= 0.0 and mark.max() <= 1.0
    assert np.abs(mark - start).max() <= 20 * 0.015 + 1e-6
    # an already reached objective stops at once
    _, info0 = bd.optimize_trigger(model.apply, variables, start, mask, neurons, threshold=1e6)
    assert info0["steps"] == 0


def test_trojannn_on_digits_reaches_high_asr_with_small_cad(victim):
    ds, model, variables, predict = victim
    mask = bd.trigger_mask(SHAPE)
    neurons = bd.select_neurons("strongest_connected", 2, kernel=bd.classifier_kernel(variables))
    mark, _ = bd.optimize_trigger(model.apply, variables, bd.white_mark(SHAPE), mask, neurons)
    transform = bd.poison_transform(mark, mask, 0.7, 0, 0.25)
    trojan = _fit(model, ds, _recipe(0.05, "constant", 4), 4, transform=transform, init=variables)
    x = jnp.asarray(ds.x_test, jnp.float32) / 255.0
    triggered = bd.stamp(x, jnp.asarray(mark), jnp.asarray(mask), 0.7)
    m = bd.backdoor_metrics(ds.y_test, predict(variables, x), predict(trojan, x), predict(trojan, triggered), 0)
    clean_asr = bd.backdoor_metrics(ds.y_test, predict(variables, x), predict(variables, x),
                                    predict(variables, triggered), 0)["asr_excluding_target"]
    assert clean_asr < 0.1  # the trigger alone does not fool the clean victim
    assert m["clean_accuracy_victim"] > 0.9
    assert m["asr"] > 0.85 and m["cad"] < 0.06, m


def test_finetune_recipe_follows_the_preset():
    from configs.backdoor import get_config
    from nas_jax.tasks.backdoor import BackdoorSettings, finetune_config

    quick, paper = (finetune_config(c, BackdoorSettings.read("backdoor", c.backdoor))
                    for c in (get_config("quick"), get_config("paper")))
    assert (paper.train.lr_schedule, paper.train.lr, paper.train.epochs) == ("constant", 0.01, 20)  # [artifact]
    assert (quick.train.lr_schedule, quick.train.epochs) == ("cosine", 3)  # ends at a small lr (BackdoorSettings)
    assert quick.train_overrides.to_dict() == {} and paper.train.cutout == 0 and paper.train.grad_clip == 0.0
    # the trigger: docs/protocol.md §e.4's 3x3 at transparency 0.7 in the paper preset; the quick one covers more than one
    # source pixel of the 4x-upsampled 8x8 digits (3x3 or 4x4: ~10% ASR on darts, 6x6: 95%; BackdoorSettings)
    q, pp = get_config("quick").backdoor, get_config("paper").backdoor
    assert (pp.trigger_size, pp.transparency, pp.trigger_lr, pp.trigger_iterations) == (3, 0.7, 0.015, 20)
    assert q.trigger_size > 32 // 8 and q.transparency == 0.7
