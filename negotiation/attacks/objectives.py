"""Objectives of the white-box AdvAgent attacks (thesis section 3.2.3, eqs. 3.9-3.12), batched over games.

The attacker always takes the complement of the target's choice (forced agreement), so a target choice
``o`` (what the target takes) is *favourable* when the attacker's score for the complement beats the
target's score for ``o``: the set :math:`\\bar O` of eq. 3.10. No deal is never favourable.

* :func:`favourable_choices`: the ``(B, C)`` mask of :math:`\\bar O` in
  :meth:`negotiation.model.DialogModel.choice_logits` column order.
* :func:`decision_hinge`: eq. 3.10 with the original decision ``o'`` read as the target's best choice
  outside :math:`\\bar O`, i.e. ``max(Z[o'] - max_{o in O-bar} Z[o], -kappa)``; it is below 0 exactly when the
  target's highest-scoring choice is favourable to the attacker (the attack succeeds).
* :func:`choice_advantages`: the attacker's advantage for each target choice, for the objective of the thesis
  author's released code, ``hinge - lambda x advantage`` (its ``5 x hinge - advantage``): among successful
  messages the one whose decision gives the attacker most is preferred.
* :func:`selection_margin`: the left side of constraint 3.9, ``Z[<selection>] - max_{i != <selection>} Z[i]``
  over the tokens the target may generate; ``>= 0`` means its greedy next token is ``<selection>``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from negotiation.domain import Context, Split, complement, score


def favourable_choices(choices: Sequence[Sequence[Split | None]], targets: Sequence[Context],
                       attackers: Sequence[Context], *, device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, C)`` bool: column ``c`` of game ``b`` is a choice where the attacker, taking the complement of
    what the target takes, scores strictly more than the target (padding columns and no deal: False).

    Args:
        choices: per game, what the target takes in each column (``ChoiceLogits.choices``).
        targets: the target's context of each game.
        attackers: the attacker's context of each game (same counts).
    """
    if not len(choices) == len(targets) == len(attackers):
        raise ValueError(f"{len(choices)} choice lists for {len(targets)} target and {len(attackers)} attacker "
                         f"contexts")
    width = max((len(c) for c in choices), default=0)
    out = torch.zeros(len(choices), width, dtype=torch.bool)
    for b, (cols, tgt, adv) in enumerate(zip(choices, targets, attackers)):
        if tgt.counts != adv.counts:
            raise ValueError(f"game {b}: target counts {tgt.counts} differ from attacker counts {adv.counts}")
        for c, split in enumerate(cols):
            if split is not None:
                out[b, c] = score(complement(split, tgt.counts), adv.values) > score(split, tgt.values)
    return out if device is None else out.to(device)


def choice_advantages(choices: Sequence[Sequence[Split | None]], targets: Sequence[Context],
                      attackers: Sequence[Context], *, device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, C)`` float: the attacker's score minus the target's when the target takes column ``c`` and the
    attacker the complement (no deal and padding columns: 0). Arguments as :func:`favourable_choices`."""
    width = max((len(c) for c in choices), default=0)
    out = torch.zeros(len(choices), width)
    for b, (cols, tgt, adv) in enumerate(zip(choices, targets, attackers)):
        for c, split in enumerate(cols):
            if split is not None:
                out[b, c] = score(complement(split, tgt.counts), adv.values) - score(split, tgt.values)
    return out if device is None else out.to(device)


def decision_hinge(choice_logits: torch.Tensor, favourable: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Eq. 3.10 per game, ``(B,)``: best unfavourable logit minus best favourable logit, floored at ``-kappa``.

    ``choice_logits`` is ``(B, C)`` with ``-inf`` at padding columns. A game without a favourable choice gets
    ``+inf`` (the attack cannot succeed); one whose every legal choice is favourable gets ``-kappa``.
    """
    if choice_logits.shape != favourable.shape:
        raise ValueError(f"logits {tuple(choice_logits.shape)} and mask {tuple(favourable.shape)} differ")
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    neg_inf = torch.tensor(float("-inf"), dtype=choice_logits.dtype, device=choice_logits.device)
    legal = torch.isfinite(choice_logits)
    fav = favourable.to(choice_logits.device) & legal
    best_fav = torch.where(fav, choice_logits, neg_inf).amax(dim=-1)
    best_other = torch.where(legal & ~fav, choice_logits, neg_inf).amax(dim=-1)
    return torch.clamp(best_other - best_fav, min=-kappa)


def selection_margin(word_logits: torch.Tensor, sel_id: int,
                     generation_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Constraint 3.9 per row, ``(B,)``: the ``<selection>`` logit minus the best other generable logit.

    ``word_logits`` ``(B, V)`` are the target's next-token logits; ``generation_mask`` (``(V,)``, 0 or
    ``-inf``; :attr:`negotiation.model.DialogModel.generation_mask`) removes the tokens it never writes.
    """
    z = word_logits if generation_mask is None else word_logits + generation_mask
    others = z.clone()
    others[:, sel_id] = float("-inf")
    return z[:, sel_id] - others.amax(dim=-1)


__all__ = ["choice_advantages", "decision_hinge", "favourable_choices", "selection_margin"]
