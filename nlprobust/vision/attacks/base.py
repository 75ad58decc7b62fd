"""The base class of every vision attack (template method: subclasses write only ``run``).

``Attack.__call__`` validates the inputs, puts a torch model in eval mode (restored afterwards), builds the
view the attack is allowed to use (white-box, soft-label or hard-label; see :mod:`nlprobust.vision.oracle`)
with its exact query budget, seeds a generator on the model's device, runs the attack, and packages an
:class:`AttackResult`. The final check of the returned images is a measurement, not part of the attack: it
is not counted as a query.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from nlprobust.vision.oracle import HardLabelView, QueryView, SoftLabelView, WhiteBoxView, distance

__all__ = ["Attack", "AttackResult", "Starts", "predict_labels"]

_VIEWS: dict[str, type[QueryView]] = {"whitebox": WhiteBoxView, "softlabel": SoftLabelView,
                                      "hardlabel": HardLabelView}


@dataclass(frozen=True)
class Starts:
    """Images an attack may start from (targeted hard-label attacks: training images of the target class)."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass
class AttackResult:
    """Outcome for ``n`` images. ``success``: the returned image meets the goal (and lies within ``epsilon``
    when the attack has one); ``distance``: its distortion in the attack's norm; ``queries``: model queries
    used per image; ``curve[k, i]``: smallest adversarial distortion queried for image ``i`` within
    ``checkpoints[k]`` queries (inf: none)."""

    method: str
    norm: str
    targeted: bool
    x_adv: torch.Tensor
    success: torch.Tensor
    distance: torch.Tensor
    queries: torch.Tensor
    seconds: float
    checkpoints: tuple[int, ...] = ()
    curve: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per image."""
        out = []
        for i in range(len(self.success)):
            rec: dict[str, Any] = {"method": self.method, "norm": self.norm, "targeted": self.targeted,
                                   "success": bool(self.success[i]), "distance": float(self.distance[i]),
                                   "queries": int(self.queries[i]), "adv_label": int(self.labels[i])}
            if self.checkpoints:
                rec["curve"] = {str(c): float(self.curve[k, i]) for k, c in enumerate(self.checkpoints)}
            out.append(rec)
        return out


@torch.no_grad()
def predict_labels(model: Any, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Top-1 labels of a torch model (in whatever mode it is) or of a :class:`BoosterModel`, on x's device."""
    if isinstance(model, nn.Module):
        dev = next(iter(model.parameters())).device
        return torch.cat([model(x[i:i + batch_size].to(dev)).argmax(1).to(x.device)
                          for i in range(0, x.shape[0], batch_size)])
    return model.predict_labels(x).to(x.device)


class Attack(abc.ABC):
    """Common options: ``norm`` (``l2`` / ``linf``), ``targeted``, ``budget`` (queries per image, exact),
    ``epsilon`` (perturbation bound: success requires ``distance <= epsilon``; attacks that take a bound use
    it), ``seed``, ``batch_size`` (rows per forward pass)."""

    name: ClassVar[str] = "attack"
    threat: ClassVar[str] = "whitebox"
    norms: ClassVar[tuple[str, ...]] = ("l2", "linf")

    def __init__(self, *, norm: str = "l2", targeted: bool = False, budget: int | None = None,
                 epsilon: float | None = None, seed: int = 0, batch_size: int = 1000) -> None:
        if norm not in self.norms:
            raise ValueError(f"{self.name} supports norms {self.norms}, got {norm!r}")
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be a positive number of queries, got {budget}")
        if epsilon is not None and epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.norm = norm
        self.targeted = targeted
        self.budget = budget
        self.epsilon = epsilon
        self.seed = seed
        self.batch_size = batch_size

    @abc.abstractmethod
    def run(self, view: Any, gen: torch.Generator, starts: Starts | None) -> torch.Tensor:
        """Return adversarial candidates for ``view.x0`` (same shape, on the view's device)."""

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor | None = None,
                 starts: Starts | None = None, checkpoints: Sequence[int] = ()) -> AttackResult:
        if x.dim() != 4:
            raise ValueError(f"expected images of shape N x C x H x W, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("no images to attack")
        if not torch.is_floating_point(x) or float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError("images must be floats in [0, 1] (the models normalise them themselves)")
        y = torch.as_tensor(y, dtype=torch.long)
        if y.shape != (x.shape[0],):
            raise ValueError(f"expected {x.shape[0]} labels, got shape {tuple(y.shape)}")
        if self.targeted:
            if target is None:
                raise ValueError(f"targeted {self.name} needs target labels")
            target = torch.as_tensor(target, dtype=torch.long)
            if bool((target == y).any()):
                raise ValueError("a target label equals the true label; choose targets different from y")
        elif target is not None:
            raise ValueError(f"target given but {self.name} was built with targeted=False")
        training = model.training if isinstance(model, nn.Module) else None
        if isinstance(model, nn.Module):
            model.eval()
        try:
            view = _VIEWS[self.threat](model, x, y, target=target, budget=self.budget, norm=self.norm,
                                       checkpoints=checkpoints, batch_size=self.batch_size)
            gen = torch.Generator(device=view.device).manual_seed(self.seed)
            t0 = time.time()
            x_adv = self.run(view, gen, starts).detach().clamp(0, 1)
            seconds = time.time() - t0
            labels = predict_labels(model, x_adv.to(view.device))
            ok = labels == view.target if view.target is not None else labels != view.y0
            dist = distance(x_adv - view.x0, self.norm)
            if self.epsilon is not None:
                ok = ok & (dist <= self.epsilon * (1 + 1e-5))
        finally:
            if training is not None:
                model.train(training)
        return AttackResult(self.name, self.norm, self.targeted, x_adv.cpu(), ok.cpu(), dist.cpu(),
                            view.counts.cpu(), seconds, view.checkpoints, view.curve().cpu(), labels.cpu())
