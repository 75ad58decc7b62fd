"""The adversarial-masking study of thesis chapter 6 (section 6.2, Tables 6.1 and 6.2): batch normalisation's
rescaling, followed by ReLU, acts as a mask that trades clean accuracy for robustness.

- Table 6.1: fine-tune only the BN parameters of a trained model, with the other training method (adversarial
  fine-tuning of a standard model, standard fine-tuning of an adversarially trained one);
  :func:`finetune_bn_only` freezes everything else, the training itself goes through ``train_classifier(...,
  model=model)``.
- Table 6.2: mix the BN parameters of the two models, ``(1 - p) A + p B``: :func:`interpolate_bn`.

    bn_params = finetune_bn_only(adv_model)              # everything but BN frozen
    train_classifier(cfg, train, test, out, tcfg, model=adv_model, method="adv+std-bn")
    for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        mixed = interpolate_bn(finetuned, adv_original, p)    # p = 1: the adversarially trained BN (thesis's p)
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

__all__ = ["BN_TYPES", "is_batchnorm", "bn_parameters", "finetune_bn_only", "interpolate_bn"]

log = logging.getLogger(__name__)

#: Module types holding batch-norm parameters (RobMask layers subclass ``BatchNorm2d``; AdvProp's dual layers hold two).
BN_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, BN_TYPES)


def bn_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model``'s batch-norm layers (affine ``gamma``/``beta``, or RobMask's bases)."""
    return [p for m in model.modules() if is_batchnorm(m) for p in m.parameters(recurse=False)]


def finetune_bn_only(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter of ``model`` but the batch-norm ones (``requires_grad``), for the BN fine-tuning of
    thesis Table 6.1; returns the trainable (BN) parameters.

    ``train_classifier(..., model=model)`` then changes only these (the optimisers skip parameters without a
    gradient, weight decay included) and the BN running statistics, which the thesis also lets adapt (Figure
    6.1: they stay almost the same).

    Raises ``ValueError`` if the model has no batch-norm parameter.

    Example:
        >>> trainable = finetune_bn_only(model)
        >>> sum(p.numel() for p in trainable) < sum(p.numel() for p in model.parameters())
        True
    """
    keep = {id(p) for p in bn_parameters(model)}
    if not keep:
        raise ValueError(f"{type(model).__name__} has no batch-norm parameters to fine-tune (batchnorm=True)")
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return [p for p in model.parameters() if id(p) in keep]


@torch.no_grad()
def interpolate_bn(model_a: nn.Module, model_b: nn.Module, p: float, *, stats: bool = True) -> nn.Module:
    """A copy of ``model_a`` whose batch-norm parameters (and, with ``stats``, running mean and variance) are
    ``(1 - p) * A + p * B`` (thesis 6.2.2, Table 6.2).

    The thesis writes ``gamma^ = p gamma + (1 - p) gamma'``: pass its ``(gamma', beta')`` model as ``model_a`` and
    its ``(gamma, beta)`` model as ``model_b`` to use its ``p`` (in Table 6.2, ``p = 1`` is the model before BN
    fine-tuning). All other weights and buffers come from ``model_a``; ``num_batches_tracked`` too.

    Args:
        model_a, model_b: the same architecture (same module types, parameter names and shapes); their non-BN
            weights should be equal (BN-only fine-tuning) -- a difference is logged, not an error.
        p: mixing weight in [0, 1]; 0 reproduces ``model_a``, 1 gives ``model_a`` with ``model_b``'s BN layers.
        stats: also mix the running statistics (default True; False keeps ``model_a``'s).

    Returns:
        A new model (``model_a`` and ``model_b`` are not changed), in ``model_a``'s mode.

    Raises:
        ValueError: ``p`` outside [0, 1], or the architectures differ.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    if list(mods_a) != list(mods_b) or any(type(mods_a[k]) is not type(mods_b[k]) for k in mods_a):
        raise ValueError("interpolate_bn needs two models of the same architecture (module names and types differ)")
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    if list(state_a) != list(state_b) or any(state_a[k].shape != state_b[k].shape for k in state_a):
        raise ValueError("interpolate_bn needs two models of the same architecture (parameter names or shapes "
                         "differ)")
    out = copy.deepcopy(model_a)
    bn_keys: set[str] = set()
    for name, module in out.named_modules():
        if not is_batchnorm(module):
            continue
        other = mods_b[name]
        prefix = f"{name}." if name else ""
        for pname, param in module.named_parameters(recurse=False):
            param.copy_((1 - p) * param + p * getattr(other, pname).to(param.device))
            bn_keys.add(prefix + pname)
        if stats:
            for bname in ("running_mean", "running_var"):
                buf = getattr(module, bname, None)
                if isinstance(buf, torch.Tensor):
                    buf.copy_((1 - p) * buf + p * getattr(other, bname).to(buf.device))
        for bname, _ in module.named_buffers(recurse=False):
            bn_keys.add(prefix + bname)
    differing = [k for k in state_a
                 if k not in bn_keys and not torch.equal(state_a[k], state_b[k].to(state_a[k].device))]
    if differing:
        log.warning("interpolate_bn: %d non-batch-norm tensors differ between the models (kept from model_a), "
                    "e.g. %s", len(differing), differing[:3])
    return out
