"""Robust-training defenses of thesis chapters 4 to 6, as batch losses for :func:`nlprobust.vision.train.
train_classifier` (``loss_fn(model, x, y, index) -> scalar``).

========  =========================================  =====================================  ===========
name      method                                      file                                   model BN
========  =========================================  =====================================  ===========
natural   cross-entropy                               (here)                                 any
madry     PGD adversarial training (4.1)              :mod:`.adversarial`                    any
trades    TRADES (baseline of ch. 4 and 5)            :mod:`.trades`                         any
cat       CAT, Algorithm 8 (4.2)                      :mod:`.cat`                            any
sprout    SPROUT, Algorithm 9 (5.3)                   :mod:`.sprout`                         any
robmask   RobMask, Algorithm 10 (6.3)                 :mod:`.robmask`                        ``robmask``
advprop   AdvProp auxiliary BN (baseline of ch. 6)    :mod:`.robmask`                        ``dual``
========  =========================================  =====================================  ===========

The adversarial-masking study (Tables 6.1, 6.2) is in :mod:`.masking` (:func:`finetune_bn_only`,
:func:`interpolate_bn`).

    defense = build_defense("cat", eps_max=0.3, c=3.0, eta=0.01, n_train=len(train))
    model_cfg = defense.model_config(VisionModelConfig(arch="cnn", dataset="mnist"))
    train_classifier(model_cfg, train, test, out, tcfg, loss_fn=defense.loss_fn, method=defense.name)

Every training-time attack is batched and runs on the batch's device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nlprobust.vision.defenses.adversarial import MadryConfig, MadryLoss, model_mode, pgd_linf
from nlprobust.vision.defenses.cat import CATConfig, CATLoss
from nlprobust.vision.defenses.masking import bn_parameters, finetune_bn_only, interpolate_bn
from nlprobust.vision.defenses.robmask import (
    AdvPropConfig,
    AdvPropLoss,
    DualBatchNorm2d,
    RobMaskBatchNorm2d,
    RobMaskConfig,
    RobMaskLoss,
    bn_branch,
    bn_epsilon,
    convert_batchnorm,
    encode_epsilon,
    set_bn_branch,
    set_bn_epsilon,
)
from nlprobust.vision.defenses.sprout import SproutConfig, SproutLoss
from nlprobust.vision.defenses.trades import TradesConfig, TradesLoss
from nlprobust.vision.models import VisionModelConfig
from nlprobust.vision.train import LossFn

__all__ = ["DEFENSES", "DEFENSE_CONFIGS", "Defense", "LossFn", "build_defense", "defense_config", "register",
           "NaturalConfig", "NaturalLoss", "MadryConfig", "MadryLoss", "TradesConfig", "TradesLoss", "CATConfig",
           "CATLoss", "SproutConfig", "SproutLoss", "RobMaskConfig", "RobMaskLoss", "AdvPropConfig", "AdvPropLoss",
           "RobMaskBatchNorm2d", "DualBatchNorm2d", "convert_batchnorm", "set_bn_epsilon", "bn_epsilon",
           "set_bn_branch", "bn_branch", "encode_epsilon", "finetune_bn_only", "interpolate_bn", "bn_parameters",
           "pgd_linf", "model_mode"]


@dataclass(frozen=True, kw_only=True)
class NaturalConfig:
    """Natural training has no hyperparameter of its own."""


class NaturalLoss:
    """Plain cross-entropy (the thesis's "Natural" rows)."""

    def __init__(self, config: NaturalConfig | None = None) -> None:
        self.config = config or NaturalConfig()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)


@dataclass(frozen=True)
class Defense:
    """A built defense: its batch loss, its config, and the batch-norm layers its model needs.

    Attributes:
        name: registry name.
        loss_fn: the ``LossFn`` to pass to ``train_classifier`` (stateful for CAT and SPROUT: keep the object).
        config: the resolved hyperparameters (a frozen dataclass).
        bn: ``VisionModelConfig.bn`` the model needs (``"standard"``: any model).
    """

    name: str
    loss_fn: LossFn
    config: Any
    bn: str = "standard"

    def model_config(self, base: VisionModelConfig) -> VisionModelConfig:
        """``base`` with the batch-norm kind this defense needs (RobMask: also its rank and ``eps_max``)."""
        if self.bn == "standard":
            return base
        extra: dict[str, Any] = {}
        if self.bn == "robmask":
            extra = {"bn_rank": self.config.rank, "bn_eps_max": self.config.eps_max}
        return replace(base, batchnorm=True, bn=self.bn, **extra)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Convert ``model``'s plain ``BatchNorm2d`` layers if this defense needs others (in place; returns it).
        A model already holding the right layers (built from :meth:`model_config`) is returned unchanged."""
        if self.bn == "robmask" and not any(isinstance(m, RobMaskBatchNorm2d) for m in model.modules()):
            return convert_batchnorm(model, "robmask", rank=self.config.rank, eps_max=self.config.eps_max)
        if self.bn == "dual" and not any(isinstance(m, DualBatchNorm2d) for m in model.modules()):
            return convert_batchnorm(model, "dual")
        return model


#: name -> factory ``(**hyperparameters) -> Defense``.
DEFENSES: dict[str, Callable[..., Defense]] = {}
#: name -> config dataclass.
DEFENSE_CONFIGS: dict[str, type] = {}


def register(name: str, config_cls: type, make_loss: Callable[..., LossFn], *, bn: str = "standard",
             loss_kwargs: tuple[str, ...] = ()) -> None:
    """Register defense ``name``: ``make_loss(config, **loss_kwargs)`` builds its ``LossFn`` from a ``config_cls``
    instance; ``loss_kwargs`` names keyword arguments that go to the loss, not the config (CAT's ``n_train``).
    Raises ``ValueError`` for a name already registered."""
    if name in DEFENSES:
        raise ValueError(f"defense {name!r} is already registered")

    def factory(**hyper: Any) -> Defense:
        extra = {k: hyper.pop(k) for k in list(hyper) if k in loss_kwargs}
        cfg = defense_config(name, **hyper)
        return Defense(name=name, loss_fn=make_loss(cfg, **extra), config=cfg, bn=bn)

    factory.__doc__ = f"Build the {name!r} defense from keyword hyperparameters of {config_cls.__name__}."
    DEFENSE_CONFIGS[name] = config_cls
    DEFENSES[name] = factory


def defense_config(name: str, **hyper: Any) -> Any:
    """The config dataclass of defense ``name`` with ``hyper`` overriding its (thesis) defaults."""
    if name not in DEFENSE_CONFIGS:
        raise ValueError(f"unknown defense {name!r}; expected one of {sorted(DEFENSE_CONFIGS)}")
    cls = DEFENSE_CONFIGS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hyper) - known)
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown} for defense {name!r}; expected some of {sorted(known)}")
    return cls(**hyper)


def build_defense(name: str, **hyper: Any) -> Defense:
    """``DEFENSES[name](**hyper)`` with an error naming the known defenses."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; expected one of {sorted(DEFENSES)}")
    return DEFENSES[name](**hyper)


register("natural", NaturalConfig, NaturalLoss)
register("madry", MadryConfig, MadryLoss)
register("trades", TradesConfig, TradesLoss)
register("cat", CATConfig, CATLoss, loss_kwargs=("n_train",))
register("sprout", SproutConfig, SproutLoss)
register("robmask", RobMaskConfig, RobMaskLoss, bn="robmask")
register("advprop", AdvPropConfig, AdvPropLoss, bn="dual")
