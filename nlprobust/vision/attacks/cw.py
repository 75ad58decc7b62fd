"""Carlini & Wagner attacks (Carlini and Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P
2017): the L2 attack (:class:`CWL2`) and the L-inf margin-loss PGD commonly called C&W L-inf (:class:`CWLinf`).

    result = CWL2()(model, x, y)                              # smallest-L2 adversarial examples
    result = CWLinf(epsilon=0.3)(model, x, y, target=t)       # L-inf bounded, targeted
"""

from __future__ import annotations

import logging

import torch

from nlprobust.vision.attacks.base import Attack, Starts
from nlprobust.vision.attacks.pgd import PGD, margin
from nlprobust.vision.oracle import WhiteBoxView

__all__ = ["CWL2", "CWLinf"]

logger = logging.getLogger(__name__)


class CWL2(Attack):
    """Carlini-Wagner L2 attack, white-box: minimal-L2 adversarial examples.

    With ``x = (tanh(w) + 1) / 2`` (always in [0, 1]) it minimises ``||x - x0||_2^2 + c * f(x)`` over ``w`` by
    Adam, where ``f(x) = max(z_y - max_{i != y} z_i + kappa, 0)`` on the logits ``z`` (targeted:
    ``max(max_{i != t} z_i - z_t + kappa, 0)``). A binary search over ``c`` runs per image: ``c`` starts at
    ``initial_const``, is multiplied by 10 while no upper bound is known and bisected afterwards. Every query
    meeting the goal (with margin ``kappa``) is a candidate; the attack returns the smallest-L2 candidate per
    image, or ``x0`` when there is none. All images are optimised together, each with its own ``c``, Adam state
    and early abort. Queries: at most ``binary_search_steps * max_iterations`` per image.

    Args:
        confidence: ``kappa``, the margin the adversarial logit must win by (default 0).
        learning_rate: Adam step size (default 0.01).
        max_iterations: Adam steps per binary-search step (default 1000).
        binary_search_steps: searches over ``c`` (default 9); with 10 or more the last one uses the upper bound.
        initial_const: first ``c`` (default 1e-3).
        abort_early: stop an image's current search step when its loss has not dropped by 0.01% over
            ``max_iterations // 10`` iterations (default True).
        norm: ``"l2"`` only.
        targeted, budget, seed, batch_size: see :class:`~nlprobust.vision.attacks.base.Attack`. ``epsilon``,
            when given, is only the success threshold of the result (the attack itself is unbounded). With a
            budget, an image stops when it has no query left. ``seed`` is unused: the attack is deterministic.

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``target`` are ``N``; the result holds ``N`` images.

    Example:
        >>> result = CWL2(max_iterations=200, binary_search_steps=6)(model, x, y)
        >>> float(result.distance[result.success].median())

    Deviations from the paper:
        - Early abort is decided per image on its own loss (the released code checks the loss summed over the
          batch), so one image's progress never keeps another's search step running.
        - Adam is written out per image (the released code uses TensorFlow's Adam over the whole batch); the
          update is the same.
    """

    name = "cw-l2"
    threat = "whitebox"
    norms = ("l2",)

    def __init__(self, *, confidence: float = 0.0, learning_rate: float = 0.01, max_iterations: int = 1000,
                 binary_search_steps: int = 9, initial_const: float = 1e-3, abort_early: bool = True,
                 norm: str = "l2", targeted: bool = False, budget: int | None = None, epsilon: float | None = None,
                 seed: int = 0, batch_size: int = 1000) -> None:
        super().__init__(norm=norm, targeted=targeted, budget=budget, epsilon=epsilon, seed=seed,
                         batch_size=batch_size)
        if confidence < 0:
            raise ValueError(f"confidence must be non-negative, got {confidence}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if max_iterations < 1 or binary_search_steps < 1:
            raise ValueError(f"max_iterations and binary_search_steps must be at least 1, got {max_iterations} "
                             f"and {binary_search_steps}")
        if initial_const <= 0:
            raise ValueError(f"initial_const must be positive, got {initial_const}")
        self.confidence = confidence
        self.learning_rate = learning_rate
        self.max_iterations = max_iterations
        self.binary_search_steps = binary_search_steps
        self.initial_const = initial_const
        self.abort_early = abort_early

    def run(self, view: WhiteBoxView, gen: torch.Generator, starts: Starts | None) -> torch.Tensor:
        n, dev, kappa = view.n, view.device, self.confidence
        goal = view.target if view.target is not None else view.y0
        sign = -1.0 if view.targeted else 1.0  # success with margin kappa: argmax of z + sign * kappa * onehot
        w0 = torch.atanh((2 * view.x0 - 1) * 0.999999)
        x0t = (torch.tanh(w0) + 1) / 2  # the original as the tanh reparametrisation sees it
        lower = torch.zeros(n, device=dev)
        upper = torch.full((n,), 1e10, device=dev)
        const = torch.full((n,), self.initial_const, device=dev)
        best_l2 = torch.full((n,), float("inf"), device=dev)
        x_best = view.x0.clone()
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        check_every = max(self.max_iterations // 10, 1)
        for outer in range(self.binary_search_steps):
            if self.binary_search_steps >= 10 and outer == self.binary_search_steps - 1:
                const = torch.where(upper < 1e9, upper, const)
            mod = torch.zeros_like(w0)
            m, v = torch.zeros_like(w0), torch.zeros_like(w0)
            active = torch.ones(n, dtype=torch.bool, device=dev)
            prev = torch.full((n,), float("inf"), device=dev)
            found = torch.zeros(n, dtype=torch.bool, device=dev)
            for it in range(self.max_iterations):
                active &= view.remaining() >= 1
                sel = torch.nonzero(active).flatten()
                if sel.numel() == 0:
                    break
                ms = mod[sel].requires_grad_(True)
                xs = (torch.tanh(ms + w0[sel]) + 1) / 2
                z = view.logits(xs, sel)
                l2 = (xs - x0t[sel]).flatten(1).pow(2).sum(1)
                f = (kappa - margin(z, goal[sel], view.targeted)).clamp_min(0)
                loss = l2 + const[sel] * f
                (grad,) = torch.autograd.grad(loss.sum(), ms)
                with torch.no_grad():
                    zk = z.detach().clone()
                    zk.scatter_add_(1, goal[sel].view(-1, 1), torch.full((sel.numel(), 1), sign * kappa, device=dev))
                    pred = zk.argmax(1)
                    ok = pred == goal[sel] if view.targeted else pred != goal[sel]
                    found[sel[ok]] = True
                    better = ok & (l2 < best_l2[sel])
                    best_l2[sel[better]] = l2[better].detach()
                    x_best[sel[better]] = xs.detach()[better]
                    t = it + 1  # every active image has taken the same number of steps in this search step
                    m[sel] = beta1 * m[sel] + (1 - beta1) * grad
                    v[sel] = beta2 * v[sel] + (1 - beta2) * grad * grad
                    mhat = m[sel] / (1 - beta1 ** t)
                    vhat = v[sel] / (1 - beta2 ** t)
                    mod[sel] = ms.detach() - self.learning_rate * mhat / (vhat.sqrt() + adam_eps)
                    if self.abort_early and it % check_every == 0:
                        lv = loss.detach()
                        active[sel[lv > prev[sel] * 0.9999]] = False
                        prev[sel] = lv
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
            logger.debug("cw-l2: search step %d, %d of %d images adversarial so far", outer + 1,
                         int(torch.isfinite(best_l2).sum()), n)
        return x_best


class CWLinf(PGD):
    """C&W L-inf, white-box, in its common form: PGD on the Carlini-Wagner margin loss inside the L-inf ball.

    Maximises ``min(margin, kappa)`` where ``margin = max_{i != y} z_i - z_y`` on the logits (targeted:
    ``z_t - max_{i != t} z_i``), by signed-gradient steps projected onto the ``epsilon`` ball and [0, 1], with
    random starts and restarts exactly as :class:`~nlprobust.vision.attacks.pgd.PGD`. Once an image's margin
    exceeds ``kappa`` its gradient vanishes and it stays put.

    Args:
        epsilon: L-inf radius; required.
        confidence: ``kappa``, the margin beyond which the loss is flat (default 0).
        steps: gradient steps per run (default 100).
        step_size: default ``2.5 * epsilon / steps``.
        random_start: start at a uniform random point of the ball (default True).
        restarts: runs per image (default 1).
        norm: ``"linf"`` only.
        targeted, budget, seed, batch_size: see :class:`~nlprobust.vision.attacks.base.Attack`.

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``target`` are ``N``; the result holds ``N`` images.

    Example:
        >>> result = CWLinf(epsilon=0.1, steps=100)(model, x, y)
        >>> float(result.success.float().mean())

    Deviations from the paper:
        - This is the PGD-with-C&W-loss formulation used by most later work (e.g. Madry et al. 2018's "CW"
          adversary), not Carlini and Wagner's original L-inf attack, which minimises
          ``c * f(x) + sum_i max(|delta_i| - tau, 0)`` and shrinks ``tau`` iteratively with no fixed bound.
    """

    name = "cw-linf"
    threat = "whitebox"
    norms = ("linf",)

    def __init__(self, *, epsilon: float | None = None, confidence: float = 0.0, steps: int = 100,
                 step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                 norm: str = "linf", targeted: bool = False, budget: int | None = None, seed: int = 0,
                 batch_size: int = 1000) -> None:
        super().__init__(norm=norm, epsilon=epsilon, steps=steps, step_size=step_size, random_start=random_start,
                         restarts=restarts, loss="cw", targeted=targeted, budget=budget, seed=seed,
                         batch_size=batch_size)
        if confidence < 0:
            raise ValueError(f"confidence must be non-negative, got {confidence}")
        self.confidence = confidence

    def objective(self, z: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
        return margin(z, goal, targeted).clamp_max(self.confidence)

