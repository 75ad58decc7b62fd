"""Adversarial attacks on seq2seq victims, all on one template (:mod:`nlprobust.attacks.base`).

``ATTACKS`` is the registry: a new attack is one file with a :class:`TextAttack` subclass and one row here;
the portfolio (:mod:`nlprobust.attacks.portfolio`) runs several of them and keeps each sentence's smallest success.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nlprobust.attacks.base import AttackConfig, AttackItem, AttackResult, TextAttack
from nlprobust.attacks.goals import CRITERIA, MODES
from nlprobust.attacks.portfolio import PORTFOLIO_PRESETS, Portfolio, PortfolioConfig, portfolio_preset
from nlprobust.attacks.seq2sick import PRESETS, Seq2Sick, Seq2SickConfig, preset
from nlprobust.attacks.word_swap import WORD_SWAP_PRESETS, GradientWordSwap, WordSwapConfig, word_swap_preset

#: name -> (attack class, one-line description); a class has ``config_class``, ``run`` and ``attack_batch``
ATTACKS: dict[str, tuple[type[Any], str]] = {
    "word-swap": (GradientWordSwap, "gradient-guided word swap: first-order swap scores, batched tests, beam-verified"
                                    " (fast, few words changed; gives up on some sentences)"),
    "seq2sick": (Seq2Sick, "Seq2Sick (thesis Algorithm 6): projected group-lasso PGD over input embeddings"),
    "portfolio": (Portfolio, "word swap, then Seq2Sick + reduction where it found no one-word success; the "
                             "smallest success kept (the default: most sentences fooled, fewest words)"),
}
DEFAULT_ATTACK = "portfolio"


def build_attack(name: str, victim: Any, config: AttackConfig | None = None, *,
                 on_iteration: Callable[[str, int], None] | None = None, **settings: Any) -> Any:
    """The attack ``name`` on ``victim`` with ``config`` (or its config class built from ``settings``);
    ``on_iteration`` as :class:`~nlprobust.attacks.base.TextAttack` takes it (benchmark timing)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of {sorted(ATTACKS)}")
    cls = ATTACKS[name][0]
    return cls(victim, config if config is not None else cls.config_class(**settings), on_iteration=on_iteration)


__all__ = ["ATTACKS", "CRITERIA", "DEFAULT_ATTACK", "MODES", "PORTFOLIO_PRESETS", "PRESETS", "WORD_SWAP_PRESETS",
           "AttackConfig", "AttackItem", "AttackResult", "GradientWordSwap", "Portfolio", "PortfolioConfig", "Seq2Sick",
           "Seq2SickConfig", "TextAttack", "WordSwapConfig", "build_attack", "portfolio_preset", "preset",
           "word_swap_preset"]
