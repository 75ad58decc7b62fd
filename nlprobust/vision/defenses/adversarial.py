"""Madry et al. PGD adversarial training, and the small batched L-inf PGD every training-time attack here uses.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018 (thesis section 4.1, eq. 4.1): minimise the loss of the worst point of each example's ``epsilon`` ball,
the worst point being approximated by projected gradient ascent from a random start.

    loss_fn = MadryLoss(MadryConfig(epsilon=0.3, steps=10))      # MNIST
    train_classifier(model_cfg, train, test, "runs/vision/mnist_madry", cfg, loss_fn=loss_fn, method="madry")
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MadryConfig", "MadryLoss", "pgd_linf", "model_mode", "Objective"]

log = logging.getLogger(__name__)

#: Per-example quantity an attack maximises, from logits (``N x K`` -> ``N``).
Objective = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def model_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put every module of ``model`` in train (``training=True``) or eval mode; restore each one's mode on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _column(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar or a per-example ``N`` tensor as an ``N x 1 x 1 x 1`` tensor on ``like``'s device."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    if t.shape != (like.shape[0],):
        raise ValueError(f"expected a scalar or one value per example ({like.shape[0]}), got shape {tuple(t.shape)}")
    return t.view(-1, *([1] * (like.dim() - 1)))


def check_pgd_steps(steps: int, step_size: float | None) -> None:
    """Validate the PGD settings of a training-time attack config."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if step_size is not None and step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")


def pgd_linf(model: nn.Module, x: torch.Tensor, objective: Objective, *, epsilon: float | torch.Tensor,
             step_size: float | torch.Tensor, steps: int, random_start: bool = True,
             x_init: torch.Tensor | None = None) -> torch.Tensor:
    """L-inf projected gradient ascent of ``objective(model(x'))`` over ``||x' - x||_inf <= epsilon``, ``x'`` in [0, 1].

    The whole batch moves together on ``x``'s device: ``steps`` signed-gradient steps, each projected onto the
    ball and [0, 1]. ``epsilon`` and ``step_size`` are scalars or per-example ``N`` tensors (CAT). The model is
    used in whatever mode it is in (the callers choose it with :func:`model_mode`); only the input gets a gradient.

    Args:
        model: maps ``N x C x H x W`` images in [0, 1] to ``N x K`` logits.
        x: clean images, ``N x C x H x W`` in [0, 1].
        objective: per-example loss to maximise, from the logits.
        epsilon: radius (scalar or ``N``).
        step_size: step length (scalar or ``N``).
        steps: number of steps; 0 returns the start point.
        random_start: start at a uniform random point of the ball (Madry et al.) instead of at ``x``.
        x_init: explicit start point (TRADES' small Gaussian start); overrides ``random_start``.

    Returns:
        The perturbed images, detached, ``N x C x H x W``.

    Example:
        >>> x_adv = pgd_linf(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), epsilon=0.3,
        ...                  step_size=0.075, steps=10)
    """
    x0 = x.detach()
    eps = _column(epsilon, x0)
    step = _column(step_size, x0)
    if x_init is not None:
        x_adv = torch.min(torch.max(x_init.detach(), x0 - eps), x0 + eps).clamp(0, 1)
    elif random_start:
        x_adv = (x0 + (2 * torch.rand_like(x0) - 1) * eps).clamp(0, 1)
    else:
        x_adv = x0.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            total = objective(model(x_adv)).sum()
            (grad,) = torch.autograd.grad(total, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x0 - eps), x0 + eps).clamp(0, 1)
    return x_adv.detach()


@dataclass(frozen=True, kw_only=True)
class MadryConfig:
    """Hyperparameters of :class:`MadryLoss`.

    Args:
        epsilon: L-inf radius (default 8/255: thesis 4.2.4.1, "Adversarial training and TRADES are trained on PGD
            attacks setting epsilon = 8/255"; use 0.3 for MNIST as in section 4.1 / Madry et al.).
        steps: PGD steps (default 10: thesis 4.2.4.1, "the number of iterations in adversarial attack to be 10 for
            all methods during training").
        step_size: PGD step; ``None`` (default) = ``epsilon / 4`` (Madry et al.'s CIFAR-10 2/255 for 8/255; the
            thesis does not give it for chapter 4).
        random_start: start at a uniform random point of the ball (default True, Madry et al.).
    """

    epsilon: float = 8 / 255
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be non-negative, got {self.epsilon}")
        check_pgd_steps(self.steps, self.step_size)

    @property
    def step(self) -> float:
        return self.step_size if self.step_size is not None else self.epsilon / 4


class MadryLoss:
    """PGD adversarial training (Madry et al., ICLR 2018), a ``LossFn`` for ``train_classifier``.

    Each batch is replaced by its PGD-``steps`` adversarial version (L-inf, random start, cross-entropy ascent)
    and the loss is the cross-entropy there (thesis eq. 4.1).

    Args:
        config: :class:`MadryConfig` (default: ``MadryConfig()``).

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``index`` are ``N``; returns a scalar.

    Example:
        >>> loss_fn = MadryLoss(MadryConfig(epsilon=0.3))
        >>> loss = loss_fn(model, x, y, index)
        >>> loss.backward()

    Deviations from the paper:
        - The attack runs with the model in eval mode (batch-norm running statistics, no dropout), as the TRADES
          reference code does; Madry et al.'s TensorFlow models attack in training mode. The loss itself is
          computed in the mode ``train_classifier`` set (train).
    """

    def __init__(self, config: MadryConfig | None = None) -> None:
        self.config = config or MadryConfig()

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The PGD adversarial examples of ``x`` (eval mode)."""
        cfg = self.config
        with model_mode(model, False):
            return pgd_linf(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), epsilon=cfg.epsilon,
                            step_size=cfg.step, steps=cfg.steps, random_start=cfg.random_start)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x_adv = self.attack(model, x, y)
        return F.cross_entropy(model(x_adv), y)
