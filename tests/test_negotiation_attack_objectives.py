"""White-box AdvAgent objectives: the favourable set of eq. 3.10, its hinge, and constraint 3.9."""

from __future__ import annotations

import math

import pytest
import torch

from negotiation.attacks.objectives import decision_hinge, favourable_choices, selection_margin
from negotiation.domain import Context, enumerate_splits


def test_favourable_choices_compare_the_two_scores_under_forced_agreement() -> None:
    target = Context((1, 2, 2), (4, 1, 2))
    attacker = Context((1, 2, 2), (0, 3, 2))
    cols = [*enumerate_splits(target.counts), None]
    fav = favourable_choices([cols], [target], [attacker])
    assert fav.shape == (1, len(cols)) and not fav[0, -1]  # no deal is never favourable
    for c, split in enumerate(cols[:-1]):
        mine = sum(t * v for t, v in zip(split, target.values))
        theirs = sum((n - t) * v for n, t, v in zip(target.counts, split, attacker.values))
        assert bool(fav[0, c]) == (theirs > mine)
    # the target taking only the book (4) leaves 2 hats and 2 balls (3*2 + 2*2 = 10) to the attacker
    assert fav[0, cols.index((1, 0, 0))] and not fav[0, cols.index((1, 2, 2))]
    with pytest.raises(ValueError, match="counts"):
        favourable_choices([cols], [target], [Context((2, 1, 2), (2, 2, 2))])


def test_decision_hinge_is_negative_exactly_when_the_best_choice_is_favourable() -> None:
    inf = float("inf")
    logits = torch.tensor([[3.0, 1.0, 0.5, -inf], [0.0, 2.0, 1.5, -inf], [1.0, 1.0, 1.0, 1.0]])
    fav = torch.tensor([[True, False, False, True], [True, False, True, False], [False] * 4])
    loss = decision_hinge(logits, fav, kappa=1.0)
    assert loss[0].item() == pytest.approx(-1.0)  # favourable best by 2, floored at -kappa
    assert loss[1].item() == pytest.approx(0.5)  # unfavourable 2.0 beats favourable 1.5
    assert math.isinf(loss[2].item()) and loss[2].item() > 0  # nothing favourable
    assert decision_hinge(logits[:1], fav[:1], kappa=0.0).item() == 0.0
    with pytest.raises(ValueError, match="kappa"):
        decision_hinge(logits, fav, kappa=-1.0)


def test_selection_margin_respects_the_generation_mask() -> None:
    z = torch.tensor([[1.0, 5.0, 2.0], [4.0, 1.0, 0.0]])
    assert selection_margin(z, 2).tolist() == [-3.0, -4.0]
    mask = torch.tensor([0.0, float("-inf"), 0.0])  # token 1 is never generated
    assert selection_margin(z, 2, mask).tolist() == [1.0, -4.0]
