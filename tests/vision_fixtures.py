"""A tiny MNIST classifier trained in a few seconds, shared by the vision tests (skips without the data)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from nlprobust.core.data import data_root
from nlprobust.vision.models import Normalize


def require_data() -> None:
    root = data_root(required=False)
    if root is None or not (root / "mnist").is_dir():
        pytest.skip("MNIST not found: set NLPROBUST_DATA to the corpora folder (needs mnist/)")


@functools.lru_cache(maxsize=1)
def _tiny_mnist() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    from nlprobust.vision.datasets import load_mnist

    train, test = load_mnist("train"), load_mnist("test")
    torch.manual_seed(0)
    model = nn.Sequential(Normalize((0.1307,), (0.3081,)), nn.Flatten(), nn.Linear(784, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = train.x[:6000], train.y[:6000]
    for _ in range(3):
        perm = torch.randperm(len(ys))
        for i in range(0, len(ys), 100):
            idx = perm[i:i + 100]
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(test.x[:1000]).argmax(1)
    acc = float((pred == test.y[:1000]).float().mean())
    ok = torch.nonzero(pred == test.y[:1000]).flatten()[:64]
    return model, test.x[ok], test.y[ok], train.x[6000:8000], train.y[6000:8000], acc


def tiny_mnist() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(model, correctly classified test images, their labels, a pool of other training images and labels,
    test accuracy on 1,000 images). The model is a 784-64-10 MLP, about 93% accurate."""
    require_data()
    return _tiny_mnist()
