"""Removal attacks: every attack of the papers' robustness study, by name.

>>> from conferprint.attacks import make_attack
>>> make_attack("pruning", {"rate": 0.9}).rate
0.9
"""
from conferprint.attacks.base import (
    ATTACKS, Attack, AttackConfigError, AttackContext, Stolen, list_attacks, make_attack, register,
)
from conferprint.attacks import adapted, extraction, modification  # noqa: F401  (registers the attacks)

__all__ = ["ATTACKS", "Attack", "AttackConfigError", "AttackContext", "Stolen", "list_attacks", "make_attack",
           "register"]
