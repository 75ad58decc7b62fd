"""Adversarial fine-tuning of a Hugging Face seq2seq model: translate a perturbed source as its original.

:func:`train_robust` starts from a trained model directory (e.g. :func:`nlprobust.training.marian.train_marian`'s,
or any ``AutoModelForSeq2SeqLM`` checkpoint with its tokenizer) and fine-tunes it on batches in which a share
``adv_fraction`` of the sources is replaced, on the fly and against the current weights, by an adversarial
version paired with the clean target. The adversary (``RobustConfig.adversary``):

* ``hotflip`` -- the project's gradient-guided swap turned on the training loss (the "doubly adversarial
  inputs" recipe of Cheng et al., ACL 2019): one forward and backward pass gives the gradient of the target's
  NLL with respect to the source embeddings; the first-order gain of putting word ``w`` at position ``i``,
  ``g_i . (e_w - e_i)``, ranks every whole-word position and candidate word at once, and the ``max_changes``
  best positions (one word each) are swapped. Cheap: no decoding.
* ``word-swap`` / ``seq2sick`` -- the project's text attacks (:class:`~nlprobust.attacks.GradientWordSwap`,
  :class:`~nlprobust.attacks.Seq2Sick`) with a non-overlap goal and cheap settings (few steps, greedy judging,
  no reduction), run through an :class:`~nlprobust.victims.huggingface.HFVictim` on the live weights; the
  adversarial text they reach (successful or not) is the new source.
* ``embedding`` -- PGD on the source embeddings within an l2 ball per token (``epsilon`` x the mean norm of an
  embedding row), ``pgd_steps`` ascent steps on the NLL (in the spirit of doubly-adversarial inputs and FreeLB);
  the loss is the mean of the clean and the perturbed batch. Costs ``pgd_steps + 1`` extra passes, no search.
* ``none`` -- natural fine-tuning with the same schedule (the cost baseline).

The loop runs on :class:`accelerate.Accelerator` (AdamW, linear warm-up then constant, label smoothing,
gradient clipping), shows a progress bar, validates (clean NLL) every ``eval_every`` steps and checkpoints
there atomically (weights, optimiser and scheduler states, RNG state, progress); re-running the same call on
the same folder resumes and ends with the weights an uninterrupted run would have. ``out_dir`` ends as a model
directory (``save_pretrained`` of the weights and the tokenizer) with ``train_config.json`` (configuration,
data sizes, seconds per step for the cost comparison with natural fine-tuning, versions) and
``train_log.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nlprobust.core.runio import (
    atomic_dir,
    atomic_write_json,
    complete_dir,
    git_sha,
    rng_state,
    set_rng_state,
    start_run,
    versions,
)
from nlprobust.corpora import ParallelCorpus
from nlprobust.training.marian import (
    _IGNORE,
    _bucketed_batches,
    _check_corpus,
    _collate,
    _corpus_nll,
    _encode,
    _truncate,
)
from nlprobust.victims.base import quiet_third_party

log = logging.getLogger(__name__)

ADVERSARIES = ("none", "hotflip", "word-swap", "seq2sick", "embedding")
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.json"
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True, kw_only=True)
class RobustConfig:
    """Settings of :func:`train_robust`.

    Attributes:
        adversary: how adversarial sources are made (see the module docstring): ``hotflip``, ``word-swap``,
            ``seq2sick``, ``embedding`` or ``none``.
        adv_fraction: share of each batch's sources replaced by adversarial ones (``embedding``: the share of
            the batch perturbed).
        max_changes: words a discrete adversary changes per sentence at most.
        epsilon: ``embedding``: radius of each token's perturbation, as a multiple of the mean norm of an
            embedding row (scaled as the encoder sees it).
        pgd_steps: ``embedding``: ascent steps.
        lr: peak learning rate (AdamW), reached after ``warmup_steps``, then constant.
        warmup_steps: linear warm-up steps.
        batch_size: sentence pairs per step.
        max_steps: optimisation steps.
        eval_every: validate, log and checkpoint every this many steps.
        label_smoothing: label smoothing of the training loss.
        max_len: longest pair in subword tokens (longer training pairs are dropped).
        attack_steps: ``word-swap`` / ``seq2sick``: search steps (iterations) of the attack.
        seed: seeds the batch order, the adversaries and dropout.
    """

    adversary: str = "hotflip"
    adv_fraction: float = 0.5
    max_changes: int = 2
    epsilon: float = 0.3
    pgd_steps: int = 2
    lr: float = 1e-4
    warmup_steps: int = 100
    batch_size: int = 32
    max_steps: int = 2000
    eval_every: int = 200
    label_smoothing: float = 0.1
    max_len: int = 128
    attack_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.adversary not in ADVERSARIES:
            raise ValueError(f"unknown adversary {self.adversary!r}; expected one of {ADVERSARIES}")
        if not 0.0 <= self.adv_fraction <= 1.0:
            raise ValueError(f"adv_fraction must be in [0, 1], got {self.adv_fraction}")
        for name in ("max_changes", "batch_size", "max_steps", "eval_every", "max_len", "attack_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.epsilon < 0 or self.pgd_steps < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0 and epsilon, pgd_steps, warmup_steps >= 0")


PRESETS: dict[str, RobustConfig] = {
    # seconds on one CPU thread: the test suite's tiny Marian
    "tiny": RobustConfig(batch_size=8, max_steps=12, eval_every=4, warmup_steps=2, lr=5e-4, attack_steps=2),
    # the small Multi30k Marian victim on 2 CPU cores: 1,500 steps of 32 pairs (about 1.6 epochs)
    "small": RobustConfig(batch_size=32, max_steps=1500, eval_every=250, warmup_steps=100, lr=1e-4),
    "paper": RobustConfig(batch_size=64, max_steps=6000, eval_every=500, warmup_steps=400, lr=1e-4),
}


def preset(name: str, **overrides: Any) -> RobustConfig:
    """A copy of ``PRESETS[name]`` with some fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# ---- adversaries -----------------------------------------------------------------------------------------------
class _Vocab:
    """Token-level facts the discrete adversary needs: which ids start a word, which may be written (source
    pieces of letters only: no punctuation, digits or specials)."""

    def __init__(self, victim: Any) -> None:
        tok = victim.tokenizer
        n = victim.source_embedding_table().shape[0]
        pieces = tok.convert_ids_to_tokens(list(range(min(n, len(tok)))))
        starts = torch.zeros(n, dtype=torch.bool)
        for i, p in enumerate(pieces):
            starts[i] = isinstance(p, str) and p.startswith("\u2581")
        special = torch.zeros(n, dtype=torch.bool)
        special[[i for i in tok.all_special_ids if i < n]] = True
        letters = torch.zeros(n, dtype=torch.bool)
        cand = victim.candidate_ids().cpu().tolist()
        for i in cand:
            p = pieces[i] if i < len(pieces) else None
            letters[i] = isinstance(p, str) and p.lstrip("\u2581").isalpha()
        dev = victim.device
        self.word_start, self.special = starts.to(dev), special.to(dev)
        #: what may replace a word-start piece, and what may replace a piece inside a word
        self.start_candidates, self.inner_candidates = (letters & starts).to(dev), (letters & ~starts).to(dev)


def hotflip_sources(victim: Any, vocab: _Vocab, batch: dict[str, Tensor], max_changes: int) -> Tensor:
    """Source ids with up to ``max_changes`` pieces swapped each (so at most as many words changed), by the
    first-order gain in the NLL of the batch's targets (see the module docstring). A word-start piece is replaced
    by another word-start piece and a piece inside a word by another such piece, so word boundaries stay (with a
    word-level vocabulary every swap is a whole word). Rows of ``batch`` are ``_collate``'s; returns ``(B, L)``."""
    model, ids, mask = victim.model, batch["input_ids"], batch["attention_mask"]
    table = victim.source_embedding_table().detach()
    scale = float(victim.embed_scale)
    emb = (table[ids] * scale).detach().requires_grad_(True)
    with victim.attack_mode():
        out = model(inputs_embeds=emb, attention_mask=mask, decoder_input_ids=batch["decoder_input_ids"],
                    use_cache=False, return_dict=True)
        labels = batch["labels"]
        nll = F.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten(), ignore_index=_IGNORE)
        (grad,) = torch.autograd.grad(nll, emb)
    starts = vocab.word_start[ids]
    letters = vocab.start_candidates | vocab.inner_candidates
    movable = letters[ids] & mask.bool()  # pieces of letters (not punctuation, specials or padding)
    allowed = torch.where(starts.unsqueeze(-1), vocab.start_candidates.view(1, 1, -1),
                          vocab.inner_candidates.view(1, 1, -1))
    gain = grad @ (table * scale).T.to(grad.dtype) - (grad * emb.detach()).sum(-1, keepdim=True)  # (B, L, V)
    gain = gain.masked_fill(~allowed, float("-inf"))
    gain.scatter_(2, ids.unsqueeze(-1), float("-inf"))  # a swap must change the piece
    best_gain, best_word = gain.max(dim=-1)
    best_gain = best_gain.masked_fill(~movable, float("-inf"))
    k = min(max_changes, ids.size(1))
    top_gain, top_pos = best_gain.topk(k, dim=1)
    take = torch.isfinite(top_gain) & (top_gain > 0)
    new = ids.clone()
    rows = torch.arange(ids.size(0), device=ids.device).unsqueeze(1).expand_as(top_pos)
    new[rows[take], top_pos[take]] = best_word.gather(1, top_pos)[take]
    return new


def attack_sources(victim: Any, texts: Sequence[str], adversary: str, cfg: RobustConfig) -> list[str]:
    """Adversarial versions of ``texts`` by the project's ``word-swap`` or ``seq2sick`` attack against
    ``victim`` (non-overlap goal, cheap settings, greedy judging, no reduction); the text the search reached
    when it did not succeed."""
    from nlprobust.attacks import AttackItem, GradientWordSwap, Seq2Sick, WordSwapConfig
    from nlprobust.attacks import preset as attack_preset

    items = [AttackItem(i, t) for i, t in enumerate(texts)]
    attack: Any
    if adversary == "word-swap":
        attack = GradientWordSwap(victim, WordSwapConfig(mode="nonoverlap", max_changes=cfg.max_changes,
                                                         candidates=8, verify=1, beam_size=1, reduce=False))
    else:
        attack = Seq2Sick(victim, attack_preset("paper", "nonoverlap", iterations=cfg.attack_steps, beam_size=1,
                                                reduce=False))
    results = attack.run(items, batch_size=len(items))
    return [r.adversarial or r.source for r in results]


def embedding_loss(victim: Any, batch: dict[str, Tensor], cfg: RobustConfig, rows: Tensor) -> Tensor:
    """The label-smoothed loss of ``batch`` with the sources of ``rows`` perturbed in embedding space by PGD
    (l2 ball of ``cfg.epsilon`` x the mean embedding norm per token); differentiable in the weights."""
    model, ids, mask = victim.model, batch["input_ids"], batch["attention_mask"]
    table = victim.source_embedding_table()
    scale = float(victim.embed_scale)
    radius = cfg.epsilon * float(table.detach().norm(dim=-1).mean()) * scale
    base = table[ids] * scale
    sel = torch.zeros(ids.size(0), 1, 1, device=ids.device, dtype=base.dtype)
    sel[rows] = 1.0
    tokmask = mask.unsqueeze(-1).to(base.dtype)
    delta = torch.zeros_like(base)
    for _ in range(cfg.pgd_steps):
        d = delta.detach().requires_grad_(True)
        with victim.attack_mode():
            loss = _smoothed_loss(model, batch, base.detach() + d * sel * tokmask, 0.0)
            (g,) = torch.autograd.grad(loss, d)
        step = g / g.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        delta = delta.detach() + radius * step  # one radius per step, then back into the ball
        norm = delta.norm(dim=-1, keepdim=True)
        delta = delta * torch.clamp(radius / norm.clamp(min=1e-12), max=1.0)
    return _smoothed_loss(model, batch, base + delta.detach() * sel * tokmask, cfg.label_smoothing)


def _smoothed_loss(model: Any, batch: dict[str, Tensor], embeds: Tensor | None, smoothing: float) -> Tensor:
    """Label-smoothed loss of ``batch``, its sources given as ``embeds`` (scaled as the encoder sees them) or,
    when None, as its ``input_ids``."""
    source = {"input_ids": batch["input_ids"]} if embeds is None else {"inputs_embeds": embeds}
    out = model(**source, attention_mask=batch["attention_mask"], decoder_input_ids=batch["decoder_input_ids"],
                use_cache=False, return_dict=True)
    return F.cross_entropy(out.logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=_IGNORE,
                           label_smoothing=smoothing)


# ---- training --------------------------------------------------------------------------------------------------
def _save_checkpoint(out: Path, model: Any, optim: Any, sched: Any, state: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        torch.save({"optimizer": optim.state_dict(), "scheduler": sched.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    atomic_dir(out / CHECKPOINT_DIR, write)


def is_complete(out_dir: str | os.PathLike[str]) -> bool:
    """Whether ``out_dir`` holds a finished :func:`train_robust` run."""
    meta = Path(out_dir) / "train_config.json"
    return meta.is_file() and bool(json.loads(meta.read_text(encoding="utf-8")).get("done"))


def train_robust(natural_dir: str | os.PathLike[str], train: ParallelCorpus, valid: ParallelCorpus,
                 out_dir: str | os.PathLike[str], cfg: RobustConfig, *, progress: bool = True) -> Path:
    """Fine-tune the model of ``natural_dir`` adversarially (see the module docstring); resume if started.

    Args:
        natural_dir: the model directory to start from (weights and tokenizer).
        train: training pairs (empty ones skipped, longer than ``cfg.max_len`` tokens dropped).
        valid: validation pairs (clean NLL at every evaluation).
        out_dir: the run folder; the robust model is saved there.
        cfg: :data:`PRESETS` / :func:`preset`.
        progress: show a progress bar.

    Returns:
        ``out_dir`` as a Path, loadable with ``HFVictim(out_dir)``.

    Raises:
        ValueError: empty corpora, no pair within ``max_len``, or ``out_dir`` holds a run with other settings.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from nlprobust.victims.huggingface import HFVictim

    _check_corpus(train, "training")
    _check_corpus(valid, "validation")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = complete_dir(out / CHECKPOINT_DIR, (STATE_FILE, "rng.pt", "optimizer.pt"))
    run = {"kind": "robust", "config": dataclasses.asdict(cfg), "natural": str(Path(natural_dir).resolve()),
           "train_size": len(train), "valid_size": len(valid)}
    start_run(out, run, resuming=ckpt is not None or is_complete(out), name="run_config.json")
    if is_complete(out):
        return out
    accelerator = Accelerator()
    if accelerator.num_processes > 1:
        raise RuntimeError("robust fine-tuning runs in one process (the on-the-fly attacks are not sharded)")
    set_seed(cfg.seed)
    with quiet_third_party():
        tok = AutoTokenizer.from_pretrained(str(natural_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(ckpt if ckpt is not None else natural_dir))
    pad, eos = int(tok.pad_token_id), int(tok.eos_token_id)
    start = int(model.config.decoder_start_token_id)
    src_all, tgt_all = _encode(tok, train)
    keep = [i for i in range(len(src_all)) if len(src_all[i]) <= cfg.max_len and len(tgt_all[i]) <= cfg.max_len]
    if not keep:
        raise ValueError(f"no training pair fits max_len={cfg.max_len} tokens")
    texts = [s for s, t in zip(train.src, train.tgt) if s.strip() and t.strip()]
    tr_src, tr_tgt, tr_text = [src_all[i] for i in keep], [tgt_all[i] for i in keep], [texts[i] for i in keep]
    va_src, va_tgt = _encode(tok, valid)
    va_src, va_tgt = _truncate(va_src, cfg.max_len, eos), _truncate(va_tgt, cfg.max_len, eos)

    # Marian's sinusoidal position tables are parameters that save_pretrained does not keep (they are recomputed
    # on load): training them would make the saved model differ from the trained one, so they stay fixed
    for name, p in model.named_parameters():
        if "embed_positions" in name:
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    model, optim, sched = accelerator.prepare(model, optim, sched)
    raw = accelerator.unwrap_model(model)
    device = accelerator.device
    # the live weights, for the adversaries (never moved); made before the RNG state is restored, as loading
    # it may draw random numbers
    victim = HFVictim(raw, tok)
    vocab = _Vocab(victim) if cfg.adversary == "hotflip" else None
    if ckpt is not None:
        states = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False)
        optim.load_state_dict(states["optimizer"])
        sched.load_state_dict(states["scheduler"])
        set_rng_state(torch.load(ckpt / "rng.pt", map_location="cpu", weights_only=False))
        st: dict[str, Any] = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        log.info("resuming robust fine-tuning in %s at step %d", out, st["step"])
        (out / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in st["history"]), encoding="utf-8")
    else:
        st = {"step": 0, "train_s": 0.0, "adv_s": 0.0, "history": []}
        (out / LOG_FILE).write_text("", encoding="utf-8")
    lengths = [max(len(s), len(t)) for s, t in zip(tr_src, tr_tgt)]
    per_epoch = len(_bucketed_batches(lengths, cfg.batch_size, random.Random(0)))
    run_loss = torch.zeros((), device=device)
    run_steps = 0
    bar = tqdm(total=cfg.max_steps, initial=st["step"], desc=f"robust ({cfg.adversary})", disable=not progress,
               dynamic_ncols=True)
    model.train()
    try:
        while st["step"] < cfg.max_steps:
            epoch, k = divmod(st["step"], per_epoch)
            batches = _bucketed_batches(lengths, cfg.batch_size, random.Random(cfg.seed * 1_000_003 + epoch))
            idx = batches[k]
            t_step = time.perf_counter()
            rng = random.Random(cfg.seed * 7_919 + st["step"])
            n_adv = int(round(cfg.adv_fraction * len(idx))) if cfg.adversary != "none" else 0
            adv_rows = sorted(rng.sample(range(len(idx)), n_adv))
            src = [tr_src[i] for i in idx]
            batch = _collate(src, [tr_tgt[i] for i in idx], pad, start, device)
            t_adv = time.perf_counter()
            if n_adv and cfg.adversary == "hotflip":
                assert vocab is not None
                sub = {key: v[adv_rows] for key, v in batch.items()}
                batch["input_ids"][adv_rows] = hotflip_sources(victim, vocab, sub, cfg.max_changes)
            elif n_adv and cfg.adversary in ("word-swap", "seq2sick"):
                new_text = attack_sources(victim, [tr_text[idx[r]] for r in adv_rows], cfg.adversary, cfg)
                enc = [list(x)[: cfg.max_len] for x in tok(new_text)["input_ids"]]
                for r, ids in zip(adv_rows, enc):
                    src[r] = ids
                batch = _collate(src, [tr_tgt[i] for i in idx], pad, start, device)
            st["adv_s"] += time.perf_counter() - t_adv
            optim.zero_grad(set_to_none=True)
            model.train()
            if n_adv and cfg.adversary == "embedding":
                clean = _smoothed_loss(model, batch, None, cfg.label_smoothing)
                loss = 0.5 * (clean + embedding_loss(victim, batch, cfg, torch.tensor(adv_rows, device=device)))
                model.train()
            else:
                loss = _smoothed_loss(model, batch, None, cfg.label_smoothing)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            st["step"] += 1
            st["train_s"] += time.perf_counter() - t_step
            run_loss += loss.detach()
            run_steps += 1
            bar.update(1)
            if st["step"] % cfg.eval_every == 0 or st["step"] == cfg.max_steps:
                val = _corpus_nll(raw, va_src, va_tgt, pad, start, device, 64)
                record = {"step": st["step"], "train_loss": round(float(run_loss) / max(1, run_steps), 5),
                          "val_loss": round(val, 5), "val_ppl": round(math.exp(min(val, 50.0)), 3),
                          "seconds_per_step": round(st["train_s"] / st["step"], 4),
                          "adversary_seconds_per_step": round(st["adv_s"] / st["step"], 4)}
                st["history"].append(record)
                with open(out / LOG_FILE, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=record["train_loss"], val=record["val_loss"])
                run_loss, run_steps = torch.zeros((), device=device), 0
                _save_checkpoint(out, raw, optim, sched, st)
                model.train()
    finally:
        bar.close()
    raw.save_pretrained(str(out))
    with quiet_third_party():
        tok.save_pretrained(str(out))
    last = st["history"][-1] if st["history"] else {}
    atomic_write_json(out / "train_config.json", {
        **run, "done": True, "steps": st["step"], "val_loss": last.get("val_loss"),
        "seconds_per_step": round(st["train_s"] / max(1, st["step"]), 4),
        "adversary_seconds_per_step": round(st["adv_s"] / max(1, st["step"]), 4),
        "train_used": len(tr_src), "device": str(device), "threads": torch.get_num_threads(),
        "versions": versions("transformers", "accelerate"), "git_sha": git_sha()})
    log.info("saved the robust model to %s (%d steps, val loss %s)", out, st["step"], last.get("val_loss"))
    return out


__all__ = ["ADVERSARIES", "PRESETS", "RobustConfig", "attack_sources", "embedding_loss", "hotflip_sources",
           "is_complete", "preset", "train_robust"]
