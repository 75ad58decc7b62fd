"""SPROUT: Self-Progressing Robust Training (Cheng, Chen, Liu, Chang and Das, "Self-Progressing Robust Training",
AAAI 2021; thesis section 5.3, Algorithm 9). Attack-free: no adversarial example is ever computed.

Each batch is moved to a vicinity of the data (thesis 5.3.2) -- Gaussian augmentation ``N(x, Delta^2)``, then
Mixup with ``lambda ~ Beta(a, a)`` -- and its labels are drawn from a Dirichlet distribution whose concentration
mixes the (mixed) label with a learned vector ``beta`` (5.3.1, eq. 5.6). The model minimises the generalised
cross-entropy (5.4) while ``beta`` ascends it (eq. 5.8, min over theta, max over beta), one gradient step each per
batch; ``beta``'s gradient flows through a reparameterised Dirichlet draw (``rsample``, Figurnov et al. 2018 --
the thesis's "(FMM18)").

    loss_fn = SproutLoss(SproutConfig())
    train_classifier(model_cfg, train, test, out, cfg, loss_fn=loss_fn, model=natural_model, method="sprout")
    loss_fn.beta                       # the learned label-correlation parameter (thesis Figure 5.8)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SproutConfig", "SproutLoss", "sprout_vicinity", "generalized_ce"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SproutConfig:
    """Hyperparameters of :class:`SproutLoss`; defaults from thesis 5.3.4.1 ("Implementation details": "we set the
    Beta distribution parameter a = 0.2 ... For Gaussian augmentation, we set Delta = 0.1 ... we set the label
    smoothing parameter alpha = 0.01").

    Args:
        mixup_a: shape ``a`` of ``lambda ~ Beta(a, a)`` (default 0.2); 0 turns Mixup off.
        sigma: Gaussian augmentation standard deviation ``Delta`` in pixel units (default 0.1); 0 turns it off.
        alpha: label-smoothing parameter: concentration ``(1 - alpha) y + alpha beta`` (default 0.01).
        beta_lr: step of the gradient ascent on ``beta`` (``gamma_beta`` of Algorithm 9; not given in the thesis,
            default 0.1 = the models' initial learning rate in the thesis's CIFAR-10 runs).
        beta_init: initial value of every entry of ``beta``; ``None`` (default) draws them uniformly from
            [0.5, 1.5] with ``seed`` (Algorithm 9: "Initial beta: random initialization").
        beta_min: floor keeping ``beta`` a valid (positive) concentration after each ascent step (default 1e-3).
        num_classes: K (default 10).
        seed: seed of ``beta``'s random initialisation (default 0).
    """

    mixup_a: float = 0.2
    sigma: float = 0.1
    alpha: float = 0.01
    beta_lr: float = 0.1
    beta_init: float | None = None
    beta_min: float = 1e-3
    num_classes: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mixup_a < 0 or self.sigma < 0:
            raise ValueError(f"mixup_a and sigma must be non-negative (got {self.mixup_a}, {self.sigma})")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1], got {self.alpha}")
        if self.beta_lr < 0:
            raise ValueError(f"beta_lr must be non-negative, got {self.beta_lr}")
        if self.beta_init is not None and self.beta_init <= 0:
            raise ValueError(f"beta_init must be positive, got {self.beta_init}")
        if self.beta_min <= 0:
            raise ValueError(f"beta_min must be positive, got {self.beta_min}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")


def sprout_vicinity(x: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, *, mixup_a: float, sigma: float,
                    alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw of SPROUT's vicinity function (thesis 5.3.2): ``(x~, y~)`` for a batch.

    ``x~ = lambda N(x_i, Delta^2) + (1 - lambda) N(x_j, Delta^2)`` with ``j`` a random permutation of the batch
    and one ``lambda ~ Beta(a, a)`` per batch; ``y~ ~ Dirichlet((1 - alpha) y_mix + alpha beta)`` with ``y_mix``
    the same mix of one-hot labels, drawn by ``rsample`` so that ``y~`` is differentiable in ``beta``.
    Uses the global random generator, on ``x``'s device.

    Shapes: ``x`` ``N x C x H x W``, ``y`` ``N``, ``beta`` ``K``; returns ``N x C x H x W`` and ``N x K``.
    """
    k = beta.shape[0]
    x_t = x + sigma * torch.randn_like(x) if sigma > 0 else x
    onehot = F.one_hot(y, k).to(x.dtype)
    if mixup_a > 0:
        lam = float(torch.distributions.Beta(mixup_a, mixup_a).sample())
        perm = torch.randperm(len(y), device=x.device)
        x_t = lam * x_t + (1 - lam) * x_t[perm]
        onehot = lam * onehot + (1 - lam) * onehot[perm]
    conc = (1 - alpha) * onehot + alpha * beta.to(x.dtype).unsqueeze(0)
    return x_t, torch.distributions.Dirichlet(conc).rsample()


def generalized_ce(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Eq. 5.4 with ``g = h = identity``: the batch mean of ``-sum_k soft_k log softmax(logits)_k``."""
    return -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()


class SproutLoss:
    """SPROUT (thesis Algorithm 9), a ``LossFn`` that also performs the ascent step on its own ``beta``.

    Per batch: draw ``(x~, y~)`` with :func:`sprout_vicinity` from the current ``beta``, compute
    ``L = generalized_ce(model(x~), y~)``, take ``g_beta = dL/dbeta`` through the reparameterised Dirichlet draw and
    set ``beta <- max(beta + beta_lr * g_beta, beta_min)``; return ``L`` (with the draw detached) for the caller's
    descent step on the model. Both gradients are taken at the same point, as in Algorithm 9.

    Args:
        config: :class:`SproutConfig` (default ``SproutConfig()``).

    Attributes:
        beta: the concentration vector (``K``), on the device of the last batch.
        last_grad: ``g_beta`` of the last batch.

    Shapes: ``x`` is ``N x C x H x W`` in [0, 1], ``y`` and ``index`` are ``N``; returns a scalar.

    Example:
        >>> loss_fn = SproutLoss(SproutConfig(beta_init=1.0))
        >>> loss = loss_fn(model, x, y, index)     # loss_fn.beta has already moved
        >>> loss.backward()

    Deviations from the paper:
        - Algorithm 9 writes ``Dirichlet(alpha Y_mix + (1 - alpha) beta)``; with the thesis's alpha = 0.01 that
          would ignore the labels. We follow the text, Table 5.1 and 5.3.2: ``Dirichlet((1 - alpha) y + alpha
          beta)``.
        - Algorithm 9 writes Gaussian augmentation as ``N(X_B, Delta^2)`` with Delta the "variance" in its input
          list but the standard deviation in 5.3.4.1 (Delta = 0.1): ``sigma`` is the standard deviation. Noisy
          images are not clipped to [0, 1] (the thesis does not clip).
        - ``beta`` is floored at ``beta_min`` after each step so that it stays a valid concentration; the thesis
          does not say how it keeps beta positive. ``beta_lr`` is not given in the thesis.
    """

    def __init__(self, config: SproutConfig | None = None) -> None:
        self.config = config or SproutConfig()
        cfg = self.config
        if cfg.beta_init is not None:
            beta = torch.full((cfg.num_classes,), float(cfg.beta_init))
        else:
            gen = torch.Generator().manual_seed(cfg.seed)
            beta = 0.5 + torch.rand(cfg.num_classes, generator=gen)
        self.beta = beta
        self.last_grad: torch.Tensor | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        beta = self.beta.to(x.device).detach().requires_grad_(True)
        x_t, y_t = sprout_vicinity(x, y, beta, mixup_a=cfg.mixup_a, sigma=cfg.sigma, alpha=cfg.alpha)
        logits = model(x_t)
        if logits.shape[1] != cfg.num_classes:
            raise ValueError(f"the model has {logits.shape[1]} outputs but SproutConfig.num_classes="
                             f"{cfg.num_classes}")
        logp = F.log_softmax(logits, dim=1)
        # the same loss value, split so that beta's gradient does not go through the model and vice versa
        (g_beta,) = torch.autograd.grad(-(y_t * logp.detach()).sum(1).mean(), beta)
        if torch.isfinite(g_beta).all():
            with torch.no_grad():
                self.beta = (beta + cfg.beta_lr * g_beta).clamp_min(cfg.beta_min).detach()
        else:  # a Dirichlet draw at a tiny concentration can underflow; skip that ascent step
            log.warning("SPROUT: non-finite beta gradient, beta step skipped")
            self.beta = beta.detach()
        self.last_grad = g_beta.detach()
        return -(y_t.detach() * logp).sum(1).mean()
