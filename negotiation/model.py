"""The end-to-end negotiation model of Lewis et al. (2017), "Deal or No Deal?", section 3 (our own code).

One network reads and writes the dialogue and makes the final selection:

* **Context encoder**: for each item, an embedding of its count times an embedding of its value (element-wise),
  concatenated over the three items, ``tanh``, a linear layer and ``tanh`` -> the goal vector ``g``.
* **Language model**: a word-level GRU over the dialogue tokens (speaker prefixes included); each input is the
  word embedding (plus a speaker vector, see below) concatenated with ``g``. The hidden state after token
  ``t`` predicts token ``t + 1`` through a linear layer to the word-embedding size and the transposed word
  embeddings (tied output).
* **Selection**: a bidirectional GRU over ``[lm hidden state; word embedding]`` of every dialogue token,
  attention pooling, a ``tanh`` layer on ``[pooled; g]`` and six classifiers over the item vocabulary: my
  ``item0 item1 item2`` then the partner's. The score of a legal choice (every split from
  :func:`negotiation.domain.enumerate_splits`, then no deal as ``<no_agreement>`` x 6) is the sum of its six
  slot logits (thesis eq. 3.6).

Loss = LM cross-entropy + ``sel_weight`` (0.5) x selection cross-entropy (mean over the six slots).

LM targets (``DialogModelConfig.lm_targets``):

* ``"all"`` (default, as Lewis et al.): every word and terminator of both speakers, each conditioned on YOU's
  goal. Predicting the partner's words teaches the reader what partners say; the corpus holds most
  dialogues from both sides anyway.
* ``"fair"``: as ``"all"`` plus the speaker prefixes ``YOU:``/``THEM:`` (FAIR's code). Predicting who speaks
  next is nearly free, but it is an LM signal on the prefixes' (tied) embeddings: with ``"all"`` the small
  SV model learnt short, similar ``YOU:``/``THEM:`` rows (cosine 0.58, half the mean norm) and predicts
  nearly the same next words for either speaker.
* ``"own"``: only the tokens YOU wrote (``Batch.own``).

With ``"all"`` and ``"own"`` the prefixes are never targets (turn-taking decides them). The writer never
generates them in any mode.

Deviations from the paper / FAIR code:

* **Speaker vectors** (``speaker_embed``, on by default): every token the reader and the selection module read
  is its word vector plus a learned YOU or THEM vector. Lewis et al. mark turns only by the ``YOU:``/``THEM:``
  prefix tokens. Trained that way with our ``small`` preset, the model hardly told the speakers apart: the
  next-word distributions after ``YOU: i would like the`` and ``THEM: i would like the`` were 0.010 apart in
  total variation (0.050 with speaker vectors), and the selection module read agreements from the wrong side
  (on the validation dialogues with a known selection: cross-entropy 0.40 per slot and 65% of dialogues with
  all six slots right, against 0.12 and 88% once trained with speaker vectors and the next item of this
  list; agreement between two SV agents in self-play 31% against 63%). With the language model frozen, a
  fresh selection module learnt faster with speaker vectors (cross-entropy 0.36 after four epochs) than
  without (0.58 after three).
* Dialogues whose human selections disagreed or were lost (``<disagree>``, ``<disconnect>``) carry no selection
  target (``sel_skip_unknown``), as in FAIR's code (its criterion weights those tokens 0); they still train
  the language model.
* With ``lm_targets="all"`` the speaker prefixes are not LM targets (FAIR counts them).
* The selection GRU reads every dialogue token including the final ``<selection>`` both in training and when
  an agent chooses (FAIR trains it without the last token but chooses with it).
* The output projection is the identity when the GRU size equals the word-embedding size.
* Generation never emits ``<pad>``, ``<unk>``, ``YOU:``, ``THEM:``, any other ``<...>`` token but ``<eos>`` and
  ``<selection>``, nor selection tokens (``item0=1``); FAIR masks the same set.

Checkpoints (:meth:`DialogModel.save_pretrained`): ``config.json``, ``model.safetensors`` (the
``state_dict``), ``words.json`` and ``items.json`` (vocabularies); never pickled modules.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from negotiation.corpus import EOS, PAD, SELECTION, SPEAKERS, SPECIAL_TOKENS, Batch, Vocab, item_vocab
from negotiation.domain import (
    CHOICE_TOKENS,
    DISAGREE,
    DISCONNECT,
    MAX_VALUE,
    NUM_ITEMS,
    SELECTION_LENGTH,
    Split,
    enumerate_choices,
    enumerate_splits,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WORDS_FILE = "words.json"
ITEMS_FILE = "items.json"
_FORMAT = "negotiation.DialogModel"
_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class DialogModelConfig:
    """Sizes and loss settings of :class:`DialogModel` (defaults: Lewis et al.'s published command line).

    Args:
        ctx_embed: count and value embedding size (``--nembed_ctx 64``).
        ctx_hidden: goal vector size (``--nhid_ctx 64``).
        word_embed: word embedding size (``--nembed_word 256``).
        lang_hidden: language-model GRU size (``--nhid_lang 128``).
        attn_hidden: selection GRU size per direction and attention size (``--nhid_attn 256``).
        sel_hidden: selection layer size before the six slot classifiers (``--nhid_sel 256``).
        dropout: dropout on embeddings, GRU outputs and selection layers (``--dropout 0.5``).
        init_range: weights are drawn from ``U(-init_range, init_range)``, biases are 0 (``--init_range 0.1``).
        sel_weight: weight of the selection loss (``--sel_weight 0.5``).
        lm_targets: ``"all"`` (both speakers' tokens), ``"fair"`` (those and the speaker prefixes, as FAIR's
            code) or ``"own"`` (YOU's tokens only).
        speaker_embed: add a learned speaker vector (YOU or THEM) to every word embedding the reader and the
            selection module read (not in the paper; see the module docstring).
        sel_skip_unknown: dialogues whose output is ``<disagree>`` or ``<disconnect>`` (the humans' own
            selections were not kept) carry no selection target, as in FAIR's code.
    """

    ctx_embed: int = 64
    ctx_hidden: int = 64
    word_embed: int = 256
    lang_hidden: int = 128
    attn_hidden: int = 256
    sel_hidden: int = 256
    dropout: float = 0.5
    init_range: float = 0.1
    sel_weight: float = 0.5
    lm_targets: Literal["all", "fair", "own"] = "all"
    speaker_embed: bool = True
    sel_skip_unknown: bool = True

    def __post_init__(self) -> None:
        for f in ("ctx_embed", "ctx_hidden", "word_embed", "lang_hidden", "attn_hidden", "sel_hidden"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DialogModelConfig.{f} must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DialogModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.init_range <= 0:
            raise ValueError(f"DialogModelConfig.init_range must be > 0, got {self.init_range!r}")
        if self.sel_weight < 0:
            raise ValueError(f"DialogModelConfig.sel_weight must be >= 0, got {self.sel_weight!r}")
        for f in ("speaker_embed", "sel_skip_unknown"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"DialogModelConfig.{f} must be a bool, got {getattr(self, f)!r}")
        if self.lm_targets not in ("all", "fair", "own"):
            raise ValueError(f"DialogModelConfig.lm_targets must be 'all', 'fair' or 'own', got {self.lm_targets!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DialogModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DialogModelConfig fields {unknown}; expected some of {sorted(known)}")
        return cls(**dict(d))


class DialogOutput(NamedTuple):
    """Teacher-forced outputs on a :class:`~negotiation.corpus.Batch` of ``B`` dialogues of ``T`` tokens.

    Attributes:
        word_logits: ``(B, T - 1, V)``, unmasked; position ``t`` predicts ``tokens[:, t + 1]``.
        slot_logits: ``(B, 6, I)`` over the item vocabulary.
        hiddens: ``(B, T, lang_hidden)`` language-model state after each token.
    """

    word_logits: torch.Tensor
    slot_logits: torch.Tensor
    hiddens: torch.Tensor


class DialogLoss(NamedTuple):
    """``loss = lm + sel_weight * sel``; ``lm`` is the mean over ``lm_tokens`` target tokens (perplexity =
    ``exp(lm)``), ``sel`` the mean over the six slots of every dialogue."""

    loss: torch.Tensor
    lm: torch.Tensor
    sel: torch.Tensor
    lm_tokens: int


class WriteOutput(NamedTuple):
    """Messages sampled for ``A`` dialogues (see :meth:`DialogModel.write`).

    Attributes:
        tokens: ``(A, L)`` word ids, ``<pad>`` after each message's end.
        lengths: ``(A,)`` message lengths (the terminator included).
        logprobs: ``(A, L)`` log-probability of each written token under the sampling distribution (0 at
            padding and at a forced ``<eos>``); differentiable when grad mode is on.
        hiddens: ``(A, L, lang_hidden)`` state after reading each written token.
        state: ``(A, lang_hidden)`` state after the whole message.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    logprobs: torch.Tensor
    hiddens: torch.Tensor
    state: torch.Tensor


class ChoiceLogits(NamedTuple):
    """Scores of the legal choices of ``B`` games.

    Attributes:
        logits: ``(B, C)``: sum of the six slot logits of each legal choice, ``-inf`` past a game's choices.
        choices: per game, what YOU takes for each column (a split, or None for no deal), in
            :func:`negotiation.domain.enumerate_choices` order: every split, then no deal.
    """

    logits: torch.Tensor
    choices: list[list[Split | None]]


def generation_mask_tokens(words: Vocab) -> list[str]:
    """The word-vocabulary tokens a model must never generate: ``<pad>``, ``<unk>``, speaker prefixes, any
    other ``<...>`` token except ``<eos>`` and ``<selection>``, and selection tokens."""
    choice = set(CHOICE_TOKENS)
    out = []
    for t in words.itos:
        bracketed = t.startswith("<") and t.endswith(">") and len(t) > 2
        if t in (PAD, words.unk) or t in SPEAKERS or t in choice or (bracketed and t not in (EOS, SELECTION)):
            out.append(t)
    return out


def concat_rows(prefix: torch.Tensor, prefix_len: torch.Tensor, new: torch.Tensor, new_len: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Row-wise concatenation of ``prefix[:, :prefix_len]`` and ``new[:, :new_len]`` (zero padded): tensors
    ``(N, T, ...)``; returns the joined tensor and its lengths."""
    N, Tn = new.shape[:2]
    total = prefix_len + new_len
    width = max(int(total.max()) if N else 0, 1)
    out = new.new_zeros((N, width, *new.shape[2:]))
    Tp = min(prefix.size(1), width)
    keep = torch.arange(Tp, device=new.device).unsqueeze(0) < prefix_len.unsqueeze(1)
    out[:, :Tp] = prefix[:, :Tp] * keep.view(N, Tp, *([1] * (new.dim() - 2))).to(prefix.dtype)
    pos = torch.arange(Tn, device=new.device).unsqueeze(0)
    valid = pos < new_len.unsqueeze(1)
    rows = torch.arange(N, device=new.device).unsqueeze(1).expand(N, Tn)[valid]
    cols = (prefix_len.unsqueeze(1) + pos)[valid]
    out[rows, cols] = new[valid]
    return out, total


class DialogModel(nn.Module):
    """The Lewis et al. (2017) dialogue model: goal encoder, GRU language model, selection module.

    Args:
        words: the word vocabulary (must hold :data:`negotiation.corpus.SPECIAL_TOKENS`).
        items: the selection vocabulary (default :func:`negotiation.corpus.item_vocab`).
        config: sizes and loss settings (default :class:`DialogModelConfig`).

    Shapes: ``B`` dialogues, ``T`` tokens, ``V = len(words)``, ``I = len(items)``, ``H = config.lang_hidden``.
    Contexts are ``(B, 6)`` long tensors ``c0 v0 c1 v1 c2 v2``.

    Example::

        model = DialogModel(build_word_vocab(train))
        out = model.loss(make_batch(train.examples[:16], model.words, model.items))
        out.loss.backward()
    """

    def __init__(self, words: Vocab, items: Vocab | None = None, config: DialogModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DialogModelConfig()
        self.words = words
        self.items = items or item_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in words]
        if missing:
            raise ValueError(f"word vocabulary lacks special tokens {missing}; expected all of {SPECIAL_TOKENS}")
        missing = [t for t in CHOICE_TOKENS if t not in self.items]
        if missing:
            raise ValueError(f"item vocabulary lacks selection tokens {missing}")
        self.pad_id = words.pad_id
        self.eos_id, self.sel_id = words.id(EOS), words.id(SELECTION)
        self.you_id, self.them_id = words.id(SPEAKERS[0]), words.id(SPEAKERS[1])

        self.cnt_embed = nn.Embedding(MAX_VALUE + 1, cfg.ctx_embed)
        self.val_embed = nn.Embedding(MAX_VALUE + 1, cfg.ctx_embed)
        self.ctx_encoder = nn.Linear(NUM_ITEMS * cfg.ctx_embed, cfg.ctx_hidden)
        self.word_embed = nn.Embedding(len(words), cfg.word_embed)
        # speaker vectors: row 0 (padding) stays zero, 1 = YOU, 2 = THEM
        self.speaker_embed = nn.Embedding(3, cfg.word_embed, padding_idx=0) if cfg.speaker_embed else None
        self.reader = nn.GRU(cfg.word_embed + cfg.ctx_hidden, cfg.lang_hidden, batch_first=True)
        self.decoder: nn.Module = (
            nn.Identity() if cfg.lang_hidden == cfg.word_embed else nn.Linear(cfg.lang_hidden, cfg.word_embed)
        )
        self.sel_rnn = nn.GRU(cfg.lang_hidden + cfg.word_embed, cfg.attn_hidden, batch_first=True,
                              bidirectional=True)
        self.attn = nn.Sequential(nn.Linear(2 * cfg.attn_hidden, cfg.attn_hidden), nn.Tanh(),
                                  nn.Linear(cfg.attn_hidden, 1))
        self.sel_encoder = nn.Linear(2 * cfg.attn_hidden + cfg.ctx_hidden, cfg.sel_hidden)
        self.sel_decoder = nn.Linear(cfg.sel_hidden, SELECTION_LENGTH * len(self.items))  # six slot classifiers
        sel_mask = torch.ones(len(self.items), dtype=torch.bool)
        if cfg.sel_skip_unknown:
            sel_mask[self.items.ids([DISAGREE, DISCONNECT])] = False
        self.sel_target_ok: torch.Tensor
        self.register_buffer("sel_target_ok", sel_mask, persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)

        mask = torch.zeros(len(words))
        mask[words.ids(generation_mask_tokens(words))] = float("-inf")
        self.generation_mask: torch.Tensor
        self.register_buffer("generation_mask", mask, persistent=False)
        self._choice_cache: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ``U(-init_range, init_range)``, biases 0 (as FAIR)."""
        r = self.config.init_range
        for name, p in self.named_parameters():
            if "bias" in name:
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -r, r)
        if self.speaker_embed is not None:
            with torch.no_grad():
                self.speaker_embed.weight[0].zero_()

    @property
    def device(self) -> torch.device:
        return self.word_embed.weight.device

    # --- building blocks ---------------------------------------------------------------------------------

    def encode_context(self, contexts: torch.Tensor) -> torch.Tensor:
        """``(B, 6)`` long ``c0 v0 c1 v1 c2 v2`` -> goal vectors ``(B, ctx_hidden)``."""
        if contexts.dim() != 2 or contexts.size(1) != 2 * NUM_ITEMS:
            raise ValueError(f"contexts must have shape (B, {2 * NUM_ITEMS}), got {tuple(contexts.shape)}")
        if contexts.numel() and (int(contexts.min()) < 0 or int(contexts.max()) > MAX_VALUE):
            raise ValueError(f"context counts and values must be 0..{MAX_VALUE}, got {contexts.tolist()}")
        h = self.cnt_embed(contexts[:, 0::2]) * self.val_embed(contexts[:, 1::2])  # (B, 3, E)
        return torch.tanh(self.ctx_encoder(torch.tanh(h.flatten(1))))

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The language-model state before any token: zeros ``(B, lang_hidden)``."""
        return torch.zeros(batch_size, self.config.lang_hidden, device=self.device)

    def speaker_ids(self, tokens: torch.Tensor, first: int | torch.Tensor = 0) -> torch.Tensor:
        """``(B, L)`` speaker of every token: 1 (YOU) or 2 (THEM) after the latest speaker prefix at or before
        it (the prefix included); ``first`` (0 = none, or a ``(B,)`` tensor) before a row's first prefix; 0 at
        ``<pad>``."""
        B, L = tokens.shape
        steps = torch.arange(L, device=tokens.device).expand(B, L)
        is_prefix = (tokens == self.you_id) | (tokens == self.them_id)
        last = torch.where(is_prefix, steps, torch.full_like(steps, -1)).cummax(dim=1).values
        who = tokens.gather(1, last.clamp(min=0))
        spk = torch.where(who == self.you_id, 1, 2)
        first_t = torch.as_tensor(first, dtype=torch.long, device=tokens.device).expand(B).unsqueeze(1)
        spk = torch.where(last < 0, first_t.expand(B, L), spk)
        return spk.masked_fill(tokens == self.pad_id, 0)

    def token_embeds(self, tokens: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings without dropout: word vectors, plus the speaker vectors when
        ``config.speaker_embed`` (``speakers`` ``(B, L)`` as :meth:`speaker_ids`; derived from ``tokens``
        when None, which needs every row to start with a speaker prefix)."""
        emb = self.word_embed(tokens)
        if self.speaker_embed is None:
            return emb
        if speakers is None:
            if tokens.numel() and not bool(((tokens[:, 0] == self.you_id) | (tokens[:, 0] == self.them_id)).all()):
                raise ValueError("rows that do not start with YOU: or THEM: need explicit speakers "
                                 "(DialogModel.speaker_ids(tokens, first=...))")
            speakers = self.speaker_ids(tokens)
        if speakers.shape != tokens.shape:
            raise ValueError(f"speakers {tuple(speakers.shape)} must match tokens {tuple(tokens.shape)}")
        return emb + self.speaker_embed(speakers)

    def embed(self, tokens: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`token_embeds` with dropout in training mode."""
        return self.dropout(self.token_embeds(tokens, speakers))

    def read_embeds(self, embeds: torch.Tensor, state: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """Run the GRU over ``(B, L, word_embed)`` embeddings from ``state`` ``(B, H)`` with goal ``ctx``;
        returns the states after each token, ``(B, L, H)`` (exposed for attacks on embeddings)."""
        x = torch.cat([embeds, ctx.unsqueeze(1).expand(-1, embeds.size(1), -1)], dim=-1)
        out, _ = self.reader(x, state.unsqueeze(0).contiguous())
        return out

    def read(self, tokens: torch.Tensor, lengths: torch.Tensor, state: torch.Tensor,
             ctx: torch.Tensor, *, speakers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Read ``(B, L)`` token ids, each row ``lengths[b] >= 1`` long (padded after), from ``state``
        (``speakers``: see :meth:`token_embeds`).

        Returns:
            ``(hiddens (B, L, H), new_state (B, H))``; ``new_state[b]`` is the state after the last real token
            of row ``b`` (a GRU's output at step ``t`` does not depend on later padding).
        """
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"expected tokens (B, L) and lengths (B,), got {tuple(tokens.shape)} and "
                             f"{tuple(lengths.shape)}")
        if tokens.size(0) == 0:
            return state.new_zeros(0, tokens.size(1), state.size(-1)), state
        if int(lengths.min()) < 1 or int(lengths.max()) > tokens.size(1):
            raise ValueError(f"lengths must be 1..{tokens.size(1)}, got {lengths.tolist()}")
        hiddens = self.read_embeds(self.embed(tokens, speakers), state, ctx)
        last = hiddens[torch.arange(tokens.size(0), device=tokens.device), lengths - 1]
        return hiddens, last

    def word_logits(self, hiddens: torch.Tensor) -> torch.Tensor:
        """Next-word logits ``(..., V)`` from states ``(..., H)``, unmasked (tied output embeddings)."""
        return F.linear(self.decoder(self.dropout(hiddens)), self.word_embed.weight)

    def selection_logits(self, tokens: torch.Tensor, hiddens: torch.Tensor, lengths: torch.Tensor,
                         ctx: torch.Tensor, *, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Six slot logits ``(B, 6, I)`` from the whole dialogue: tokens ``(B, T)`` (or their ``embeds``
        ``(B, T, word_embed)`` from :meth:`token_embeds`), LM states ``(B, T, H)``, ``lengths`` ``(B,)`` (each
        >= 1) and goals ``ctx``."""
        B, T = tokens.shape
        if B == 0:
            return hiddens.new_zeros(0, SELECTION_LENGTH, len(self.items))
        if int(lengths.min()) < 1:
            raise ValueError(f"cannot select after an empty dialogue (lengths {lengths.tolist()})")
        emb = self.token_embeds(tokens) if embeds is None else embeds
        x = self.dropout(torch.cat([hiddens, emb], dim=-1))  # one dropout on the words (as FAIR)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.sel_rnn(packed)[0], batch_first=True, total_length=T)
        valid = torch.arange(T, device=tokens.device).unsqueeze(0) < lengths.to(tokens.device).unsqueeze(1)
        weights = torch.softmax(self.attn(out).squeeze(-1).masked_fill(~valid, float("-inf")), dim=1)
        pooled = torch.bmm(weights.unsqueeze(1), out).squeeze(1)
        h = torch.tanh(self.sel_encoder(self.dropout(torch.cat([pooled, ctx], dim=-1))))
        return self.sel_decoder(self.dropout(h)).view(B, SELECTION_LENGTH, len(self.items))

    def _choice_table(self, counts: tuple[int, ...]) -> torch.Tensor:
        key = (counts, self.device)
        table = self._choice_cache.get(key)
        if table is None:
            table = torch.tensor([self.items.ids(c) for c in enumerate_choices(counts)], dtype=torch.long,
                                 device=self.device)
            self._choice_cache[key] = table
        return table

    def choice_logits(self, slot_logits: torch.Tensor,
                      counts: torch.Tensor | Sequence[Sequence[int]]) -> ChoiceLogits:
        """Score every legal choice of each game: the sum of its six slot logits (thesis eq. 3.6).

        Args:
            slot_logits: ``(B, 6, I)`` from :meth:`selection_logits`.
            counts: ``(B, 3)`` item counts (tensor or nested sequence).
        """
        rows = [tuple(int(c) for c in row) for row in (counts.tolist() if isinstance(counts, torch.Tensor)
                                                        else counts)]
        if len(rows) != slot_logits.size(0):
            raise ValueError(f"{len(rows)} count rows for {slot_logits.size(0)} games")
        tables = [self._choice_table(r) for r in rows]
        width = max((t.size(0) for t in tables), default=0)
        cand = torch.zeros(len(rows), width, SELECTION_LENGTH, dtype=torch.long, device=slot_logits.device)
        valid = torch.zeros(len(rows), width, dtype=torch.bool, device=slot_logits.device)
        for b, t in enumerate(tables):
            cand[b, : t.size(0)] = t
            valid[b, : t.size(0)] = True
        scores = slot_logits.gather(2, cand.transpose(1, 2)).sum(dim=1)  # (B, C)
        choices: list[list[Split | None]] = [[*enumerate_splits(r), None] for r in rows]
        return ChoiceLogits(scores.masked_fill(~valid, float("-inf")), choices)

    # --- training ---------------------------------------------------------------------------------------

    def forward(self, batch: Batch) -> DialogOutput:
        """Teacher-forced pass over a batch from YOU's perspective."""
        ctx = self.encode_context(batch.contexts)
        state = self.initial_state(len(batch))
        hiddens = self.read_embeds(self.embed(batch.tokens), state, ctx)
        word_logits = self.word_logits(hiddens[:, :-1])
        slot_logits = self.selection_logits(batch.tokens, hiddens, batch.lengths, ctx)
        return DialogOutput(word_logits, slot_logits, hiddens)

    def lm_target_mask(self, batch: Batch) -> torch.Tensor:
        """``(B, T - 1)`` bool: which of ``tokens[:, 1:]`` are LM targets (see ``config.lm_targets``)."""
        if self.config.lm_targets == "own":
            return batch.own[:, 1:]
        if self.config.lm_targets == "fair":
            return batch.mask[:, 1:]
        tgt = batch.tokens[:, 1:]
        return batch.mask[:, 1:] & (tgt != self.you_id) & (tgt != self.them_id)

    def loss(self, batch: Batch) -> DialogLoss:
        """LM cross-entropy + ``sel_weight`` x selection cross-entropy."""
        return self.loss_from_output(self(batch), batch)

    def loss_from_output(self, out: DialogOutput, batch: Batch) -> DialogLoss:
        """:meth:`loss` from the outputs of a forward pass already made (e.g. through a wrapper such as
        ``accelerate``'s, whose ``forward`` is the only method it exposes)."""
        target_mask = self.lm_target_mask(batch)
        n = int(target_mask.sum())
        if n:
            lm = F.cross_entropy(out.word_logits[target_mask], batch.tokens[:, 1:][target_mask])
        else:
            lm = out.word_logits.sum() * 0.0
        sel = self.selection_loss(out.slot_logits, batch.choices)
        return DialogLoss(lm + self.config.sel_weight * sel, lm, sel, n)

    def selection_loss(self, slot_logits: torch.Tensor, choices: torch.Tensor, *,
                       reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
        """Cross-entropy of the six slots over the targets that count (see ``config.sel_skip_unknown``); its
        mean over those slots, or their sum (0 when none counts)."""
        flat = choices.reshape(-1)
        ok = self.sel_target_ok[flat]
        ce = F.cross_entropy(slot_logits.reshape(-1, len(self.items)), flat, reduction="none")
        total = (ce * ok).sum()
        return total if reduction == "sum" else total / ok.sum().clamp(min=1)

    # --- incremental generation ---------------------------------------------------------------------------

    def write(self, state: torch.Tensor, ctx: torch.Tensor, *, max_words: int, temperature: float = 1.0,
              generator: torch.Generator | None = None) -> WriteOutput:
        """Sample one message for each of ``A`` dialogues from ``state`` ``(A, H)`` (the state after reading
        the writer's speaker prefix), until ``<eos>`` or ``<selection>``.

        Never-generated tokens (:func:`generation_mask_tokens`) get ``-inf``. ``temperature`` divides the
        logits; 0 means greedy (its log-probabilities are then those of the untempered distribution). A
        message that reaches ``max_words`` tokens gets ``<eos>`` as its last token (forced, log-prob 0).
        """
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        A, dev = state.size(0), state.device
        done = torch.zeros(A, dtype=torch.bool, device=dev)
        lengths = torch.zeros(A, dtype=torch.long, device=dev)
        toks: list[torch.Tensor] = []
        lps: list[torch.Tensor] = []
        hs: list[torch.Tensor] = []
        h = state
        you = torch.ones(A, 1, dtype=torch.long, device=dev)  # every written token is YOU's
        for step in range(max_words if A else 0):
            if step == max_words - 1:
                tok = torch.full((A,), self.eos_id, dtype=torch.long, device=dev)
                lp = torch.zeros(A, device=dev, dtype=h.dtype)
            else:
                logits = self.word_logits(h) + self.generation_mask
                if temperature == 0:
                    logp = torch.log_softmax(logits, dim=-1)
                    tok = logits.argmax(dim=-1)
                else:
                    logp = torch.log_softmax(logits / temperature, dim=-1)
                    tok = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
                lp = logp.gather(1, tok.unsqueeze(1)).squeeze(1)
            tok = tok.masked_fill(done, self.pad_id)
            lp = lp.masked_fill(done, 0.0)
            lengths = lengths + (~done).long()
            x = torch.cat([self.embed(tok.unsqueeze(1), you).squeeze(1), ctx], dim=-1).unsqueeze(1)
            h_new = self.reader(x, h.unsqueeze(0).contiguous())[0].squeeze(1)
            h = torch.where(done.unsqueeze(1), h, h_new)
            toks.append(tok)
            lps.append(lp)
            hs.append(h)
            done = done | (tok == self.eos_id) | (tok == self.sel_id)
            if bool(done.all()):
                break
        if not toks:
            empty = torch.zeros(A, 0, dtype=torch.long, device=dev)
            return WriteOutput(empty, lengths, empty.float(), state.new_zeros(A, 0, state.size(-1)), state)
        return WriteOutput(torch.stack(toks, 1), lengths, torch.stack(lps, 1), torch.stack(hs, 1), h)

    # --- checkpoints ------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``words.json`` and ``items.json`` into ``directory``."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "version": _VERSION, "config": self.config.to_dict()}
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        self.words.save(out / WORDS_FILE)
        self.items.save(out / ITEMS_FILE)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": _FORMAT, "version": str(_VERSION)})
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *,
                        device: torch.device | str | None = None) -> DialogModel:
        """Load a model written by :meth:`save_pretrained` (in eval mode, on ``device`` or the CPU).

        Raises:
            FileNotFoundError: the folder or one of its four files is missing.
            ValueError: a file is corrupt or does not match the others (names the file and the problem).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"no saved DialogModel: {d} is not a folder")
        for name in (CONFIG_FILE, WEIGHTS_FILE, WORDS_FILE, ITEMS_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(f"incomplete DialogModel checkpoint {d}: missing {name}")
        try:
            meta = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{d / CONFIG_FILE}: not JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or not isinstance(meta.get("config"), dict):
            raise ValueError(f"{d / CONFIG_FILE}: not a DialogModel config (expected format {_FORMAT!r} and a "
                             f"'config' object)")
        if meta.get("version") != _VERSION:
            raise ValueError(f"{d / CONFIG_FILE}: unsupported version {meta.get('version')!r}, expected {_VERSION}")
        try:
            # checkpoints written before these two options existed are models without them
            config = DialogModelConfig.from_dict({"speaker_embed": False, "sel_skip_unknown": False,
                                                  **meta["config"]})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{d / CONFIG_FILE}: {exc}") from None
        vocabs = []
        for name in (WORDS_FILE, ITEMS_FILE):
            try:
                vocabs.append(Vocab.load(d / name))
            except (AttributeError, KeyError, TypeError) as exc:
                raise ValueError(f"{d / name}: not a saved vocabulary ({type(exc).__name__}: {exc})") from None
        words, items = vocabs
        try:
            state = load_file(str(d / WEIGHTS_FILE))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{d / WEIGHTS_FILE}: cannot read weights ({exc})") from None
        model = cls(words, items, config)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{d / WEIGHTS_FILE}: weights do not match the config (missing {missing}, "
                             f"unexpected {unexpected})")
        bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
               if state[k].shape != v.shape]
        if bad:
            raise ValueError(f"{d / WEIGHTS_FILE}: tensor shapes do not match the config and vocabularies: {bad}")
        model.load_state_dict(state)
        if device is not None:
            model.to(device)
        return model.eval()


__all__ = [
    "ChoiceLogits",
    "DialogLoss",
    "DialogModel",
    "DialogModelConfig",
    "DialogOutput",
    "WriteOutput",
    "concat_rows",
    "generation_mask_tokens",
]
