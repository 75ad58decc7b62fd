"""Hard-label attacks: the boundary search against a closed form, exact budgets, success on a trained model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vision_fixtures import tiny_mnist

from nlprobust.vision.attacks import Starts, get_attack
from nlprobust.vision.attacks.hardlabel import boundary_search, unit
from nlprobust.vision.oracle import BudgetExceeded, HardLabelView

HARD = ["opt", "sign-opt", "svm-opt"]


class Linear2(nn.Module):
    """Two classes split by the hyperplane w.x + b = 0 (class 1 on the positive side)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _linear_case(n: int = 6, norm: str = "l2"):
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4)
    x0 = torch.full((n, 1, 4, 4), 0.5)
    b = -float((w.flatten() * 0.5).sum()) - 0.3 * float(w.norm())  # x0 lies 0.3 (L2) on the class-0 side
    model = Linear2(w, b)
    theta = unit(unit(w.expand(n, 1, 4, 4), "l2") + 0.6 * unit(torch.randn(n, 1, 4, 4), "l2"), norm)
    b = -float((w.flatten() * 0.5).sum()) - 0.2 * float(w.norm())  # x0 lies 0.2 (L2) on the class-0 side
    model = Linear2(w, b)
    margin = -(x0.flatten(1) @ w.flatten() + b)  # > 0
    true_g = margin / (theta.flatten(1) @ w.flatten())  # distance along theta to the hyperplane
    return model, x0, theta, true_g


@pytest.mark.parametrize("mode", ["above", "below", "bracket"])
def test_boundary_search_matches_closed_form_on_a_linear_model(mode):
    model, x0, theta, true_g = _linear_case()
    assert bool((true_g < 0.45).all())  # the rays stay inside the [0, 1] box, where clipping does not bend them
    n = len(true_g)
    view = HardLabelView(model, x0, torch.zeros(n, dtype=torch.long))
    owner = torch.arange(n)
    tol = 1e-5
    if mode == "bracket":
        g = boundary_search(view, owner, theta, lo=torch.zeros(n), hi=torch.full((n,), 0.49), tol=tol)
    else:
        v = true_g * (1.3 if mode == "above" else 0.8)
        g = boundary_search(view, owner, theta, v=v, tol=tol)
    assert torch.all(g >= true_g - 1e-6), (g, true_g)  # the returned end meets the goal
    assert torch.all(g - true_g <= tol + 1e-6), (g, true_g)
    assert bool((view.counts > 0).all())


def test_boundary_search_reject_above_costs_one_query():
    model, x0, theta, true_g = _linear_case()
    n = len(true_g)
    view = HardLabelView(model, x0, torch.zeros(n, dtype=torch.long))
    g = boundary_search(view, torch.arange(n), theta, v=true_g * 0.5, tol=1e-5, reject_above=True)
    assert torch.isinf(g).all()
    assert view.counts.tolist() == [1] * n


def test_view_refuses_a_batch_that_would_exceed_the_budget():
    model, x0, theta, _ = _linear_case(n=2)
    view = HardLabelView(model, x0, torch.zeros(2, dtype=torch.long), budget=5)
    view.labels(x0[[0, 0, 0, 1]], torch.tensor([0, 0, 0, 1]))
    assert view.counts.tolist() == [3, 1]
    with pytest.raises(BudgetExceeded, match="example 0"):
        view.labels(x0[[0, 0, 0]], torch.tensor([0, 0, 0]))
    assert view.counts.tolist() == [3, 1]  # nothing of the refused batch was counted or evaluated
    assert view.remaining().tolist() == [2, 4]


def test_curve_records_the_best_adversarial_query_per_checkpoint():
    model, x0, theta, true_g = _linear_case(n=1)
    view = HardLabelView(model, x0, torch.zeros(1, dtype=torch.long), checkpoints=[1, 2])
    far = (x0 + 0.45 * theta).clamp(0, 1)
    near = (x0 + float(true_g[0]) * 1.01 * theta).clamp(0, 1)
    view.labels(torch.cat([far, near]), torch.tensor([0, 0]))
    d_far, d_near = (far - x0).norm(), (near - x0).norm()
    assert torch.allclose(view.curve()[:, 0], torch.stack([d_far, d_near]))


@pytest.mark.parametrize("name", HARD)
def test_untargeted_attack_succeeds_within_its_exact_budget(name):
    model, x, y, *_ = tiny_mnist()
    x, y = x[:6], y[:6]
    budget = 1500
    res = get_attack(name, budget=budget, n_init=20, seed=1)(model, x, y, checkpoints=[500, 1000, 1500])
    assert int(res.queries.max()) <= budget
    assert res.success.all()
    assert torch.all(res.labels != y)
    # the distortion curve only falls; no queried adversarial image beats the returned one by more than a
    # little (OPT may query a better point in a gradient estimate that its line search then does not take)
    assert torch.all(res.curve[1:] <= res.curve[:-1])
    assert torch.all(res.curve[-1] <= res.distance * (1 + 1e-3))
    assert float((res.curve[-1] / res.distance).min()) > 0.95
    assert float(res.curve[-1].median()) < float(res.curve[0].median())


@pytest.mark.parametrize("name", HARD)
def test_targeted_attack_reaches_the_target(name):
    model, x, y, px, py, _ = tiny_mnist()
    x, y = x[:4], y[:4]
    target = (y + 1) % 10
    res = get_attack(name, budget=1200, targeted=True, n_init=10)(model, x, y, target=target,
                                                                   starts=Starts(px, py))
    assert int(res.queries.max()) <= 1200
    assert res.success.all()
    assert torch.equal(res.labels, target)


def test_targeted_attack_needs_starting_images():
    model, x, y, *_ = tiny_mnist()
    with pytest.raises(ValueError, match="starting images"):
        get_attack("sign-opt", budget=500, targeted=True)(model, x[:2], y[:2], target=(y[:2] + 1) % 10)


@pytest.mark.parametrize("budget", [1, 37, 450])
def test_small_and_odd_budgets_are_never_exceeded(budget):
    model, x, y, *_ = tiny_mnist()
    for name in HARD:
        res = get_attack(name, budget=budget, n_init=30)(model, x[:3], y[:3])
        assert int(res.queries.max()) <= budget, name


def test_linf_sign_opt_reports_linf_distortion():
    model, x, y, *_ = tiny_mnist()
    res = get_attack("sign-opt", norm="linf", budget=1500, n_init=20)(model, x[:4], y[:4])
    assert res.success.all()
    assert torch.allclose(res.distance, (res.x_adv - x[:4]).flatten(1).abs().amax(1), atol=1e-6)
    assert float(res.distance.max()) < 1.0


def test_seeded_runs_are_identical():
    model, x, y, *_ = tiny_mnist()
    a = get_attack("sign-opt", budget=600, n_init=10, seed=3)(model, x[:3], y[:3])
    b = get_attack("sign-opt", budget=600, n_init=10, seed=3)(model, x[:3], y[:3])
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


def test_gbdt_is_a_hard_label_model():
    lgb = pytest.importorskip("lightgbm")
    from nlprobust.vision.datasets import load_mnist
    from nlprobust.vision.oracle import BoosterModel

    tiny_mnist()  # skips without the data
    train, test = load_mnist("train"), load_mnist("test")
    booster = lgb.train({"objective": "multiclass", "num_class": 10, "num_leaves": 15, "verbose": -1,
                         "num_threads": 1, "seed": 0}, lgb.Dataset(train.x[:3000].flatten(1).numpy(),
                                                                    train.y[:3000].numpy()), num_boost_round=10)
    model = BoosterModel(booster, num_threads=1)
    pred = model.predict_labels(test.x[:200])
    ok = torch.nonzero(pred == test.y[:200]).flatten()[:4]
    assert len(ok) == 4
    res = get_attack("opt", budget=800, n_init=10)(model, test.x[ok], test.y[ok])
    assert int(res.queries.max()) <= 800
    assert res.success.all()
