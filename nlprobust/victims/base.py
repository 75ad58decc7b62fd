"""The victim interface: what an attack needs to see of a sequence-to-sequence model.

Attacks work in the space of the victim's *source embedding table* (the unscaled rows of the encoder's word
embedding matrix). A victim turns such embeddings into teacher-forced logits and into decoded outputs;
any model-specific scaling (Marian's ``embed_scale``), positional encodings and masks are the victim's job.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import torch
from torch import Tensor


class VictimError(ValueError):
    """Bad input for a victim (empty text, over-long input, unknown keyword, ...)."""


#: notices of third-party code we cannot fix, silenced only where we call it (our own warnings stay):
#: OpenNMT-py's deprecated ``torch.cuda.amp.custom_fwd/bwd`` decorators (on import), the LSTM's notice that a
#: single layer ignores dropout (OpenNMT-py's checkpoints carry the training dropout), and MarianTokenizer's
#: recommendation of sacremoses (it feeds a normaliser we do not use)
THIRD_PARTY_NOTICES: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`torch\.cuda\.amp\.custom_(fwd|bwd)\(args\.\.\.\)` is deprecated"),
    (UserWarning, r"dropout option adds dropout after all but last recurrent layer"),
    (UserWarning, r"Recommended: pip install sacremoses"),
)


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Silence :data:`THIRD_PARTY_NOTICES` inside the block."""
    with warnings.catch_warnings():
        for category, message in THIRD_PARTY_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def close_word_hint(word: str, vocabulary: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` when ``word`` differs from a vocabulary word only by case or surrounding
    punctuation (``Hund.`` for ``Hund``, ``hund`` for ``Hund``), else ``""``."""
    def key(w: str) -> str:
        return w.strip(".,;:!?\"'()[]{}«»„“”").casefold()

    k = key(word)
    if not k:
        return ""
    close = sorted({v for v in vocabulary if v and v != word and key(v) == k})
    return f"; did you mean {' or '.join(repr(v) for v in close[:3])}?" if close else ""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on: ``device`` when it exists here, else CUDA when available, else CPU; asking for a
    CUDA device this machine does not have is a :class:`VictimError` naming it."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise VictimError(f"not a device: {device!r} (expected cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VictimError(f"device {device!r} asked for, but this machine has no CUDA GPU (or this torch build "
                              f"has no CUDA support): leave --device unset or use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise VictimError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s)")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A floating-point dtype from its name (``float32``, ``bfloat16`` / ``bf16``, ``float16`` / ``fp16``)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    got = getattr(torch, names.get(str(dtype), str(dtype)), None)
    if not isinstance(got, torch.dtype) or not got.is_floating_point:
        raise VictimError(f"unknown dtype {dtype!r}; expected float32, bfloat16 or float16")
    return got


class GreedyOutputs(Sequence[list[int]]):
    """Greedy outputs of a batch, kept on the device until a caller reads them as lists.

    ``ids`` ``[B, T]`` holds each row's output ids (no BOS, no EOS) followed by ``-1``; ``lengths`` ``[B]``
    counts them. Indexing or iterating copies both to the host once (one sync) and caches the lists; an attack
    that only stores the outputs of several iterations (e.g. until its next beam check) keeps ``ids`` and
    ``lengths`` and reads them later, all at once.
    """

    def __init__(self, ids: Tensor, lengths: Tensor) -> None:
        if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
            raise ValueError(f"GreedyOutputs needs ids [B, T] and lengths [B], got {tuple(ids.shape)} and "
                             f"{tuple(lengths.shape)}")
        self.ids, self.lengths = ids, lengths
        self._lists: list[list[int]] | None = None

    @classmethod
    def from_lists(cls, outs: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> GreedyOutputs:
        """Outputs already on the host (e.g. from ``generate``)."""
        dev = torch.device(device)
        ids = (pad_targets([list(o) for o in outs], -1, dev) if outs
               else torch.zeros(0, 0, dtype=torch.long, device=dev))
        got = cls(ids, torch.tensor([len(o) for o in outs], dtype=torch.long, device=dev))
        got._lists = [list(o) for o in outs]
        return got

    @classmethod
    def from_tokens(cls, tokens: Tensor, ends: Tensor) -> GreedyOutputs:
        """``tokens`` ``[B, T]`` decoded ids; a row's output stops at its first position where ``ends`` ``[B, T]``
        is true (its EOS, not kept), or runs to ``T``. Computed on the device: no sync."""
        t = tokens.shape[1]
        pos = torch.arange(t, device=tokens.device).unsqueeze(0)
        first = torch.where(ends.any(1), ends.long().argmax(1), torch.full_like(tokens[:, 0], t))
        return cls(torch.where(pos < first.unsqueeze(1), tokens, torch.full_like(tokens, -1)), first)

    def tolist(self) -> list[list[int]]:
        """The outputs as id lists (one host transfer, then cached)."""
        if self._lists is None:
            rows, lengths = self.ids.tolist(), self.lengths.tolist()
            self._lists = [r[:n] for r, n in zip(rows, lengths, strict=True)]
        return self._lists

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @overload
    def __getitem__(self, i: int) -> list[int]: ...

    @overload
    def __getitem__(self, i: slice) -> list[list[int]]: ...

    def __getitem__(self, i: int | slice) -> list[int] | list[list[int]]:
        return self.tolist()[i]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GreedyOutputs):
            other = other.tolist()
        return isinstance(other, list) and self.tolist() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GreedyOutputs({self.tolist()!r})"


@dataclass(frozen=True)
class EncodedSource:
    """Token ids of one source sentence and which positions an attack may change."""

    ids: list[int]
    editable: list[bool]


class Seq2SeqVictim(ABC):
    """A seq2seq model seen by an attack.

    Subclasses set ``device``, ``src_pad_id``, ``tgt_bos_id``, ``tgt_eos_id``, ``tgt_pad_id``,
    ``max_source_len`` and implement the abstract methods. Everything returned is on ``device``.
    """

    device: torch.device
    src_pad_id: int
    tgt_bos_id: int
    tgt_eos_id: int
    tgt_pad_id: int
    max_source_len: int
    word_level: bool = True  # False for subword victims: words are counted on detokenised text
    model: torch.nn.Module

    # ---- source side -------------------------------------------------------------------------
    @abstractmethod
    def source_embedding_table(self) -> Tensor:
        """The (unscaled) source embedding matrix, ``[V_src, d]``; an attack perturbs its rows."""

    @abstractmethod
    def candidate_ids(self) -> Tensor:
        """Source token ids an attack may substitute in: no specials, source language only. ``[C]``."""

    @abstractmethod
    def encode_source(self, text: str) -> EncodedSource:
        """Text -> token ids. Raises :class:`VictimError` on empty or over-long input."""

    @abstractmethod
    def decode_source(self, ids: list[int]) -> str:
        """Token ids -> detokenised text (specials dropped)."""

    def render_source(self, ids: list[int], text: str, text_ids: list[int]) -> str:
        """The text of ``ids``, an edit of the input ``text`` (encoded as ``text_ids``), written with ``text``'s
        own words where the edit kept its tokens, so that feeding it back gives ``ids`` again (a word-level
        victim's unknown words stay themselves instead of becoming ``<unk>``). Default: :meth:`decode_source`."""
        return self.decode_source(ids)

    def render_words(self, ids: list[int], text: str, text_ids: list[int]) -> list[str]:
        """The words of :meth:`render_source` (as :meth:`source_words` counts them)."""
        return self.source_words(ids)

    @abstractmethod
    def source_tokens(self, ids: list[int]) -> list[str]:
        """Token ids -> token strings (for display and word-level change counting)."""

    # ---- target side -------------------------------------------------------------------------
    @abstractmethod
    def decode_target(self, ids: list[int]) -> str:
        """Output token ids (no BOS/EOS) -> detokenised text."""

    @abstractmethod
    def target_words(self, ids: list[int]) -> list[str]:
        """Output token ids -> words (subwords merged), used for success checks."""

    @abstractmethod
    def keyword_id(self, word: str) -> int:
        """The single output-vocabulary id of a keyword; :class:`VictimError` when the model cannot emit it."""

    def normalize_keyword(self, word: str) -> str:
        """A keyword as it appears in :meth:`target_words` (the victim's casing: lowercased models lowercase)."""
        return word.strip()

    # ---- words: what success and change counting are judged on --------------------------------
    def source_words(self, ids: list[int]) -> list[str]:
        """The words of a source id list: tokens for word-level victims, else the detokenised text's words."""
        return self.source_tokens(ids) if self.word_level else self.decode_source(ids).split()

    def count_changed(self, original: list[int], adversarial: list[int]) -> int:
        """Words changed between two source id lists (positions for word-level victims, aligned words else)."""
        from nlprobust.metrics import changed_words

        if self.word_level and len(original) == len(adversarial):
            return sum(a != b for a, b in zip(original, adversarial))
        return changed_words(self.source_words(original), self.source_words(adversarial))

    def source_word_index(self, ids: list[int]) -> list[int]:
        """For each source token, the index of the word of :meth:`source_words` it belongs to (``-1`` for
        tokens that are not part of the text: specials, a task prefix)."""
        if self.word_level:
            return list(range(len(ids)))
        return _word_index(ids, lambda prefix: len(self.decode_source(prefix).split()))

    def target_word_index(self, ids: list[int]) -> list[int]:
        """For each output token, the index of the word of :meth:`target_words` it belongs to."""
        if self.word_level:
            return list(range(len(ids)))
        return _word_index(ids, lambda prefix: len(self.target_words(prefix)))

    @contextlib.contextmanager
    def attack_mode(self) -> Iterator[None]:
        """Eval mode and frozen parameters for the length of an attack; both restored afterwards."""
        model = self.model
        was_training = model.training
        grads = [p.requires_grad for p in model.parameters()]
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, g in zip(model.parameters(), grads):
                p.requires_grad_(g)
            model.train(was_training)

    def grad_context(self) -> contextlib.AbstractContextManager[None]:
        """Context for a forward pass whose gradient an attack takes: cuDNN's RNN backward refuses eval mode,
        so it is switched off there (only there: beam decodes keep cuDNN)."""
        if self.device.type == "cuda":
            return torch.backends.cudnn.flags(enabled=False)
        return contextlib.nullcontext()

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the source embedding table (attack state stays float32 and is cast to it)."""
        return self.source_embedding_table().dtype

    # ---- model -------------------------------------------------------------------------------
    @abstractmethod
    def logits(self, src_embeds: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, T, V_tgt]`` for decoder inputs ``tgt_in`` ``[B, T]`` (BOS first).

        ``src_embeds`` ``[B, N, d]`` are rows of :meth:`source_embedding_table` (possibly perturbed);
        ``src_mask`` ``[B, N]`` is True on real tokens (right padding).
        """

    @abstractmethod
    def generate(self, src_embeds: Tensor, src_mask: Tensor, *, beam_size: int = 1,
                 max_len: int = 100) -> list[list[int]]:
        """Decode each row (greedy for ``beam_size == 1``); output ids exclude BOS and EOS."""

    def greedy_with_logits(self, src_embeds: Tensor, src_mask: Tensor, *,
                           max_len: int) -> tuple[GreedyOutputs, Tensor, Tensor]:
        """Greedy output and its logits with gradient to ``src_embeds``: what one attack iteration needs.

        Returns ``(outputs, logits [B, T, V], valid [B, T])``: per row the greedy ids (no BOS/EOS; a
        :class:`GreedyOutputs`, which victims that decode on the device fill without a host sync), the
        logits at each step (step ``t`` predicts token ``t``; the step after the last token predicts EOS) and
        which steps exist. This default decodes without gradient, then runs one teacher-forced pass with
        gradient on the greedy prefix (the same logits); victims with an incremental decoder override it with
        a single decoding pass under autograd.
        """
        with torch.no_grad():
            greedy = self.generate(src_embeds.detach(), src_mask, beam_size=1, max_len=max_len)
        tgt_in = pad_targets([[self.tgt_bos_id] + g for g in greedy], self.tgt_pad_id, src_embeds.device)
        lengths = torch.tensor([len(g) + 1 for g in greedy], device=src_embeds.device)
        valid = torch.arange(tgt_in.shape[1], device=src_embeds.device).unsqueeze(0) < lengths.unsqueeze(1)
        return GreedyOutputs.from_lists(greedy, src_embeds.device), self.logits(src_embeds, src_mask, tgt_in), valid

    # ---- conveniences shared by all victims ------------------------------------------------
    def embed(self, ids: Tensor) -> Tensor:
        """Look up source ids in the embedding table: ``[B, N] -> [B, N, d]``."""
        return self.source_embedding_table()[ids]

    def pad_sources(self, batch: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Right-pad id lists into ``(ids [B, N], mask [B, N])`` on the victim's device."""
        if not batch:
            raise VictimError("empty batch")
        n = max(len(x) for x in batch)
        ids = torch.full((len(batch), n), self.src_pad_id, dtype=torch.long)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        ids = ids.to(self.device)
        return ids, ids != self.src_pad_id if self.src_pad_id >= 0 else torch.ones_like(ids, dtype=torch.bool)

    @torch.no_grad()
    def translate_ids(self, batch: list[list[int]], *, beam_size: int = 5, max_len: int | None = None,
                      batch_size: int = 64) -> list[list[int]]:
        """Decode source id lists in batches."""
        out: list[list[int]] = []
        for s in range(0, len(batch), batch_size):
            chunk = batch[s : s + batch_size]
            ids, mask = self.pad_sources(chunk)
            ml = max_len if max_len is not None else self.default_max_len(ids.shape[1])
            outs = self.generate(self.embed(ids), mask, beam_size=beam_size, max_len=ml)
            if max_len is None:  # a row's output must not depend on the other rows of its batch
                outs = [o[: self.default_max_len(len(x))] for o, x in zip(outs, chunk)]
            out.extend(outs)
        return out

    def translate(self, texts: list[str], *, beam_size: int = 5, batch_size: int = 64) -> list[str]:
        """Text in, text out (convenience for evaluation)."""
        ids = [self.encode_source(t).ids for t in texts]
        return [self.decode_target(o) for o in self.translate_ids(ids, beam_size=beam_size, batch_size=batch_size)]

    @staticmethod
    def default_max_len(src_len: int) -> int:
        return int(src_len * 2 + 10)


def _word_index(ids: list[int], words_in: Callable[[list[int]], int]) -> list[int]:
    """Word of each token, from the number of words in each prefix (a token that starts a word raises it)."""
    return [words_in(ids[: t + 1]) - 1 for t in range(len(ids))]


def pad_targets(seqs: list[list[int]], pad_id: int, device: torch.device) -> Tensor:
    n = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out.to(device)
