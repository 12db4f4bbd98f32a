"""Attacks on trained models (docs/protocol.md §e). Evasion: PGD (§e.1) and NES (§e.2), pure jittable functions."""

from nas_jax.attacks.evasion import TARGET_MODES, EvasionConfig, EvasionResult, is_success, select_targets
from nas_jax.attacks.nes import BlackBox, nes_attack, nes_attack_jit, nes_gradient
from nas_jax.attacks.pgd import pgd_attack, pgd_attack_jit

__all__ = [
    "TARGET_MODES",
    "BlackBox",
    "EvasionConfig",
    "EvasionResult",
    "is_success",
    "nes_attack",
    "nes_attack_jit",
    "nes_gradient",
    "pgd_attack",
    "pgd_attack_jit",
    "select_targets",
]
