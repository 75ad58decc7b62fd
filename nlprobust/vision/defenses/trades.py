"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, "Theoretically Principled Trade-off between Robustness and
Accuracy", ICML 2019): the thesis's main adversarial-training baseline (Tables 4.2, 4.3, 5.6; Table 5.1 row).

    loss_fn = TradesLoss(TradesConfig(beta=6.0))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nlprobust.vision.defenses.adversarial import check_pgd_steps, model_mode, pgd_linf

__all__ = ["TradesConfig", "TradesLoss", "kl_rows"]


def kl_rows(p_log: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-row ``KL(p || softmax(q_logits))`` from ``p``'s log-probabilities (``N x K`` -> ``N``)."""
    return (p_log.exp() * (p_log - F.log_softmax(q_logits, dim=1))).sum(1)


@dataclass(frozen=True, kw_only=True)
class TradesConfig:
    """Hyperparameters of :class:`TradesLoss`.

    Args:
        beta: weight of the robustness (KL) term, ``1 / lambda`` of the paper (default 6.0, Zhang et al.'s CIFAR-10
            and MNIST setting; the thesis trains TRADES "with the official implementation", 4.2.4.1).
        epsilon: L-inf radius (default 8/255, thesis 4.2.4.1).
        steps: attack steps (default 10, thesis 4.2.4.1).
        step_size: ``None`` (default) = ``epsilon / 4`` (the official code's 0.007 for 0.031).
        init_std: standard deviation of the Gaussian start of the attack (default 0.001, official code).
    """

    beta: float = 6.0
    epsilon: float = 8 / 255
    steps: int = 10
    step_size: float | None = None
    init_std: float = 0.001

    def __post_init__(self) -> None:
        if self.beta < 0 or self.epsilon < 0 or self.init_std < 0:
            raise ValueError(f"beta, epsilon and init_std must be non-negative (got {self.beta}, {self.epsilon}, "
                             f"{self.init_std})")
        check_pgd_steps(self.steps, self.step_size)

    @property
    def step(self) -> float:
        return self.step_size if self.step_size is not None else self.epsilon / 4


class TradesLoss:
    """TRADES: ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, ``x_adv`` maximising the KL term in the ball.

    The adversary starts at ``x + init_std * N(0, I)`` and takes ``steps`` signed-gradient steps of the per-example
    KL divergence between the clean and the perturbed softmax (model in eval mode, clean probabilities fixed);
    the training loss is then the natural cross-entropy plus ``beta`` times the batch-mean KL divergence, with
    gradients through both the clean and the adversarial forward passes (train mode).

    Args:
        config: :class:`TradesConfig` (default ``TradesConfig()``).

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``index`` are ``N``; returns a scalar.

    Example:
        >>> loss = TradesLoss(TradesConfig(epsilon=0.3, beta=6.0))(model, x, y, index)

    Deviations from the paper:
        - None in the loss. The KL direction is the official code's ``KLDivLoss(log_softmax(f(x_adv)),
          softmax(f(x)))`` = ``KL(f(x) || f(x_adv))``; the paper writes the surrogate as ``L(f(X), f(X'))``.
        - The last attack step is not re-checked or kept as "best": the final iterate is used (as in the code).
    """

    def __init__(self, config: TradesConfig | None = None) -> None:
        self.config = config or TradesConfig()

    def attack(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Adversarial examples maximising the KL divergence from the clean prediction (eval mode)."""
        cfg = self.config
        with model_mode(model, False):
            with torch.no_grad():
                p_log = F.log_softmax(model(x), dim=1)
            start = x + cfg.init_std * torch.randn_like(x)
            return pgd_linf(model, x, lambda z: kl_rows(p_log, z), epsilon=cfg.epsilon, step_size=cfg.step,
                            steps=cfg.steps, x_init=start)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x_adv = self.attack(model, x)
        logits = model(x)
        logits_adv = model(x_adv)
        natural = F.cross_entropy(logits, y)
        robust = kl_rows(F.log_softmax(logits, dim=1), logits_adv).mean()
        return natural + self.config.beta * robust
