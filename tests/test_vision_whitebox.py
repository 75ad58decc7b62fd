"""White-box and soft-label image attacks on the tiny MNIST MLP: one table row per attack (and per goal)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from vision_fixtures import tiny_mnist

from nlprobust.vision.attacks.base import Attack, AttackResult, predict_labels
from nlprobust.vision.attacks.cw import CWL2, CWLinf
from nlprobust.vision.attacks.fgsm import FGSM
from nlprobust.vision.attacks.nes import NES
from nlprobust.vision.attacks.pgd import PGD
from nlprobust.vision.attacks.zoo import ZOO

N = 16
MODULES = ("fgsm", "pgd", "cw", "zoo", "nes")


class Counting(nn.Module):
    """The model, counting the images it is asked to classify."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x)


@dataclass(frozen=True)
class Row:
    id: str
    make: Callable[[], Attack]
    min_success: float = 0.8
    targeted: bool = False


ROWS = [
    Row("fgsm-linf", lambda: FGSM(norm="linf", epsilon=0.3)),
    Row("fgsm-l2", lambda: FGSM(norm="l2", epsilon=3.0)),
    Row("pgd-linf", lambda: PGD(norm="linf", epsilon=0.3)),
    Row("pgd-l2", lambda: PGD(norm="l2", epsilon=2.0)),
    Row("pgd-linf-cw-restarts", lambda: PGD(norm="linf", epsilon=0.2, loss="cw", restarts=3, steps=10)),
    Row("pgd-linf-targeted", lambda: PGD(norm="linf", epsilon=0.3, steps=40, targeted=True), targeted=True),
    Row("cw-l2", lambda: CWL2(max_iterations=300, binary_search_steps=5, initial_const=1.0, learning_rate=0.05)),
    Row("cw-l2-targeted", lambda: CWL2(max_iterations=300, binary_search_steps=5, initial_const=1.0,
                                       learning_rate=0.05, targeted=True), targeted=True),
    Row("cw-linf", lambda: CWLinf(epsilon=0.3, steps=50)),
    Row("zoo", lambda: ZOO(budget=10_000, learning_rate=0.05)),
    Row("nes", lambda: NES(epsilon=0.3, budget=5_000, step_size=0.03)),
]


def _data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y, *_ = tiny_mnist()
    return model, x[:N], y[:N]


def _attack(attack: Attack, targeted: bool = False) -> tuple[AttackResult, Counting, torch.Tensor]:
    model, x, y = _data()
    counting = Counting(model)
    target = (y + 1) % 10 if targeted else None
    return attack(counting, x, y, target=target), counting, y


def test_every_attack_has_a_row() -> None:
    classes: set[type] = set()
    for m in MODULES:
        module = importlib.import_module(f"nlprobust.vision.attacks.{m}")
        exported = (getattr(module, name) for name in module.__all__)
        classes |= {obj for obj in exported if isinstance(obj, type) and issubclass(obj, Attack)}
    assert classes == {type(row.make()) for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_attack(row: Row) -> None:
    attack = row.make()
    res, counting, y = _attack(attack, row.targeted)
    model, x, _ = _data()
    acc = float((predict_labels(model, x) == y).float().mean())
    adv_acc = float((predict_labels(model, res.x_adv) == y).float().mean())
    assert float(res.success.float().mean()) >= row.min_success
    assert adv_acc < acc
    assert res.x_adv.shape == x.shape and float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    # every model evaluation went through the view and was counted; the final check is not a query
    assert counting.rows == int(res.queries.sum()) + N
    if attack.budget is not None:
        assert int(res.queries.max()) <= attack.budget
    if attack.epsilon is not None and attack.name != "fgsm":
        assert bool((res.distance <= attack.epsilon * (1 + 1e-5)).all())
    if row.targeted:
        target = (y + 1) % 10
        assert torch.equal(res.labels[res.success], target[res.success])


def test_zoo_spends_its_budget_exactly() -> None:
    res, counting, _ = _attack(ZOO(budget=1001))  # 3 full iterations of 256 queries, then 116 pixels
    assert torch.equal(res.queries, torch.full((N,), 1000))
    assert counting.rows == 1000 * N + N


def test_nes_stops_before_its_budget() -> None:
    res, counting, _ = _attack(NES(epsilon=0.3, budget=150, step_size=0.03))  # check, estimate, check, stop
    assert int(res.queries.max()) <= 150
    assert bool(((res.queries % 101 == 0) | (res.queries % 101 == 1)).all())
    assert counting.rows == int(res.queries.sum()) + N
    res, _, _ = _attack(NES(epsilon=0.3, budget=5_000, step_size=0.03))
    assert bool(((res.queries % 101 == 1) | ~res.success).all())  # a success is seen at a check, then stops


@pytest.mark.parametrize("attack", [FGSM(epsilon=0.3, budget=1), PGD(epsilon=0.3, budget=7),
                                    CWL2(max_iterations=50, binary_search_steps=2, budget=60),
                                    CWLinf(epsilon=0.3, budget=5)], ids=["fgsm", "pgd", "cw-l2", "cw-linf"])
def test_whitebox_budget_stops_examples(attack: Attack) -> None:
    res, _, _ = _attack(attack)
    assert attack.budget is not None and int(res.queries.max()) <= attack.budget


def test_seeded() -> None:
    a, _, _ = _attack(PGD(epsilon=0.2, seed=3))
    b, _, _ = _attack(PGD(epsilon=0.2, seed=3))
    c, _, _ = _attack(PGD(epsilon=0.2, seed=4))
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    a, _, _ = _attack(NES(epsilon=0.3, budget=1_000, seed=3))
    b, _, _ = _attack(NES(epsilon=0.3, budget=1_000, seed=3))
    assert torch.equal(a.x_adv, b.x_adv)


def test_cw_l2_is_smaller_than_pgd_l2() -> None:
    cw, _, _ = _attack(CWL2(max_iterations=300, binary_search_steps=5, initial_const=1.0, learning_rate=0.05))
    pgd, _, _ = _attack(PGD(norm="l2", epsilon=2.0))
    both = cw.success & pgd.success
    assert int(both.sum()) >= N // 2
    assert float(cw.distance[both].median()) < float(pgd.distance[both].median())


def test_required_options() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        FGSM()
    with pytest.raises(ValueError, match="epsilon"):
        PGD()
    with pytest.raises(ValueError, match="budget"):
        ZOO()
    with pytest.raises(ValueError, match="budget"):
        NES(epsilon=0.1)
    with pytest.raises(ValueError, match="norms"):
        CWL2(norm="linf")
    with pytest.raises(ValueError, match="loss"):
        PGD(epsilon=0.1, loss="hinge")
