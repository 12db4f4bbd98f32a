"""PGD adversarial training (docs/protocol.md §e.7): the in-step inner attack against an independent PGD loop, the BN
mode while crafting, and adversarial fine-tuning lowering PGD ASR on native 8x8 digits with a tiny CNN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax import parallel
from nas_jax.attacks.adversarial_training import adversarial_transform, crafting_apply, training_pgd_config
from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.attacks.pgd import pgd_attack
from nas_jax.config import base_config
from nas_jax.data import load_dataset
from nas_jax.train import trainer

SHAPE = (8, 8, 3)


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = (x - 0.3) / 0.4
        for i, c in enumerate((16, 32)):
            x = nn.Conv(c, (3, 3), strides=1 + i, use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        return nn.Dense(10, name="classifier")(x.mean((1, 2)))


def _fit(model, ds, tcfg, transform=None, init=None):
    """The trainer's compiled step (with ``batch_transform``) over seeded epochs, without checkpoints."""
    spe = len(ds.y_train) // tcfg.batch_size
    tx = trainer.make_optimizer(tcfg, spe)
    v = jax.tree_util.tree_map(jnp.array, init) if init is not None else trainer.init_variables(
        model, trainer.init_key(0), SHAPE)
    state = trainer.TrainState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], tx.init(v["params"]))
    step = trainer.make_train_step(model, tx, tcfg, base_config("train").arch, spe, 0, parallel.data_mesh(), transform)
    rng = np.random.default_rng(0)
    for _ in range(tcfg.epochs):
        perm = rng.permutation(len(ds.y_train))
        for s in range(spe):
            i = perm[s * tcfg.batch_size : (s + 1) * tcfg.batch_size]
            state, _ = step(state, ds.x_train[i], ds.y_train[i])
    return jax.device_get(state.variables)


def _recipe(lr, schedule, epochs):
    t = base_config("train", "quick").train
    t.crop_padding, t.cutout, t.grad_clip, t.lr, t.lr_schedule, t.epochs = 0, 0, 0.0, lr, schedule, epochs
    t.batch_size = 128
    return t


@pytest.fixture(scope="module")
def setup():
    ds = load_dataset("digits", native=True)
    model = TinyNet()
    return ds, model, trainer.init_variables(model, trainer.init_key(1), SHAPE)


def test_inner_pgd_takes_all_steps_like_a_reference_loop(setup):
    """Eval-mode crafting without random start = K plain sign-gradient ascent steps on the CE, projected on the
    ε-ball and the box, written here as an independent loop."""
    ds, model, v = setup
    x = jnp.asarray(ds.x_train[:16], jnp.float32) / 255.0
    y = jnp.asarray(ds.y_train[:16])
    eps, alpha, k = 8 / 255, 2 / 255, 5
    cfg = training_pgd_config(eps, alpha, k)  # docs/protocol.md §e.7 default: no random start [artifact]
    assert cfg.restarts == 0
    x_adv, labels = jax.jit(adversarial_transform(model, cfg, "eval"))(jax.random.key(0), v, x, y)
    np.testing.assert_array_equal(labels, y)

    grad = jax.jit(jax.grad(lambda xa: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(v, xa, train=False), y).sum()))
    ref = x
    for _ in range(k):
        ref = jnp.clip(jnp.clip(ref + alpha * jnp.sign(grad(ref)), x - eps, x + eps), 0.0, 1.0)
    np.testing.assert_allclose(x_adv, ref, atol=1e-6)
    assert float(jnp.abs(x_adv - x).max()) == pytest.approx(eps, abs=1e-6)  # it moved to the ball's edge

    # random start U(−ε, ε): still inside the ball and the box, and a different example
    x_rs, _ = jax.jit(adversarial_transform(model, training_pgd_config(eps, alpha, k, random_start=True), "eval"))(
        jax.random.key(0), v, x, y)
    assert float(jnp.abs(x_rs - x).max()) <= eps + 1e-6 and float(x_rs.min()) >= 0 and float(x_rs.max()) <= 1
    assert not np.allclose(x_rs, x_adv)


def test_presets_start_the_inner_pgd_from_the_clean_input():
    from configs.adv_train import get_config

    for preset in ("quick", "paper"):  # docs/protocol.md §e.7: random init of the inner PGD off [artifact]
        assert get_config(preset).adv_train.random_start is False


def test_crafting_bn_mode(setup):
    """'train' crafts against the batch-statistics network (running statistics untouched), 'eval' against the
    running statistics; at initialisation (running mean 0, var 1) the two functions differ."""
    ds, model, v = setup
    x = jnp.asarray(ds.x_train[:32], jnp.float32) / 255.0
    key = jax.random.key(0)
    train_logits, new_stats = model.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(crafting_apply(model, "train", key)(v, x), train_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(crafting_apply(model, "eval", key)(v, x), model.apply(v, x, train=False), rtol=1e-6)
    assert not np.allclose(train_logits, model.apply(v, x, train=False), atol=1e-3)
    assert not np.allclose(new_stats["batch_stats"]["BatchNorm_0"]["mean"], v["batch_stats"]["BatchNorm_0"]["mean"])
    with pytest.raises(ValueError, match="valid"):
        adversarial_transform(model, training_pgd_config(), "frozen")
    with pytest.raises(ValueError, match="must be >= 0"):
        training_pgd_config(eps=-1.0)


def test_adversarial_training_lowers_pgd_asr_on_digits(setup):
    ds, model, _ = setup
    eps = 16 / 255
    standard = _fit(model, ds, _recipe(0.3, "cosine", 12))
    # one epoch of adversarial fine-tuning with a 3-step inner PGD keeps the test cheap
    robust = _fit(model, ds, _recipe(0.05, "constant", 1), init=standard,
                  transform=adversarial_transform(model, training_pgd_config(eps, eps / 2, 3), "train"))
    x = jnp.asarray(ds.x_test, jnp.float32) / 255.0
    predict = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))
    attack = jax.jit(lambda v, x, y: pgd_attack(lambda w, z: model.apply(w, z, train=False), v, x, y,
                                                jax.random.key(1), EvasionConfig(eps, eps / 4, 7, 1),
                                                mode="untargeted").success)

    def accuracy_and_asr(v):
        correct = np.asarray(predict(v, x)) == ds.y_test
        idx = np.nonzero(correct)[0][:200]
        return correct.mean(), float(np.asarray(attack(v, x[idx], ds.y_test[idx])).mean())

    acc_std, asr_std = accuracy_and_asr(standard)
    acc_at, asr_at = accuracy_and_asr(robust)
    print(f"accuracy {acc_std:.3f} -> {acc_at:.3f}, PGD ASR {asr_std:.3f} -> {asr_at:.3f}")
    assert acc_std > 0.9 and acc_at > 0.8, (acc_std, acc_at)
    assert asr_std > 0.2 and asr_at < asr_std - 0.1, (asr_std, asr_at)
