"""Corpus loaders: local folders first, HuggingFace ``datasets`` when a hub id is given and reachable.

The data root comes from an explicit argument, else the ``NLPROBUST_DATA`` environment variable, else
``../shared/data`` relative to the current directory when it exists (the layout CI uses). Corpora are
never copied into the project.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

MULTI30K_SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")


class DataNotFoundError(FileNotFoundError):
    """A corpus folder or file is missing; the message says where it was looked for."""


def data_root(data_dir: str | os.PathLike[str] | None = None, *, required: bool = True) -> Path | None:
    """Resolve the folder holding the corpora (``multi30k/``, ``gigaword/``, ...)."""
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    elif os.environ.get("NLPROBUST_DATA"):
        candidates.append(Path(os.environ["NLPROBUST_DATA"]))
    else:
        candidates.append(Path("..") / "shared" / "data")
        candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    if required:
        where = ", ".join(str(c) for c in candidates)
        raise DataNotFoundError(
            f"data folder not found (looked in: {where}); pass --data-dir or set NLPROBUST_DATA"
        )
    return None


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataNotFoundError(f"corpus file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            return [line.rstrip("\n") for line in fh]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read corpus file {path}: {exc}") from exc


@dataclass(frozen=True)
class ParallelCorpus:
    """Line-aligned source/target sentences."""

    src: list[str]
    tgt: list[str]

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ValueError(f"source and target differ in length: {len(self.src)} vs {len(self.tgt)} lines")

    def __len__(self) -> int:
        return len(self.src)


def load_multi30k(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    src_lang: str = "en",
    tgt_lang: str = "de",
    hub_id: str | None = None,
) -> ParallelCorpus:
    """Multi30k task 1 (raw text) from ``<data>/multi30k/<split>.<lang>.gz``.

    With ``hub_id`` (e.g. ``"bentrevett/multi30k"``) the split is read through ``datasets.load_dataset``
    instead, which needs the hub to be reachable.
    """
    if hub_id is not None:
        from datasets import load_dataset

        hf_split = {"val": "validation", "test_2016_flickr": "test"}.get(split, split)
        ds = load_dataset(hub_id, split=hf_split)
        return ParallelCorpus([r[src_lang] for r in ds], [r[tgt_lang] for r in ds])
    if split not in MULTI30K_SPLITS:
        raise ValueError(f"unknown Multi30k split {split!r}; expected one of {MULTI30K_SPLITS}")
    root = data_root(data_dir)
    assert root is not None
    folder = root / "multi30k"
    return ParallelCorpus(
        _read_lines(folder / f"{split}.{src_lang}.gz"), _read_lines(folder / f"{split}.{tgt_lang}.gz")
    )
