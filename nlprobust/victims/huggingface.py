"""Hugging Face ``transformers`` encoder-decoder models (Marian, T5, BART, ...) as attack victims.

Adversarial embeddings enter the model as ``inputs_embeds``; decoding runs the encoder once on them and hands
its states to ``model.generate(encoder_outputs=...)``, so positional encodings, masking, caching and beam search
stay the library's own. One attack iteration (``greedy_with_logits``) runs the encoder once under autograd,
decodes greedily with the model's key/value cache without gradient, and replays the output in one
teacher-forced decoder pass for the loss (``generate`` instead of the loop when the generation config alters
greedy decoding); without autograd (scoring candidate inputs) the loop's own step logits serve and the replay
is skipped.

Pitfalls handled here:

* **Embedding scale.** Attacks work on the *unscaled* rows of the encoder's word table. Marian multiplies the
  looked-up rows by ``encoder.embed_scale`` only on the ``input_ids`` path; BART scales inside its
  ``BartScaledWordEmbedding`` (``embed_tokens.embed_scale``); T5 does not scale. Both attributes are read and
  the scale to apply to ``inputs_embeds`` is confirmed once, at load time, by comparing the encoder's output on
  a short probe for ``input_ids`` against ``scale * E[ids]`` (so a scale is never applied twice nor missed).
* **Generation defaults of hub checkpoints.** OPUS-MT generation configs set ``num_beams=4``,
  ``max_length=512`` and ``bad_words_ids=[[pad]]``; every decoding setting that matters (beams, sampling,
  length, early stopping, one returned sequence, banned padding) is passed explicitly.
* **Decoder start token.** T5 configs of ``transformers`` 5 have no ``decoder_start_token_id`` attribute unless
  the checkpoint's ``config.json`` sets it: it is looked up on the config, then the generation config, then
  falls back to ``bos_token_id`` and finally to the pad id (the T5 convention), and always passed to ``generate``.
* **Decoded output.** ``generate`` returns the decoder start token first and (BART with
  ``forced_bos_token_id``) a BOS; both, everything from the first EOS on, and padding are dropped.
* **Task prefix** (``"translate English to German: "`` for T5): prepended to every input and frozen, like the
  special tokens (``</s>``, BART's ``<s>``); ``decode_source`` drops it again.
* **Candidates.** Only non-special tokens that decode to visible text (no bare ``▁``/``Ġ``, no partial UTF-8
  bytes of byte-level BPE) are candidates; for Marian only pieces of the *source* sentencepiece model (the joint
  vocabulary also holds target-language pieces).
* **Marian's two sentencepiece models.** ``MarianTokenizer.decode`` uses the *source* model by default when the
  vocabulary is shared; the source side decodes with ``use_source_tokenizer=True``, the target side with
  ``False``, and keywords are tokenised in target mode (``text_target=``).
* **Keywords** must be a single target token as the word appears after a space (``▁Hund``, ``ĠHund``).
* **eval mode.** The model is put in ``eval()`` at load time, and every forward pass runs in eval mode (a
  model someone switched back to training is switched to eval for the call and restored afterwards).
* **No network by accident.** A string that is not an existing directory is treated as a hub id only when it
  looks like one; loading failures name the path and suggest ``save_pretrained`` + a local directory.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from nlprobust.text import tokenize
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
from nlprobust.victims.decoding import may_stop

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_DEFAULT_MAX_LEN = 512


class HFLoadError(VictimError):
    """A Hugging Face model or tokenizer cannot be found or loaded."""


def _looks_like_hub_id(name: str) -> bool:
    """True for ``"t5-small"`` or ``"Helsinki-NLP/opus-mt-en-de"``; False for anything path-like."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def _as_float(value: Any) -> float | None:
    """An ``embed_scale`` attribute (float, int, 0-d tensor or None) as a float."""
    if value is None:
        return None
    try:
        return float(value.item() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError):
        return None


def _load_pretrained(name: str | os.PathLike[str], tokenizer: Any, local_files_only: bool,
                     **model_kwargs: Any) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local ``save_pretrained`` directory or a hub id (``model_kwargs``,
    e.g. ``device_map`` / ``dtype``, go to ``from_pretrained``)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    raw = os.fspath(name)
    path = Path(raw).expanduser()
    if path.exists():
        if not path.is_dir():
            raise HFLoadError(f"{path} is a file; expected a model directory written by save_pretrained")
        if not (path / "config.json").is_file():
            raise HFLoadError(f"{path} has no config.json: not a Hugging Face model directory (save_pretrained)")
        source: str = str(path)
        local = True
    elif isinstance(name, str) and _looks_like_hub_id(raw):
        source, local = raw, local_files_only
    else:
        raise HFLoadError(f"model directory not found: {path}")
    try:
        with quiet_third_party():
            model = AutoModelForSeq2SeqLM.from_pretrained(source, local_files_only=local, **model_kwargs)
            if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
                tok_source = source if tokenizer is None else os.fspath(tokenizer)
                tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=local)
    except HFLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, HTTP errors, missing tokenizer files, ...
        if path.exists():
            raise HFLoadError(f"cannot load a seq2seq model and tokenizer from {path}: {exc}") from exc
        raise HFLoadError(
            f"cannot load {raw!r}: it is not a local directory, and as a Hugging Face Hub id it could not be "
            f"loaded{' from the local cache (local_files_only=True)' if local else ''} ({type(exc).__name__}: "
            f"{exc}). Download the model where the Hub is reachable (model.save_pretrained(dir); "
            "tokenizer.save_pretrained(dir)) and pass that local directory instead."
        ) from exc
    return model, tokenizer


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _load_tokenizer(name: str | os.PathLike[str], local_files_only: bool) -> Any:
    """``AutoTokenizer.from_pretrained`` with the same error messages as the model loader."""
    from transformers import AutoTokenizer

    path = Path(os.fspath(name)).expanduser()
    local = local_files_only or path.exists()
    if not path.exists() and not (isinstance(name, str) and _looks_like_hub_id(name)):
        raise HFLoadError(f"tokenizer directory not found: {path}")
    try:
        return AutoTokenizer.from_pretrained(os.fspath(name), local_files_only=local)
    except Exception as exc:  # noqa: BLE001
        raise HFLoadError(f"cannot load a tokenizer from {os.fspath(name)!r} ({type(exc).__name__}: {exc}); "
                          "pass a local directory written by tokenizer.save_pretrained") from exc


class HFVictim(Seq2SeqVictim):
    """A Hugging Face encoder-decoder model (``AutoModelForSeq2SeqLM``) and its tokenizer.

    Args:
        model_or_path: a local ``save_pretrained`` directory, a hub id, or an already-built model object.
        tokenizer: the tokenizer object (required with a model object); with a path, ``None`` loads the
            tokenizer from the same place, a string/path loads it from there.
        device: where to run a model this victim loads (default: CUDA when available, else CPU). A model
            object, or one loaded with ``device_map``, stays where it is (it is never moved: a quantised or
            dispatched model cannot be) and the victim runs on the device of its parameters; a ``device``
            that disagrees is an error.
        dtype: dtype of a model loaded from a path (``torch.bfloat16``, ``"float16"``, ...); attack state
            stays float32 and is cast at the model's boundary.
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``) for a model loaded from a path.
        task_prefix: text prepended to every source (e.g. ``"translate English to German: "`` for T5); its
            tokens are never editable.
        max_source_len: longest accepted input in tokens, specials and prefix included (default: the
            tokenizer's ``model_max_length``, capped at 512 and at the model's ``max_position_embeddings``).
        local_files_only: never contact the Hub (a hub id must then be in the local cache).

    Raises:
        HFLoadError: missing directory, unreachable hub id, not an encoder-decoder model, no tokenizer.
    """

    word_level = False

    def __init__(self, model_or_path: Any, tokenizer: Any = None, *, device: str | torch.device | None = None,
                 task_prefix: str = "", max_source_len: int | None = None, local_files_only: bool = False,
                 dtype: Any = None, device_map: Any = None) -> None:
        placed = not isinstance(model_or_path, (str, os.PathLike)) or device_map is not None
        own_device = None if placed else resolve_device(device)  # a device this machine lacks fails first
        if isinstance(model_or_path, (str, os.PathLike)):
            kwargs: dict[str, Any] = {}
            if dtype is not None:
                kwargs["dtype"] = resolve_dtype(dtype)
            if device_map is not None:
                kwargs["device_map"] = device_map
            model, tokenizer = _load_pretrained(model_or_path, tokenizer, local_files_only, **kwargs)
        else:
            if dtype is not None or device_map is not None:
                raise HFLoadError("dtype / device_map apply to a model loaded from a path; convert or "
                                  "place a model object yourself before passing it")
            model = model_or_path
            if tokenizer is None:
                raise HFLoadError("a tokenizer object is required when HFVictim is given a model object")
            if isinstance(tokenizer, (str, os.PathLike)):
                tokenizer = _load_tokenizer(tokenizer, local_files_only)
        config = getattr(model, "config", None)
        if not isinstance(model, torch.nn.Module) or config is None or not getattr(config, "is_encoder_decoder", False):
            raise HFLoadError(f"{type(model).__name__} is not a Hugging Face encoder-decoder (seq2seq) model")
        if placed:  # the user's (or accelerate's) placement: never moved
            first = next(iter(model.parameters()), None)
            here = first.device if first is not None else torch.device("cpu")
            if device is not None and not _same_device(torch.device(device), here):
                raise HFLoadError(f"the model is on {here}, not {device}: move it before passing it, or leave "
                                  f"device unset to run where it is")
            self.device = here
            self.model = model
        else:
            self.device = cast(torch.device, own_device)
            self.model = model.to(self.device).eval()
        self._hf: Any = cast(Any, self.model)  # the same model, typed loosely (get_encoder, generate, ...)
        self.tokenizer = tokenizer
        self.config = config
        self.task_prefix = task_prefix
        self._is_marian = hasattr(tokenizer, "spm_source")
        self._src_decode_kw: dict[str, Any] = {"use_source_tokenizer": True} if self._is_marian else {}
        self._tgt_decode_kw: dict[str, Any] = {"use_source_tokenizer": False} if self._is_marian else {}

        self._encoder: Any = self._hf.get_encoder()
        self._embedding = self._find_embedding()

        gen = getattr(self._hf, "generation_config", None)
        pad = _first_id(tokenizer.pad_token_id, getattr(config, "pad_token_id", None))
        self.src_pad_id = pad if pad is not None else -1
        tgt_pad = _first_id(getattr(config, "pad_token_id", None), getattr(gen, "pad_token_id", None),
                            tokenizer.pad_token_id)
        self.tgt_pad_id = tgt_pad if tgt_pad is not None else -1
        eos = _first_id(getattr(config, "eos_token_id", None), getattr(gen, "eos_token_id", None),
                        tokenizer.eos_token_id)
        if eos is None:
            raise HFLoadError(f"{type(model).__name__}: no eos_token_id in the config or the tokenizer")
        self.tgt_eos_id = eos
        self._eos_ids = {eos} | _id_set(getattr(gen, "eos_token_id", None))
        start = _first_id(getattr(config, "decoder_start_token_id", None), getattr(gen, "decoder_start_token_id", None),
                          getattr(config, "bos_token_id", None), getattr(gen, "bos_token_id", None))
        if start is None:  # T5 convention: decoding starts with the pad token
            start = self.tgt_pad_id
        if start < 0:
            raise HFLoadError(f"{type(model).__name__}: no decoder_start_token_id, bos_token_id or pad_token_id")
        self.tgt_bos_id = start
        bos = _first_id(getattr(config, "bos_token_id", None), tokenizer.bos_token_id)
        self._out_bos = bos if bos is not None and bos not in self._eos_ids and bos != self.tgt_pad_id else None

        limit = _DEFAULT_MAX_LEN
        tok_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < limit:
            limit = tok_max
        pos_max = getattr(config, "max_position_embeddings", None)
        if isinstance(pos_max, int) and 0 < pos_max < limit:
            limit = pos_max
        self.max_source_len = int(max_source_len) if max_source_len is not None else limit

        self._prefix_ids: list[int] = (
            list(tokenizer(task_prefix, add_special_tokens=False)["input_ids"]) if task_prefix else []
        )
        self._src_specials = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
        self._candidates: Tensor | None = None
        self.embed_scale = self._detect_embed_scale()
        self._forced_bos = _first_id(getattr(gen, "forced_bos_token_id", None))
        self._banned, self._plain_greedy = _greedy_bans(gen, self.tgt_pad_id, self._eos_ids)
        # the key/value cache argument: ``cache`` from transformers 5.x on, ``past_key_values`` before
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    # ---- set-up helpers ------------------------------------------------------------------------
    def _find_embedding(self) -> torch.nn.Embedding:
        """The encoder's word-embedding module."""
        getters: tuple[Any, ...] = (getattr(self._encoder, "get_input_embeddings", None), self._hf.get_input_embeddings)
        for get in getters:
            try:
                emb = get() if get is not None else None
            except (NotImplementedError, AttributeError):
                emb = None
            if isinstance(emb, torch.nn.Embedding):
                return emb
        emb = getattr(self._encoder, "embed_tokens", None)
        if isinstance(emb, torch.nn.Embedding):
            return emb
        raise HFLoadError(f"cannot find the encoder's word embedding table in {type(self.model).__name__}")

    @torch.no_grad()
    def _detect_embed_scale(self) -> float:
        """The factor the encoder applies to ``E[ids]`` on its ``input_ids`` path.

        Candidates come from ``embed_tokens.embed_scale`` (scaled inside the embedding module, BART) and
        ``encoder.embed_scale`` (scaled by the encoder, Marian); the one whose ``inputs_embeds`` reproduce the
        encoder's output for ``input_ids`` on a short probe wins, so no scale is applied twice.
        """
        module_scale = _as_float(getattr(self._embedding, "embed_scale", None))
        encoder_scale = _as_float(getattr(self._encoder, "embed_scale", None))
        guess = module_scale if module_scale is not None else (encoder_scale if encoder_scale is not None else 1.0)
        candidates: list[float] = []
        for c in (guess, module_scale or 1.0, encoder_scale or 1.0, (module_scale or 1.0) * (encoder_scale or 1.0),
                  1.0):
            if not any(math.isclose(c, d) for d in candidates):
                candidates.append(c)
        if len(candidates) == 1:
            return candidates[0]
        vocab = self._embedding.weight.shape[0]
        ids = torch.arange(min(vocab, 5), device=self.device).flip(0).unsqueeze(0)
        mask = torch.ones_like(ids)
        with self._eval_mode():
            ref = self._encoder(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state.float()
            table = self._embedding.weight
            diffs = []
            for c in candidates:
                out = self._encoder(inputs_embeds=table[ids] * c, attention_mask=mask, return_dict=True)
                diffs.append(float((out.last_hidden_state.float() - ref).abs().max()))
        best = min(range(len(candidates)), key=lambda i: diffs[i])
        if diffs[best] > 1e-3 * (1.0 + float(ref.abs().max())):
            warnings.warn(f"{type(self.model).__name__}: no embedding scale reproduces the input_ids path "
                          f"(tried {candidates}, max differences {diffs}); using {candidates[best]}", stacklevel=3)
        return candidates[best]

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Run in eval mode; a model found in training mode is restored to it afterwards."""
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            yield
        finally:
            if was_training:
                self.model.train()

    def _scaled(self, src_embeds: Tensor) -> Tensor:
        return src_embeds * self.embed_scale if self.embed_scale != 1.0 else src_embeds

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> HFVictim:
        """The victim of a ``transformers`` translation / summarization / text2text pipeline (transformers 4; any
        object with ``model`` and ``tokenizer``): its model (as already placed, never moved) and tokenizer, and
        its task prefix (the pipeline's ``prefix``, else the model config's, else the ``task_specific_params``
        entry of the pipeline's task, e.g. T5's ``translate English to German: ``). ``kwargs`` go to the
        constructor (``task_prefix`` overrides)."""
        model, tokenizer = getattr(pipe, "model", None), getattr(pipe, "tokenizer", None)
        if model is None or tokenizer is None:
            raise HFLoadError(f"{type(pipe).__name__} has no model and tokenizer: expected a transformers pipeline")
        if "task_prefix" not in kwargs:
            prefix = getattr(pipe, "prefix", None) or getattr(model.config, "prefix", None)
            if not prefix:
                params = getattr(model.config, "task_specific_params", None) or {}
                task = str(getattr(pipe, "task", "") or "")
                prefix = (params.get(task) or {}).get("prefix")
            kwargs["task_prefix"] = prefix or ""
        return cls(model, tokenizer, **kwargs)

    # ---- source --------------------------------------------------------------------------------
    def source_embedding_table(self) -> Tensor:
        return self._embedding.weight

    def candidate_ids(self) -> Tensor:
        if self._candidates is None:
            self._candidates = self._build_candidates()
        return self._candidates

    def _build_candidates(self) -> Tensor:
        tok = self.tokenizer
        n = min(len(tok), self._embedding.weight.shape[0])
        specials = set(tok.all_special_ids)
        ids = [i for i in range(n) if i not in specials]
        if self._is_marian:  # the joint vocabulary also holds target-language pieces
            sp = tok.spm_source
            pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())
                      if not (sp.is_control(i) or sp.is_unknown(i))}
            ids = [i for i, t in zip(ids, tok.convert_ids_to_tokens(ids), strict=True) if t in pieces]
        texts = tok.batch_decode([[i] for i in ids], skip_special_tokens=True, **self._src_decode_kw)
        keep = [i for i, t in zip(ids, texts, strict=True) if t.strip() and "\ufffd" not in t]
        return torch.tensor(keep, dtype=torch.long, device=self.device)

    def encode_source(self, text: str) -> EncodedSource:
        if not text or not text.strip():
            raise VictimError("empty input: nothing to attack")
        full = self.task_prefix + text
        enc = self.tokenizer(full, add_special_tokens=True, return_special_tokens_mask=True)
        ids = [int(i) for i in enc["input_ids"]]
        special = enc["special_tokens_mask"]
        body = [p for p, s in enumerate(special) if not s]
        n_prefix = self._prefix_length([ids[p] for p in body], full)
        editable = [False] * len(ids)
        for p in body[n_prefix:]:
            editable[p] = True
        if not any(editable):
            raise VictimError(f"empty input: {text!r} has no tokens after the task prefix")
        if len(ids) > self.max_source_len:
            raise VictimError(f"input has {len(ids)} tokens, more than this victim accepts ({self.max_source_len})")
        return EncodedSource(ids, editable)

    def _prefix_length(self, body: list[int], full: str) -> int:
        """How many leading non-special tokens of ``body`` belong to the task prefix."""
        k = len(self._prefix_ids)
        if k == 0 or body[:k] == self._prefix_ids:
            return k
        # The prefix's last token merged with the text's first one: freeze every token touching the prefix.
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
            return min(len(body), sum(1 for start, _ in enc["offset_mapping"] if start < len(self.task_prefix)))
        pairs = zip(body, self._prefix_ids, strict=False)
        common = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(body), k))
        return min(len(body), common + 1)

    def decode_source(self, ids: list[int]) -> str:
        body = [i for i in ids if i not in self._src_specials and i != self.src_pad_id]
        k = len(self._prefix_ids)
        strip_text = False
        if k and body[:k] == self._prefix_ids:
            body = body[k:]
        elif k:
            strip_text = True
        text = self.tokenizer.decode(body, skip_special_tokens=False, **self._src_decode_kw).strip()
        prefix = self.task_prefix.strip()
        if strip_text and prefix and text.startswith(prefix):
            text = text[len(prefix):].strip()
        return text

    def source_tokens(self, ids: list[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens([i for i in ids if i != self.src_pad_id]))

    # ---- target --------------------------------------------------------------------------------
    def decode_target(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, **self._tgt_decode_kw).strip()

    def target_words(self, ids: list[int]) -> list[str]:
        """Words of the detokenised output with punctuation split off (``"Hund."`` -> ``Hund``, ``.``), the same
        segmentation as the word-level victims' outputs."""
        return tokenize(self.decode_target(ids))

    def keyword_id(self, word: str) -> int:
        w = word.strip()
        if not w or any(c.isspace() for c in w):
            raise VictimError(f"keyword {word!r} must be one non-empty word")
        ids = list(self.tokenizer(text_target=" " + w, add_special_tokens=False)["input_ids"])
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            hint = close_word_hint(w, [t.lstrip("\u2581") for t in self.tokenizer.convert_ids_to_tokens(
                list(range(len(self.tokenizer)))) if isinstance(t, str) and t.startswith("\u2581")])
            if hint:
                raise VictimError(f"keyword {word!r} is not a single word of this model's target vocabulary{hint}")
            raise VictimError(
                f"keyword {word!r} is split into {len(ids)} subwords {pieces} by this model's tokenizer; the model "
                "cannot be targeted with it as a single keyword"
            )
        kid = int(ids[0])
        vocab = getattr(self.config, "vocab_size", None)
        if kid == self.tokenizer.unk_token_id or kid in self.tokenizer.all_special_ids or (
                isinstance(vocab, int) and kid >= vocab):
            words = [t.lstrip("\u2581") for t in self.tokenizer.convert_ids_to_tokens(
                list(range(min(len(self.tokenizer), vocab or len(self.tokenizer))))) if isinstance(t, str)]
            raise VictimError(f"keyword {word!r} is not in the target vocabulary of this model"
                              + close_word_hint(w, words))
        return kid

    # ---- model ---------------------------------------------------------------------------------
    def logits(self, src_embeds: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        with self._eval_mode():
            out = self.model(inputs_embeds=self._scaled(src_embeds), attention_mask=src_mask.long(),
                             decoder_input_ids=tgt_in, use_cache=False, return_dict=True)
        return out.logits.float()

    @torch.no_grad()
    def generate(self, src_embeds: Tensor, src_mask: Tensor, *, beam_size: int = 1,
                 max_len: int = 100) -> list[list[int]]:
        mask = src_mask.long()
        with self._eval_mode():
            enc = self._encoder(inputs_embeds=self._scaled(src_embeds), attention_mask=mask, return_dict=True)
            out = self._hf.generate(encoder_outputs=enc, attention_mask=mask,
                                      **self.generation_kwargs(beam_size=beam_size, max_len=max_len))
        return [self._strip_output(row) for row in out.tolist()]

    def greedy_with_logits(self, src_embeds: Tensor, src_mask: Tensor, *,
                           max_len: int) -> tuple[GreedyOutputs, Tensor, Tensor]:
        """One encoder pass under autograd, a cached greedy loop without gradient, one teacher-forced decoder pass.

        The greedy ids equal :meth:`generate` with ``beam_size=1`` (the library's ``generate`` is used instead of
        the loop when the model's generation config changes greedy decoding: repetition penalties, n-gram bans,
        minimum lengths, suppressed tokens). The teacher-forced pass replays what the decoder actually read,
        including a forced BOS, and the returned logits are aligned with the stripped output ids. Everything
        after the greedy loop stays on the device (the outputs come back as :class:`GreedyOutputs`).
        """
        from transformers.modeling_outputs import BaseModelOutput

        mask = src_mask.long()
        dev = src_embeds.device
        with self._eval_mode():
            enc = self._encoder(inputs_embeds=self._scaled(src_embeds), attention_mask=mask, return_dict=True)
            frozen = BaseModelOutput(last_hidden_state=enc.last_hidden_state.detach())
            # without autograd (candidate scoring) the loop's own step logits are the teacher-forced ones: the
            # replay pass is skipped
            reuse = self._plain_greedy and not torch.is_grad_enabled()
            step_logits = None
            with torch.no_grad():
                if self._plain_greedy:
                    raw, step_logits = self._greedy_loop(frozen, mask, max_len, keep_logits=reuse)
                else:
                    raw = self._hf.generate(encoder_outputs=frozen, attention_mask=mask,
                                            **self.generation_kwargs(beam_size=1, max_len=max_len))
            # raw: [B, 1 + S] = decoder start, an optional forced BOS, the output, EOS, then fill. The decoder
            # is causal, so a pass over raw itself gives at positions skip .. skip + len(output) exactly the
            # logits of a pass over the stripped prefix; later positions are masked out by ``valid``.
            b, width = raw.shape
            if width > 1 and self._out_bos is not None:
                skips = (raw[:, 1] == self._out_bos).long()
            else:
                skips = torch.zeros(b, dtype=torch.long, device=dev)
            # step t of a row reads raw position skip + t and predicts raw position skip + t + 1
            index = skips.unsqueeze(1) + torch.arange(width, device=dev).unsqueeze(0)
            tokens = raw.gather(1, (index + 1).clamp(max=width - 1))
            ends = torch.isin(tokens, torch.tensor(sorted(self._eos_ids), device=dev)) | (index + 1 >= width)
            if self.tgt_pad_id >= 0 and not self._plain_greedy:  # ``generate`` may pad a finished row
                ends = ends | (tokens == self.tgt_pad_id)
            outs = GreedyOutputs.from_tokens(tokens, ends)
            if step_logits is not None:
                full = step_logits.float()
            else:
                full = self._hf(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=raw, use_cache=False,
                                return_dict=True).logits.float()
        logits = full.gather(1, index.clamp(max=width - 1).unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        valid = torch.arange(width, device=dev).unsqueeze(0) <= outs.lengths.unsqueeze(1)  # the EOS step too
        return outs, logits, valid

    def _greedy_loop(self, enc: Any, mask: Tensor, max_len: int, *,
                     keep_logits: bool = False) -> tuple[Tensor, Tensor | None]:
        """Greedy decoding with the key/value cache: ``[B, 1 + steps]`` ids laid out as ``generate`` returns them,
        and with ``keep_logits`` the decoder's logits after reading each of them ``[B, 1 + steps, V]`` (what a
        teacher-forced pass over the ids gives; one more cached step supplies the last position's)."""
        b, dev = mask.shape[0], mask.device
        seq = torch.full((b, 1), self.tgt_bos_id, dtype=torch.long, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        eos = torch.tensor(sorted(self._eos_ids), device=dev)
        fill = self.tgt_pad_id if self.tgt_pad_id >= 0 else self.tgt_eos_id
        banned = torch.tensor(sorted(self._banned), dtype=torch.long, device=dev) if self._banned else None
        past, cur = None, seq
        kept: list[Tensor] = []
        for step in range(max_len):
            out = self._hf(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=cur, use_cache=True,
                           return_dict=True, **{self._cache_kw: past})
            past = getattr(out, self._cache_kw)
            if keep_logits:
                kept.append(out.logits[:, -1, :])
            if step == 0 and self._forced_bos is not None:
                nxt = torch.full((b,), self._forced_bos, dtype=torch.long, device=dev)
            else:
                scores = out.logits[:, -1, :]
                if banned is not None:
                    scores = scores.index_fill(1, banned, float("-inf"))
                nxt = scores.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, fill), nxt)
            seq = torch.cat([seq, nxt.unsqueeze(1)], dim=1)
            done = done | torch.isin(nxt, eos)
            cur = nxt.unsqueeze(1)
            if may_stop(step, done):
                break
        if not keep_logits:
            return seq, None
        out = self._hf(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=cur, use_cache=True,
                       return_dict=True, **{self._cache_kw: past})
        kept.append(out.logits[:, -1, :])
        return seq, torch.stack(kept, dim=1)

    def generation_kwargs(self, *, beam_size: int = 1, max_len: int = 100) -> dict[str, Any]:
        """The explicit ``model.generate`` settings :meth:`generate` uses (they override the model's defaults)."""
        kw: dict[str, Any] = {
            "num_beams": beam_size, "do_sample": False, "max_new_tokens": max_len, "num_return_sequences": 1,
            "decoder_start_token_id": self.tgt_bos_id, "return_dict_in_generate": False,
            # no forced EOS at max length: a row's output must not depend on the batch's padded length
            "forced_eos_token_id": None,
        }
        if beam_size > 1:
            kw["early_stopping"] = True
        if self.tgt_pad_id >= 0:
            kw["pad_token_id"] = self.tgt_pad_id
            if self.tgt_pad_id not in self._eos_ids:
                kw["bad_words_ids"] = [[self.tgt_pad_id]]
        return kw

    def _strip_output(self, row: list[int]) -> list[int]:
        seq = row[1:]  # the decoder start token
        if seq and self._out_bos is not None and seq[0] == self._out_bos:
            seq = seq[1:]
        cut = next((i for i, t in enumerate(seq) if t in self._eos_ids), len(seq))
        return [t for t in seq[:cut] if t != self.tgt_pad_id]


def _greedy_bans(gen: Any, pad: int, eos: set[int]) -> tuple[set[int], bool]:
    """The token ids greedy :meth:`HFVictim.generate` never emits, and whether nothing else alters its choice.

    :meth:`HFVictim.generation_kwargs` bans the pad token (unless it doubles as EOS); then the model's own
    ``bad_words_ids`` are overridden. Settings that change greedy decoding in other ways send
    :meth:`HFVictim.greedy_with_logits` back to the library's ``generate``.
    """
    banned = {pad} if pad >= 0 and pad not in eos else set()
    plain = True
    if gen is None:
        return banned, plain
    if not banned:
        words = getattr(gen, "bad_words_ids", None) or []
        if any(len(w) != 1 for w in words):
            plain = False
        banned |= {int(w[0]) for w in words if len(w) == 1}
    neutral = {"no_repeat_ngram_size": (0, None), "encoder_no_repeat_ngram_size": (0, None),
               "repetition_penalty": (1.0, None), "encoder_repetition_penalty": (1.0, None),
               "min_length": (0, None), "min_new_tokens": (0, None), "suppress_tokens": (None,),
               "begin_suppress_tokens": (None,), "sequence_bias": (None,), "forced_decoder_ids": (None,),
               "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0)}
    for name, ok in neutral.items():
        value = getattr(gen, name, None)
        if value not in ok and value != [] and value != {}:
            plain = False
    return banned, plain


def _first_id(*values: Any) -> int | None:
    """The first of ``values`` that is a token id (an int, or the first int of a list)."""
    for v in values:
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def _id_set(value: Any) -> set[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {value}
    if isinstance(value, (list, tuple)):
        return {v for v in value if isinstance(v, int)}
    return set()
