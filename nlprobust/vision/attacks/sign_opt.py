"""Sign-OPT (Cheng et al., ICLR 2020; thesis 2.4.3, Algorithm 4): hard-label attack with a one-query sign oracle.

The sign of the directional derivative of the boundary distance g along a random ``u`` costs one query (2.17):
move the current boundary point ``x0 + g(theta) theta`` to the direction ``theta + beta u``; if that point
still meets the goal, ``u`` lowers g. The gradient estimate is ``mean_q sign_q u_q`` over ``Q`` directions
(2.18); a backtracking line search then picks the step.

    attack = SignOPT(budget=4000)                       # untargeted L2, thesis defaults
    result = attack(model, x, y, checkpoints=[1000, 2000, 4000])
    result.distance, result.curve                      # final L2; best L2 within each checkpoint

Args: ``q`` sign queries per gradient estimate (200), ``alpha`` initial step (0.2), ``beta`` smoothing radius
(0.001), plus the shared options of :class:`HardLabelAttack` and :class:`Attack`. Inputs: N x C x H x W in [0, 1].

Deviations from the published code (attackbox):
- the Q sign queries of an estimate are one batched query, for all images at once, and every search runs for all
  images in lock step (attackbox: one image, one query at a time);
- each query is counted once, in the model view, and the budget is exact: an image stops when it cannot pay for
  its next step (attackbox counts some queries twice, skips others and overshoots its budget);
- a line-search candidate that misses the goal at the current distance is rejected after one query instead of
  searching for its own boundary distance (only "is it lower" matters);
- L-inf uses the direct formulation (directions normalised by their largest coordinate).
"""

from __future__ import annotations

import torch

from nlprobust.vision.attacks.hardlabel import HardLabelAttack, _expand, unit
from nlprobust.vision.oracle import HardLabelView

__all__ = ["SignOPT"]


class SignOPT(HardLabelAttack):
    name = "sign-opt"

    def __init__(self, *, q: int = 200, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if q < 1:
            raise ValueError(f"q must be at least 1, got {q}")
        self.q = q

    def _queries_per_step(self) -> int:
        return min(self.q, 20)  # near the end of the budget an estimate uses the queries that are left

    def _signs(self, view: HardLabelView, idx: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
               beta: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random unit directions ``u`` (k x Q x ...) and the one-query signs of g's derivative along them."""
        k = idx.numel()
        u = torch.randn((k, self.q, *theta.shape[1:]), generator=gen, device=view.device)
        u = unit(u.flatten(0, 1), "l2").view_as(u)
        moved = unit((theta.unsqueeze(1) + _expand(beta, u) * u).flatten(0, 1), self.norm)
        points = (view.x0[idx].repeat_interleave(self.q, 0) + _expand(g.repeat_interleave(self.q), moved) * moved)
        # an example with fewer than q queries left uses its first `remaining` directions only
        allowed = (torch.arange(self.q, device=view.device).view(1, -1)
                   < view.remaining()[idx].clamp(max=self.q).view(-1, 1)).flatten()
        rows = torch.nonzero(allowed).flatten()
        adv = torch.zeros(k * self.q, dtype=torch.bool, device=view.device)
        adv[rows] = view.is_adv(points[rows].clamp(0, 1), idx.repeat_interleave(self.q)[rows])
        sign = torch.where(adv, -1.0, 1.0)  # still adversarial at the old distance: u lowers g
        sign = torch.where(allowed, sign, torch.zeros_like(sign)).view(k, self.q)
        return u, sign

    def _gradient(self, view: HardLabelView, idx: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
                  beta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        u, sign = self._signs(view, idx, theta, g, beta, gen)
        return (sign.view(*sign.shape, *([1] * (u.dim() - 2))) * u).mean(1)
