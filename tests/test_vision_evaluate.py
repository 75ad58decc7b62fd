"""Robustness evaluation: every attack bites, the worst case bounds them all, masking is caught, state restored."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn
from vision_fixtures import tiny_mnist

from nlprobust.vision.evaluate import EvalConfig, eval_preset, evaluate

EPS = (0.03, 0.1, 0.2, 0.3)


@functools.lru_cache(maxsize=1)
def _source() -> nn.Module:
    """A second, independently trained MLP (other seed, other images): the transfer attack's source."""
    _, _, _, px, py, _ = tiny_mnist()
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(5):
        for i in range(0, len(py), 100):
            loss = nn.functional.cross_entropy(net(px[i:i + 100]), py[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@functools.lru_cache(maxsize=1)
def _report() -> dict:
    model, x, y, _, _, _ = tiny_mnist()
    # L-inf Sign-OPT is weak (median L-inf about 0.33 at 2,000 queries on this model, where PGD breaks every
    # image at 0.2), so it gets a larger budget than the tiny preset's and is checked at 0.3
    cfg = eval_preset("mnist", "tiny", epsilons=EPS, signopt_budget=2000)
    return evaluate(model, x, y, cfg, transfer_from=_source(), progress=False)


def _by_eps(report: dict) -> dict[float, dict]:
    return {r["epsilon"]: r for r in report["by_epsilon"]}


def test_every_attack_lowers_accuracy():
    report = _report()
    clean = report["clean_accuracy"]
    assert report["n_images"] == 32 and clean == 1.0  # the fixture's images are correctly classified
    runs = _by_eps(report)
    for eps in (0.1, 0.2):
        acc = runs[eps]["robust_accuracy"]
        assert set(acc) >= {"pgd-20", "pgd-100", "cw-linf", "transfer", "apgd-ce", "apgd-t", "fab-t", "square"}
        for name, value in acc.items():
            assert value < clean, (eps, name, value)
    assert runs[0.3]["sign_opt"]["success_rate"] > 0
    assert runs[0.3]["sign_opt"]["n_images"] == 8


def test_worst_case_bounds_every_attack():
    for run in _report()["by_epsilon"]:
        acc = run["robust_accuracy"]
        for name, value in acc.items():
            assert acc["worst_case"] <= value, (run["epsilon"], name)
        assert acc["autoattack"] <= min(acc[a] for a in ("apgd-ce", "apgd-t", "fab-t", "square"))
        assert acc["pgd"] <= min(acc["pgd-20"], acc["pgd-100"])
        assert run["pgd_minus_worst_case"] >= 0
        # an image Sign-OPT breaks within eps is not robust in the worst case
        assert acc["worst_case"] <= 1 - run["sign_opt"]["success_rate"] * run["sign_opt"]["n_images"] / 32


def test_robust_accuracy_falls_with_epsilon():
    report = _report()
    runs = [_by_eps(report)[e] for e in EPS]
    for key in ("worst_case", "pgd-100", "apgd-ce"):
        values = [r["robust_accuracy"][key] for r in runs]
        assert all(a >= b for a, b in zip(values, values[1:])), (key, values)
        assert values[0] <= report["clean_accuracy"]
    assert runs[0]["robust_accuracy"]["worst_case"] > 0.5 > runs[-1]["robust_accuracy"]["worst_case"]
    so = [r["sign_opt"]["success_rate"] for r in runs]
    assert so == sorted(so)


def test_report_is_json_ready_and_a_sound_model_is_not_flagged():
    report = _report()
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    for run in report["by_epsilon"]:
        assert all(0.0 <= v <= 1.0 for v in run["robust_accuracy"].values())
        assert not run["gradient_masking_suspected"], run["masking_reasons"]
    assert report["gradient_masking_suspected"] is False
    assert report["attacks"][-1] == "sign-opt" and report["transfer_source"] == "given"


class Quantised(nn.Module):
    """Input quantised to 5 levels by ``round``: zero gradients everywhere, a classic masking defense."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


class Detached(nn.Module):
    """The input detached: the output does not depend differentiably on the input at all."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.detach())


@pytest.mark.parametrize("wrapper", [Quantised, Detached])
def test_gradient_masking_is_flagged(wrapper):
    model, x, y, _, _, _ = tiny_mnist()
    cfg = eval_preset("mnist", "tiny", epsilons=(0.2,), signopt_images=4)
    report = evaluate(wrapper(model), x, y, cfg, progress=False)
    run = report["by_epsilon"][0]
    acc = run["robust_accuracy"]
    assert acc["pgd"] >= 0.9  # PGD sees no gradient: only its random start can hurt
    assert acc["square"] <= 0.1  # the black-box random search is not fooled
    assert acc["worst_case"] <= acc["square"]
    assert run["gradient_masking_suspected"] and report["gradient_masking_suspected"]
    assert run["pgd_minus_worst_case"] > 0.05 and run["pgd_minus_autoattack"] > 0.05
    assert any("square" in r for r in run["masking_reasons"])


def test_caller_state_is_restored():
    model, x, y, _, _, _ = tiny_mnist()
    first, last = model[2], model[4]
    sentinel = torch.full_like(first.weight, 7.0)
    rng = torch.get_rng_state()
    for p in model.parameters():
        p.grad = None  # the fixture's training left its last gradients
    try:
        model.train()
        last.eval()  # a mixed state, e.g. frozen batch norm, must survive
        first.weight.grad = sentinel.clone()
        last.bias.requires_grad_(False)
        cfg = EvalConfig(epsilons=(0.1,), pgd_steps=(5,), pgd_restarts=(1,), cw_steps=0,
                         autoattack=("apgd-ce", "fab-t"), apgd_steps=5, fab_steps=5, n_target_classes=1,
                         signopt_images=0, n_images=8)
        report = evaluate(model, x, y, cfg, progress=False)
        assert report["by_epsilon"][0]["robust_accuracy"]["fab-t"] < 1.0
        assert model.training and first.training and not last.training
        assert torch.equal(first.weight.grad, sentinel)  # FAB's backward() did not reach the parameters
        assert last.weight.grad is None
        assert first.weight.requires_grad and not last.bias.requires_grad
        assert torch.equal(torch.get_rng_state(), rng)  # torchattacks reseeds the global generator
    finally:
        model.eval()
        first.weight.grad = None
        last.bias.requires_grad_(True)


def test_transfer_from_a_checkpoint(tmp_path):
    from nlprobust.vision.models import VisionModelConfig, build_model, save_checkpoint

    model, x, y, _, _, _ = tiny_mnist()
    mc = VisionModelConfig(arch="cnn", dataset="mnist")
    torch.manual_seed(0)
    path = save_checkpoint(build_model(mc), mc, tmp_path / "source.pt")
    cfg = EvalConfig(epsilons=(0.1,), pgd_steps=(5,), pgd_restarts=(1,), cw_steps=0, autoattack=(),
                     transfer_checkpoint=str(path), transfer_steps=5, signopt_images=0, n_images=4)
    report = evaluate(model, x, y, cfg, progress=False)
    assert report["transfer_source"] == str(path)
    assert "transfer" in report["by_epsilon"][0]["robust_accuracy"]
    assert report["by_epsilon"][0]["pgd_minus_autoattack"] is None


@pytest.mark.parametrize("kwargs", [
    {"norm": "l2"},
    {"epsilons": (0.1, 0.1)},
    {"epsilons": (0.0,)},
    {"pgd_steps": (20, 100), "pgd_restarts": (1,)},
    {"autoattack": ("apgd-ce", "deepfool")},
    {"square_queries": 0},
])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        EvalConfig(**kwargs)


def test_config_takes_lists_and_sorts_epsilons():
    cfg = EvalConfig(epsilons=[0.3, 0.1], pgd_steps=[20], pgd_restarts=[2], autoattack=["square"])
    assert cfg.epsilons == (0.1, 0.3) and cfg.pgd_steps == (20,) and cfg.autoattack == ("square",)
    assert eval_preset("cifar10").epsilons == (8 / 255,)
    with pytest.raises(ValueError):
        eval_preset("imagenet")


def test_masking_flags_follow_the_thresholds_and_can_be_reapplied():
    from nlprobust.vision.evaluate import masking_reasons, refresh_masking_flags

    block = {"epsilon": 0.3, "sign_opt": None,
             "robust_accuracy": {"pgd": 0.925, "worst_case": 0.90, "square": 0.91, "transfer": 0.98}}
    # Square beats PGD by 1.5 points: within the default two-point margin, beyond a one-point one
    assert masking_reasons(block, EvalConfig()) == []
    loose = masking_reasons(block, EvalConfig(blackbox_margin=0.01))
    assert len(loose) == 1 and "square" in loose[0]
    masked = {**block, "robust_accuracy": {"pgd": 0.60, "worst_case": 0.10, "square": 0.20}}
    assert any("worst case" in r for r in masking_reasons(masked, EvalConfig()))
    report = {"by_epsilon": [block, masked], "config": {}, "gradient_masking_suspected": False}
    fresh = refresh_masking_flags(report, EvalConfig(blackbox_margin=0.01))
    assert [b["gradient_masking_suspected"] for b in fresh["by_epsilon"]] == [True, True]
    assert fresh["gradient_masking_suspected"] and fresh["config"]["blackbox_margin"] == 0.01
    assert not refresh_masking_flags({**report, "by_epsilon": [block]}, EvalConfig())["gradient_masking_suspected"]


def test_sharded_evaluation_equals_one_process(tmp_path):
    """Two shards of a resumable evaluation (per-image records, chunks seeded by their index) merge into the
    report of one in-memory run; the first rank to finish returns None."""
    from nlprobust.core.runner import Shard

    model, x, y, _, _, _ = tiny_mnist()
    cfg = EvalConfig(epsilons=(0.1, 0.2), pgd_steps=(5,), pgd_restarts=(1,), cw_steps=0, autoattack=(),
                     signopt_images=0, n_images=12, batch_size=4)

    def strip(report):
        out = {k: v for k, v in report.items() if k != "seconds"}
        out["by_epsilon"] = [{k: v for k, v in e.items() if k != "seconds"} for e in report["by_epsilon"]]
        return out

    one = evaluate(model, x, y, cfg, progress=False)
    path = tmp_path / "images.jsonl"
    assert evaluate(model, x, y, cfg, progress=False, records=path, shard=Shard(1, 2)) is None
    merged = evaluate(model, x, y, cfg, progress=False, records=path, shard=Shard(0, 2))
    assert strip(merged) == strip(one)
    assert len(path.read_text().splitlines()) == one["n_images"] * one["clean_accuracy"]
    # a rerun resumes from the records and attacks nothing
    again = evaluate(model, x, y, cfg, progress=False, records=path)
    assert strip(again) == strip(one)
