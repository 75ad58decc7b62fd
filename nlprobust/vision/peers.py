"""Third-party hard-label attacks (ART: HopSkipJump, Boundary, SignOPT) measured by our query views.

ART sees a classifier whose scores are the one-hot top-1 label, computed through a
:class:`~nlprobust.vision.oracle.HardLabelView`: the same hard-label access as our attacks, each query counted
in the same place, the same exact budget (a query batch that would exceed it is refused and ends ART's run),
and the same distortion curve (smallest adversarial distortion queried within each checkpoint). ART attacks one
image at a time; its own iteration limits are set high so that the budget ends each run.

Targeted starts differ from ours: our attacks try 100 training images of the target class and keep the best
direction; ART's SignOPT gets 100 such images drawn by another generator, ART's HopSkipJump and Boundary one
(not checked to be classified as the target; ART searches from it).

Needs ``pip install adversarial-robustness-toolbox`` (the ``peers`` extra).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nlprobust.vision.attacks.base import AttackResult, Starts, predict_labels
from nlprobust.vision.oracle import BudgetExceeded, HardLabelView, distance

__all__ = ["ART_ATTACKS", "art_available", "run_art"]

log = logging.getLogger(__name__)
ART_ATTACKS = ("art-hopskipjump", "art-boundary", "art-signopt")


def art_available() -> bool:
    try:
        import art  # noqa: F401
    except ImportError:
        return False
    return True


class _OneHotTopLabel(nn.Module):
    """Scores = one-hot top-1 label of the model, every row a counted query of example ``owner``."""

    def __init__(self, view: HardLabelView, num_classes: int) -> None:
        super().__init__()
        self.view = view
        self.num_classes = num_classes
        self.owner = 0
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)  # ART wants parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lab = self.view.labels(x.float(), torch.full((x.shape[0],), self.owner, dtype=torch.long))
        return nn.functional.one_hot(lab, self.num_classes).float()


def _build(method: str, classifier: Any, *, targeted: bool, budget: int, seed: int) -> Any:
    from art.attacks.evasion import BoundaryAttack, HopSkipJump, SignOPTAttack

    if method == "art-hopskipjump":
        return HopSkipJump(classifier, targeted=targeted, norm=2, max_iter=10_000, max_eval=10_000, init_eval=100,
                           init_size=100, verbose=False)
    if method == "art-boundary":
        return BoundaryAttack(classifier, targeted=targeted, max_iter=1_000_000, num_trial=25, sample_size=20,
                              init_size=100, verbose=False)
    if method == "art-signopt":
        return SignOPTAttack(classifier, targeted=targeted, query_limit=budget, max_iter=1_000_000, k=200,
                             alpha=0.2, beta=0.001, num_trial=100, verbose=False)
    raise ValueError(f"unknown ART attack {method!r}; expected one of {ART_ATTACKS}")


def run_art(method: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, budget: int,
            target: torch.Tensor | None = None, starts: Starts | None = None, checkpoints: Sequence[int] = (),
            seed: int = 0, num_classes: int = 10) -> AttackResult:
    """Run ART's ``method`` on each image with a hard-label view of ``model`` (L2, exact ``budget``)."""
    if not art_available():
        raise ImportError("ART is not installed: pip install adversarial-robustness-toolbox (extra 'peers')")
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    view = HardLabelView(model, x, y, target=target, budget=budget, norm="l2", checkpoints=checkpoints)
    wrapped = _OneHotTopLabel(view, num_classes)
    clf = PyTorchClassifier(model=wrapped, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=num_classes, clip_values=(0.0, 1.0), device_type="cpu")
    attack = _build(method, clf, targeted=target is not None, budget=budget, seed=seed)
    x_adv = x.clone()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for i in range(x.shape[0]):
        np.random.seed(seed + i)  # ART draws from numpy's global generator
        wrapped.owner = i
        xi = x[i:i + 1].numpy()
        kwargs: dict[str, Any] = {}
        if target is not None:
            if starts is None:
                raise ValueError("targeted ART attacks need starting images of the target class (starts=)")
            cls = torch.nonzero(starts.y == int(target[i])).flatten()
            pick = cls[torch.randperm(cls.numel(), generator=gen)[:100]]
            if method == "art-signopt":
                kwargs["x_init"] = starts.x[pick].numpy()
            else:
                kwargs["x_adv_init"] = starts.x[pick[:1]].numpy()
            yi = np.eye(num_classes, dtype=np.float32)[[int(target[i])]]
        else:
            yi = np.eye(num_classes, dtype=np.float32)[[int(y[i])]]
        try:
            out = attack.generate(xi, yi, **kwargs)
            x_adv[i] = torch.from_numpy(np.asarray(out, dtype=np.float32))[0]
        except BudgetExceeded:
            pass  # the budget ended ART's run before it returned: its best queried image stands for it
        except Exception as exc:  # ART gives up on some images (no initial adversarial found)
            log.warning("%s on image %d stopped: %s: %s", method, i, type(exc).__name__, exc)
    # ART's answer, or the best adversarial image it queried when that is closer (or ART never returned)
    best, best_x = view.best().to(x.device), view.best_inputs().to(x.device)
    own = distance(x_adv - x, "l2")
    ok_own = predict_labels(model, x_adv).to(x.device)
    ok_own = ok_own == target if target is not None else ok_own != y
    take = torch.isfinite(best) & (~ok_own | (best < own))
    x_adv[take] = best_x[take]
    seconds = time.time() - t0
    x_adv = x_adv.clamp(0, 1)
    labels = predict_labels(model, x_adv)
    ok = labels == target if target is not None else labels != y
    return AttackResult(method, "l2", target is not None, x_adv, ok, distance(x_adv - x, "l2"), view.counts.clone(),
                        seconds, view.checkpoints, view.curve(), labels)
