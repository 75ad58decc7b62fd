"""FGSM (Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015): one step
of size ``epsilon`` along the sign (L-inf) or the direction (L2) of the cross-entropy gradient.

    attack = FGSM(norm="linf", epsilon=0.3)
    result = attack(model, x, y)          # x: N x C x H x W in [0, 1], y: N
"""

from __future__ import annotations

import logging

import torch
from torch.nn import functional as F

from nlprobust.vision.attacks.base import Attack, Starts
from nlprobust.vision.oracle import WhiteBoxView

__all__ = ["FGSM"]

logger = logging.getLogger(__name__)


class FGSM(Attack):
    """Fast gradient sign method, white-box, L-inf or L2.

    Untargeted: ``x0 + epsilon * sign(grad CE(f(x0), y))``; targeted: ``x0 - epsilon * sign(grad CE(f(x0), t))``
    (descend the cross-entropy to the target). For L2 the sign is replaced by the gradient divided by its L2
    norm. The result is clipped to [0, 1]. One query (one forward pass) per image.

    Args:
        norm: ``"linf"`` (default, the paper's) or ``"l2"``.
        epsilon: step size and perturbation bound; required.
        targeted, budget, seed, batch_size: see :class:`~nlprobust.vision.attacks.base.Attack` (an image with no
            query left is returned unchanged; ``seed`` is unused: the attack is deterministic).

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``target`` are ``N``; the result holds ``N`` images.

    Example:
        >>> result = FGSM(norm="linf", epsilon=0.1)(model, x, y)
        >>> float(result.success.float().mean())
    """

    name = "fgsm"
    threat = "whitebox"
    norms = ("linf", "l2")

    def __init__(self, *, norm: str = "linf", epsilon: float | None = None, targeted: bool = False,
                 budget: int | None = None, seed: int = 0, batch_size: int = 1000) -> None:
        super().__init__(norm=norm, targeted=targeted, budget=budget, epsilon=epsilon, seed=seed,
                         batch_size=batch_size)
        if epsilon is None:
            raise ValueError("fgsm needs epsilon (the step size and perturbation bound)")

    def run(self, view: WhiteBoxView, gen: torch.Generator, starts: Starts | None) -> torch.Tensor:
        assert self.epsilon is not None
        x0 = view.x0
        x_adv = x0.clone()
        idx = torch.nonzero(view.remaining() >= 1).flatten()
        if idx.numel() == 0:
            return x_adv
        goal = view.target if view.target is not None else view.y0
        x = x0[idx].clone().requires_grad_(True)
        loss = F.cross_entropy(view.logits(x, idx), goal[idx], reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        if view.target is not None:
            grad = -grad  # descend the loss to the target
        if self.norm == "linf":
            step = grad.sign()
        else:
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
            step = grad / norm.view(-1, *([1] * (grad.dim() - 1)))
        x_adv[idx] = (x0[idx] + self.epsilon * step).clamp(0, 1)
        logger.debug("fgsm: one step on %d of %d images", idx.numel(), view.n)
        return x_adv
