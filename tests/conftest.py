"""Shared fixtures: a tiny OpenNMT-py victim trained in the test session on the synthetic corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nlprobust.core.data import data_root


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_onmt_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OpenNMT-py brnn attention LSTM trained for a few hundred steps (about a minute on 2 cores)."""
    from nlprobust.synthetic import synthetic_corpus
    from nlprobust.training.opennmt import preset, train_onmt

    run = tmp_path_factory.mktemp("tiny_onmt")
    return train_onmt(synthetic_corpus(3000, 0), synthetic_corpus(100, 1), run,
                      preset("tiny", train_steps=250, valid_steps=250))


@pytest.fixture(scope="session")
def tiny_victim(tiny_onmt_ckpt: Path):
    from nlprobust.victims.opennmt import OpenNMTVictim

    return OpenNMTVictim(tiny_onmt_ckpt, trust_checkpoint=True, device="cpu")


@pytest.fixture(scope="session")
def tiny_marian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Marian transformer trained on the synthetic corpus for 300 steps (about 15 s on one thread)."""
    from nlprobust.synthetic import synthetic_corpus
    from nlprobust.training.marian import preset, train_marian

    out = tmp_path_factory.mktemp("tiny_marian") / "model"
    cfg = preset("tiny", max_steps=300, eval_every=100)
    return train_marian(synthetic_corpus(2000, 0), synthetic_corpus(100, 1), out, cfg, progress=False)


@pytest.fixture(scope="session")
def tiny_marian_victim(tiny_marian: Path):
    from nlprobust.victims.huggingface import HFVictim

    return HFVictim(tiny_marian, device="cpu")


@pytest.fixture(scope="session")
def tiny_robust_marian_victim(tiny_marian: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny Marian after a short adversarial fine-tuning (hotflip adversary, the ``tiny`` preset)."""
    from nlprobust.synthetic import synthetic_corpus
    from nlprobust.training.robust import preset, train_robust
    from nlprobust.victims.huggingface import HFVictim

    out = tmp_path_factory.mktemp("tiny_robust_marian") / "model"
    train_robust(tiny_marian, synthetic_corpus(400, 0), synthetic_corpus(40, 1), out, preset("tiny"), progress=False)
    return HFVictim(out, device="cpu")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root(os.environ.get("NLPROBUST_DATA"), required=False)
    if root is None or not (root / "multi30k").is_dir():
        pytest.skip("real corpora not found: set NLPROBUST_DATA to the data folder (with multi30k/)")
    return root


@pytest.fixture(scope="session")
def negotiate_dir() -> Path:
    """The Deal-or-No-Deal corpus folder (``<data>/negotiate``); skips when any of its files is missing."""
    root = data_root(os.environ.get("NLPROBUST_DATA"), required=False)
    folder = None if root is None else root / "negotiate"
    missing = [n for n in ("train.txt", "val.txt", "test.txt", "selfplay.txt")
               if folder is None or not (folder / n).is_file()]
    if folder is None or missing:
        pytest.skip(f"Deal-or-No-Deal corpus not found (no {missing} in {folder}); set NLPROBUST_DATA")
    return folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The attack matrix's portfolio rows on the adversarially fine-tuned Marian repeat what its word-swap and
    Seq2Sick rows and the plain Marian's portfolio rows check, at the cost of both attacks: slow."""
    for item in items:
        if "robust-marian-portfolio" in item.name:
            item.add_marker(pytest.mark.slow)
