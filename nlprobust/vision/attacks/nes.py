"""NES attack (Ilyas, Engstrom, Athalye and Lin, "Black-box Adversarial Attacks with Limited Queries and
Information", ICML 2018): projected gradient steps with a natural-evolution-strategies gradient estimate from
output probabilities (the query-limited setting, Algorithms 1 and 2).

    attack = NES(epsilon=0.05, budget=10000)
    result = attack(model, x, y, target=t)
"""

from __future__ import annotations

import logging

import torch

from nlprobust.vision.attacks.base import Attack, Starts
from nlprobust.vision.oracle import SoftLabelView, log_probs

__all__ = ["NES"]

logger = logging.getLogger(__name__)




class NES(Attack):
    """NES gradient estimation + L-inf PGD, soft-label (class probabilities), untargeted or targeted.

    The objective (maximised) is the cross-entropy ``-log p_y(x)`` (untargeted) or ``log p_t(x)`` (targeted).
    Its gradient is estimated with ``n_samples`` antithetic Gaussian pairs,
    ``g = sum_i (F(x + sigma u_i) - F(x - sigma u_i)) u_i / (2 n_samples sigma)`` (``2 * n_samples`` queries
    per image, all images in one batched forward pass), and ``x`` moves by ``step_size * sign(g)``, projected
    onto the L-inf ``epsilon`` ball around ``x0`` and onto [0, 1].

    Each iteration first queries the current point (one query); an image stops as soon as it meets the goal,
    or when it has too few queries left for the next estimate. Queries per image: ``k * (2 n_samples + 1)``
    or one more.

    Args:
        epsilon: L-inf radius; required.
        budget: queries per image; required.
        n_samples: antithetic pairs per estimate (default 50, i.e. 100 queries).
        sigma: search variance (default 0.001, the paper's).
        step_size: PGD step (default 0.01, the paper's learning rate).
        norm: ``"linf"`` only.
        targeted, seed, batch_size: see :class:`~nlprobust.vision.attacks.base.Attack`; ``seed`` drives the
            Gaussian samples.

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``target`` are ``N``; the result holds ``N`` images.
    One forward pass holds ``2 * n_samples * N`` images (split into ``batch_size`` rows).

    Example:
        >>> result = NES(epsilon=0.3, budget=5000, step_size=0.03)(model, x, y)
        >>> float(result.success.float().mean())

    Deviations from the paper:
        - Untargeted attacks start at ``x0`` and maximise the cross-entropy; the paper's partial-information and
          label-only variants (starting from a target-class image) and the released code's gradient momentum
          and learning-rate plateau schedule are not implemented.
        - Probes ``x +- sigma u`` are not clipped to [0, 1] (as in the released code).
    """

    name = "nes"
    threat = "softlabel"
    norms = ("linf",)

    def __init__(self, *, epsilon: float | None = None, budget: int | None = None, n_samples: int = 50,
                 sigma: float = 0.001, step_size: float = 0.01, norm: str = "linf", targeted: bool = False,
                 seed: int = 0, batch_size: int = 1000) -> None:
        super().__init__(norm=norm, targeted=targeted, budget=budget, epsilon=epsilon, seed=seed,
                         batch_size=batch_size)
        if epsilon is None:
            raise ValueError("nes needs epsilon (the L-inf radius)")
        if budget is None:
            raise ValueError("nes needs a query budget per image (budget=...)")
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        if sigma <= 0 or step_size <= 0:
            raise ValueError(f"sigma and step_size must be positive, got {sigma} and {step_size}")
        self.n_samples = n_samples
        self.sigma = sigma
        self.step_size = step_size

    def _objective(self, p: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        logp = log_probs(p).gather(1, goal.view(-1, 1)).squeeze(1)
        return logp if targeted else -logp

    def run(self, view: SoftLabelView, gen: torch.Generator, starts: Starts | None) -> torch.Tensor:
        assert self.epsilon is not None
        dev, q = view.device, self.n_samples
        goal = view.target if view.target is not None else view.y0
        lo, hi = (view.x0 - self.epsilon).clamp(0, 1), (view.x0 + self.epsilon).clamp(0, 1)
        x = view.x0.clone()
        stopped = torch.zeros(view.n, dtype=torch.bool, device=dev)  # met the goal, or out of queries
        it = 0
        while True:
            idx = torch.nonzero(~stopped & (view.remaining() >= 1)).flatten()
            if idx.numel() == 0:
                break
            pred = view.probs(x[idx], idx).argmax(1)
            ok = pred == goal[idx] if view.targeted else pred != goal[idx]
            poor = view.remaining()[idx] < 2 * q
            stopped[idx[ok | poor]] = True
            idx = idx[~(ok | poor)]
            if idx.numel() == 0:
                break
            it += 1
            u = torch.randn((idx.numel(), q, *x.shape[1:]), generator=gen, device=dev)
            xi = x[idx].unsqueeze(1)
            probes = torch.cat([xi + self.sigma * u, xi - self.sigma * u], dim=1).flatten(0, 1)
            owner = idx.repeat_interleave(2 * q)
            f = self._objective(view.probs(probes, owner), goal[owner], view.targeted).view(idx.numel(), 2 * q)
            diff = (f[:, :q] - f[:, q:]).view(idx.numel(), q, *([1] * (x.dim() - 1)))
            grad = (diff * u).sum(1) / (2 * q * self.sigma)
            x[idx] = torch.minimum(torch.maximum(x[idx] + self.step_size * grad.sign(), lo[idx]), hi[idx])
            if it % 10 == 0:
                logger.debug("nes: iteration %d, %d images still running", it, idx.numel())
        return x
