"""Attacks on image classifiers, one file each, all on :class:`~nlprobust.vision.attacks.base.Attack`.

=============  ==========  ============================================================
name           threat      class
=============  ==========  ============================================================
fgsm           white-box   :class:`~nlprobust.vision.attacks.fgsm.FGSM`
pgd            white-box   :class:`~nlprobust.vision.attacks.pgd.PGD`
cw-l2          white-box   :class:`~nlprobust.vision.attacks.cw.CWL2`
cw-linf        white-box   :class:`~nlprobust.vision.attacks.cw.CWLinf`
zoo            soft-label  :class:`~nlprobust.vision.attacks.zoo.ZOO`
nes            soft-label  :class:`~nlprobust.vision.attacks.nes.NES`
opt            hard-label  :class:`~nlprobust.vision.attacks.opt.OPTAttack`
sign-opt       hard-label  :class:`~nlprobust.vision.attacks.sign_opt.SignOPT`
svm-opt        hard-label  :class:`~nlprobust.vision.attacks.svm_opt.SVMOPT`
=============  ==========  ============================================================

``get_attack("sign-opt", budget=4000)`` builds one by name; classes import on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from nlprobust.vision.attacks.base import Attack, AttackResult, Starts

ATTACKS: dict[str, str] = {
    "fgsm": "fgsm:FGSM",
    "pgd": "pgd:PGD",
    "cw-l2": "cw:CWL2",
    "cw-linf": "cw:CWLinf",
    "zoo": "zoo:ZOO",
    "nes": "nes:NES",
    "opt": "opt:OPTAttack",
    "sign-opt": "sign_opt:SignOPT",
    "svm-opt": "svm_opt:SVMOPT",
}

__all__ = ["ATTACKS", "Attack", "AttackResult", "Starts", "attack_class", "get_attack"]


def attack_class(name: str) -> type[Attack]:
    """The attack class registered as ``name``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of {sorted(ATTACKS)}")
    module, cls = ATTACKS[name].split(":")
    return getattr(importlib.import_module(f"nlprobust.vision.attacks.{module}"), cls)  # type: ignore[no-any-return]


def get_attack(name: str, **kwargs: Any) -> Attack:
    """An instance of attack ``name`` with keyword hyperparameters ``kwargs``."""
    return attack_class(name)(**kwargs)
