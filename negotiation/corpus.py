"""The Deal-or-No-Deal corpus: FAIR text lines, the Hugging Face ``deal_or_no_dialog`` schema, vocabularies, batches.

A FAIR line (``negotiate/{train,val,test}.txt``) is one dialogue seen by one side ("YOU")::

    <input> 1 4 4 1 1 2 </input> <dialogue> THEM: i would like 4 hats and you can have the rest . <eos>
    YOU: deal <eos> THEM: <selection> </dialogue> <output> item0=1 item1=0 item2=1 item0=0 item1=4 item2=0
    </output> <partner_input> 1 0 4 2 1 2 </partner_input>

``<input>`` is YOU's context, ``<partner_input>`` the partner's; ``<output>`` is YOU's take then the
partner's (the complement), or one no-deal token six times (see :mod:`negotiation.domain`). Every turn is
``YOU:``/``THEM:``, its words and ``<eos>``; the last turn is the side that pressed "select" followed by
``<selection>``.

Perspectives: the files already hold most dialogues twice, once from each side, on adjacent lines (the
second is the first with YOU/THEM swapped, the contexts swapped and the output halves swapped). In
train/val/test 4,884/525/507 dialogues appear from both sides and 327/37/38 from one only
(:func:`pair_perspectives` finds the pairs). Training therefore reads every line from its own YOU's
perspective and never needs to mirror a line; :meth:`Example.mirrored` exists for checks and for
dialogues generated in self-play.

The loaders of ``<data>/negotiate/`` (data are read from a path, never copied; the data folder is the
argument, else ``NLPROBUST_DATA``, else ``../shared/data``, as :func:`nlprobust.core.data.data_root`):

* :func:`load_examples` -- the dialogues of ``train.txt``, ``val.txt`` or ``test.txt``;
* :func:`load_scenarios` -- games to play: ``selfplay`` (the 4,086 pairs of ``selfplay.txt``, on which the RL
  agent and the RL attacker train, as in Lewis et al.), ``val`` or ``test`` (the distinct context pairs of the
  dialogues of ``val.txt`` / ``test.txt``: 200 each; the 200 of ``test.txt`` appear neither in
  ``selfplay.txt`` nor in ``val.txt``, so they are the held-out games), or a ``selfplay.txt``-style file.
  With ``both_orders`` every pair is given in both orders (each side plays each context).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from negotiation.domain import (
    CHOICE_TOKENS,
    NO_AGREEMENT,
    NO_DEAL_TOKENS,
    NUM_ITEMS,
    Context,
    Scenario,
    Split,
    choice_tokens,
    complement,
    enumerate_choices,
    parse_scenario_lines,
    parse_split_tokens,
    score,
)

logger = logging.getLogger(__name__)

YOU, THEM = "YOU:", "THEM:"
SPEAKERS: tuple[str, ...] = (YOU, THEM)
EOS, SELECTION, PAD, UNK = "<eos>", "<selection>", "<pad>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, EOS, SELECTION, YOU, THEM)
"""Word-vocabulary specials, ids 0..5 in this order (``<pad>`` is 0)."""
FAIR_MIN_FREQ = 21
"""FAIR keeps a word seen more than ``--unk_threshold`` = 20 times in train.txt dialogues, i.e. at least 21."""
SECTIONS: tuple[str, ...] = ("input", "dialogue", "output", "partner_input")
SPLITS: tuple[str, ...] = ("train", "val", "test")
HF_DATASET = "mikelewis0/deal_or_no_dialog"
"""Hub id of ``deal_or_no_dialog`` (configs ``dialogues`` and ``self_play``; splits train/validation/test)."""


class Turn(NamedTuple):
    """One turn: ``speaker`` (``YOU:`` or ``THEM:``) and its tokens, ending with ``<eos>`` or ``<selection>``."""

    speaker: str
    tokens: tuple[str, ...]

    @property
    def words(self) -> tuple[str, ...]:
        """The tokens without the terminator."""
        return self.tokens[:-1]


def parse_dialogue(tokens: Sequence[str]) -> tuple[Turn, ...]:
    """Split dialogue tokens into turns; the last one must end with ``<selection>``.

    Raises:
        ValueError: empty dialogue, unknown speaker prefix, speaker inside a turn, empty turn, tokens after
            ``<selection>``, or no ``<selection>``.
    """
    toks = list(tokens)
    if not toks:
        raise ValueError("empty dialogue")
    turns: list[Turn] = []
    i = 0
    while i < len(toks):
        speaker = toks[i]
        if speaker not in SPEAKERS:
            raise ValueError(
                f"unknown speaker prefix {speaker!r} at dialogue token {i}; every turn starts with YOU: or THEM:"
            )
        j = i + 1
        while j < len(toks) and toks[j] not in (EOS, SELECTION):
            if toks[j] in SPEAKERS:
                raise ValueError(f"speaker prefix {toks[j]!r} inside a turn at dialogue token {j} (missing <eos>?)")
            j += 1
        if j == len(toks):
            raise ValueError("dialogue does not end with <selection>")
        if toks[j] == EOS and j == i + 1:
            raise ValueError(f"empty turn by {speaker} at dialogue token {i}")
        turns.append(Turn(speaker, tuple(toks[i + 1 : j + 1])))
        if toks[j] == SELECTION and j != len(toks) - 1:
            raise ValueError(f"tokens after <selection>: {toks[j + 1 : j + 6]}")
        i = j + 1
    if turns[-1].tokens[-1] != SELECTION:
        raise ValueError("dialogue does not end with <selection>")
    return tuple(turns)


def _swap_speaker(s: str) -> str:
    return THEM if s == YOU else YOU


@dataclass(frozen=True)
class Example:
    """One corpus line: a dialogue from YOU's perspective.

    Attributes:
        context: YOU's counts and values (``<input>``).
        partner_context: the partner's (``<partner_input>``); same counts.
        turns: the turns, the last ending with ``<selection>``.
        output: YOU's three selection tokens (``item0=a item1=b item2=c`` or a no-deal token three times).
        partner_output: the partner's three tokens when the line has them (the complement of ``output``, or
            the same no-deal token), else None.

    Raises:
        ValueError: contexts with different counts, a malformed dialogue, bad output tokens, or a partner
            output that does not match ``output``.
    """

    context: Context
    partner_context: Context
    turns: tuple[Turn, ...]
    output: tuple[str, ...]
    partner_output: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(Turn(t[0], tuple(t[1])) for t in self.turns))
        object.__setattr__(self, "output", tuple(self.output))
        if self.partner_output is not None:
            object.__setattr__(self, "partner_output", tuple(self.partner_output))
        Scenario(self.context, self.partner_context)  # same counts
        if parse_dialogue(self.dialogue_tokens()) != self.turns:
            raise ValueError(f"malformed turns: {self.turns}")
        mine = parse_split_tokens(self.output, self.context.counts)
        if self.partner_output is not None:
            theirs = parse_split_tokens(self.partner_output, self.context.counts)
            if mine is None:
                if tuple(self.partner_output) != tuple(self.output):
                    raise ValueError(f"output {list(self.output)} but partner output {list(self.partner_output)}")
            elif theirs != complement(mine, self.context.counts):
                raise ValueError(
                    f"partner output {list(self.partner_output)} is not the complement of {list(self.output)} "
                    f"for counts {list(self.context.counts)}"
                )

    @property
    def scenario(self) -> Scenario:
        return Scenario(self.context, self.partner_context)

    @property
    def selection(self) -> Split | None:
        """What YOU took, or None when there was no deal."""
        return parse_split_tokens(self.output)

    @property
    def no_deal_token(self) -> str | None:
        """``<disagree>``, ``<no_agreement>`` or ``<disconnect>`` when there was no deal, else None."""
        return self.output[0] if self.output[0] in NO_DEAL_TOKENS else None

    @property
    def agreed(self) -> bool:
        return self.selection is not None

    @property
    def scores(self) -> tuple[int, int]:
        """YOU's and the partner's scores (both 0 without a deal)."""
        sel = self.selection
        if sel is None:
            return (0, 0)
        counts = self.context.counts
        return (score(sel, self.context.values, counts), score(complement(sel, counts), self.partner_context.values))

    @property
    def selected_by(self) -> str:
        """The speaker who wrote ``<selection>``."""
        return self.turns[-1].speaker

    def dialogue_tokens(self) -> list[str]:
        """The flat ``<dialogue>`` tokens: ``YOU: ... <eos> THEM: ... <selection>``."""
        return [tok for t in self.turns for tok in (t.speaker, *t.tokens)]

    def output_tokens(self) -> list[str]:
        """All six output tokens (the partner's half derived from YOU's when the line had only three)."""
        if self.partner_output is not None:
            return [*self.output, *self.partner_output]
        sel = self.selection
        no_deal = self.no_deal_token or NO_AGREEMENT
        return choice_tokens(sel, self.context.counts, no_deal=no_deal)

    def to_line(self) -> str:
        """The FAIR text line (inverse of :func:`parse_line`)."""
        parts = [
            "<input>", *self.context.to_tokens(), "</input>",
            "<dialogue>", *self.dialogue_tokens(), "</dialogue>",
            "<output>", *self.output, *(self.partner_output or ()), "</output>",
            "<partner_input>", *self.partner_context.to_tokens(), "</partner_input>",
        ]  # fmt: skip
        return " ".join(parts)

    def mirrored(self) -> Example:
        """The same dialogue from the partner's perspective (as the corpus stores it on the other line)."""
        out = self.output_tokens()
        return Example(
            context=self.partner_context,
            partner_context=self.context,
            turns=tuple(Turn(_swap_speaker(t.speaker), t.tokens) for t in self.turns),
            output=tuple(out[NUM_ITEMS:]),
            partner_output=tuple(out[:NUM_ITEMS]),
        )


# --- parsing -----------------------------------------------------------------------------------------------


def _sections(tokens: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    i = 0
    for name in SECTIONS:
        open_tag, close_tag = f"<{name}>", f"</{name}>"
        if i >= len(tokens) or tokens[i] != open_tag:
            if open_tag not in tokens:
                raise ValueError(f"missing section {open_tag} ... {close_tag}")
            found = tokens[i] if i < len(tokens) else "end of line"
            raise ValueError(f"expected {open_tag} at token {i}, found {found!r} (sections must be {SECTIONS})")
        try:
            j = tokens.index(close_tag, i + 1)
        except ValueError:
            raise ValueError(f"section {open_tag} is not closed by {close_tag}") from None
        out[name] = tokens[i + 1 : j]
        i = j + 1
    if i < len(tokens):
        raise ValueError(f"unexpected tokens after </{SECTIONS[-1]}>: {tokens[i : i + 5]}")
    return out


def _context(tokens: Sequence[str], section: str) -> Context:
    try:
        return Context.from_tokens(tokens)
    except ValueError as exc:
        raise ValueError(f"<{section}>: {exc}") from None


def _split_output(tokens: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    toks = tuple(tokens)
    if len(toks) == 2 * NUM_ITEMS:
        return toks[:NUM_ITEMS], toks[NUM_ITEMS:]
    if len(toks) == NUM_ITEMS:
        return toks, None
    raise ValueError(f"<output> has {len(toks)} tokens, expected {2 * NUM_ITEMS} (or {NUM_ITEMS}): {list(toks)}")


def _build(context: Context, partner: Context, dialogue: Sequence[str], output: Sequence[str]) -> Example:
    turns = parse_dialogue(dialogue)
    mine, theirs = _split_output(output)
    try:
        return Example(context, partner, turns, mine, theirs)
    except ValueError as exc:
        raise ValueError(f"<output>: {exc}") from None


def parse_line(line: str, *, source: str = "<line>", lineno: int | None = None) -> Example:
    """Parse one FAIR line.

    Raises:
        ValueError: ``"{source}:{lineno}: {problem}"`` for a missing or misplaced section, a context that is
            not three count/value pairs worth 10, a malformed dialogue or unknown speaker prefix, or bad output.
    """
    where = source if lineno is None else f"{source}:{lineno}"
    try:
        sec = _sections(line.split())
        ctx = _context(sec["input"], "input")
        partner = _context(sec["partner_input"], "partner_input")
        if ctx.counts != partner.counts:
            raise ValueError(f"<input> counts {list(ctx.counts)} differ from <partner_input> {list(partner.counts)}")
        return _build(ctx, partner, sec["dialogue"], sec["output"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass
class Corpus:
    """Parsed examples of one file or split; ``skipped`` malformed lines (``strict=False``) with ``problems``."""

    examples: list[Example]
    source: str
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


def parse_lines(lines: Iterable[str], *, source: str = "<lines>", strict: bool = True) -> Corpus:
    """Parse FAIR lines (blank lines ignored). ``strict=False`` skips malformed lines and counts them."""
    corpus = Corpus([], source)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            corpus.examples.append(parse_line(line, source=source, lineno=lineno))
        except ValueError as exc:
            if strict:
                raise
            corpus.skipped += 1
            corpus.problems.append(str(exc))
    if corpus.skipped:
        logger.warning("%s: skipped %d malformed lines (first: %s)", source, corpus.skipped, corpus.problems[0])
    return corpus


def read_examples(path: str | os.PathLike[str], *, strict: bool = True) -> Corpus:
    """Read a FAIR ``train/val/test.txt`` file."""
    p = Path(path)
    if not p.is_file():
        from nlprobust.core.data import DataNotFoundError

        raise DataNotFoundError(f"negotiation corpus file not found: {p}")
    return parse_lines(p.read_text(encoding="utf-8").splitlines(), source=str(p), strict=strict)


def _negotiate_file(name: str, data_dir: str | os.PathLike[str] | None) -> Path:
    from nlprobust.core.data import DataNotFoundError, data_root

    root = data_root(data_dir)
    assert root is not None
    path = root / "negotiate" / name
    if not path.is_file():
        raise DataNotFoundError(f"negotiation data file not found: {path} (expected the Deal-or-No-Deal folder "
                                f"negotiate/ under the data folder; pass --data-dir or set NLPROBUST_DATA)")
    return path


def load_examples(split: str, data_dir: str | os.PathLike[str] | None = None, *, limit: int | None = None,
                  strict: bool = True) -> list[Example]:
    """The first ``limit`` (None: all) dialogues of ``<data>/negotiate/{split}.txt``, split ``train``, ``val``
    (or ``validation``) or ``test``; ``strict=False`` skips malformed lines (and logs them).

    Raises:
        nlprobust.core.data.DataNotFoundError: no data folder, or no such file in it.
        ValueError: an unknown split, or (strict) a malformed line, named with its file and line.
    """
    name = "val" if split == "validation" else split
    if name not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = _negotiate_file(f"{name}.txt", data_dir)
    with path.open(encoding="utf-8") as fh:
        lines = [ln.rstrip("\n") for ln in itertools.islice(fh, limit)]
    return parse_lines(lines, source=str(path), strict=strict).examples


def pair_perspectives(examples: Sequence[Example]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, where ``examples[j]`` is ``examples[i]`` seen by the other side."""
    index: dict[Example, int] = {}
    pairs = []
    for j, ex in enumerate(examples):
        i = index.get(ex.mirrored())
        if i is not None:
            pairs.append((i, j))
        index.setdefault(ex, j)
    return pairs


# --- Hugging Face schema ---------------------------------------------------------------------------------


def _hf_context(value: Any, name: str) -> Context:
    """``{"count": [...], "value": [...]}`` (datasets' Sequence of a dict) or a list of such dicts."""
    if isinstance(value, Mapping):
        if "count" not in value or "value" not in value:
            raise ValueError(f"{name!r} needs 'count' and 'value' lists, got keys {sorted(value)}")
        counts, values = list(value["count"]), list(value["value"])
    elif isinstance(value, Sequence) and all(isinstance(v, Mapping) for v in value):
        counts, values = [v["count"] for v in value], [v["value"] for v in value]
    else:
        raise ValueError(f"{name!r} must be {{'count': [...], 'value': [...]}}, got {type(value).__name__}")
    if len(counts) != len(values):
        raise ValueError(f"{name!r} has {len(counts)} counts but {len(values)} values")
    try:
        return Context(tuple(int(c) for c in counts), tuple(int(v) for v in values))
    except ValueError as exc:
        raise ValueError(f"{name!r}: {exc}") from None


def example_from_hf(record: Mapping[str, Any], *, where: str = "record") -> Example:
    """Convert a ``deal_or_no_dialog`` (``dialogues`` config) record to an :class:`Example`.

    Schema: ``input`` and ``partner_input`` are ``{"count": [3 ints], "value": [3 ints]}``; ``dialogue`` and
    ``output`` are the FAIR sections' text (``"THEM: ... <selection>"``, ``"item0=1 ... item2=0"``).
    """
    try:
        missing = [k for k in SECTIONS if k not in record]
        if missing:
            raise ValueError(f"missing fields {missing}; expected {list(SECTIONS)}")
        ctx = _hf_context(record["input"], "input")
        partner = _hf_context(record["partner_input"], "partner_input")
        if ctx.counts != partner.counts:
            raise ValueError(f"input counts {list(ctx.counts)} differ from partner_input {list(partner.counts)}")
        return _build(ctx, partner, str(record["dialogue"]).split(), str(record["output"]).split())
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def examples_from_hf(records: Iterable[Mapping[str, Any]], *, source: str = "hf", strict: bool = True) -> Corpus:
    """Convert records (a ``datasets.Dataset`` or any iterable of dicts); ``strict=False`` skips bad ones."""
    corpus = Corpus([], source)
    for i, rec in enumerate(records):
        try:
            corpus.examples.append(example_from_hf(rec, where=f"{source}[{i}]"))
        except ValueError as exc:
            if strict:
                raise
            corpus.skipped += 1
            corpus.problems.append(str(exc))
    return corpus


def hf_selfplay_scenarios(records: Iterable[Mapping[str, Any]], *, source: str = "hf self_play") -> list[Scenario]:
    """Pair consecutive ``self_play`` records (``{"input": {"count", "value"}}``) into scenarios."""
    contexts = [(i, _hf_context(rec.get("input"), f"{source}[{i}].input")) for i, rec in enumerate(records)]
    if len(contexts) % 2:
        raise ValueError(f"{source}: {len(contexts)} records, expected an even number (one pair per game)")
    out = []
    for k in range(0, len(contexts), 2):
        try:
            out.append(Scenario(contexts[k][1], contexts[k + 1][1]))
        except ValueError as exc:
            raise ValueError(f"{source}[{k}]-[{k + 1}]: {exc}") from None
    return out


def load_hf(split: str = "train", *, path: str = HF_DATASET, name: str = "dialogues", strict: bool = True,
            **load_kwargs: Any) -> Corpus:
    """Load a split from the Hugging Face hub with ``datasets.load_dataset`` (network or HF cache needed).

    ``split`` is ``train``, ``validation`` (``val`` accepted) or ``test``; ``load_kwargs`` go to
    ``load_dataset`` (e.g. ``revision="refs/convert/parquet"`` where the hub repo still holds a loading
    script that recent ``datasets`` refuse to run).
    """
    from datasets import load_dataset

    hf_split = "validation" if split == "val" else split
    ds = load_dataset(path, name, split=hf_split, **load_kwargs)
    return examples_from_hf(ds, source=f"{path}/{name}/{hf_split}", strict=strict)


# --- vocabularies ------------------------------------------------------------------------------------------


class Vocab:
    """Token <-> id map. ``unk`` (when given) is returned for unknown tokens; otherwise they raise KeyError.

    Args:
        tokens: the tokens in id order, no duplicates.
        unk: the unknown-word token (must be among ``tokens``) or None.
        specials: tokens a model should never generate (e.g. ``<pad>``, ``<unk>``); must be among ``tokens``.
    """

    def __init__(self, tokens: Sequence[str], *, unk: str | None = UNK,
                 specials: Sequence[str] = ()) -> None:
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {}
        for i, t in enumerate(self.itos):
            if not isinstance(t, str) or not t:
                raise ValueError(f"vocabulary tokens must be non-empty strings, got {t!r} at id {i}")
            if t in self.stoi:
                raise ValueError(f"duplicate vocabulary token {t!r} at ids {self.stoi[t]} and {i}")
            self.stoi[t] = i
        for t in ([unk] if unk is not None else []) + list(specials):
            if t not in self.stoi:
                raise ValueError(f"special token {t!r} is not in the vocabulary")
        self.unk = unk
        self.specials: tuple[str, ...] = tuple(specials)

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], *, min_freq: int = 1,
              specials: Sequence[str] = SPECIAL_TOKENS, unk: str | None = UNK) -> Vocab:
        """``specials`` first, then every token seen at least ``min_freq`` times, most frequent first (ties by
        token, so the result does not depend on input order)."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(seq)
        special_set = set(specials)
        kept = [t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                if n >= min_freq and t not in special_set]
        return cls([*specials, *kept], unk=unk, specials=specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Vocab) and self.itos == other.itos and self.unk == other.unk
                and self.specials == other.specials)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens, unk={self.unk!r})"

    def id(self, token: str) -> int:
        i = self.stoi.get(token)
        if i is not None:
            return i
        if self.unk is None:
            raise KeyError(f"token {token!r} is not in the vocabulary (and it has no unknown token)")
        return self.stoi[self.unk]

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.id(t) for t in tokens]

    def token(self, i: int) -> str:
        if not 0 <= i < len(self.itos):
            raise IndexError(f"token id {i} out of range 0..{len(self.itos) - 1}")
        return self.itos[i]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.token(int(i)) for i in ids]

    @property
    def pad_id(self) -> int:
        if PAD not in self.stoi:
            raise KeyError(f"this vocabulary has no {PAD} token")
        return self.stoi[PAD]

    @property
    def special_ids(self) -> list[int]:
        return [self.stoi[t] for t in self.specials]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "negotiation.Vocab", "version": 1, "tokens": self.itos, "unk": self.unk,
                "specials": list(self.specials)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocab:
        if d.get("format") != "negotiation.Vocab" or "tokens" not in d:
            raise ValueError(f"not a saved negotiation vocabulary (format={d.get('format')!r})")
        return cls(d["tokens"], unk=d.get("unk"), specials=d.get("specials", ()))

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
        try:
            return cls.from_dict(d)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def build_word_vocab(examples: Iterable[Example], *, min_freq: int = FAIR_MIN_FREQ) -> Vocab:
    """Word vocabulary of the dialogues (build it on train only): :data:`SPECIAL_TOKENS`, then words seen
    at least ``min_freq`` times. Each line counts, so a dialogue stored from both sides counts twice, as in
    FAIR (whose default cut-off is ``min_freq=21``)."""
    return Vocab.build((ex.dialogue_tokens() for ex in examples), min_freq=min_freq)


def item_vocab() -> Vocab:
    """The selection-token vocabulary: ``item{i}={n}`` (i 0..2, n 0..4) then the no-deal tokens; fixed, no unk."""
    return Vocab(CHOICE_TOKENS, unk=None)


def encode_choices(counts: Sequence[int], items: Vocab, *, no_deal: Iterable[str] = (NO_AGREEMENT,)) -> torch.Tensor:
    """Every candidate choice for ``counts`` as item ids, shape ``(n_choices, 6)``, in
    :func:`negotiation.domain.enumerate_choices` order."""
    return torch.tensor([items.ids(c) for c in enumerate_choices(counts, no_deal=no_deal)], dtype=torch.long)


# --- batching ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Padded dialogues from YOU's perspective (batch first).

    Attributes:
        contexts: ``(B, 6)`` long, YOU's ``c0 v0 c1 v1 c2 v2``.
        partner_contexts: ``(B, 6)`` long, the partner's.
        tokens: ``(B, T)`` long word ids of the dialogue (speaker prefixes included), padded with ``<pad>``;
            a language model reads ``tokens[:, :-1]`` and predicts ``tokens[:, 1:]``.
        lengths: ``(B,)`` long, unpadded lengths.
        own: ``(B, T)`` bool, True at the words and terminators YOU wrote (not at speaker prefixes or padding).
        choices: ``(B, 6)`` long item ids of the output, YOU's take then the partner's.
    """

    contexts: torch.Tensor
    partner_contexts: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor
    own: torch.Tensor
    choices: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(B, T)`` bool, True at real (non-pad) tokens."""
        steps = torch.arange(self.tokens.size(1), device=self.tokens.device)
        return steps.unsqueeze(0) < self.lengths.unsqueeze(1)

    def __len__(self) -> int:
        return int(self.tokens.size(0))

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(getattr(self, f).to(device) for f in
                       ("contexts", "partner_contexts", "tokens", "lengths", "own", "choices")))


def make_batch(examples: Sequence[Example], words: Vocab, items: Vocab, *,
               device: torch.device | str | None = None) -> Batch:
    """Pad ``examples`` into one :class:`Batch` (each from its own YOU's perspective)."""
    if not examples:
        raise ValueError("cannot batch zero examples")
    seqs, owns = [], []
    for ex in examples:
        ids: list[int] = []
        own: list[bool] = []
        for turn in ex.turns:
            ids.append(words.id(turn.speaker))
            own.append(False)
            ids.extend(words.ids(turn.tokens))
            own.extend([turn.speaker == YOU] * len(turn.tokens))
        seqs.append(ids)
        owns.append(own)
    longest = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), longest), words.pad_id, dtype=torch.long)
    own_mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for b, (s, o) in enumerate(zip(seqs, owns)):
        tokens[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        own_mask[b, : len(o)] = torch.tensor(o, dtype=torch.bool)
    batch = Batch(
        contexts=torch.tensor([ex.context.to_ints() for ex in examples], dtype=torch.long),
        partner_contexts=torch.tensor([ex.partner_context.to_ints() for ex in examples], dtype=torch.long),
        tokens=tokens,
        lengths=torch.tensor([len(s) for s in seqs], dtype=torch.long),
        own=own_mask,
        choices=torch.tensor([items.ids(ex.output_tokens()) for ex in examples], dtype=torch.long),
    )
    return batch if device is None else batch.to(device)


def iter_batches(examples: Sequence[Example], batch_size: int, words: Vocab, items: Vocab, *,
                 shuffle: bool = True, seed: int = 0, sort_by_length: bool = True,
                 device: torch.device | str | None = None) -> Iterator[Batch]:
    """Batches as FAIR makes them: shuffle, sort by dialogue length (little padding), cut, shuffle the batches.

    Deterministic for a given ``seed``; ``shuffle=False`` keeps the corpus order (and, with
    ``sort_by_length``, sorts stably by length).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(examples)))
    if shuffle:
        rng.shuffle(order)
    if sort_by_length:
        lengths = [sum(1 + len(t.tokens) for t in examples[i].turns) for i in order]
        order = [i for _, i in sorted(zip(lengths, order), key=lambda p: p[0])]
    chunks = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(chunks)
    for chunk in chunks:
        yield make_batch([examples[i] for i in chunk], words, items, device=device)


# --- scenarios: the games agents play ------------------------------------------------------------------

SCENARIO_SPLITS: tuple[str, ...] = ("selfplay", "val", "test")


def dialogue_scenarios(examples: list[Example]) -> list[Scenario]:
    """The distinct games of ``examples`` in order of first appearance, each once (a dialogue's two lines, and
    the same pair of contexts met again in either order, count once), as ``(first line's side, partner)``."""
    seen: set[Scenario] = set()
    out = []
    for ex in examples:
        sc = Scenario(ex.context, ex.partner_context)
        if sc not in seen and sc.swapped() not in seen:
            seen.add(sc)
            out.append(sc)
    return out


def load_scenarios(split: str | os.PathLike[str] = "selfplay", data_dir: str | os.PathLike[str] | None = None, *,
                   limit: int | None = None, both_orders: bool = False) -> list[Scenario]:
    """Games to play: the first ``limit`` (None: all) pairs of ``split`` (see the module docstring).

    Args:
        split: ``selfplay``, ``val``, ``test``, or the path of a ``selfplay.txt``-style file (two context
            lines per game).
        data_dir: the data folder.
        limit: keep the first this many pairs (before ``both_orders``).
        both_orders: give each pair as ``(x, y)`` then ``(y, x)``.

    Raises:
        nlprobust.core.data.DataNotFoundError: no data folder, or no such file in it.
        FileNotFoundError: ``split`` is a path that does not exist.
        ValueError: an unknown split name or a malformed line (named with its file and line).
    """
    name = str(split)
    if name in ("val", "validation", "test"):
        scenarios = dialogue_scenarios(load_examples(name, data_dir))[:limit]
    else:
        if name == "selfplay":
            path = _negotiate_file("selfplay.txt", data_dir)
        elif os.sep in name or name.endswith(".txt") or Path(name).is_file():
            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(f"scenario file not found: {path}")
        else:
            raise ValueError(f"unknown scenario split {name!r}; expected one of {list(SCENARIO_SPLITS)} or the "
                             f"path of a selfplay.txt-style file")
        with path.open(encoding="utf-8") as fh:
            lines = [ln.rstrip("\n") for ln in itertools.islice(fh, None if limit is None else 2 * limit)]
        scenarios = parse_scenario_lines(lines, source=str(path))
    if both_orders:
        scenarios = [s for sc in scenarios for s in (sc, sc.swapped())]
    return scenarios
