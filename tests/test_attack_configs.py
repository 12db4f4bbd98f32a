"""Each task's settings class builds its config section and reads it back: the attack configs it gives are checked
field by field against the config files, and its defaults are the paper preset's."""

from pathlib import Path

import ml_collections
import pytest

from nas_jax.attacks.adversarial_training import TrainingPGDConfig, training_pgd_config
from nas_jax.attacks.evasion import EvasionConfig
from nas_jax.attacks.hopskipjump import HSJConfig
from nas_jax.attacks.stealing import KnockoffConfig
from nas_jax.config_loader import load_config_file
from nas_jax.errors import UserError
from nas_jax.tasks.adv_train import AdvTrainSettings
from nas_jax.tasks.autoattack import AutoAttackSettings
from nas_jax.tasks.backdoor import BackdoorSettings
from nas_jax.tasks.membership import MembershipSettings
from nas_jax.tasks.nes import NESSettings
from nas_jax.tasks.pgd import PGDSettings
from nas_jax.tasks.pgd_sweep import SweepSettings
from nas_jax.tasks.poison import PoisonSettings
from nas_jax.tasks.stealing import StealingSettings, ThiefSettings

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str, preset: str = "quick"):
    return load_config_file(ROOT / "configs" / f"{name}.py", preset)


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_evasion_config_of_pgd_nes_adv_train_and_autoattack_sections(preset):
    for task, settings in (("pgd", PGDSettings), ("nes", NESSettings)):
        s = _config(task, preset)[task]
        cfg = settings.read(task, s).budget(s.iterations_least_likely)
        assert cfg == EvasionConfig(eps=s.eps, step_size=s.step_size, iterations=s.iterations_least_likely,
                                    restarts=s.restarts, norm=s.norm, confidence=s.confidence)
    s = _config("pgd_sweep", preset).pgd_sweep
    assert SweepSettings.read("pgd_sweep", s).budget(3 / 255) == EvasionConfig(
        eps=3 / 255, step_size=1 / 255, iterations=s.iterations, restarts=s.restarts, norm=s.norm,
        confidence=s.confidence)
    a = _config("adv_train", preset).adv_train
    assert AdvTrainSettings.read("adv_train", a).evaluation() == EvasionConfig(
        eps=a.eval_eps, step_size=a.eval_step_size, iterations=a.eval_iterations, restarts=a.eval_restarts)
    aa = _config("autoattack", preset).autoattack
    settings = AutoAttackSettings.read("autoattack", aa)
    assert settings.pgd_config() == EvasionConfig(
        eps=aa.eps, step_size=aa.pgd_step_size, iterations=aa.pgd_iterations, restarts=aa.pgd_restarts, norm=aa.norm)
    assert settings.attack_config().apgd_iter == aa.apgd_iterations
    assert settings.attack_config().attack_names == ("apgd-ce", "apgd-t", "fab-t", "square")


@pytest.mark.parametrize("preset", ["quick", "small", "paper"])
def test_a_task_settings_class_is_the_only_source_of_its_config_section(preset):
    """The config section is the settings' defaults with the preset's differences, read back unchanged; the
    record's setting is every field but the run-only ones (input counts and batch sizes)."""
    for task, settings in (("pgd", PGDSettings), ("nes", NESSettings), ("autoattack", AutoAttackSettings),
                           ("membership", MembershipSettings), ("adv_train", AdvTrainSettings),
                           ("stealing", StealingSettings)):
        section = _config(task, preset)[task]
        assert section.to_dict() == settings.section(preset).to_dict()
        read = settings.read(task, section)
        assert {f: getattr(read, f) for f in section} == {
            f: tuple(v) if isinstance(v, list) else ThiefSettings(**v) if f == "thief" else v
            for f, v in section.items()}
        assert "batch_size" not in read.setting() and "n_inputs" not in read.setting()
        assert set(read.setting()) | {"batch_size", "n_inputs", "chunk_size", "query_batch_size",
                                      "scan_chunk"} >= set(section)  # the rest is kept
    assert _config("pgd", "quick").pgd.n_inputs == 100 and _config("pgd", "paper").pgd.n_inputs == 1000
    assert _config("nes", "quick").nes.restarts == 1 and _config("nes", "paper").nes.restarts == 5


def test_settings_refuse_bad_and_unknown_fields_with_the_fix():
    from nas_jax.errors import UserError

    section = PGDSettings.section("quick")
    section.norm = "l1"
    with pytest.raises(UserError, match=r"invalid config: pgd: .*norm.*--config\.pgd\.FIELD"):
        PGDSettings.read("pgd", section)
    section = NESSettings.section("quick")
    section.n_queries = 7
    with pytest.raises(UserError, match="n_queries"):
        NESSettings.read("nes", section)
    section = AutoAttackSettings.section("quick")
    section.attacks = ("apgd-ce", "pgd")
    with pytest.raises(UserError, match="attacks"):
        AutoAttackSettings.read("autoattack", section)
    with pytest.raises(UserError, match=r"unknown fields \['epz'\]"):
        PGDSettings.read("pgd", ml_collections.ConfigDict({"epz": 0.1}))


def test_evasion_from_config_defaults_and_checks():
    assert EvasionConfig.from_config(ml_collections.ConfigDict()) == EvasionConfig()
    with pytest.raises(ValueError, match="norm"):
        EvasionConfig.from_config(ml_collections.ConfigDict({"norm": "l1"}))


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_hsj_config_of_the_membership_section(preset):
    m = _config("membership", preset).membership
    assert MembershipSettings.read("membership", m).hsj() == HSJConfig(max_iter=m.max_iter, max_eval=m.max_eval, init_eval=m.init_eval,
                                                 init_size=m.init_size, max_halvings=m.max_halvings,
                                                 query_budget=m.query_budget, chunk_size=m.chunk_size,
                                                 final_search=m.final_search)
    with pytest.raises(ValueError, match="init_eval"):
        HSJConfig(init_eval=10, max_eval=5)


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_knockoff_config_of_the_stealing_section(preset):
    s = _config("stealing", preset).stealing
    settings = StealingSettings.read("stealing", s)
    for budget in s.budgets:
        assert settings.knockoff(budget) == KnockoffConfig(
            budget=budget, sampling=s.sampling, reward=s.reward, labels=s.labels,
            query_batch_size=s.query_batch_size, scan_chunk=s.scan_chunk)
    assert settings.thief == ThiefSettings(**s.thief) and settings.setting()["thief"]["epochs"] == s.thief.epochs
    with pytest.raises(ValueError, match="sampling"):
        StealingSettings(sampling="greedy")
    bad = s.copy_and_resolve_references()
    bad.thief.epoch = 3
    with pytest.raises(UserError, match=r"stealing\.thief has unknown fields \['epoch'\]"):
        StealingSettings.read("stealing", bad)


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_training_pgd_config_of_the_adv_train_section(preset):
    a = _config("adv_train", preset).adv_train
    t = AdvTrainSettings.read("adv_train", a).training()
    assert t == TrainingPGDConfig(eps=a.eps, step_size=a.step_size, iterations=a.iterations,
                                  random_start=a.random_start, early_stop=a.early_stop, craft_mode=a.craft_mode)
    assert t.evasion_config() == training_pgd_config(a.eps, a.step_size, a.iterations, a.random_start,
                                                     a.early_stop)  # the task's hand-built call before
    assert t.evasion_config() == EvasionConfig(eps=a.eps, step_size=a.step_size, iterations=a.iterations,
                                               restarts=int(a.random_start), norm="linf",
                                               confidence=0.0 if a.early_stop else 2.0)
    cfg = AdvTrainSettings(random_start=True, early_stop=True).training().evasion_config()
    assert (cfg.restarts, cfg.confidence) == (1, 0.0)
    with pytest.raises(ValueError, match="craft_mode"):
        AdvTrainSettings(craft_mode="frozen")
    with pytest.raises(ValueError, match="must be >= 0"):
        AdvTrainSettings(eps=-1.0)
    with pytest.raises(ValueError, match="init"):
        AdvTrainSettings(init="warm")


def test_config_validation_builds_every_attack_config():
    from nas_jax.tasks import check_config as validate

    for task, section, field, bad in (("membership", "membership", "init_eval", 10**6),
                                      ("stealing", "stealing", "sampling", "greedy"),
                                      ("stealing", "stealing", "budgets", (0,)),
                                      ("adv_train", "adv_train", "eval_restarts", -1),
                                      ("adv_train", "adv_train", "craft_mode", "frozen"),
                                      ("adv_train", "adv_train", "init", "warm"),
                                      ("poison", "poison", "fractions", (0.1, 1.0)),
                                      ("backdoor", "backdoor", "attacks", ("trojannn", "blend")),
                                      ("backdoor", "backdoor", "neuron_selection", "random"),
                                      ("backdoor", "backdoor", "transparency", 1.5),
                                      ("pgd", "pgd", "norm", "l1"), ("nes", "nes", "n_queries", 7),
                                      ("autoattack", "autoattack", "attacks", ("pgd",))):
        c = _config(task)
        validate(c)
        c[section][field] = bad
        with pytest.raises(UserError, match=f"invalid config: {section}"):
            validate(c)


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_backdoor_and_poison_configs_of_their_sections(preset):
    b = _config("backdoor", preset).backdoor
    cfg = BackdoorSettings.read("backdoor", b)
    for name, value in b.items():  # every field of the section lands in the dataclass unchanged
        assert getattr(cfg, name) == (tuple(value) if isinstance(value, tuple | list) else value), name
    assert [s["name"] for s in cfg.settings()] == [f"trojannn_n{n}" for n in b.n_neurons] + ["badnet"]
    assert cfg.settings()[-1] == {"attack": "badnet", "n_neuron": None, "transparency": b.badnet_transparency,
                                  "poison_rate": b.badnet_poison_rate, "name": "badnet"}
    assert PoisonSettings.read("poison", _config("poison", preset).poison).fractions == tuple(
        sorted({0.0, *_config("poison", preset).poison.fractions}))


def test_settings_defaults_are_the_paper_presets():
    """One place for each default: the dataclasses' defaults are the paper preset's values."""
    for task, settings in (("backdoor", BackdoorSettings), ("poison", PoisonSettings),
                           ("adv_train", AdvTrainSettings), ("stealing", StealingSettings)):
        assert settings() == settings.read(task, _config(task, "paper")[task])
    assert BackdoorSettings(eps_quirk=True).trigger_step == 1 / 255 and BackdoorSettings().trigger_step == 0.015
    with pytest.raises(ValueError, match="n_neurons"):
        BackdoorSettings(n_neurons=())
    assert BackdoorSettings(attacks=("badnet",), n_neurons=()).settings()[0]["name"] == "badnet"
