"""PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018): projected
gradient ascent of a loss inside the ``epsilon`` ball, from a random start, with restarts.

    attack = PGD(norm="linf", epsilon=0.3, steps=40, restarts=2)
    result = attack(model, x, y)          # x: N x C x H x W in [0, 1], y: N
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch.nn import functional as F

from nlprobust.vision.attacks.base import Attack, Starts
from nlprobust.vision.oracle import WhiteBoxView

__all__ = ["PGD", "margin"]

logger = logging.getLogger(__name__)

LOSSES = ("ce", "cw")


def margin(z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Carlini-Wagner margin of logits ``z`` (n x classes), positive iff the goal is met.

    Untargeted (``goal`` = true labels): ``max_{i != y} z_i - z_y``; targeted (``goal`` = targets):
    ``z_t - max_{i != t} z_i``."""
    own = z.gather(1, goal.view(-1, 1)).squeeze(1)
    other = z.masked_fill(F.one_hot(goal, z.shape[1]).bool(), float("-inf")).amax(1)
    return own - other if targeted else other - own


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class PGD(Attack):
    """Projected gradient descent, white-box, L-inf or L2.

    Each of ``restarts`` runs starts at a uniform random point of the ``epsilon`` ball (or at ``x0``) and takes
    ``steps`` steps of size ``step_size`` along the sign (L-inf) or the L2-normalised direction (L2) of the
    gradient of the loss, each followed by projection onto the ball and onto [0, 1]. The final point of a run
    is checked with one more forward pass; an image keeps the first run whose final point meets the goal
    (later runs skip it), else the last run's point. Queries: at most ``restarts * (steps + 1)`` per image.

    Losses (maximised): ``"ce"``: cross-entropy to the true label (targeted: minus cross-entropy to the
    target); ``"cw"``: the unclamped margin :func:`margin` on the logits.

    Args:
        norm: ``"linf"`` (default) or ``"l2"``.
        epsilon: radius of the ball; required.
        steps: gradient steps per run (default 20).
        step_size: step length; default ``2.5 * epsilon / steps`` (Madry et al.'s rule of thumb).
        random_start: start each run at a uniform random point of the ball (default True); with False every
            run starts at ``x0``, so ``restarts > 1`` repeats the same deterministic run.
        restarts: runs per image (default 1).
        loss: ``"ce"`` (default) or ``"cw"``.
        targeted, budget, seed, batch_size: see :class:`~nlprobust.vision.attacks.base.Attack`. With a budget,
            an image stops (and keeps its current point) when it has no query left.

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``target`` are ``N``; the result holds ``N`` images.

    Example:
        >>> result = PGD(norm="l2", epsilon=1.5, steps=40, loss="cw")(model, x, y)
        >>> bool((result.distance <= 1.5 + 1e-5).all())
        True

    Deviations from the paper:
        - The L2 random start is uniform in the ball (Madry et al. describe the L-inf version only).
        - A run's final point costs one extra query to check; intermediate points are not kept.
    """

    name: ClassVar[str] = "pgd"
    threat: ClassVar[str] = "whitebox"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(self, *, norm: str = "linf", epsilon: float | None = None, steps: int = 20,
                 step_size: float | None = None, random_start: bool = True, restarts: int = 1, loss: str = "ce",
                 targeted: bool = False, budget: int | None = None, seed: int = 0, batch_size: int = 1000) -> None:
        super().__init__(norm=norm, targeted=targeted, budget=budget, epsilon=epsilon, seed=seed,
                         batch_size=batch_size)
        if epsilon is None:
            raise ValueError(f"{self.name} needs epsilon (the radius of the ball)")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if restarts < 1:
            raise ValueError(f"restarts must be at least 1, got {restarts}")
        if step_size is not None and step_size <= 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
        self.steps = steps
        self.step_size = step_size if step_size is not None else 2.5 * epsilon / steps
        self.random_start = random_start
        self.restarts = restarts
        self.loss = loss

    def objective(self, z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        """Per-example loss to maximise, from logits ``z`` (n x classes)."""
        if self.loss == "cw":
            return margin(z, goal, targeted)
        ce = F.cross_entropy(z, goal, reduction="none")
        return -ce if targeted else ce

    def _project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        assert self.epsilon is not None
        delta = x - x0
        if self.norm == "linf":
            delta = delta.clamp(-self.epsilon, self.epsilon)
        else:
            norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * _bcast((self.epsilon / norm).clamp(max=1.0), delta)
        return (x0 + delta).clamp(0, 1)

    def _start(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        assert self.epsilon is not None
        if not self.random_start:
            return x0.clone()
        if self.norm == "linf":
            u = torch.rand(x0.shape, generator=gen, device=x0.device)
            return self._project(x0 + (2 * u - 1) * self.epsilon, x0)
        d = x0[0].numel()
        u = torch.randn(x0.shape, generator=gen, device=x0.device)
        u = u / _bcast(u.flatten(1).norm(dim=1).clamp_min(1e-12), u)
        r = torch.rand(x0.shape[0], generator=gen, device=x0.device) ** (1.0 / d)  # uniform in the ball
        return self._project(x0 + u * _bcast(r * self.epsilon, u), x0)

    def _step(self, x: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            direction = grad.sign()
        else:
            direction = grad / _bcast(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
        return self._project(x + self.step_size * direction, x0)

    def run(self, view: WhiteBoxView, gen: torch.Generator, starts: Starts | None) -> torch.Tensor:
        goal = view.target if view.target is not None else view.y0
        x_best = view.x0.clone()
        done = torch.zeros(view.n, dtype=torch.bool, device=view.device)
        for r in range(self.restarts):
            idx = torch.nonzero(~done & (view.remaining() >= 1)).flatten()
            if idx.numel() == 0:
                break
            x0 = view.x0[idx]
            x = self._start(x0, gen)
            for _ in range(self.steps):
                live = torch.nonzero(view.remaining()[idx] >= 1).flatten()
                if live.numel() == 0:
                    break
                xl = x[live].requires_grad_(True)
                obj = self.objective(view.logits(xl, idx[live]), goal[idx[live]], view.targeted)
                (grad,) = torch.autograd.grad(obj.sum(), xl)
                with torch.no_grad():
                    x[live] = self._step(xl.detach(), grad, x0[live])
            x_best[idx] = x  # the last run's point, unless one meets the goal
            live = torch.nonzero(view.remaining()[idx] >= 1).flatten()
            if live.numel() == 0:
                break
            with torch.no_grad():
                z = view.logits(x[live], idx[live])
            pred = z.argmax(1)
            ok = pred == goal[idx[live]] if view.targeted else pred != goal[idx[live]]
            done[idx[live[ok]]] = True
            logger.debug("%s: run %d, %d of %d images meet the goal", self.name, r + 1, int(done.sum()), view.n)
        return x_best
