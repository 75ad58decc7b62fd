"""MNIST and CIFAR-10 read straight from their files (no torchvision).

Images come back as float tensors in [0, 1], shape ``N x C x H x W``; labels as ``int64``. The data folder is
the one of :func:`nlprobust.core.data.data_root` (``--data-dir``, else ``NLPROBUST_DATA``), holding

- ``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (the original idx files, gzip), and
- ``cifar10/{train_0,train_1,train_2,test,test_exact_0-760}.npz`` (``x``: N x 32 x 32 x 3 uint8, ``y``: labels).

The CIFAR-10 copy available offline was decoded from JPEG files: its pixels differ from the original release
(about 30 dB PSNR) and it holds 30,000 of the 50,000 training images. ``load_cifar10("test", exact=True)``
returns the 761 test images whose original pixels are known.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nlprobust.core.data import data_root

__all__ = ["ImageData", "DATASETS", "load_mnist", "load_cifar10", "load_images", "NUM_CLASSES", "CIFAR10_CLASSES"]

DATASETS = ("mnist", "cifar10")
NUM_CLASSES = 10
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IDX_MAGIC = {3: 2051, 1: 2049}


@dataclass(frozen=True)
class ImageData:
    """Images ``x`` (float32 in [0, 1], N x C x H x W) and labels ``y`` (int64) of one split."""

    x: torch.Tensor
    y: torch.Tensor
    name: str

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.name}: {self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor | list[int] | slice) -> ImageData:
        return ImageData(self.x[index], self.y[index], self.name)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable gzip file ({exc})") from exc
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: too short for an idx file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(f"{path}: idx magic number {magic}, expected {_IDX_MAGIC[ndim]} (a {ndim}-d uint8 idx file)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} values) but the file holds {body.size}")
    return body.reshape(dims)


def load_mnist(split: str = "test", data_dir: str | os.PathLike[str] | None = None) -> ImageData:
    """MNIST ``train`` (60,000) or ``test`` (10,000) images, 1 x 28 x 28."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown MNIST split {split!r}; expected 'train' or 'test'")
    root = data_root(data_dir) / "mnist"  # type: ignore[operator]
    stem = "train" if split == "train" else "t10k"
    images = _read_idx(root / f"{stem}-images-idx3-ubyte.gz", 3)
    labels = _read_idx(root / f"{stem}-labels-idx1-ubyte.gz", 1)
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    return ImageData(x, torch.from_numpy(labels.astype(np.int64)), f"mnist/{split}")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    try:
        with np.load(path) as d:
            x, y = d["x"], d["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: expected an .npz file with arrays 'x' (N x 32 x 32 x 3 uint8) and 'y' ({exc})") \
            from exc
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8:
        raise ValueError(f"{path}: 'x' has shape {x.shape} and dtype {x.dtype}; expected N x 32 x 32 x 3 uint8")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{path}: {x.shape[0]} images but labels of shape {y.shape}")
    return x, y


def load_cifar10(split: str = "test", data_dir: str | os.PathLike[str] | None = None, *,
                 exact: bool = False) -> ImageData:
    """CIFAR-10 ``train`` (the 30,000 images available) or ``test`` (10,000), 3 x 32 x 32.

    ``exact=True`` (test only) returns the 761 test images with their original pixels instead of the
    JPEG-decoded copies."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown CIFAR-10 split {split!r}; expected 'train' or 'test'")
    if exact and split != "test":
        raise ValueError("exact=True is only available for the test split (images 0-760)")
    root = data_root(data_dir) / "cifar10"  # type: ignore[operator]
    if split == "train":
        parts = [_read_npz(root / f"train_{i}.npz") for i in range(3)]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    else:
        x, y = _read_npz(root / ("test_exact_0-760.npz" if exact else "test.npz"))
    if y.max() >= NUM_CLASSES:
        raise ValueError(f"CIFAR-10 labels must lie in 0..9, found {int(y.max())}")
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return ImageData(xt, torch.from_numpy(y.astype(np.int64)), f"cifar10/{split}{'_exact' if exact else ''}")


def load_images(dataset: str, split: str = "test", data_dir: str | os.PathLike[str] | None = None) -> ImageData:
    """``load_mnist`` or ``load_cifar10`` by name."""
    if dataset == "mnist":
        return load_mnist(split, data_dir)
    if dataset == "cifar10":
        return load_cifar10(split, data_dir)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
