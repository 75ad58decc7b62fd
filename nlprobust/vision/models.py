"""Image classifiers: the Carlini & Wagner CNNs of the thesis's hard-label experiments, ResNet-18 and VGG-16.

Every model takes images in [0, 1] and normalises them itself (a :class:`Normalize` first layer), so attacks
and defenses work in pixel space. Checkpoints hold a plain ``state_dict`` beside the model's
:class:`VisionModelConfig` as a dict of numbers and strings: they load with ``torch.load(weights_only=True)``.

    cfg = VisionModelConfig(arch="cnn", dataset="mnist")
    model = build_model(cfg)
    save_checkpoint(model, cfg, "runs/vision/mnist_cnn/model.pt")
    model, cfg = load_checkpoint("runs/vision/mnist_cnn/model.pt")
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlprobust.core.runio import atomic_torch_save

__all__ = ["ARCHS", "BN_KINDS", "VisionModelConfig", "Normalize", "CWCNN", "ResNet18", "VGG16", "build_model",
           "save_checkpoint", "load_checkpoint", "CheckpointError", "accuracy"]

ARCHS = ("cnn", "resnet18", "vgg16")
#: batch-norm layers of a model: plain, RobMask (thesis 6.3) or AdvProp's dual BN (nlprobust.vision.defenses.robmask)
BN_KINDS = ("standard", "robmask", "dual")
_STATS = {  # per-channel mean and std of the training images
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


class CheckpointError(ValueError):
    """A vision checkpoint is missing, unreadable or does not match its config."""


@dataclass(frozen=True, kw_only=True)
class VisionModelConfig:
    """What :func:`build_model` needs: architecture, dataset (input shape and normalisation), options.

    ``batchnorm`` adds batch normalisation after each convolution of the C&W CNN (the thesis's CNN has none;
    it is on by default for CIFAR-10, where the 30,000 JPEG-decoded training images need it to reach 75%+).

    ``bn`` picks the kind of batch-norm layer: ``"standard"``, ``"robmask"`` (RobMask, thesis 6.3: affine
    parameters a rank-``bn_rank`` function of the encoded perturbation strength in [0, ``bn_eps_max``]) or ``"dual"``
    (AdvProp's auxiliary BN); the last two need batch normalisation (``batchnorm=True`` for the CNN). Checkpoints
    written before these fields existed load as ``"standard"``."""

    arch: str = "cnn"
    dataset: str = "mnist"
    num_classes: int = 10
    batchnorm: bool | None = None
    dropout: float = 0.5
    bn: str = "standard"
    bn_rank: int = 2
    bn_eps_max: float = 8 / 255

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; expected one of {ARCHS}")
        if self.dataset not in _STATS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {tuple(_STATS)}")
        if self.batchnorm is None:
            object.__setattr__(self, "batchnorm", self.dataset == "cifar10" or self.arch != "cnn")
        if self.bn not in BN_KINDS:
            raise ValueError(f"unknown batch-norm kind bn={self.bn!r}; expected one of {BN_KINDS}")
        if self.bn != "standard" and not self.batchnorm:
            raise ValueError(f"bn={self.bn!r} needs batch normalisation; got batchnorm={self.batchnorm} for "
                             f"arch={self.arch!r}")
        if self.bn_rank < 2:
            raise ValueError(f"bn_rank must be at least 2, got {self.bn_rank}")
        if self.bn_eps_max <= 0:
            raise ValueError(f"bn_eps_max must be positive, got {self.bn_eps_max}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return _SHAPES[self.dataset]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: keeps the model's input in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv(cin: int, cout: int, bn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class CWCNN(nn.Module):
    """Carlini & Wagner's CNN: 4 conv (3x3, no padding) + 2 max-pool + 2 fully connected + output layer.

    MNIST: 32-32-pool-64-64-pool-200-200; CIFAR-10: 64-64-pool-128-128-pool-256-256 (C&W 2017, Table 1)."""

    def __init__(self, in_channels: int, size: int, num_classes: int = 10, *, batchnorm: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        c1, c2, hidden = (32, 64, 200) if in_channels == 1 else (64, 128, 256)
        self.features = nn.Sequential(
            *_conv(in_channels, c1, batchnorm), *_conv(c1, c1, batchnorm), nn.MaxPool2d(2),
            *_conv(c1, c2, batchnorm), *_conv(c2, c2, batchnorm), nn.MaxPool2d(2),
        )
        side = ((size - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32 x 32 inputs (3x3 stem, no initial max-pool), as used in the robust-training papers."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class VGG16(nn.Module):
    """VGG-16 with batch normalisation for 32 x 32 inputs (one 512-unit classifier layer)."""

    PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in self.PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(config: VisionModelConfig) -> nn.Sequential:
    """``Normalize`` followed by the network of ``config`` (randomly initialised, seed it yourself); with
    ``config.bn`` ``"robmask"`` or ``"dual"`` its ``BatchNorm2d`` layers are converted
    (:func:`nlprobust.vision.defenses.robmask.convert_batchnorm`)."""
    c, h, _ = config.input_shape
    net: nn.Module
    if config.arch == "cnn":
        net = CWCNN(c, h, config.num_classes, batchnorm=bool(config.batchnorm), dropout=config.dropout)
    elif config.arch == "resnet18":
        net = ResNet18(c, config.num_classes)
    else:
        net = VGG16(c, config.num_classes)
    mean, std = _STATS[config.dataset]
    model = nn.Sequential(Normalize(mean, std), net)
    if config.bn != "standard":
        from nlprobust.vision.defenses.robmask import convert_batchnorm  # the defenses import this module

        convert_batchnorm(model, config.bn, rank=config.bn_rank, eps_max=config.bn_eps_max)
    return model


def save_checkpoint(model: nn.Module, config: VisionModelConfig, path: str | os.PathLike[str],
                    **extra: Any) -> Path:
    """Write ``{"config", "state_dict", **extra}`` (tensors, numbers and strings only) to ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"config": asdict(config), "state_dict": state, **extra}, p)
    return p


def load_checkpoint(path: str | os.PathLike[str], *, device: str | torch.device | None = None,
                    ) -> tuple[nn.Sequential, VisionModelConfig]:
    """The model of a checkpoint written by :func:`save_checkpoint`, in eval mode, and its config."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"vision checkpoint not found: {p}")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files raise many different errors
        raise CheckpointError(f"{p}: not a readable vision checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise CheckpointError(f"{p}: expected a dict with 'config' and 'state_dict' (written by save_checkpoint)")
    known = {f.name for f in fields(VisionModelConfig)}
    unknown = set(blob["config"]) - known
    if unknown:
        raise CheckpointError(f"{p}: config has unknown fields {sorted(unknown)}")
    config = VisionModelConfig(**blob["config"])
    model = build_model(config)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{p}: weights do not match the config {config}: {exc}") from exc
    return model.to(device or "cpu").eval(), config


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``x``, ``y``, in batches on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    try:
        for i in range(0, len(y), batch_size):
            pred = model(x[i:i + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(y), 1)
