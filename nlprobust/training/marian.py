"""Train Marian-style transformer translation victims from scratch with ``transformers`` + ``accelerate``.

The result is an ordinary Hugging Face model directory: ``MarianMTModel`` weights, a ``MarianTokenizer``
(two SentencePiece unigram models, source and target, and one joint ``vocab.json``) and a generation config,
so ``HFVictim(out_dir)`` and ``AutoModelForSeq2SeqLM.from_pretrained(out_dir)`` load it like an OPUS-MT
checkpoint from the Hub. Nothing is downloaded: the tokenizer is trained on the training corpus and the model
is built from a config.

Layout of ``out_dir`` after :func:`train_marian`::

    config.json, model.safetensors, generation_config.json      (MarianMTModel.save_pretrained)
    source.spm, target.spm, vocab.json, tokenizer_config.json   (MarianTokenizer.save_pretrained)
    train_config.json                                           (the preset, corpus sizes, best step, versions)
    train_log.jsonl                                             (one JSON record per evaluation, then a summary)

Conventions (those of the OPUS-MT models): ``</s>`` is id 0, ``<unk>`` id 1, ``<pad>`` the last id; decoding
starts with the pad token (``decoder_start_token_id == pad_token_id``); encoder, decoder and output
embeddings are one shared matrix, scaled by ``sqrt(d_model)`` on input.

The training loop runs through an :class:`accelerate.Accelerator`, so the same code serves one CPU, one GPU
or ``accelerate launch`` on several GPUs (each process takes every ``num_processes``-th length-bucketed batch;
validation runs on the full validation set in every process, so early-stopping decisions agree).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nlprobust.core.runio import atomic_write_json, git_sha, versions
from nlprobust.corpora import ParallelCorpus
from nlprobust.victims.base import quiet_third_party

log = logging.getLogger(__name__)

EOS, UNK, PAD = "</s>", "<unk>", "<pad>"
_IGNORE = -100  # label value ignored by the loss
STOP_FILE = "STOP"  # create out_dir/STOP to end training gracefully at the next validation


@dataclass(frozen=True, kw_only=True)
class MarianTrainConfig:
    """Tokenizer, architecture and optimisation of a Marian transformer trained from scratch.

    Attributes:
        vocab_size: target size of *each* SentencePiece model (source and target are trained separately; the
            joint ``vocab.json`` holds the union of both piece sets plus ``</s>``, ``<unk>``, ``<pad>``). The
            limit is soft: a small corpus yields fewer pieces.
        d_model: hidden size (embeddings, attention, residual stream).
        layers: encoder layers, and as many decoder layers.
        heads: attention heads per layer (must divide ``d_model``).
        ffn_dim: inner size of the feed-forward blocks.
        dropout: dropout on residual connections (attention and activation dropout stay 0, as in Marian).
        label_smoothing: label smoothing of the training cross-entropy (validation loss is plain NLL).
        lr: peak learning rate, reached after ``warmup_steps`` and decayed as ``1/sqrt(step)`` afterwards.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay (0 as in Marian's Adam).
        batch_size: sentence pairs per optimisation step (per process).
        max_epochs: passes over the training data at most.
        max_steps: optimisation steps at most (``None``: bounded by ``max_epochs`` only).
        eval_every: validate (and log) every this many steps, and once more at the end.
        patience: stop after this many validations in a row without a lower validation loss (0: never stop
            early). The weights of the best validation are the ones saved.
        max_len: longest sequence in subword tokens, ``</s>`` included: longer training pairs are dropped,
            longer validation sentences truncated.
        seed: seeds weight initialisation, batch order and dropout.
    """

    vocab_size: int = 8000
    d_model: int = 256
    layers: int = 3
    heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.1
    lr: float = 7e-4
    warmup_steps: int = 1000
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 30
    max_steps: int | None = None
    eval_every: int = 500
    patience: int = 5
    max_len: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("vocab_size", "d_model", "layers", "heads", "ffn_dim", "batch_size", "max_epochs", "eval_every",
                    "max_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"MarianTrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("dropout and label_smoothing must lie in [0, 1)")
        if self.lr <= 0 or self.warmup_steps < 0 or self.patience < 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive; warmup_steps, patience and weight_decay non-negative")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive or None, got {self.max_steps}")
        if self.max_len < 2:
            raise ValueError("max_len must leave room for a token and </s>")


PRESETS: dict[str, MarianTrainConfig] = {
    # seconds on one CPU thread: learns the synthetic corpus (tests, the tiny recipe scale)
    "tiny": MarianTrainConfig(vocab_size=200, d_model=64, layers=2, heads=4, ffn_dim=256, dropout=0.0, lr=3e-3,
                              warmup_steps=100, batch_size=32, max_epochs=40, max_steps=3000, eval_every=100,
                              patience=4, max_len=64),
    # Multi30k en-de on 2 CPU cores in about an hour: 9.7M parameters (joint vocabulary ~15k pieces), measured
    # 1.2 s/step with one thread (~875 target tokens/s), so 5000 steps (11 epochs of 453) take ~1.6 h on one
    # thread and about an hour on two
    "small": MarianTrainConfig(vocab_size=8000, d_model=256, layers=3, heads=4, ffn_dim=1024, dropout=0.1,
                               lr=7e-4, warmup_steps=800, batch_size=64, max_epochs=30, max_steps=5000,
                               eval_every=500, patience=4, max_len=128),
    # Marian "transformer-base"-like (as the OPUS-MT models); GPU
    "paper": MarianTrainConfig(vocab_size=8000, d_model=512, layers=6, heads=8, ffn_dim=2048, dropout=0.1,
                               lr=5e-4, warmup_steps=4000, batch_size=128, max_epochs=100, max_steps=None,
                               eval_every=1000, patience=10, max_len=256),
}


def preset(name: str, **overrides: Any) -> MarianTrainConfig:
    """A copy of ``PRESETS[name]`` with some fields replaced.

    Args:
        name: ``"tiny"``, ``"small"`` or ``"paper"``.
        **overrides: :class:`MarianTrainConfig` fields to change.

    Returns:
        The configuration.

    Raises:
        ValueError: unknown preset name or invalid field value.
        TypeError: unknown field name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# ---- tokenizer -----------------------------------------------------------------------------------------------
def _check_corpus(corpus: ParallelCorpus, what: str) -> None:
    if not isinstance(corpus, ParallelCorpus):
        raise TypeError(f"{what} corpus must be a ParallelCorpus, got {type(corpus).__name__}")
    if len(corpus.src) != len(corpus.tgt):  # ParallelCorpus checks this, unless mutated afterwards
        raise ValueError(f"{what} corpus: source and target differ in length: {len(corpus.src)} vs "
                         f"{len(corpus.tgt)} lines")
    if len(corpus) == 0:
        raise ValueError(f"{what} corpus is empty")
    if not any(s.strip() and t.strip() for s, t in zip(corpus.src, corpus.tgt)):
        raise ValueError(f"{what} corpus has no pair with both a non-empty source and a non-empty target")


def _prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` and make sure files can be written there."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write_test_"):
            pass
    except PermissionError as exc:
        raise PermissionError(f"output directory {out} is not writable: {exc}") from exc
    except OSError as exc:  # read-only file system, a parent that is a file, ...
        raise OSError(f"cannot create or write the output directory {out}: {exc}") from exc
    return out


def _train_spm(lines: Sequence[str], path: Path, vocab_size: int) -> None:
    """Train a unigram SentencePiece model on ``lines`` and write it to ``path``."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    text = [line for line in lines if line.strip()]
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(text), model_writer=buf, vocab_size=vocab_size, hard_vocab_limit=False,
            model_type="unigram", character_coverage=1.0, input_sentence_size=2_000_000,
            shuffle_input_sentence=True, num_threads=max(1, torch.get_num_threads()), minloglevel=2,
            eos_id=0, unk_id=1, pad_id=2, bos_id=-1, eos_piece=EOS, unk_piece=UNK, pad_piece=PAD,
            seed_sentencepiece_size=1_000_000,
        )
    except RuntimeError as exc:
        raise ValueError(f"SentencePiece training for {path.name} failed (vocab_size={vocab_size}, "
                         f"{len(text)} lines): {exc}") from exc
    path.write_bytes(buf.getvalue())


def _joint_vocab(spm_paths: Sequence[Path]) -> dict[str, int]:
    """``</s>`` 0, ``<unk>`` 1, the pieces of each model in order (no duplicates), ``<pad>`` last."""
    import sentencepiece as spm

    pieces: dict[str, int] = {EOS: 0, UNK: 1}
    for path in spm_paths:
        sp = spm.SentencePieceProcessor(model_file=str(path))
        for i in range(sp.get_piece_size()):
            piece = sp.id_to_piece(i)
            if not (sp.is_control(i) or sp.is_unknown(i)) and piece not in pieces:
                pieces[piece] = len(pieces)
    pieces[PAD] = len(pieces)
    return pieces


def build_tokenizer(train: ParallelCorpus, out_dir: str | os.PathLike[str], vocab_size: int, *,
                    source_lang: str = "en", target_lang: str = "de") -> Any:
    """Train source and target SentencePiece models and save a ``MarianTokenizer`` into ``out_dir``.

    Args:
        train: the corpus whose source side trains the source model, target side the target model.
        out_dir: where ``source.spm``, ``target.spm``, ``vocab.json`` and ``tokenizer_config.json`` go.
        vocab_size: soft size limit of each SentencePiece model.
        source_lang: source language code (recorded in the tokenizer config).
        target_lang: target language code.

    Returns:
        The ``MarianTokenizer``, as reloaded from ``out_dir``.
    """
    from transformers import MarianTokenizer

    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="marian_spm_") as tmp:
        src_spm, tgt_spm, vocab_path = Path(tmp) / "source.spm", Path(tmp) / "target.spm", Path(tmp) / "vocab.json"
        _train_spm(train.src, src_spm, vocab_size)
        _train_spm(train.tgt, tgt_spm, vocab_size)
        vocab_path.write_text(json.dumps(_joint_vocab([src_spm, tgt_spm]), ensure_ascii=False), encoding="utf-8")
        with quiet_third_party():
            tok = MarianTokenizer(str(src_spm), str(tgt_spm), str(vocab_path), source_lang=source_lang,
                                  target_lang=target_lang)
            tok.save_pretrained(str(out))
    with quiet_third_party():
        return MarianTokenizer.from_pretrained(str(out))


# ---- model ---------------------------------------------------------------------------------------------------
def build_model(cfg: MarianTrainConfig, tokenizer: Any) -> Any:
    """A randomly initialised ``MarianMTModel`` for ``tokenizer``'s joint vocabulary (seeded by the caller)."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    pad, eos = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
    config = MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=cfg.d_model,
        encoder_layers=cfg.layers, decoder_layers=cfg.layers, encoder_attention_heads=cfg.heads,
        decoder_attention_heads=cfg.heads, encoder_ffn_dim=cfg.ffn_dim, decoder_ffn_dim=cfg.ffn_dim,
        dropout=cfg.dropout, attention_dropout=0.0, activation_dropout=0.0, activation_function="swish",
        max_position_embeddings=max(512, cfg.max_len + 2), scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos,
        bos_token_id=None,
    )
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(
        # max_new_tokens, not max_length: a caller passing max_new_tokens (HFVictim does) would otherwise get a
        # "both max_new_tokens and max_length set" warning on every generate call
        num_beams=5, early_stopping=True, do_sample=False, max_new_tokens=cfg.max_len, num_return_sequences=1,
        decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=eos, forced_eos_token_id=eos,
        # the pad token starts every output and is never a target: ban it, as the OPUS-MT configs do
        bad_words_ids=[[pad]],
    )
    return model


# ---- data ----------------------------------------------------------------------------------------------------
def _encode(tokenizer: Any, corpus: ParallelCorpus) -> tuple[list[list[int]], list[list[int]]]:
    """Source and target ids (``</s>`` appended) of the pairs with both sides non-empty."""
    pairs = [(s, t) for s, t in zip(corpus.src, corpus.tgt) if s.strip() and t.strip()]
    src = [list(x) for x in tokenizer([s for s, _ in pairs])["input_ids"]]
    tgt = [list(x) for x in tokenizer(text_target=[t for _, t in pairs])["input_ids"]]
    return src, tgt


def _bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length inside chunks of 50 batches, cut into batches and shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: lengths[i])
        batches.extend(part[b:b + batch_size] for b in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(src: Sequence[list[int]], tgt: Sequence[list[int]], pad: int, start: int,
             device: torch.device) -> dict[str, Tensor]:
    """Right-padded model inputs; ``labels`` carry :data:`_IGNORE` on padding."""
    ns, nt = max(len(s) for s in src), max(len(t) for t in tgt)
    input_ids = torch.full((len(src), ns), pad, dtype=torch.long)
    labels = torch.full((len(tgt), nt), _IGNORE, dtype=torch.long)
    dec_in = torch.full((len(tgt), nt), pad, dtype=torch.long)
    for i, (s, t) in enumerate(zip(src, tgt)):
        input_ids[i, :len(s)] = torch.tensor(s)
        labels[i, :len(t)] = torch.tensor(t)
        dec_in[i, 0] = start
        dec_in[i, 1:len(t)] = torch.tensor(t[:-1])
    return {"input_ids": input_ids.to(device), "attention_mask": (input_ids != pad).long().to(device),
            "decoder_input_ids": dec_in.to(device), "labels": labels.to(device)}


def _forward_loss(model: Any, batch: dict[str, Tensor], smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """(label-smoothed mean loss, summed NLL, token count) of one batch, all as tensors (no host sync)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                decoder_input_ids=batch["decoder_input_ids"], use_cache=False, return_dict=True)
    lprobs = F.log_softmax(out.logits.float().flatten(0, 1), dim=-1)
    labels = batch["labels"].flatten()
    real = labels != _IGNORE
    # = F.cross_entropy(..., label_smoothing=smoothing), with one log-softmax shared with the plain NLL
    nll = -lprobs.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)[real]
    n = real.sum()
    if smoothing > 0:
        loss = ((1.0 - smoothing) * nll.sum() - smoothing * lprobs[real].mean(dim=-1).sum()) / n.clamp(min=1)
    else:
        loss = nll.sum() / n.clamp(min=1)
    return loss, nll.detach().sum(), n


@torch.no_grad()
def _corpus_nll(model: Any, src: Sequence[list[int]], tgt: Sequence[list[int]], pad: int, start: int,
                device: torch.device, batch_size: int, autocast: Any = contextlib.nullcontext) -> float:
    """Mean per-token negative log-likelihood (teacher forcing, eval mode)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    order = sorted(range(len(src)), key=lambda i: len(tgt[i]))
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            batch = _collate([src[i] for i in idx], [tgt[i] for i in idx], pad, start, device)
            with autocast():
                _, nll, n = _forward_loss(model, batch, 0.0)
            total += float(nll)
            tokens += int(n)
    finally:
        model.train(was_training)
    return total / max(1, tokens)


def _truncate(seqs: Sequence[list[int]], max_len: int, eos: int) -> list[list[int]]:
    return [s if len(s) <= max_len else s[:max_len - 1] + [eos] for s in seqs]


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the state dict; tied tensors are copied once."""
    seen: dict[int, Tensor] = {}
    out: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        key = v.data_ptr()
        if key not in seen:
            seen[key] = v.detach().to("cpu", copy=True)
        out[k] = seen[key]
    return out


# ---- training ------------------------------------------------------------------------------------------------
def train_marian(train: ParallelCorpus, valid: ParallelCorpus, out_dir: str | os.PathLike[str],
                 cfg: MarianTrainConfig, *, source_lang: str = "en", target_lang: str = "de",
                 progress: bool = True) -> Path:
    """Train a Marian transformer and its tokenizer from scratch; save both as a Hugging Face model directory.

    Steps: SentencePiece models and ``MarianTokenizer`` (saved first), a ``MarianMTModel`` from config, an
    ``accelerate`` training loop (AdamW, inverse-sqrt warm-up schedule, label-smoothed cross-entropy that
    ignores padding, gradient clipping at 1.0, length-bucketed batches), validation every ``cfg.eval_every``
    steps with early stopping, and finally ``save_pretrained`` of the weights with the lowest validation loss.
    Creating a file ``out_dir/STOP`` during training ends it at the next validation, as early stopping would.

    Args:
        train: training pairs (empty pairs are skipped, pairs longer than ``cfg.max_len`` tokens dropped).
        valid: validation pairs for the early-stopping loss.
        out_dir: the model directory to write (created; existing model files are overwritten).
        cfg: the configuration (see :data:`PRESETS` / :func:`preset`).
        source_lang: source language code for the tokenizer config.
        target_lang: target language code.
        progress: show a tqdm progress bar (main process only).

    Returns:
        ``out_dir`` as a ``Path``, loadable with ``HFVictim(out_dir)``.

    Raises:
        ValueError: empty corpus, mismatched corpus sides, no training pair within ``cfg.max_len``, failing
            SentencePiece training.
        NotADirectoryError: ``out_dir`` is an existing file.
        PermissionError: ``out_dir`` cannot be created or written for lack of permission.
        OSError: ``out_dir`` cannot be created or written for another reason (read-only file system, ...).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    _check_corpus(train, "training")
    _check_corpus(valid, "validation")
    out = _prepare_out_dir(out_dir)
    accelerator = Accelerator()
    main = accelerator.is_main_process
    if main:
        (out / STOP_FILE).unlink(missing_ok=True)  # a request left over from an earlier run
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)

    # (1) tokenizer: trained once by the main process, read by all
    if main:
        build_tokenizer(train, out, cfg.vocab_size, source_lang=source_lang, target_lang=target_lang)
    accelerator.wait_for_everyone()
    from transformers import MarianTokenizer

    with quiet_third_party():
        tok = MarianTokenizer.from_pretrained(str(out))
    pad, eos = int(tok.pad_token_id), int(tok.eos_token_id)
    src_all, tgt_all = _encode(tok, train)
    keep = [i for i in range(len(src_all)) if len(src_all[i]) <= cfg.max_len and len(tgt_all[i]) <= cfg.max_len]
    if not keep:
        raise ValueError(f"no training pair fits max_len={cfg.max_len} tokens")
    tr_src, tr_tgt = [src_all[i] for i in keep], [tgt_all[i] for i in keep]
    va_src, va_tgt = _encode(tok, valid)
    va_src, va_tgt = _truncate(va_src, cfg.max_len, eos), _truncate(va_tgt, cfg.max_len, eos)
    skipped = len(train) - len(keep)
    if skipped:
        log.info("skipped %d of %d training pairs (empty side or longer than %d tokens)", skipped, len(train),
                 cfg.max_len)

    # (2) model, seeded
    set_seed(cfg.seed)
    model = build_model(cfg, tok)
    start = int(model.config.decoder_start_token_id)

    # (3) optimiser, schedule, loop
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "embed_positions" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.dim() < 2)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    warm = max(1, cfg.warmup_steps)

    def inv_sqrt(step: int) -> float:
        s = step + 1
        return min(s / warm, math.sqrt(warm / s))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, inv_sqrt)
    model, optim, sched = accelerator.prepare(model, optim, sched)
    raw = accelerator.unwrap_model(model)
    device = accelerator.device

    world, rank = accelerator.num_processes, accelerator.process_index
    lengths = [max(len(s), len(t)) for s, t in zip(tr_src, tr_tgt)]
    steps_per_epoch = max(1, math.ceil(len(tr_src) / cfg.batch_size) // world)
    total = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)

    log_path = out / "train_log.jsonl"
    log_fh = open(log_path, "w", encoding="utf-8") if main else None  # noqa: SIM115 - closed in finally
    best_loss, best_step, best_state, bad_evals = math.inf, 0, _snapshot(raw), 0
    step, stopped_early, t0, train_s = 0, False, time.perf_counter(), 0.0
    run_loss, run_steps, seen_tokens = torch.zeros((), device=accelerator.device), 0, 0
    bar = tqdm(total=total, disable=not (progress and accelerator.is_local_main_process), desc="marian",
               dynamic_ncols=True)

    def evaluate() -> bool:
        """Validate, log, keep the best weights; True when patience is exhausted."""
        nonlocal best_loss, best_step, best_state, bad_evals, run_loss, run_steps
        val = _corpus_nll(raw, va_src, va_tgt, pad, start, device, max(cfg.batch_size, 64), accelerator.autocast)
        improved = val < best_loss
        if improved:
            best_loss, best_step, best_state, bad_evals = val, step, _snapshot(raw), 0
        else:
            bad_evals += 1
        train_loss = accelerator.reduce(torch.stack([run_loss.float(), torch.tensor(float(run_steps), device=device)]),
                                        "sum")
        record = {"step": step, "epoch": round(step / steps_per_epoch, 3),
                  "train_loss": round(float(train_loss[0] / max(1.0, float(train_loss[1]))), 5),
                  "val_loss": round(val, 5), "val_ppl": round(math.exp(min(val, 50.0)), 3),
                  "lr": sched.get_last_lr()[0], "best": improved,
                  "elapsed_s": round(time.perf_counter() - t0, 2), "train_s": round(train_s, 2),
                  # target tokens per second of training (validation excluded), all processes together
                  "tgt_tokens_per_s": round(seen_tokens * world / max(1e-9, train_s), 1)}
        if log_fh is not None:
            log_fh.write(json.dumps(record) + "\n")
            log_fh.flush()
        bar.set_postfix(loss=record["train_loss"], val=record["val_loss"], best=round(best_loss, 4))
        run_loss, run_steps = torch.zeros((), device=device), 0
        return cfg.patience > 0 and bad_evals >= cfg.patience

    def stop_requested() -> bool:
        """A file named STOP in ``out_dir`` ends training at this validation (the best weights are saved)."""
        if (out / STOP_FILE).exists():
            log.info("found %s: stopping at step %d", out / STOP_FILE, step)
            return True
        return False

    try:
        model.train()
        epoch = 0
        while step < total and not stopped_early:
            batches = _bucketed_batches(lengths, cfg.batch_size, random.Random(cfg.seed * 1_000_003 + epoch))
            mine = batches[:len(batches) // world * world][rank::world] if world > 1 else batches
            for idx in mine:
                t_step = time.perf_counter()
                batch = _collate([tr_src[i] for i in idx], [tr_tgt[i] for i in idx], pad, start, device)
                loss, _, _ = _forward_loss(model, batch, cfg.label_smoothing)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                step += 1
                run_loss += loss.detach()  # no host sync per step
                run_steps += 1
                seen_tokens += sum(len(tr_tgt[i]) for i in idx)
                train_s += time.perf_counter() - t_step
                bar.update(1)
                if step % cfg.eval_every == 0 and (evaluate() or stop_requested()):
                    stopped_early = True
                    break
                if step >= total:
                    break
            epoch += 1
        if step % cfg.eval_every:  # the last steps since the last validation
            evaluate()
    finally:
        bar.close()
        if log_fh is not None:
            log_fh.close()

    # (4) save the best weights, the tokenizer and the run description
    accelerator.wait_for_everyone()
    if main:
        raw.load_state_dict(best_state)
        raw.save_pretrained(str(out))
        with quiet_third_party():
            tok.save_pretrained(str(out))
        summary = {"done": True, "steps": step, "best_step": best_step, "best_val_loss": round(best_loss, 5),
                   "stopped_early": stopped_early, "elapsed_s": round(time.perf_counter() - t0, 2)}
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(summary) + "\n")
        atomic_write_json(out / "train_config.json", {
            "config": asdict(cfg), "seed": cfg.seed, "source_lang": source_lang, "target_lang": target_lang,
            "train_size": len(train), "train_used": len(tr_src), "valid_size": len(va_src),
            "vocab_size": len(tok), "parameters": sum(p.numel() for p in raw.parameters()),
            "num_processes": world, "device": str(device), **summary,
            "versions": versions("transformers", "accelerate", "sentencepiece"), "git_sha": git_sha(),
        })
        log.info("saved Marian model to %s (best step %d, val loss %.4f)", out, best_step, best_loss)
    accelerator.wait_for_everyone()
    return out


# ---- evaluation ----------------------------------------------------------------------------------------------
def evaluate_loss(model_dir: str | os.PathLike[str], corpus: ParallelCorpus, *, batch_size: int = 64,
                  max_len: int | None = None, device: str | torch.device | None = None) -> dict[str, float]:
    """Per-token validation loss (NLL, teacher forcing) of a saved model, computed as during training.

    Args:
        model_dir: a directory written by :func:`train_marian` (or any Marian ``save_pretrained`` directory).
        corpus: the pairs to score (empty pairs skipped).
        batch_size: sentences per forward pass.
        max_len: truncate longer sequences (default: ``max_len`` from ``train_config.json``, else no limit).
        device: where to run (default CPU).

    Returns:
        ``{"loss": mean NLL per target token, "ppl": exp(loss), "n": sentences scored}``.
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    _check_corpus(corpus, "evaluation")
    path = Path(model_dir)
    if max_len is None:
        meta = path / "train_config.json"
        if meta.is_file():
            max_len = int(json.loads(meta.read_text(encoding="utf-8"))["config"]["max_len"])
    dev = torch.device(device) if device is not None else torch.device("cpu")
    with quiet_third_party():
        tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path)).to(dev)
    src, tgt = _encode(tok, corpus)
    if max_len is not None:
        src, tgt = _truncate(src, max_len, tok.eos_token_id), _truncate(tgt, max_len, tok.eos_token_id)
    start = model.config.decoder_start_token_id
    loss = _corpus_nll(model, src, tgt, int(tok.pad_token_id), int(start), dev, batch_size)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "n": len(src)}


def evaluate_bleu(model_dir: str | os.PathLike[str], corpus: ParallelCorpus, beam: int = 5,
                  batch_size: int = 64, *, device: str | torch.device | None = None) -> dict[str, Any]:
    """Corpus BLEU (sacrebleu, default 13a tokenisation) of a saved model, decoding through ``HFVictim``.

    Args:
        model_dir: a Hugging Face seq2seq model directory (e.g. from :func:`train_marian`).
        corpus: sources to translate and their references; an empty source gets an empty hypothesis.
        beam: beam size.
        batch_size: sentences per ``generate`` call.
        device: where to decode (default: CUDA when available).

    Returns:
        ``{"bleu", "chrf", "exact_match" (fraction of hypotheses equal to their reference), "n",
        "signature" (sacrebleu's BLEU signature), "hypotheses"}``.
    """
    import sacrebleu

    from nlprobust.victims.huggingface import HFVictim

    _check_corpus(corpus, "evaluation")
    with quiet_third_party():
        victim = HFVictim(model_dir, device=device)
    nonempty = [i for i, s in enumerate(corpus.src) if s.strip()]
    outs = victim.translate([corpus.src[i] for i in nonempty], beam_size=beam, batch_size=batch_size)
    hyps = [""] * len(corpus)
    for i, h in zip(nonempty, outs):
        hyps[i] = h
    refs = list(corpus.tgt)
    bleu = sacrebleu.metrics.BLEU()
    score = bleu.corpus_score(hyps, [refs])
    chrf = sacrebleu.metrics.CHRF().corpus_score(hyps, [refs])
    exact = sum(h.strip() == r.strip() for h, r in zip(hyps, refs)) / len(refs)
    return {"bleu": score.score, "chrf": chrf.score, "exact_match": exact, "n": len(refs),
            "signature": str(bleu.get_signature()), "hypotheses": hyps}
