"""SVM-OPT (thesis 2.4.3, Algorithm 5): Sign-OPT's queries, a better gradient estimate from the same signs.

Given unit directions ``u_q`` and the one-query signs ``y_q`` of g's directional derivative along them, the
gradient estimate is the hard-margin SVM solution (2.19)

    min_z  z'z   s.t.  y_q z'u_q >= 1   for q = 1..Q,

solved in its dual (non-negative quadratic program ``max_a sum(a) - a'Ka/2``, ``K_qr = y_q y_r u_q'u_r``) by
projected gradient ascent, batched over images; ``z = sum_q a_q y_q u_q``.

    attack = SVMOPT(budget=4000)
    result = attack(model, x, y)

Args: ``q`` (200), ``svm_iters`` dual ascent steps (100), and those of :class:`SignOPT`.

Deviations from the paper: the constraints are ``y_q z'u_q >= 1`` (the hard-margin SVM the text describes;
(2.19) as printed reads ``z'u_q >= y_q``); the solution is divided by ``Q`` so that, for orthogonal ``u_q``
(where the SVM solution is ``sum_q y_q u_q``), the estimate equals Sign-OPT's and the same step sizes apply.
"""

from __future__ import annotations

import torch

from nlprobust.vision.attacks.sign_opt import SignOPT
from nlprobust.vision.oracle import HardLabelView

__all__ = ["SVMOPT", "svm_direction"]


def svm_direction(u: torch.Tensor, sign: torch.Tensor, *, iters: int = 100) -> torch.Tensor:
    """Hard-margin SVM weight vector through the origin for samples ``u`` (k x Q x d) with labels ``sign``
    (k x Q, +-1), batched over k; the dual is solved by projected gradient ascent with step 1/L."""
    yu = sign.unsqueeze(-1) * u
    kmat = yu @ yu.transpose(1, 2)  # k x Q x Q
    lip = torch.linalg.matrix_norm(kmat, ord=2).clamp_min(1e-12)  # largest eigenvalue
    a = torch.zeros(sign.shape, device=u.device, dtype=u.dtype)
    for _ in range(iters):
        grad = 1 - (kmat @ a.unsqueeze(-1)).squeeze(-1)
        a = (a + grad / lip.unsqueeze(-1)).clamp_min(0)
    return (a.unsqueeze(-1) * yu).sum(1)


class SVMOPT(SignOPT):
    name = "svm-opt"

    def __init__(self, *, svm_iters: int = 100, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.svm_iters = svm_iters

    def _gradient(self, view: HardLabelView, idx: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
                  beta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        u, sign = self._signs(view, idx, theta, g, beta, gen)
        z = svm_direction(u.flatten(2), sign, iters=self.svm_iters) / self.q
        return z.view(theta.shape)
