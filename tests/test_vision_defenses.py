"""Robust-training defenses (thesis chapters 4-6) on real MNIST slices with a tiny batch-norm CNN."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from vision_fixtures import require_data

from nlprobust.vision.datasets import ImageData, load_mnist
from nlprobust.vision.defenses import (
    DEFENSES,
    AdvPropConfig,
    AdvPropLoss,
    CATConfig,
    CATLoss,
    DualBatchNorm2d,
    MadryConfig,
    MadryLoss,
    NaturalConfig,
    RobMaskBatchNorm2d,
    RobMaskConfig,
    RobMaskLoss,
    SproutConfig,
    SproutLoss,
    TradesConfig,
    TradesLoss,
    bn_branch,
    bn_epsilon,
    build_defense,
    convert_batchnorm,
    defense_config,
    encode_epsilon,
    finetune_bn_only,
    interpolate_bn,
    register,
    set_bn_epsilon,
)
from nlprobust.vision.defenses.cat import cat_soft_labels
from nlprobust.vision.defenses.masking import bn_parameters
from nlprobust.vision.defenses.sprout import generalized_ce, sprout_vicinity
from nlprobust.vision.defenses.trades import kl_rows
from nlprobust.vision.models import Normalize, VisionModelConfig, build_model, load_checkpoint, save_checkpoint
from nlprobust.vision.train import VisionTrainConfig, train_classifier

EPS = 0.3  # MNIST radius of Madry et al. (thesis 4.1)


def _tiny_cnn() -> nn.Sequential:
    """Two strided 3x3 convolutions with batch norm: a few thousand weights, milliseconds per batch."""
    return nn.Sequential(Normalize((0.1307,), (0.3081,)), nn.Conv2d(1, 8, 3, 2, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.Conv2d(8, 16, 3, 2, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 6 * 6, 10))


@pytest.fixture(scope="module")
def mnist() -> tuple[ImageData, ImageData]:
    require_data()
    train, test = load_mnist("train"), load_mnist("test")
    return train.subset(slice(0, 512)), test.subset(slice(0, 256))


@pytest.fixture(scope="module")
def trained(mnist: tuple[ImageData, ImageData]) -> nn.Module:
    """The tiny CNN trained naturally on 2,048 other training images (about 90% test accuracy)."""
    full = load_mnist("train")
    xs, ys = full.x[1000:3048], full.y[1000:3048]
    torch.manual_seed(0)
    model = _tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        perm = torch.randperm(len(ys))
        for i in range(0, len(ys), 64):
            b = perm[i:i + 64]
            loss = F.cross_entropy(model(xs[b]), ys[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _train(model: nn.Module, loss_fn, mnist, tmp_path, *, epochs: int = 1, lr: float = 1e-3, name: str = "x"):
    train, test = mnist
    cfg = VisionTrainConfig(epochs=epochs, batch_size=128, optimizer="adam", lr=lr, weight_decay=0.0)
    return train_classifier(VisionModelConfig(), train, test, tmp_path / name, cfg, loss_fn=loss_fn, model=model,
                            quiet=True, method=name)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


def test_madry_and_trades_losses_exceed_the_clean_loss(trained, mnist, tmp_path):
    train, _ = mnist
    x, y, idx = train.x[:128], train.y[:128], torch.arange(128)
    model = copy.deepcopy(trained).eval()  # eval: the clean and the adversarial losses see the same statistics
    with torch.no_grad():
        clean = float(F.cross_entropy(model(x), y))
    torch.manual_seed(0)
    zero = MadryLoss(MadryConfig(epsilon=0.0, steps=3))(model, x, y, idx)
    assert float(zero.detach()) == pytest.approx(clean, abs=1e-6)
    madry = float(MadryLoss(MadryConfig(epsilon=EPS))(model, x, y, idx).detach())
    assert madry > clean + 1.0
    trades_fn = TradesLoss(TradesConfig(epsilon=EPS))
    x_adv = trades_fn.attack(model, x)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        p_log = F.log_softmax(model(x), 1)
        kl_adv = float(kl_rows(p_log, model(x_adv)).mean())
        kl_start = float(kl_rows(p_log, model(x + 0.001 * torch.randn_like(x))).mean())
    assert kl_adv > 100 * max(kl_start, 1e-6)  # the adversary maximised the KL term
    trades = float(trades_fn(model, x, y, idx).detach())
    assert trades > clean + 1.0
    # both train through train_classifier and move the weights
    for name, fn in (("madry", MadryLoss(MadryConfig(epsilon=EPS, steps=5))),
                     ("trades", TradesLoss(TradesConfig(epsilon=EPS, steps=5)))):
        net = copy.deepcopy(trained)
        before = _state(net)
        summary = _train(net, fn, mnist, tmp_path, name=name)
        assert summary["history"][0]["loss"] > 0 and 0 <= summary["test_acc"] <= 1
        assert {"2.weight", "8.weight"} <= _changed(before, net)


class _Constant(nn.Module):
    """Logits independent of the input, class ``favoured`` first: its examples are unattackable, the others are
    misclassified at every radius."""

    def __init__(self, favoured: int) -> None:
        super().__init__()
        self.lin = nn.Linear(784, 10)
        with torch.no_grad():
            self.lin.weight.zero_()
            self.lin.bias.zero_()
            self.lin.bias[favoured] = 5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def test_cat_epsilon_grows_while_robust_and_resets_when_fooled(mnist):
    train, _ = mnist
    x, y = train.x[:64], train.y[:64]
    favoured = int(y.mode().values)
    robust = y == favoured
    assert robust.any() and (~robust).any()
    cfg = CATConfig(eta=0.1, eps_max=0.25, c=2.0)
    loss_fn = CATLoss(cfg, n_train=200)
    model = _Constant(favoured)
    index = torch.arange(64) + 100  # positions in the training set, not in the batch
    for expected in (0.1, 0.2, 0.25, 0.25):  # + eta per robust step, capped at eps_max
        loss = loss_fn(model, x, y, index)
        assert torch.isfinite(loss) and loss.requires_grad
        assert torch.equal(loss_fn.last_success, ~robust)
        eps = loss_fn.epsilon[index]
        assert torch.allclose(eps[robust], torch.full_like(eps[robust], expected))
        assert (eps[~robust] == 0).all()
    assert (loss_fn.epsilon[:100] == 0).all() and (loss_fn.epsilon[164:] == 0).all()
    # an example fooled after growing goes back to 0: relabel a robust one
    y2 = y.clone()
    y2[robust.nonzero()[0]] = (favoured + 1) % 10
    loss_fn(model, x, y2, index)
    assert float(loss_fn.epsilon[index[robust.nonzero()[0]]]) == 0.0
    # eq. 4.4: rows are distributions, the true class keeps at least 1 - c eps
    u = torch.distributions.Dirichlet(torch.ones(64, 10)).sample()
    e = torch.rand(64) * 0.25
    soft = cat_soft_labels(y, e, 2.0, u)
    assert torch.allclose(soft.sum(1), torch.ones(64))
    assert (soft.gather(1, y.view(-1, 1)).squeeze(1) >= 1 - 2.0 * e - 1e-6).all()
    assert torch.equal(cat_soft_labels(y, torch.zeros(64), 2.0, u), F.one_hot(y, 10).float())
    with pytest.raises(ValueError, match="c \\* eps_max"):
        CATConfig(eps_max=0.3, c=10.0)
    with pytest.raises(ValueError, match="outside the epsilon table"):
        CATLoss(cfg, n_train=10)(model, x, y, index)


def test_cat_trains_and_keeps_epsilons_on_the_schedule(trained, mnist, tmp_path):
    eta = 0.05
    loss_fn = CATLoss(CATConfig(eta=eta, eps_max=EPS, c=3.0, steps=5), n_train=len(mnist[0]))
    net = copy.deepcopy(trained)
    before = _state(net)
    _train(net, loss_fn, mnist, tmp_path, epochs=2, name="cat")
    assert {"2.weight", "8.weight"} <= _changed(before, net)
    eps = loss_fn.epsilon.cpu()
    steps = torch.round(eps / eta)
    assert torch.allclose(eps, steps * eta, atol=1e-6) and set(steps.tolist()) <= {0.0, 1.0, 2.0}
    assert (eps == 2 * eta).any() and (eps == 0).any()  # some stayed robust twice, some were fooled


def test_sprout_beta_ascends_the_loss_gradient(trained, mnist, tmp_path):
    train, _ = mnist
    x, y, idx = train.x[:128], train.y[:128], torch.arange(128)
    model = copy.deepcopy(trained).train()
    cfg = SproutConfig(beta_lr=5.0)
    loss_fn = SproutLoss(cfg)
    beta0 = loss_fn.beta.clone()
    forwards = []
    hook = model.register_forward_hook(lambda *a: forwards.append(1))
    torch.manual_seed(7)
    loss = loss_fn(model, x, y, idx)
    hook.remove()
    assert len(forwards) == 1  # attack-free: one forward pass per batch
    step = loss_fn.beta - beta0
    # replay the same draws and differentiate the loss in beta ourselves
    torch.manual_seed(7)
    beta = beta0.clone().requires_grad_(True)
    x_t, y_t = sprout_vicinity(x, y, beta, mixup_a=cfg.mixup_a, sigma=cfg.sigma, alpha=cfg.alpha)
    replay = generalized_ce(model(x_t), y_t)
    (grad,) = torch.autograd.grad(replay, beta)
    assert float(loss.detach()) == pytest.approx(float(replay.detach()), rel=1e-5)
    big = grad.abs() > 1e-7
    assert big.sum() >= 3
    assert torch.equal(step[big].sign(), grad[big].sign())  # ascent, not descent
    assert torch.allclose(step, cfg.beta_lr * grad, atol=1e-6)
    # the model's gradient comes from the same loss; beta gets none through it
    loss.backward()
    assert model[1].weight.grad is not None
    # training moves the model and beta
    net = copy.deepcopy(trained)
    before = _state(net)
    fn = SproutLoss(SproutConfig())
    b0 = fn.beta.clone()
    _train(net, fn, mnist, tmp_path, name="sprout")
    assert {"2.weight", "8.weight"} <= _changed(before, net)
    assert not torch.equal(fn.beta.cpu(), b0) and (fn.beta > 0).all()


def test_robmask_scale_and_shift_are_rank_two_functions_of_epsilon(trained, mnist, tmp_path):
    assert encode_epsilon(6 / 255, 8 / 255) == pytest.approx([0.25, 0.75])  # thesis ch. 6, footnote 1
    assert encode_epsilon(0.0, 8 / 255) == [1.0, 0.0] and encode_epsilon(8 / 255, 8 / 255) == [0.0, 1.0]
    x = mnist[1].x[:64]
    net = convert_batchnorm(copy.deepcopy(trained), "robmask", eps_max=EPS).eval()
    layers = [m for m in net.modules() if isinstance(m, RobMaskBatchNorm2d)]
    assert len(layers) == 2 and not any(type(m) is nn.BatchNorm2d for m in net.modules())
    with torch.no_grad():
        ref = trained(x)
        for e in (0.0, EPS):  # converted from a plain BN: every strength starts at the old gamma, beta
            with bn_epsilon(net, e):
                assert torch.allclose(net(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        set_bn_epsilon(net, 2 * EPS)
    with pytest.raises(ValueError, match="eps_max"):
        RobMaskLoss(RobMaskConfig(eps_max=8 / 255))(net, x, mnist[1].y[:64], torch.arange(64))
    with pytest.raises(ValueError, match="RobMask batch-norm"):
        RobMaskLoss()(copy.deepcopy(trained), x, mnist[1].y[:64], torch.arange(64))
    before = _state(net)
    _train(net, RobMaskLoss(RobMaskConfig(eps_max=EPS, steps=3)), mnist, tmp_path, epochs=2, lr=1e-2,
           name="robmask")
    assert {"2.weight_basis", "2.bias_basis", "5.weight_basis", "1.weight"} <= _changed(before, net)
    grid = torch.linspace(0, EPS, 7)
    for m in layers:
        w, b = m.weight_basis.detach(), m.bias_basis.detach()
        assert not torch.allclose(w[:, 0], w[:, 1])  # the clean and the eps_max masks have separated
        gammas = torch.stack([m.affine_at(float(e))[0].detach() for e in grid])
        betas = torch.stack([m.affine_at(float(e))[1].detach() for e in grid])
        p = (grid / EPS).unsqueeze(1)
        assert torch.allclose(gammas, (1 - p) * w[:, 0] + p * w[:, 1], atol=1e-6)  # eq. 6.2
        assert torch.allclose(betas, (1 - p) * b[:, 0] + p * b[:, 1], atol=1e-6)
        assert int(torch.linalg.matrix_rank(gammas, atol=1e-5)) == 2  # rank k = 2 over all strengths
    net.eval()
    with torch.no_grad():
        plain = net(x)
        with bn_epsilon(net, 0.0):
            clean = net(x)
        with bn_epsilon(net, EPS):
            strong = net(x)
    assert torch.equal(plain, clean)  # the plain forward is the eps = 0 (clean) mask
    assert not torch.allclose(clean, strong, atol=1e-3)
    assert layers[0].epsilon == 0.0  # the context manager restored it


def test_advprop_adversarial_batches_use_the_auxiliary_statistics(trained, mnist, tmp_path):
    train, _ = mnist
    x, y, idx = train.x[:128], train.y[:128], torch.arange(128)
    net = convert_batchnorm(copy.deepcopy(trained), "dual").train()
    first = net[2]
    assert isinstance(first, DualBatchNorm2d)
    seen: dict[str, list[tuple[bool, torch.Tensor]]] = {"main": [], "aux": []}
    hooks = [getattr(first, k).register_forward_hook(
        lambda mod, inp, out, k=k: seen[k].append((mod.training, inp[0].detach().clone()))) for k in seen]
    r_main, r_aux = first.main.running_mean.clone(), first.aux.running_mean.clone()
    assert torch.equal(r_main, r_aux)
    steps = 4
    loss = AdvPropLoss(AdvPropConfig(epsilon=EPS, steps=steps))(net, x, y, idx)
    for h in hooks:
        h.remove()
    assert torch.isfinite(loss)
    with torch.no_grad():
        clean_in = net[1](net[0](x))
    # main BN: only the clean batch, once, in training mode
    assert [t for t, _ in seen["main"]] == [True] and torch.allclose(seen["main"][0][1], clean_in)
    # auxiliary BN: the attack's forward passes (eval) and the adversarial training batch
    assert [t for t, _ in seen["aux"]] == [False] * steps + [True]
    adv_in = seen["aux"][-1][1]
    assert not torch.allclose(adv_in, clean_in, atol=1e-3)
    m = first.main.momentum
    assert torch.allclose(first.main.running_mean, (1 - m) * r_main + m * clean_in.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(first.aux.running_mean, (1 - m) * r_aux + m * adv_in.mean((0, 2, 3)), atol=1e-5)
    assert not torch.allclose(first.main.running_mean, first.aux.running_mean)
    # training separates the branches; the plain forward is the clean (main) branch
    before = _state(net)
    _train(net, AdvPropLoss(AdvPropConfig(epsilon=EPS, steps=3)), mnist, tmp_path, lr=1e-2, name="advprop")
    assert {"2.main.weight", "2.aux.weight", "1.weight"} <= _changed(before, net)
    net.eval()
    with torch.no_grad():
        plain = net(x)
        with bn_branch(net, "clean"):
            clean = net(x)
        with bn_branch(net, "adv"):
            adv = net(x)
    assert torch.equal(plain, clean) and not torch.allclose(clean, adv, atol=1e-3)


def test_bn_only_finetuning_and_interpolation(trained, mnist, tmp_path):
    x = mnist[1].x[:64]
    model_a = copy.deepcopy(trained)
    model_b = copy.deepcopy(trained)
    trainable = finetune_bn_only(model_b)
    assert {id(p) for p in trainable} == {id(p) for p in bn_parameters(model_b)}
    assert len(trainable) == 4 and all(p.requires_grad for p in trainable)
    assert sum(p.requires_grad for p in model_b.parameters()) == 4
    before = _state(model_b)
    _train(model_b, MadryLoss(MadryConfig(epsilon=EPS, steps=3)), mnist, tmp_path, lr=1e-2, name="bn_only")
    changed = _changed(before, model_b)
    assert {"2.weight", "2.bias", "5.weight", "5.bias"} <= changed
    assert not changed & {"1.weight", "4.weight", "8.weight", "8.bias"}  # non-BN weights untouched
    model_a.eval()
    model_b.eval()
    with torch.no_grad():
        out_a, out_b = model_a(x), model_b(x)
        assert not torch.allclose(out_a, out_b, atol=1e-3)
        assert torch.equal(interpolate_bn(model_a, model_b, 0.0).eval()(x), out_a)
        assert torch.allclose(interpolate_bn(model_a, model_b, 1.0).eval()(x), out_b, atol=1e-5)
        half = interpolate_bn(model_a, model_b, 0.5)
    assert torch.allclose(half[2].weight, (model_a[2].weight + model_b[2].weight) / 2)
    assert torch.allclose(half[5].running_var, (model_a[5].running_var + model_b[5].running_var) / 2)
    assert torch.equal(half[1].weight, model_a[1].weight)
    with pytest.raises(ValueError, match="same architecture"):
        interpolate_bn(model_a, convert_batchnorm(copy.deepcopy(trained), "robmask"), 0.5)
    with pytest.raises(ValueError, match="p must lie"):
        interpolate_bn(model_a, model_b, 1.5)
    with pytest.raises(ValueError, match="no batch-norm"):
        finetune_bn_only(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_every_registered_defense_builds_and_trains_a_batch(name, mnist):
    train, _ = mnist
    x, y, idx = train.x[:32], train.y[:32], torch.arange(32)
    hyper = {"madry": {"epsilon": EPS, "steps": 2}, "trades": {"epsilon": EPS, "steps": 2},
             "cat": {"eps_max": EPS, "c": 3.0, "steps": 2, "n_train": 32}, "robmask": {"eps_max": EPS, "steps": 2},
             "advprop": {"epsilon": EPS, "steps": 2}}.get(name, {})
    defense = build_defense(name, **hyper)
    assert defense.name == name and dataclasses.is_dataclass(defense.config)
    cfg = defense.model_config(VisionModelConfig(arch="cnn", dataset="mnist"))
    assert cfg.bn == defense.bn and (cfg.bn == "standard" or cfg.batchnorm)
    torch.manual_seed(0)
    model = defense.prepare(_tiny_cnn()).train()
    assert defense.prepare(model) is model
    loss = defense.loss_fn(model, x, y, idx)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert model[1].weight.grad is not None and float(model[1].weight.grad.abs().sum()) > 0


def test_registry_and_configs_name_bad_values():
    assert set(DEFENSES) == {"natural", "madry", "trades", "cat", "sprout", "robmask", "advprop"}
    assert defense_config("sprout") == SproutConfig(mixup_a=0.2, sigma=0.1, alpha=0.01)
    assert defense_config("cat") == CATConfig(eta=0.005, eps_max=8 / 255, c=10.0, kappa=10.0)
    with pytest.raises(ValueError, match="unknown defense 'fgsm'"):
        build_defense("fgsm")
    with pytest.raises(ValueError, match="unknown hyperparameters \\['eps'\\]"):
        build_defense("madry", eps=0.3)
    with pytest.raises(ValueError, match="already registered"):
        register("madry", NaturalConfig, MadryLoss)
    with pytest.raises(ValueError, match="bn='robmask' needs batch normalisation"):
        VisionModelConfig(arch="cnn", dataset="mnist", bn="robmask")
    with pytest.raises(ValueError, match="unknown batch-norm kind"):
        VisionModelConfig(bn="group")


@pytest.mark.parametrize("bn", ["robmask", "dual"])
def test_converted_models_round_trip_through_checkpoints(bn, tmp_path):
    cfg = VisionModelConfig(arch="cnn", dataset="mnist", batchnorm=True, bn=bn, bn_eps_max=EPS)
    torch.manual_seed(0)
    model = build_model(cfg)
    kind = RobMaskBatchNorm2d if bn == "robmask" else DualBatchNorm2d
    assert sum(isinstance(m, kind) for m in model.modules()) == 4
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = save_checkpoint(model.eval(), cfg, tmp_path / "model.pt")
    loaded, cfg2 = load_checkpoint(path)
    assert cfg2 == cfg
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        if bn == "robmask":
            with bn_epsilon(model, EPS), bn_epsilon(loaded, EPS):
                assert torch.equal(model(x), loaded(x))
        else:
            with bn_branch(model, "adv"), bn_branch(loaded, "adv"):
                assert torch.equal(model(x), loaded(x))


def test_checkpoints_without_the_bn_field_still_load(tmp_path):
    cfg = VisionModelConfig(arch="cnn", dataset="mnist", batchnorm=True)
    model = build_model(cfg)
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if not k.startswith("bn")}
    torch.save({"config": old, "state_dict": model.state_dict()}, tmp_path / "old.pt")
    loaded, cfg2 = load_checkpoint(tmp_path / "old.pt")
    assert cfg2.bn == "standard" and cfg2 == cfg
