"""OpenNMT-py 3.5 checkpoints (word-level RNN with attention, or transformer) as attack victims.

OpenNMT-py checkpoints are Python pickles: loading one can run arbitrary code, so a victim is built only
when the caller passes ``trust_checkpoint=True`` (CLI: ``--trust-checkpoint``). Adversarial embeddings
enter the model through a forward hook on the encoder's word look-up table, so positional encodings,
embedding scaling and masking stay OpenNMT-py's own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nlprobust.text import detokenize, tokenize
from nlprobust.victims.base import (
    EncodedSource,
    GreedyOutputs,
    Seq2SeqVictim,
    VictimError,
    close_word_hint,
    quiet_third_party,
    resolve_device,
    resolve_dtype,
)
from nlprobust.victims.decoding import beam_search, may_stop

UNK = "<unk>"
SPECIALS = ("<blank>", "<s>", "</s>", UNK)




class CheckpointError(VictimError):
    """A checkpoint is missing, corrupt, untrusted or not of the expected kind."""


def load_onmt_checkpoint(path: str | os.PathLike[str], *, trust_checkpoint: bool) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not trust_checkpoint:
        raise CheckpointError(
            f"{p} is an OpenNMT-py checkpoint, i.e. a pickle that can run code when loaded; "
            "load it only if you trust its source, by passing trust_checkpoint=True (CLI: --trust-checkpoint)"
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"cannot read checkpoint {p} (corrupt or not a torch file): {exc}") from exc
    if not isinstance(ckpt, dict) or not {"model", "vocab", "opt"} <= set(ckpt):
        raise CheckpointError(f"{p} is not an OpenNMT-py checkpoint (expected keys model, vocab, opt)")
    return ckpt


class OpenNMTVictim(Seq2SeqVictim):
    """A word-level OpenNMT-py model. Source text is tokenised with :func:`nlprobust.text.tokenize`.

    Args:
        checkpoint: path of a ``.pt`` file written by ``onmt_train``.
        trust_checkpoint: must be True: the file is unpickled.
        device: where to run (default: CUDA when available, else CPU).
        lowercase: lowercase input text (for models trained on lowercased data).
        max_source_len: longest accepted input, in tokens.
        pretokenized: split input text on whitespace only (models trained on tokenised corpora such as
            Gigaword); outputs are then joined with single spaces.
    """

    word_level = True

    def __init__(self, checkpoint: str | os.PathLike[str], *, trust_checkpoint: bool = False,
                 device: str | torch.device | None = None, lowercase: bool = False,
                 max_source_len: int = 200, pretokenized: bool = False,
                 dtype: str | torch.dtype | None = None) -> None:
        self.device = resolve_device(device)
        ckpt = load_onmt_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint)
        with quiet_third_party():
            from onmt.inputters.inputter import dict_to_vocabs
            from onmt.model_builder import build_base_model
            from onmt.utils.parse import ArgumentParser

            model_opt = ArgumentParser.ckpt_model_opts(ckpt["opt"])
            ArgumentParser.update_model_opts(model_opt)
            ArgumentParser.validate_model_opts(model_opt)
            model_opt.update_vocab = False
            vocabs = dict_to_vocabs(ckpt["vocab"])
            try:
                model = build_base_model(model_opt, vocabs)
                model.load_state_dict(ckpt, precision=torch.float32, device=self.device, strict=True)
            except Exception as exc:  # noqa: BLE001
                raise CheckpointError(f"checkpoint {checkpoint} does not match its own model options: {exc}") from exc
        self._setup(model.to(self.device, dtype=resolve_dtype(dtype)), model_opt, ckpt["vocab"], lowercase=lowercase,
                    pretokenized=pretokenized, max_source_len=max_source_len)

    @classmethod
    def from_model(cls, model: Any, vocab: dict[str, Any], *, model_opt: Any = None, lowercase: bool = False,
                   max_source_len: int = 200, pretokenized: bool = False) -> OpenNMTVictim:
        """A victim of an OpenNMT-py model already in memory (e.g. just trained or built in a notebook): ``model``
        (an ``onmt.models.NMTModel``, used where it is, never moved) and ``vocab`` as a checkpoint stores it
        (``{"src": [...], "tgt": [...]}``, optionally ``decoder_start_token``)."""
        for side in ("src", "tgt"):
            if side not in vocab or not vocab[side]:
                raise VictimError(f"vocab needs a non-empty {side!r} list of tokens (as in a checkpoint's 'vocab')")
        first = next(iter(model.parameters()), None)
        victim = cls.__new__(cls)
        victim.device = first.device if first is not None else torch.device("cpu")
        victim._setup(model, model_opt, vocab, lowercase=lowercase, pretokenized=pretokenized,
                      max_source_len=max_source_len)
        return victim

    def _setup(self, model: Any, model_opt: Any, vocab: dict[str, Any], *, lowercase: bool, pretokenized: bool,
               max_source_len: int) -> None:
        self.model: Any = model.eval()
        self.model_opt = model_opt
        self.src_itos: list[str] = list(vocab["src"])
        self.tgt_itos: list[str] = list(vocab["tgt"])
        self.src_stoi = {t: i for i, t in enumerate(self.src_itos)}
        self.tgt_stoi = {t: i for i, t in enumerate(self.tgt_itos)}
        self.src_pad_id = self.src_stoi["<blank>"]
        self.src_unk_id = self.src_stoi["<unk>"]
        self.tgt_pad_id = self.tgt_stoi["<blank>"]
        self.tgt_bos_id = self.tgt_stoi[vocab.get("decoder_start_token", "<s>")]
        self.tgt_eos_id = self.tgt_stoi["</s>"]
        self.tgt_unk_id = self.tgt_stoi["<unk>"]
        self.lowercase = lowercase
        self.pretokenized = pretokenized
        self.max_source_len = max_source_len
        self._word_lut = self.model.encoder.embeddings.word_lut
        specials = set(SPECIALS) | {"averyunlikelytoken"}
        cand = [i for i, t in enumerate(self.src_itos) if t not in specials and not t.startswith("<")]
        self._candidates = torch.tensor(cand, dtype=torch.long, device=self.device)
        self._ban = [self.tgt_pad_id, self.tgt_bos_id]
        self._ban_t = torch.tensor(self._ban, device=self.device)

    # ---- source --------------------------------------------------------------------------------
    def source_embedding_table(self) -> Tensor:
        return self._word_lut.weight

    def candidate_ids(self) -> Tensor:
        return self._candidates

    def _tokens(self, text: str) -> list[str]:
        """The source tokens of ``text``; a literal ``<unk>`` (lowercase, as the vocabulary writes it) stays one
        token, the unknown word."""
        text = text.lower() if self.lowercase else text
        if self.pretokenized:
            return text.split()
        toks: list[str] = []
        for k, part in enumerate(text.split(UNK)):
            toks += [UNK] * (k > 0) + tokenize(part)
        return toks

    def encode_source(self, text: str) -> EncodedSource:
        toks = self._tokens(text)
        if not toks:
            raise VictimError("empty input: nothing to attack")
        if len(toks) > self.max_source_len:
            raise VictimError(f"input has {len(toks)} tokens, more than this victim accepts ({self.max_source_len})")
        ids = [self.src_stoi.get(t, self.src_unk_id) for t in toks]
        return EncodedSource(ids, [True] * len(ids))

    def _join(self, words: list[str]) -> str:
        return " ".join(words) if self.pretokenized else detokenize(words)

    def decode_source(self, ids: list[int]) -> str:
        return self._join(self.source_tokens(ids))

    def source_tokens(self, ids: list[int]) -> list[str]:
        return [self.src_itos[i] for i in ids if i != self.src_pad_id]

    def render_words(self, ids: list[int], text: str, text_ids: list[int]) -> list[str]:
        toks, own = self.source_tokens(ids), self._tokens(text)
        if len(toks) != len(ids) or not (len(own) == len(text_ids) == len(ids)):
            return toks
        return [o if a == b else t for t, o, a, b in zip(toks, own, ids, text_ids)]

    def render_source(self, ids: list[int], text: str, text_ids: list[int]) -> str:
        return self._join(self.render_words(ids, text, text_ids))

    # ---- target --------------------------------------------------------------------------------
    def decode_target(self, ids: list[int]) -> str:
        return self._join(self.target_words(ids))

    def target_words(self, ids: list[int]) -> list[str]:
        return [self.tgt_itos[i] for i in ids if i not in (self.tgt_pad_id, self.tgt_bos_id, self.tgt_eos_id)]

    def normalize_keyword(self, word: str) -> str:
        w = word.strip()
        return w.lower() if self.lowercase else w

    def keyword_id(self, word: str) -> int:
        w = self.normalize_keyword(word)
        if w not in self.tgt_stoi or w in SPECIALS:
            raise VictimError(f"keyword {word!r} is not in the target vocabulary of this model"
                              + close_word_hint(w, self.tgt_itos))
        return self.tgt_stoi[w]

    # ---- model ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _embeddings_override(self, embeds: Tensor) -> Iterator[None]:
        handle = self._word_lut.register_forward_hook(lambda _m, _i, _o: embeds)
        try:
            yield
        finally:
            handle.remove()

    def _encode(self, src_embeds: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        src = torch.where(src_mask, self.src_unk_id, self.src_pad_id).unsqueeze(-1)
        src_len = src_mask.sum(1)
        with self._embeddings_override(src_embeds):
            enc_out, enc_final, _ = self.model.encoder(src, src_len)
        self.model.decoder.init_state(src, enc_out, enc_final)
        return src, enc_out, src_len

    def logits(self, src_embeds: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        _, enc_out, src_len = self._encode(src_embeds, src_mask)
        dec_out, _ = self.model.decoder(tgt_in.unsqueeze(-1), enc_out, src_len=src_len)
        return self.model.generator(dec_out)

    def greedy_with_logits(self, src_embeds: Tensor, src_mask: Tensor, *,
                           max_len: int) -> tuple[GreedyOutputs, Tensor, Tensor]:
        """One greedy decoding pass under autograd (OpenNMT-py's input-feeding decoder steps one token at a time
        anyway, so its logits equal a teacher-forced pass on the greedy prefix, at the cost of one forward). The
        host learns whether every row has finished only every ``SYNC_EVERY`` steps on the CPU and never on an
        accelerator (``decoding.may_stop``; steps past a row's end are masked out by ``valid``), and banned
        tokens are masked without a branch on the device."""
        _, enc_out, src_len = self._encode(src_embeds, src_mask)
        dec = self.model.decoder
        b = src_embeds.shape[0]
        last = torch.full((b,), self.tgt_bos_id, dtype=torch.long, device=self.device)
        finished = torch.zeros(b, dtype=torch.bool, device=self.device)
        steps, tokens, alive = [], [], []
        for t in range(max_len + 1):
            out, _ = dec(last.view(-1, 1, 1), enc_out, src_len=src_len, step=t)
            z = self.model.generator(out.squeeze(1))
            steps.append(z)
            alive.append(~finished)
            last = z.detach().index_fill(1, self._ban_t, float("-inf")).argmax(-1)  # never padding or BOS
            tokens.append(last)
            finished = finished | (last == self.tgt_eos_id)
            if t == max_len - 1 or may_stop(t, finished):
                break
        toks = torch.stack(tokens, 1)
        outs = GreedyOutputs.from_tokens(toks, toks == self.tgt_eos_id)
        return outs, torch.stack(steps, 1), torch.stack(alive, 1)

    @torch.no_grad()
    def generate(self, src_embeds: Tensor, src_mask: Tensor, *, beam_size: int = 1,
                 max_len: int = 100) -> list[list[int]]:
        src, enc_out, src_len = self._encode(src_embeds, src_mask)
        b = src.shape[0]
        dec = self.model.decoder
        if beam_size > 1:
            dec.map_state(lambda s, dim: s.repeat_interleave(beam_size, dim=dim))
            enc_out = enc_out.repeat_interleave(beam_size, dim=0)
            src_len = src_len.repeat_interleave(beam_size, dim=0)
        state = {"t": 0}

        def step(last: Tensor) -> Tensor:
            out, _ = dec(last.view(-1, 1, 1), enc_out, src_len=src_len, step=state["t"])
            state["t"] += 1
            return torch.log_softmax(self.model.generator(out.squeeze(1)).float(), dim=-1)

        def reorder(rows: Tensor) -> None:
            dec.map_state(lambda s, dim: s.index_select(dim, rows))

        return beam_search(step, reorder, batch_size=b, beam_size=beam_size, bos=self.tgt_bos_id,
                           eos=self.tgt_eos_id, max_len=max_len, device=self.device, ban=self._ban)
