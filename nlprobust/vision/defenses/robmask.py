"""RobMask (thesis chapter 6, section 6.3, Algorithm 10) and its baseline AdvProp (Xie, Tan, Gong, Wang, Yuille and
Le, "Adversarial Examples Improve Image Recognition", CVPR 2020): batch normalisation that knows how strongly its
input was perturbed.

- :class:`RobMaskBatchNorm2d`: one set of normalisation statistics; the rescaling ``gamma`` and shift ``beta`` are
  a rank-``k`` linear function of an encoding ``u(eps)`` of the batch's perturbation strength (eq. 6.2):
  ``gamma = W u``, ``beta = W' u``, ``u(eps) = (1 - p) u_0 + p u_max`` with ``p = eps / eps_max`` (``k = 2``).
- :class:`DualBatchNorm2d`: AdvProp's main BN for clean images and auxiliary BN (own statistics and affine
  parameters) for adversarial ones.

Models get these layers by :func:`convert_batchnorm` (``build_model`` does it for ``VisionModelConfig(bn="robmask")``
or ``bn="dual"``); :func:`bn_epsilon` / :func:`bn_branch` select what the next forward passes use. A plain forward
uses ``eps = 0`` (RobMask) or the main BN (AdvProp): that is how both are evaluated (thesis 6.4: clean accuracy,
and robust accuracy of the same model under attack).

    model = build_model(VisionModelConfig(arch="resnet18", dataset="cifar10", bn="robmask"))
    train_classifier(cfg, train, test, out, tcfg, model=model, loss_fn=RobMaskLoss(), method="robmask")
    with bn_epsilon(model, 4 / 255):
        logits = model(x)
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nlprobust.vision.defenses.adversarial import model_mode, pgd_linf

__all__ = ["RobMaskBatchNorm2d", "DualBatchNorm2d", "convert_batchnorm", "set_bn_epsilon", "bn_epsilon",
           "set_bn_branch", "bn_branch", "encode_epsilon", "RobMaskConfig", "RobMaskLoss", "AdvPropConfig",
           "AdvPropLoss", "BRANCHES"]

log = logging.getLogger(__name__)

BRANCHES = ("clean", "adv")


def encode_epsilon(epsilon: float, eps_max: float, rank: int = 2) -> list[float]:
    """The ``rank``-dimensional code of a perturbation strength (thesis eq. 6.2 and footnote 1 of chapter 6).

    ``rank = 2``: ``[1 - p, p]`` with ``p = epsilon / eps_max`` (``0 -> [1, 0]``, ``eps_max -> [0, 1]``,
    ``6/255 -> [0.25, 0.75]`` for ``eps_max = 8/255``). Larger ranks use piecewise-linear "hat" codes on ``rank``
    evenly spaced anchors of [0, eps_max] (the same interpolation between neighbouring anchors)."""
    if rank < 2:
        raise ValueError(f"rank must be at least 2, got {rank}")
    if not 0 <= epsilon <= eps_max * (1 + 1e-6):
        raise ValueError(f"perturbation strength {epsilon} outside [0, eps_max={eps_max}] of the RobMask encoding")
    t = min(epsilon / eps_max, 1.0) * (rank - 1)
    return [max(0.0, 1.0 - abs(t - j)) for j in range(rank)]


class RobMaskBatchNorm2d(nn.BatchNorm2d):
    """Batch normalisation whose affine rescaling is ``gamma = W u(eps)``, ``beta = W' u(eps)`` (thesis eq. 6.2).

    Normalisation (running mean and variance) is shared by all strengths, as in the thesis; ``weight_basis`` (``W``)
    and ``bias_basis`` (``W'``) are ``C x k`` parameters. The strength is the module attribute ``epsilon`` (default
    0, the clean code ``u_0``), set with :func:`set_bn_epsilon` or :func:`bn_epsilon`; it is not saved.

    Args:
        num_features: channels C.
        rank: ``k`` (default 2, thesis 6.4: "we set k = 2 and eps_max = 8/255 in all our experiments").
        eps_max: strength encoded as ``u_max`` (default 8/255, thesis 6.4).
        eps, momentum: as :class:`torch.nn.BatchNorm2d`.

    Shapes: ``N x C x H x W`` -> ``N x C x H x W``.

    Example:
        >>> bn = RobMaskBatchNorm2d(16)
        >>> bn.epsilon = 4 / 255
        >>> gamma, beta = bn.affine_at(4 / 255)        # = W @ [0.5, 0.5], W' @ [0.5, 0.5]
    """

    def __init__(self, num_features: int, *, rank: int = 2, eps_max: float = 8 / 255, eps: float = 1e-5,
                 momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False, track_running_stats=True)
        if rank < 2:
            raise ValueError(f"rank must be at least 2, got {rank}")
        if eps_max <= 0:
            raise ValueError(f"eps_max must be positive, got {eps_max}")
        self.rank = rank
        self.eps_max = float(eps_max)
        self.epsilon = 0.0
        self.weight_basis = nn.Parameter(torch.ones(num_features, rank))
        self.bias_basis = nn.Parameter(torch.zeros(num_features, rank))

    def affine_at(self, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gamma, beta)`` for strength ``epsilon``, each ``C``."""
        u = torch.tensor(encode_epsilon(epsilon, self.eps_max, self.rank), dtype=self.weight_basis.dtype,
                         device=self.weight_basis.device)
        return self.weight_basis @ u, self.bias_basis @ u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        factor = 0.0
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        gamma, beta = self.affine_at(self.epsilon)
        return F.batch_norm(x, self.running_mean, self.running_var, gamma, beta, self.training, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, rank={self.rank}, "
                f"eps_max={self.eps_max:.5g}")


class DualBatchNorm2d(nn.Module):
    """AdvProp's pair of batch norms: ``main`` for clean images, ``aux`` for adversarial ones, each with its own
    running statistics and affine parameters; the attribute ``branch`` (``"clean"``, default, or ``"adv"``) routes.

    Shapes: ``N x C x H x W`` -> ``N x C x H x W``.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.main = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.aux = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.branch = "clean"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aux(x) if self.branch == "adv" else self.main(x)

    def extra_repr(self) -> str:
        return f"branch={self.branch}"


def convert_batchnorm(model: nn.Module, kind: str, *, rank: int = 2, eps_max: float = 8 / 255) -> nn.Module:
    """Replace every plain ``nn.BatchNorm2d`` of ``model`` (in place) by a RobMask (``kind="robmask"``) or AdvProp
    (``kind="dual"``) layer initialised from it: its running statistics, and its ``gamma``/``beta`` copied into every
    basis column (RobMask: then ``gamma(eps)`` is the old ``gamma`` for every ``eps``) or into both branches.

    Returns ``model``. Raises ``ValueError`` if it has no ``BatchNorm2d`` (build the C&W CNN with
    ``batchnorm=True``)."""
    if kind not in ("robmask", "dual"):
        raise ValueError(f"unknown batch-norm kind {kind!r}; expected 'robmask' or 'dual'")
    count = 0

    def swap(parent: nn.Module) -> None:
        nonlocal count
        for name, child in parent.named_children():
            if type(child) is nn.BatchNorm2d:
                setattr(parent, name, _converted(child, kind, rank, eps_max))
                count += 1
            else:
                swap(child)

    swap(model)
    if count == 0:
        raise ValueError(f"{type(model).__name__} has no BatchNorm2d layer to convert to {kind!r} "
                         "(build the CNN with VisionModelConfig(batchnorm=True))")
    return model


@torch.no_grad()
def _converted(bn: nn.BatchNorm2d, kind: str, rank: int, eps_max: float) -> nn.Module:
    c = bn.num_features
    new: nn.Module
    targets: list[nn.BatchNorm2d]
    if kind == "robmask":
        rm = RobMaskBatchNorm2d(c, rank=rank, eps_max=eps_max, eps=bn.eps, momentum=bn.momentum)
        if bn.affine:
            rm.weight_basis.copy_(bn.weight.unsqueeze(1).expand(c, rank))
            rm.bias_basis.copy_(bn.bias.unsqueeze(1).expand(c, rank))
        targets = [rm]
        new = rm
    else:
        dual = DualBatchNorm2d(c, eps=bn.eps, momentum=bn.momentum)
        for b in (dual.main, dual.aux):
            if bn.affine:
                b.weight.copy_(bn.weight)
                b.bias.copy_(bn.bias)
        targets = [dual.main, dual.aux]
        new = dual
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        for t in targets:
            assert t.running_mean is not None and t.running_var is not None and t.num_batches_tracked is not None
            t.running_mean.copy_(bn.running_mean)
            t.running_var.copy_(bn.running_var)
            if bn.num_batches_tracked is not None:
                t.num_batches_tracked.copy_(bn.num_batches_tracked)
    ref = next(iter([*bn.parameters(), *bn.buffers()]), None)
    return new if ref is None else new.to(ref.device)


def _robmask_layers(model: nn.Module) -> list[RobMaskBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, RobMaskBatchNorm2d)]


def _dual_layers(model: nn.Module) -> list[DualBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, DualBatchNorm2d)]


def set_bn_epsilon(model: nn.Module, epsilon: float) -> float:
    """Make every RobMask layer of ``model`` use the code of ``epsilon``; returns the previous value.

    Raises ``ValueError`` if the model has no RobMask layer or ``epsilon`` is outside ``[0, eps_max]``."""
    layers = _robmask_layers(model)
    if not layers:
        raise ValueError("the model has no RobMask batch-norm layer (VisionModelConfig(bn='robmask'))")
    for m in layers:
        encode_epsilon(epsilon, m.eps_max, m.rank)  # validates
    previous = layers[0].epsilon
    for m in layers:
        m.epsilon = float(epsilon)
    return previous


@contextlib.contextmanager
def bn_epsilon(model: nn.Module, epsilon: float) -> Iterator[nn.Module]:
    """Within the block, RobMask layers use the code of ``epsilon``; the previous strength is restored after."""
    previous = set_bn_epsilon(model, epsilon)
    try:
        yield model
    finally:
        set_bn_epsilon(model, previous)


def set_bn_branch(model: nn.Module, branch: str) -> str:
    """Route every AdvProp layer of ``model`` to ``"clean"`` (main BN) or ``"adv"`` (auxiliary BN); returns the
    previous branch."""
    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")
    layers = _dual_layers(model)
    if not layers:
        raise ValueError("the model has no AdvProp (dual) batch-norm layer (VisionModelConfig(bn='dual'))")
    previous = layers[0].branch
    for m in layers:
        m.branch = branch
    return previous


@contextlib.contextmanager
def bn_branch(model: nn.Module, branch: str) -> Iterator[nn.Module]:
    """Within the block, AdvProp layers use ``branch``; the previous one is restored after."""
    previous = set_bn_branch(model, branch)
    try:
        yield model
    finally:
        set_bn_branch(model, previous)


@dataclass(frozen=True, kw_only=True)
class RobMaskConfig:
    """Hyperparameters of :class:`RobMaskLoss`; defaults from thesis 6.4 ("Implementation Details": "the number of
    iterations in adversarial attack to 7 ... non-targeted attacks with random initialization ... step-size to
    epsilon/5"; "we set k = 2 and eps_max = 8/255").

    Args:
        eps_max: largest sampled strength; must equal the model's RobMask ``eps_max`` (default 8/255).
        rank: ``k`` (default 2); used by :meth:`nlprobust.vision.defenses.Defense.prepare` to convert a model.
        steps: PGD steps (default 7).
        step_ratio: PGD step as a fraction of the batch's strength (default 0.2, "epsilon/5").
        random_start: uniform random start in the ball (default True).
        clean_weight: weight of the clean (``eps = 0`` code) cross-entropy added to the adversarial one (default
            1.0; 0 gives Algorithm 10 literally, see the deviations of :class:`RobMaskLoss`).
    """

    eps_max: float = 8 / 255
    rank: int = 2
    steps: int = 7
    step_ratio: float = 0.2
    random_start: bool = True
    clean_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.eps_max <= 0 or self.rank < 2:
            raise ValueError(f"eps_max must be positive and rank >= 2 (got {self.eps_max}, {self.rank})")
        if self.steps < 1 or self.step_ratio <= 0:
            raise ValueError(f"steps must be >= 1 and step_ratio > 0 (got {self.steps}, {self.step_ratio})")
        if self.clean_weight < 0:
            raise ValueError(f"clean_weight must be non-negative, got {self.clean_weight}")


class RobMaskLoss:
    """RobMask training (thesis Algorithm 10), a ``LossFn`` for models with :class:`RobMaskBatchNorm2d` layers.

    Per batch: draw ``p ~ U[0, 1]``, ``eps = p * eps_max``; with the RobMask layers on the code ``u(eps)``, run
    ``steps`` PGD steps (L-inf, random start, cross-entropy, step ``step_ratio * eps``; model in eval mode), then
    return ``CE(f(x + delta; u(eps)), y) + clean_weight * CE(f(x; u(0)), y)`` (train mode). One optimiser updates
    ``W``, ``W'`` and the other weights together (Algorithm 10 allows three learning rates; thesis 6.4 sets all to
    0.1).

    Args:
        config: :class:`RobMaskConfig` (default ``RobMaskConfig()``).

    Attributes:
        last_epsilon: the strength drawn for the last batch.

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``index`` are ``N``; returns a scalar.

    Example:
        >>> model = convert_batchnorm(build_model(VisionModelConfig(arch="cnn", batchnorm=True)), "robmask")
        >>> loss = RobMaskLoss()(model, x, y, index)

    Deviations from the paper:
        - Algorithm 10 shows only the adversarial loss; the chapter's text says "Both clean and adversarial
          examples are used for model training" and "we could treat eps = 0 for the unperturbed data", and the
          AdvProp baseline sums both: we add the clean term through the ``eps = 0`` code (``clean_weight``).
        - Algorithm 10's attack has no random start (``delta <- 0``) while 6.4 says "with random initialization":
          we follow 6.4. The attack runs in eval mode (running statistics), which the thesis does not specify.
    """

    def __init__(self, config: RobMaskConfig | None = None) -> None:
        self.config = config or RobMaskConfig()
        self.last_epsilon: float | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        layers = _robmask_layers(model)
        if not layers:
            raise ValueError("RobMaskLoss needs RobMask batch-norm layers: VisionModelConfig(bn='robmask') or "
                             "convert_batchnorm(model, 'robmask')")
        if not math.isclose(layers[0].eps_max, cfg.eps_max, rel_tol=1e-6):
            raise ValueError(f"RobMaskConfig.eps_max={cfg.eps_max} differs from the model's RobMask eps_max="
                             f"{layers[0].eps_max}")
        eps = float(torch.rand(())) * cfg.eps_max
        self.last_epsilon = eps
        with bn_epsilon(model, eps):
            if eps > 0:
                with model_mode(model, False):
                    x_adv = pgd_linf(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), epsilon=eps,
                                     step_size=cfg.step_ratio * eps, steps=cfg.steps, random_start=cfg.random_start)
            else:
                x_adv = x
            loss = F.cross_entropy(model(x_adv), y)
        if cfg.clean_weight > 0:
            with bn_epsilon(model, 0.0):
                loss = loss + cfg.clean_weight * F.cross_entropy(model(x), y)
        return loss


@dataclass(frozen=True, kw_only=True)
class AdvPropConfig:
    """Hyperparameters of :class:`AdvPropLoss`; defaults from thesis 6.4 (the training attack shared by all
    chapter-6 methods: "7 ... iterations", "random initialization", "epsilon = 8/255 with cross-entropy (CE) loss
    and the step-size to epsilon/5").

    Args:
        epsilon: L-inf radius (default 8/255).
        steps: PGD steps (default 7).
        step_size: ``None`` (default) = ``epsilon / 5``.
        random_start: default True.
        adv_weight: weight of the adversarial (auxiliary-BN) cross-entropy (default 1.0, Xie et al.'s sum).
    """

    epsilon: float = 8 / 255
    steps: int = 7
    step_size: float | None = None
    random_start: bool = True
    adv_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.epsilon <= 0 or self.steps < 1:
            raise ValueError(f"epsilon must be positive and steps >= 1 (got {self.epsilon}, {self.steps})")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"step_size must be positive, got {self.step_size}")
        if self.adv_weight < 0:
            raise ValueError(f"adv_weight must be non-negative, got {self.adv_weight}")

    @property
    def step(self) -> float:
        return self.step_size if self.step_size is not None else self.epsilon / 5


class AdvPropLoss:
    """AdvProp (Xie et al., CVPR 2020), a ``LossFn`` for models with :class:`DualBatchNorm2d` layers.

    Per batch: PGD adversarial examples through the auxiliary BNs (model in eval mode, so only the auxiliary
    running statistics are read), then ``CE(f_main(x), y) + adv_weight * CE(f_aux(x_adv), y)`` with the clean batch
    through the main BNs and the adversarial batch through the auxiliary BNs (train mode: each branch's
    statistics see only its own kind of images). At test time the main BNs are used (the default branch).

    Args:
        config: :class:`AdvPropConfig` (default ``AdvPropConfig()``).

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``index`` are ``N``; returns a scalar.

    Example:
        >>> model = convert_batchnorm(build_model(VisionModelConfig(arch="cnn", batchnorm=True)), "dual")
        >>> loss = AdvPropLoss()(model, x, y, index)

    Deviations from the paper:
        - Xie et al. attack ImageNet models with small radii (1 to 4 of 255) and ``eps`` steps of 1; the thesis's
          CIFAR setting (above) is the default. The attacker's mode is not fixed by the thesis; eval mode here.
    """

    def __init__(self, config: AdvPropConfig | None = None) -> None:
        self.config = config or AdvPropConfig()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not _dual_layers(model):
            raise ValueError("AdvPropLoss needs dual batch-norm layers: VisionModelConfig(bn='dual') or "
                             "convert_batchnorm(model, 'dual')")
        with bn_branch(model, "adv"):
            with model_mode(model, False):
                x_adv = pgd_linf(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), epsilon=cfg.epsilon,
                                 step_size=cfg.step, steps=cfg.steps, random_start=cfg.random_start)
            adv = F.cross_entropy(model(x_adv), y)
        with bn_branch(model, "clean"):
            clean = F.cross_entropy(model(x), y)
        return clean + cfg.adv_weight * adv
