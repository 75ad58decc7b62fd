"""The model interface of every vision attack: white-box, soft-label and hard-label views of one model.

A view is built for one batch of original images ``x0`` (``n`` examples) and one goal (untargeted: leave the
label ``y0``; targeted: reach ``target``). Every model evaluation an attack makes goes through the view, which

- counts it against the example it belongs to (``owner``: one example index per query row), in one place;
- refuses, before evaluating anything, a batch that would take any example past its ``budget``
  (:class:`BudgetExceeded`): an attack can never exceed its budget, it can only be stopped;
- evaluates the whole batch in forward passes of ``batch_size`` rows on the model's device;
- records, for every example, the smallest distortion among the adversarial inputs queried so far, at each
  query count of ``checkpoints`` (``curve``): the distortion an attacker holds after ``c`` queries. The same
  tracker serves our attacks and third-party ones (ART), so both are measured by one rule.

The models themselves: a ``torch.nn.Module`` returning logits (images in [0, 1]) or a LightGBM ``Booster``
(hard-label only; images are flattened into its features).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["BudgetExceeded", "QueryView", "HardLabelView", "SoftLabelView", "WhiteBoxView", "BoosterModel",
           "distance", "log_probs", "model_device"]


class BudgetExceeded(RuntimeError):
    """A query batch would take an example past its query budget; nothing of the batch was evaluated."""


def distance(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example ``l2`` or ``linf`` norm of ``delta`` (n x ...)."""
    flat = delta.flatten(1)
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    raise ValueError(f"unknown norm {norm!r}; expected 'l2' or 'linf'")


def log_probs(p: torch.Tensor) -> torch.Tensor:
    """``log p`` of probabilities ``p`` (n x classes), accurate near 1 too: for the class above 0.5 it is
    ``log1p`` of minus the other classes' total, which float32 keeps when it rounds that probability to 1."""
    rest = torch.where(p > 0.5, torch.zeros_like(p), p).sum(1, keepdim=True).clamp_max(1)
    return torch.where(p > 0.5, torch.log1p(-rest), p.clamp_min(torch.finfo(p.dtype).tiny).log())


class BoosterModel:
    """A LightGBM multi-class ``Booster`` as a hard-label model on images flattened to feature vectors."""

    def __init__(self, booster: Any, *, num_threads: int | None = None) -> None:
        self.booster = booster
        self.num_threads = num_threads

    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        feats = x.detach().flatten(1).cpu().double().numpy()
        kw = {"num_threads": self.num_threads} if self.num_threads else {}
        prob = self.booster.predict(feats, **kw)
        if prob.ndim == 1:  # binary objective: probability of class 1
            return torch.from_numpy((prob > 0.5).astype("int64"))
        return torch.from_numpy(prob.argmax(1).astype("int64"))


def model_device(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


class QueryView:
    """Query accounting and tracking shared by the three views (see the module docstring)."""

    threat = "base"
    fast_copy = False

    def __init__(self, model: Any, x0: torch.Tensor, y0: torch.Tensor, *, target: torch.Tensor | None = None,
                 budget: int | None = None, norm: str = "l2", checkpoints: Sequence[int] = (),
                 batch_size: int = 1000) -> None:
        if x0.shape[0] != y0.shape[0]:
            raise ValueError(f"{x0.shape[0]} images but {y0.shape[0]} labels")
        if target is not None and target.shape != y0.shape:
            raise ValueError(f"target has shape {tuple(target.shape)}, expected {tuple(y0.shape)}")
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be a positive number of queries, got {budget}")
        distance(x0[:1], norm)  # validates the norm
        self.model = model
        self.device = model_device(model)
        self._fast = model
        if self.fast_copy and isinstance(model, nn.Module) and self.device.type == "cpu" and \
                any(isinstance(m, nn.Conv2d) for m in model.modules()):
            # a channels-last copy of a convolutional model runs about twice as fast on CPU; queries only read
            # it (no gradients), and the caller's model is left as it is
            self._fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.x0 = x0.to(self.device)
        self.y0 = y0.to(self.device)
        self.target = target.to(self.device) if target is not None else None
        self.budget = budget
        self.norm = norm
        self.batch_size = batch_size
        n = x0.shape[0]
        self.counts = torch.zeros(n, dtype=torch.long, device=self.device)
        self.checkpoints = tuple(sorted(set(int(c) for c in checkpoints)))
        if budget is not None and self.checkpoints and self.checkpoints[-1] > budget:
            raise ValueError(f"checkpoint {self.checkpoints[-1]} lies beyond the budget {budget}")
        inf = torch.full((len(self.checkpoints) + 1, n), float("inf"), device=self.device)
        self._best = inf  # row k: best adversarial distortion within checkpoints[k] queries; last row: overall
        self._best_x = self.x0.clone()  # the adversarial input of the last row (x0 while there is none)

    @property
    def n(self) -> int:
        return int(self.x0.shape[0])

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def remaining(self) -> torch.Tensor:
        """Queries left per example (a large number when there is no budget)."""
        if self.budget is None:
            return torch.full_like(self.counts, 2 ** 62)
        return self.budget - self.counts

    def _charge(self, owner: torch.Tensor) -> torch.Tensor:
        """Count one query per row of ``owner``; return each row's 1-based query number for its example."""
        owner = owner.to(self.device)
        if owner.numel() == 0:
            return owner
        need = torch.bincount(owner, minlength=self.n)
        if self.budget is not None and bool((self.counts + need > self.budget).any()):
            bad = int(torch.nonzero(self.counts + need > self.budget)[0])
            raise BudgetExceeded(f"example {bad}: {int(need[bad])} more queries would exceed the budget of "
                                 f"{self.budget} ({int(self.counts[bad])} used)")
        # rank of each row among the rows of its owner, in batch order
        order = torch.argsort(owner, stable=True)
        sorted_owner = owner[order]
        start = torch.cumsum(need, 0) - need
        rank_sorted = torch.arange(owner.numel(), device=self.device) - start[sorted_owner]
        rank = torch.empty_like(rank_sorted)
        rank[order] = rank_sorted
        seq = self.counts[owner] + rank + 1
        self.counts += need
        return seq

    def _success(self, labels: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        if self.target is not None:
            return labels == self.target[owner]
        return labels != self.y0[owner]

    def _track(self, x: torch.Tensor, owner: torch.Tensor, seq: torch.Tensor, adv: torch.Tensor) -> None:
        if not bool(adv.any()):
            return
        d = distance(x.detach() - self.x0[owner], self.norm)
        d = torch.where(adv, d, torch.full_like(d, float("inf")))
        for k, c in enumerate(self.checkpoints):
            dk = torch.where(seq <= c, d, torch.full_like(d, float("inf")))
            self._best[k].scatter_reduce_(0, owner, dk, reduce="amin")
        before = self._best[-1].clone()
        self._best[-1].scatter_reduce_(0, owner, d, reduce="amin")
        won = (d < before[owner]) & (d == self._best[-1][owner])
        if bool(won.any()):
            rows = torch.nonzero(won).flatten()
            self._best_x[owner[rows]] = x[rows].detach().to(self._best_x.dtype)

    def curve(self) -> torch.Tensor:
        """``len(checkpoints) x n``: smallest adversarial distortion queried within each checkpoint (inf: none)."""
        return self._best[:-1].clone()

    def best_inputs(self) -> torch.Tensor:
        """The adversarial input of :meth:`best` per example (the original image where there is none)."""
        return self._best_x.clone()

    def best(self) -> torch.Tensor:
        """Smallest adversarial distortion queried so far, per example (inf: none yet)."""
        return self._best[-1].clone()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self._fast
        if x.shape[0] == 0:
            return model(self.x0[:1]).detach()[:0]  # an empty batch keeps the (0 x classes) shape
        if model is not self.model:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.cat([model(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)])


class HardLabelView(QueryView):
    """Top-1 labels only. ``is_adv(x, owner)`` = the label meets the goal; ``labels`` = the raw top-1 label."""

    threat = "hardlabel"
    fast_copy = True

    @torch.no_grad()
    def labels(self, x: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        owner = owner.to(self.device)
        seq = self._charge(owner)
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        if isinstance(self.model, nn.Module):
            lab = self._forward(x).argmax(1)
        else:
            lab = self.model.predict_labels(x).to(self.device)
        self._track(x, owner, seq, self._success(lab, owner))
        return lab

    def is_adv(self, x: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        return self._success(self.labels(x, owner), owner.to(self.device))


class SoftLabelView(QueryView):
    """Class probabilities (softmax of the logits), no gradients."""

    threat = "softlabel"
    fast_copy = True

    @torch.no_grad()
    def probs(self, x: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.model, nn.Module):
            raise TypeError("a soft-label view needs a torch model that returns logits")
        x = x.to(self.device)
        owner = owner.to(self.device)
        seq = self._charge(owner)
        p = torch.softmax(self._forward(x), dim=1)
        self._track(x, owner, seq, self._success(p.argmax(1), owner))
        return p


class WhiteBoxView(QueryView):
    """Logits with gradients. Each row of a forward pass counts as one query (a backward pass is free)."""

    threat = "whitebox"

    def logits(self, x: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.model, nn.Module):
            raise TypeError("a white-box view needs a differentiable torch model")
        x = x.to(self.device)
        owner = owner.to(self.device)
        seq = self._charge(owner)
        z = self._forward(x)
        self._track(x, owner, seq, self._success(z.detach().argmax(1), owner))
        return z
