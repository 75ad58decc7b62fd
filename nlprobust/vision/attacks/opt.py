"""OPT-attack (Cheng et al., ICLR 2019; thesis 2.4.2, Algorithms 2-3): hard-label attack by zeroth-order
optimisation of the boundary distance g(theta).

Each iteration estimates the gradient by randomised gradient-free differences (2.16) averaged over ``q``
Gaussian directions, ``(g(theta + beta u) - g(theta)) / beta * u``, where every g value is found by the local
search of Algorithm 2 (all ``q`` searches of all images run in lock step, one batched query per round); a
backtracking line search picks the step. The initial direction is the best of 100 random ones.

    attack = OPTAttack(budget=14000)
    result = attack(model, x, y, checkpoints=[4000, 8000, 14000])

Args: ``q`` directions per estimate (20, thesis), ``beta`` smoothing radius (0.005, thesis), ``alpha`` initial
step (0.2), and the shared options of :class:`HardLabelAttack`. Works on any hard-label model, including a
LightGBM booster (:class:`nlprobust.vision.oracle.BoosterModel`).

Deviations from the published code (attackbox): thesis values ``q = 20``, ``beta = 0.005`` (attackbox: 10 and
0.001); an image converges when beta falls below ``beta_min = 5e-7``; exact budget; batched searches; L-inf by
direct normalisation; directions sampled for the gradient estimate are not kept even when their g is lower
(the distortion curve still records them); the upward search of a moved direction gives up only past
``max_lambda = 1000`` (queries past the [0, 1] box change little: a lower cap would save queries).
"""

from __future__ import annotations

import torch

from nlprobust.vision.attacks.hardlabel import HardLabelAttack, _expand, boundary_search, unit
from nlprobust.vision.oracle import HardLabelView

__all__ = ["OPTAttack"]


class OPTAttack(HardLabelAttack):
    name = "opt"

    def __init__(self, *, q: int = 20, beta: float = 0.005, beta_min: float = 5e-7, **kwargs: object) -> None:
        super().__init__(beta=beta, beta_min=beta_min, **kwargs)  # type: ignore[arg-type]
        if q < 1:
            raise ValueError(f"q must be at least 1, got {q}")
        self.q = q

    def _queries_per_step(self) -> int:
        return 2 * self.q

    def _gradient(self, view: HardLabelView, idx: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
                  beta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        k = idx.numel()
        u = torch.randn((k, self.q, *theta.shape[1:]), generator=gen, device=view.device)
        u = unit(u.flatten(0, 1), "l2").view_as(u)
        b = beta.repeat_interleave(self.q)
        moved = unit((theta.unsqueeze(1) + _expand(beta, u) * u).flatten(0, 1), self.norm)
        g1 = boundary_search(view, idx.repeat_interleave(self.q), moved, v=g.repeat_interleave(self.q), tol=b / 500)
        diff = (g1 - g.repeat_interleave(self.q)) / b
        diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))  # a search cut short adds nothing
        return (diff.view(k, self.q, *([1] * (u.dim() - 2))) * u).mean(1)
