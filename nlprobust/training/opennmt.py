"""Train word-level OpenNMT-py translation/summarisation victims (the thesis's kind of model).

OpenNMT-py owns the training loop here (its trainer, its YAML config whose keys equal its CLI flags); we
prepare tokenised data, write the config beside the run, train with validation-based early stopping and
pick the checkpoint with the best validation perplexity as ``best.pt``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TextIO

from nlprobust.corpora import ParallelCorpus
from nlprobust.text import tokenize

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class OnmtLSTMConfig:
    """Architecture and optimisation of an attention LSTM (OpenNMT-py ``rnn`` model)."""

    layers: int = 2
    hidden_size: int = 500
    word_vec_size: int = 500
    encoder_type: str = "brnn"
    dropout: float = 0.3
    batch_size: int = 64
    learning_rate: float = 0.001
    train_steps: int = 20000
    valid_steps: int = 500
    early_stopping: int = 4
    #: which checkpoint becomes ``best.pt``: the lowest validation ``ppl``, the highest validation ``accuracy``
    #: (these also drive early stopping), or the ``last`` one (a fixed budget, as OpenNMT-py's own recipes)
    select_by: str = "ppl"
    words_min_frequency: int = 2
    label_smoothing: float = 0.1
    #: OpenNMT-py seeds torch, ``random`` and numpy only for a seed >= 1; with 0 or less every run shuffles
    #: and initialises differently (the checkpoint of two runs of one config then differs), so it must be >= 1
    seed: int = 1
    #: a GloVe-format text file (``word v1 ... vd`` per line, d = ``word_vec_size``) that initialises the
    #: encoder and decoder embeddings of the words it covers (OpenNMT-py ``both_embeddings``)
    embeddings: str | None = None
    #: one vocabulary for both sides, and one embedding matrix for the encoder, the decoder and the output
    #: layer (OpenNMT-py ``share_vocab``, ``share_embeddings``, ``share_decoder_embeddings``; needs
    #: ``word_vec_size == hidden_size``): on a small corpus the decoder then learns its words from the
    #: articles too, and can name the words it reads
    share_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {list(SELECT_BY)}, got {self.select_by!r}")
        if self.seed < 1:
            raise ValueError(f"seed must be >= 1 (OpenNMT-py leaves a run unseeded for seed <= 0), got {self.seed}")
        if self.share_embeddings and self.word_vec_size != self.hidden_size:
            raise ValueError(f"share_embeddings ties the output layer to the embeddings: word_vec_size "
                             f"({self.word_vec_size}) must equal hidden_size ({self.hidden_size})")


SELECT_BY = ("ppl", "accuracy", "last")

PRESETS: dict[str, OnmtLSTMConfig] = {
    # a few seconds: for tests and the tiny recipe scale
    "tiny": OnmtLSTMConfig(layers=1, hidden_size=128, word_vec_size=64, encoder_type="brnn", dropout=0.0,
                           batch_size=64, learning_rate=0.01, train_steps=200, valid_steps=200,
                           early_stopping=0, words_min_frequency=1, label_smoothing=0.0),
    # trains on 2 CPU cores in under an hour (about 6 epochs of Multi30k; test BLEU 33.2, docs/RESULTS.md)
    "small": OnmtLSTMConfig(layers=1, hidden_size=384, word_vec_size=256, train_steps=2700, valid_steps=450,
                            early_stopping=3),
    # the thesis's model: 2 x 500 LSTM with attention
    "paper": OnmtLSTMConfig(),
}


def write_parallel(corpus: ParallelCorpus, prefix: Path, *, lowercase: bool = False,
                   pretokenized: bool = False) -> tuple[Path, Path]:
    """Tokenise a corpus and write ``prefix.src`` / ``prefix.tgt`` (one sentence per line).

    ``pretokenized``: the text is already tokenised (Gigaword, DUC): split on whitespace only."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = (prefix.with_suffix(".src"), prefix.with_suffix(".tgt"))
    for side, path in zip((corpus.src, corpus.tgt), paths):
        with open(path, "w", encoding="utf-8") as fh:
            for line in side:
                text = line.lower() if lowercase else line
                toks = text.split() if pretokenized else tokenize(text)
                fh.write(" ".join(toks) + "\n")
    return paths


def onmt_yaml(cfg: OnmtLSTMConfig, run_dir: Path, train: tuple[Path, Path], valid: tuple[Path, Path]) -> dict:
    """The OpenNMT-py 3.5 option dictionary for ``cfg`` (keys equal its command-line flags)."""
    return {
        "save_data": str(run_dir / "data"),
        "src_vocab": str(run_dir / "vocab.src"),
        "tgt_vocab": str(run_dir / "vocab.tgt"),
        "overwrite": True,
        "data": {
            "corpus_1": {"path_src": str(train[0]), "path_tgt": str(train[1])},
            "valid": {"path_src": str(valid[0]), "path_tgt": str(valid[1])},
        },
        "src_words_min_frequency": cfg.words_min_frequency,
        "tgt_words_min_frequency": cfg.words_min_frequency,
        "model_type": "text",
        "encoder_type": cfg.encoder_type,
        "decoder_type": "rnn",
        "rnn_type": "LSTM",
        "layers": cfg.layers,
        "hidden_size": cfg.hidden_size,
        "word_vec_size": cfg.word_vec_size,
        "global_attention": "general",
        "input_feed": 1,
        "dropout": [cfg.dropout],
        "label_smoothing": cfg.label_smoothing,
        "optim": "adam",
        "learning_rate": cfg.learning_rate,
        "max_grad_norm": 5.0,
        "batch_type": "sents",
        "batch_size": cfg.batch_size,
        "valid_batch_size": 64,
        "bucket_size": 4096,
        "num_workers": 0,
        "train_steps": cfg.train_steps,
        "valid_steps": cfg.valid_steps,
        "save_checkpoint_steps": cfg.valid_steps,
        "keep_checkpoint": -1,
        "early_stopping": cfg.early_stopping,
        "early_stopping_criteria": "accuracy" if cfg.select_by == "accuracy" else "ppl",
        "report_every": max(10, cfg.valid_steps // 5),
        "save_model": str(run_dir / "model"),
        "seed": cfg.seed,
        "world_size": 1,
        "gpu_ranks": [],
        "model_dtype": "fp32",
        **({"both_embeddings": str(cfg.embeddings), "embeddings_type": "GloVe"} if cfg.embeddings else {}),
        **({"share_vocab": True, "share_embeddings": True, "share_decoder_embeddings": True}
           if cfg.share_embeddings else {}),
    }


_VALID_RE = {"ppl": re.compile(r"Validation perplexity: ([0-9.eE+-]+)"),
             "accuracy": re.compile(r"Validation accuracy: ([0-9.eE+-]+)")}
_STEP_RE = re.compile(r"Step (\d+)/")


def _best_step(log_text: str, select_by: str = "ppl") -> tuple[int, float] | None:
    """(step, score) of the best validation by ``select_by`` (lowest perplexity or highest accuracy), parsed
    from OpenNMT-py's log."""
    sign = 1.0 if select_by == "ppl" else -1.0
    step, best = 0, None
    for line in log_text.splitlines():
        m = _STEP_RE.search(line)
        if m:
            step = int(m.group(1))
        v = _VALID_RE[select_by].search(line)
        if v and (best is None or sign * float(v.group(1)) < sign * best[1]):
            best = (step, float(v.group(1)))
    return best


_STEP = re.compile(r"Step (\d+)/\s*(\d+);.*?ppl:\s*([\d.]+)")


def _run_logged(cmd: list[str], log: TextIO, *, total: int | None) -> int:
    """Run ``cmd``, copying its output to ``log``; with ``total``, a progress bar of OpenNMT-py's steps."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="training", unit="step", dynamic_ncols=True) if total else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(line)
            m = _STEP.search(line) if bar is not None else None
            if m and bar is not None:
                bar.update(int(m.group(1)) - bar.n)
                bar.set_postfix(ppl=m.group(3))
    finally:
        code = proc.wait()
        if bar is not None:
            bar.close()
    return code


def train_onmt(
    train_corpus: ParallelCorpus,
    valid_corpus: ParallelCorpus,
    run_dir: str | Path,
    cfg: OnmtLSTMConfig,
    *,
    lowercase: bool = False,
    pretokenized: bool = False,
    progress: bool = True,
) -> Path:
    """Train an OpenNMT-py LSTM and return the path of its best checkpoint (``run_dir/best.pt``).

    ``pretokenized``: split the text on whitespace only (pass the same flag to the victim that loads it).
    ``progress``: a progress bar of the training steps (with the latest training perplexity), read from
    OpenNMT-py's log as it is written to ``run_dir/train.log``."""
    import yaml

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.embeddings and not Path(cfg.embeddings).is_file():
        raise FileNotFoundError(f"word-vector file not found: {cfg.embeddings}")
    train = write_parallel(train_corpus, run / "train", lowercase=lowercase, pretokenized=pretokenized)
    valid = write_parallel(valid_corpus, run / "valid", lowercase=lowercase, pretokenized=pretokenized)
    opts = onmt_yaml(cfg, run, train, valid)
    config_path = run / "onmt.yaml"
    config_path.write_text(yaml.safe_dump(opts, sort_keys=False))
    (run / "config.json").write_text(json.dumps({"preset": asdict(cfg), "lowercase": lowercase,
                                                     "pretokenized": pretokenized}, indent=2))
    log_path = run / "train.log"
    with open(log_path, "w") as lf:
        for module in ("onmt.bin.build_vocab", "onmt.bin.train"):
            extra = ["-n_sample", "-1"] if module.endswith("build_vocab") else []
            code = _run_logged([sys.executable, "-m", module, "-config", str(config_path), *extra], lf,
                               total=cfg.train_steps if progress and module.endswith("train") else None)
            if code != 0:
                raise RuntimeError(f"{module} failed (exit {code}); see {log_path}")
    best = None if cfg.select_by == "last" else _best_step(log_path.read_text(), cfg.select_by)
    ckpts = sorted(run.glob("model_step_*.pt"), key=lambda p: int(p.stem.split("_")[-1]))
    if not ckpts:
        raise RuntimeError(f"OpenNMT-py wrote no checkpoint; see {log_path}")
    chosen = ckpts[-1]
    if best is not None:
        cand = run / f"model_step_{best[0]}.pt"
        if cand.exists():
            chosen = cand
    tmp = run / ".best.pt.tmp"
    shutil.copyfile(chosen, tmp)
    os.replace(tmp, run / "best.pt")  # atomic: a crash mid-copy leaves no torn best.pt
    log.info("best checkpoint %s (valid %s %s)", chosen.name, cfg.select_by, best[1] if best else "n/a")
    return run / "best.pt"


def preset(name: str, **overrides: object) -> OnmtLSTMConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)  # type: ignore[arg-type]
