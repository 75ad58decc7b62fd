"""Corpus loaders: local folders first, HuggingFace ``datasets`` when a hub id is given and reachable.

The data root comes from an explicit argument, else the ``NLPROBUST_DATA`` environment variable, else
``../shared/data`` relative to the current directory when it exists (the layout CI uses). Corpora are
never copied into the project.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nlprobust.core.data import DataNotFoundError, data_root

MULTI30K_SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")


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


# ---- summarization: Gigaword (Rush et al. 2015 preprocessing), DUC 2003 / 2004 -----------------------------

GIGAWORD_SPLITS = ("train", "dev", "test")
_DIGIT = re.compile(r"\d")


def preprocess_summary(text: str) -> str:
    """The Rush et al. (2015) normalisation of Gigaword: lowercase, every digit as ``#``, whitespace tokens.

    Words outside a model's vocabulary become ``UNK`` (Gigaword files; the token is kept as is) or the
    model's ``<unk>`` at encoding time; this function does not need a vocabulary. Idempotent.

    >>> preprocess_summary("Police arrest 12 in Paris UNK")
    'police arrest ## in paris UNK'
    """
    return " ".join(w if w == "UNK" else _DIGIT.sub("#", w.lower()) for w in text.split())


@dataclass(frozen=True)
class SummaryCorpus:
    """Line-aligned inputs and one or more reference summaries per input (``refs[k][i]`` for input ``i``)."""

    src: list[str]
    refs: list[list[str]]
    name: str = ""

    def __post_init__(self) -> None:
        for k, r in enumerate(self.refs):
            if len(r) != len(self.src):
                raise ValueError(f"{self.name or 'summary corpus'}: reference {k} has {len(r)} lines but there are "
                                 f"{len(self.src)} inputs (misaligned files)")

    def __len__(self) -> int:
        return len(self.src)

    def pairs(self) -> ParallelCorpus:
        """Inputs with their first reference, for training or validation."""
        return ParallelCorpus(self.src, self.refs[0] if self.refs else [""] * len(self.src))


def _aligned(files: list[Path], name: str) -> list[list[str]]:
    cols = [_read_lines(f) for f in files]
    counts = {str(f.name): len(c) for f, c in zip(files, cols)}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{name}: files are misaligned (line counts {counts} in {files[0].parent})")
    empty = [i + 1 for i, line in enumerate(cols[0]) if not line.strip()]
    if empty:
        raise ValueError(f"{name}: {files[0]} has empty input lines (first at line {empty[0]})")
    return cols


def load_gigaword(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    full_dir: str | os.PathLike[str] | None = None,
    hub_id: str | None = None,
) -> SummaryCorpus:
    """Gigaword headline generation: ``train`` (11,973 pairs), ``dev`` (4K pairs) or ``test`` (the 1,951-pair
    test set) from ``<data>/gigaword/``.

    ``full_dir`` reads the full Rush et al. release instead (``sumdata/train/{train,valid}.{article,title}.txt``
    and ``Giga/input.txt`` + ``task1_ref0.txt`` as distributed by harvardnlp/sent-summary; ``.gz`` accepted).
    ``hub_id`` (e.g. ``"gigaword"``) reads the split through ``datasets.load_dataset`` (needs the hub).
    """
    if split not in GIGAWORD_SPLITS:
        raise ValueError(f"unknown Gigaword split {split!r}; expected one of {GIGAWORD_SPLITS}")
    name = f"gigaword/{split}"
    if hub_id is not None:
        from datasets import load_dataset

        ds = load_dataset(hub_id, split={"dev": "validation"}.get(split, split))
        return SummaryCorpus([r["document"] for r in ds], [[r["summary"] for r in ds]], name)
    if full_dir is not None:
        base = Path(full_dir)
        names = {"train": ("train.article.txt", "train.title.txt"), "dev": ("valid.article.filter.txt",
                 "valid.title.filter.txt"), "test": ("input.txt", "task1_ref0.txt")}[split]
        files = []
        for n in names:
            hits = sorted(base.rglob(n)) + sorted(base.rglob(n + ".gz"))
            if not hits:
                raise DataNotFoundError(f"{n} (or {n}.gz) not found under {base}")
            files.append(hits[0])
    else:
        root = data_root(data_dir)
        assert root is not None
        g = root / "gigaword"
        files = {"train": [g / "train" / "article.txt.gz", g / "train" / "title.txt.gz"],
                 "dev": [g / "dev" / "valid.article.filter.4K.txt", g / "dev" / "valid.title.filter.4K.txt"],
                 "test": [g / "test_1951" / "input.txt", g / "test_1951" / "task1_ref0.txt"]}[split]
    src, ref = _aligned(files, name)
    return SummaryCorpus(src, [ref], name)


def gigaword_articles(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Every Gigaword article sentence available offline except the test set: the training and dev
    articles and the source-only ``dev/valid.src.small.txt`` (31,565 sentences), for language models."""
    root = data_root(data_dir)
    assert root is not None
    out = load_gigaword("train", root).src + load_gigaword("dev", root).src
    return out + [s for s in _read_lines(root / "gigaword" / "dev" / "valid.src.small.txt") if s.strip()]


def load_duc(year: int | str, data_dir: str | os.PathLike[str] | None = None) -> SummaryCorpus:
    """DUC task 1 (very short summaries): ``<data>/duc<year>/input.txt`` and its four ``task1_ref<k>.txt``.

    Inputs are lowercased and tokenised but keep their digits; pass them through :func:`preprocess_summary`
    before a Gigaword-trained model sees them (the recipes do). References are raw headlines.
    """
    if str(year) not in ("2003", "2004"):
        raise ValueError(f"unknown DUC year {year!r}; expected 2003 or 2004")
    root = data_root(data_dir)
    assert root is not None
    folder = root / f"duc{year}"
    refs = sorted(folder.glob("task1_ref*.txt"))
    if not refs:
        raise DataNotFoundError(f"no task1_ref*.txt references in {folder}")
    src, *rs = _aligned([folder / "input.txt", *refs], f"duc{year}")
    return SummaryCorpus(src, rs, f"duc{year}")
