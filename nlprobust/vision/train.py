"""Training loop for the vision models (natural training here; the defenses pass their own loss).

One :class:`accelerate.Accelerator` code path serves the CPU, one GPU and several. The output folder holds::

    train_config.json   model and training configs, data sizes, versions
    train_log.jsonl     one record per epoch (loss, train accuracy, test accuracy, seconds)
    last.pt             checkpoint after the last finished epoch (weights, optimiser, epoch): resume point
    model.pt            the final model (:func:`nlprobust.vision.models.save_checkpoint` format)

Running it again on the same folder resumes after the last finished epoch; a folder holding ``model.pt``
is returned as is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nlprobust.core.runio import atomic_torch_save
from nlprobust.vision.datasets import ImageData
from nlprobust.vision.models import VisionModelConfig, accuracy, build_model, save_checkpoint

__all__ = ["VisionTrainConfig", "train_classifier", "train_preset", "LossFn", "augment_batch", "time_training_steps"]

log = logging.getLogger(__name__)

#: ``loss_fn(model, x, y, index) -> scalar loss`` for one training batch; ``index`` holds the batch's positions in
#: the training set (per-example state such as CAT's epsilons). The defenses plug in here.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class VisionTrainConfig:
    """Optimisation settings. ``lr`` follows a cosine schedule with a linear warm-up over the first epoch's
    ``warmup`` fraction; ``augment`` = random shifts (pad 4 and crop; 2 for 28 x 28) plus, for 3-channel images,
    horizontal flips."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.5
    augment: bool = False
    max_train: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected 'sgd' or 'adam'")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive (got {self.epochs}, {self.batch_size}, "
                             f"{self.lr})")


def train_preset(dataset: str, arch: str = "cnn", scale: str = "small", **overrides: Any) -> VisionTrainConfig:
    """Defaults that reach the thesis's accuracy on 2 CPU cores: MNIST CNN 99%+ in 6 Adam epochs, CIFAR-10 CNN
    75%+ in 30 SGD epochs with augmentation. ``tiny`` = 1 epoch on 2,000 images (tests)."""
    if dataset == "mnist":
        cfg = VisionTrainConfig(epochs=6, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128)
    else:
        cfg = VisionTrainConfig(epochs=30 if arch == "cnn" else 60, lr=0.05, augment=True, batch_size=128)
    if scale == "tiny":
        cfg = replace(cfg, epochs=1, max_train=2000, batch_size=64)
    return replace(cfg, **overrides)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random shift by up to 4 pixels (2 for images under 32 pixels) with zero padding, plus horizontal flips
    for colour images; one draw per image, on ``x``'s device."""
    n, c, h, w = x.shape
    pad = 4 if h >= 32 else 2
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h))  # n x h
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w))  # n x w
    idx_r = rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, idx_r)
    idx_c = cols.view(n, 1, 1, w).expand(n, c, h, w)
    out = out.gather(3, idx_c)
    if c == 3:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
    return out


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _optimizer(net: nn.Module, config: VisionTrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``config`` names for ``net``'s parameters."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=True)
    return torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def train_classifier(model_config: VisionModelConfig, train: ImageData, test: ImageData,
                     out_dir: str | os.PathLike[str], config: VisionTrainConfig, *,
                     loss_fn: LossFn | None = None, device: str | None = None, quiet: bool = False,
                     model: nn.Module | None = None, method: str = "natural",
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a classifier into ``out_dir`` and return its summary (test accuracy, seconds per epoch, ...).

    ``loss_fn`` replaces the cross-entropy of a batch (adversarial training and the other defenses);
    ``model`` starts from given weights instead of a fresh :func:`build_model`. ``extra`` (JSON-serialisable:
    a defense's hyperparameters, the starting model) is saved with the configs; a folder holding a run (finished
    or not) with other configs or another ``extra`` raises ``ValueError`` instead of being reused."""
    from accelerate import Accelerator
    from tqdm import tqdm

    out = Path(out_dir)
    final = out / "model.pt"
    summary_path = out / "summary.json"
    if config.max_train is not None:
        train = train.subset(slice(0, config.max_train))
    meta = {"method": method, "model": asdict(model_config), "train": asdict(config), "n_train": len(train),
            "n_test": len(test), "train_data": train.name, "torch": torch.__version__}
    if extra is not None:
        meta["extra"] = json.loads(json.dumps(extra))
    cfg_path = out / "train_config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        try:  # fields added to the configs since that run take their defaults; a run saved without ``extra``
            # predates it and is taken as it is
            same = (asdict(VisionModelConfig(**old["model"])) == meta["model"]
                    and asdict(VisionTrainConfig(**old["train"])) == meta["train"]
                    and old.get("extra", meta.get("extra")) == meta.get("extra"))
        except (KeyError, TypeError, ValueError):
            same = False
        if not same:
            raise ValueError(f"{out} holds a run with another configuration ({cfg_path}); use another folder")
    if final.exists() and summary_path.exists():
        return dict(json.loads(summary_path.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    if not cfg_path.exists():
        cfg_path.write_text(json.dumps(meta, indent=2))
    accelerator = Accelerator(cpu=device is not None and torch.device(device).type == "cpu")
    torch.manual_seed(config.seed)
    net = model if model is not None else build_model(model_config)
    opt = _optimizer(net, config)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warm = max(1, int(config.warmup * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    net, opt = accelerator.prepare(net, opt)
    start_epoch, history = 0, []
    last = out / "last.pt"
    if last.exists():
        try:
            state = torch.load(last, map_location="cpu", weights_only=True)
            accelerator.unwrap_model(net).load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch, history = int(state["epoch"]), list(json.loads(state["history"]))
            log.info("resuming %s after epoch %d", out, start_epoch)
        except Exception as exc:
            raise ValueError(f"{last}: cannot resume from this checkpoint ({exc}); delete it to start over") from exc
    loss_fn = loss_fn or _cross_entropy
    gen = torch.Generator().manual_seed(config.seed)
    for epoch in range(start_epoch, config.epochs):
        gen.manual_seed(config.seed * 1000 + epoch)  # the same batches after a resume
        order = torch.randperm(len(train), generator=gen)
        net.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"{method} epoch {epoch + 1}/{config.epochs}", disable=quiet,
                   unit="batch", leave=False)
        for b in bar:
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            x, y = train.x[idx].to(accelerator.device), train.y[idx].to(accelerator.device)
            if config.augment:
                x = augment_batch(x, gen)
            loss = loss_fn(net, x, y, idx.to(accelerator.device))
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            sched.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            if b % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        seconds = time.time() - t0
        test_acc = accuracy(accelerator.unwrap_model(net), test.x, test.y)
        rec = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "test_acc": test_acc, "seconds": seconds}
        history.append(rec)
        with (out / "train_log.jsonl").open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if not quiet:
            log.info("%s epoch %d: loss %.4f test acc %.4f (%.0f s)", method, epoch + 1, rec["loss"], test_acc,
                     seconds)
        atomic_torch_save({"model": accelerator.unwrap_model(net).state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": json.dumps(history)}, last)
    plain = accelerator.unwrap_model(net).eval()
    summary = {"method": method, "test_acc": history[-1]["test_acc"], "epochs": config.epochs,
               "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history), "n_train": len(train),
               "n_test": len(test), "history": history}
    save_checkpoint(plain, model_config, final, test_acc=summary["test_acc"], method=method)
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def time_training_steps(model_config: VisionModelConfig, train: ImageData, config: VisionTrainConfig, *,
                        loss_fn: LossFn | None = None, n_batches: int = 20, warmup_batches: int = 2,
                        device: str | None = None) -> dict[str, float]:
    """Seconds per training step of ``loss_fn`` on a fresh model, timed over ``n_batches`` batches after
    ``warmup_batches`` untimed ones, and the implied seconds per epoch over ``train``.

    Methods timed one after another in one process see the same machine, which is what a table of time ratios
    (thesis Table 5.5) needs; the per-epoch times of separate training runs do not when they share a machine."""
    if n_batches < 1 or warmup_batches < 0:
        raise ValueError(f"n_batches must be >= 1 and warmup_batches >= 0, got {n_batches}, {warmup_batches}")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    net = build_model(model_config).to(dev).train()
    opt = _optimizer(net, config)
    loss_fn = loss_fn or _cross_entropy
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(train), generator=gen)
    bs = min(config.batch_size, len(train))

    def step(b: int) -> None:
        lo = (b * bs) % max(1, len(train) - bs + 1)
        idx = order[lo:lo + bs]
        x, y = train.x[idx].to(dev), train.y[idx].to(dev)
        loss = loss_fn(net, x, y, idx.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in range(warmup_batches):
        step(b)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for b in range(warmup_batches, warmup_batches + n_batches):
        step(b)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per_batch = (time.perf_counter() - t0) / n_batches
    return {"seconds_per_batch": per_batch, "batch_size": bs,
            "seconds_per_epoch": per_batch * math.ceil(len(train) / bs), "n_batches": n_batches}
