"""FAIR line parsing, malformed lines, vocabularies, batching and the Hugging Face schema converter."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from negotiation import corpus as C
from negotiation.domain import Context, Scenario

# Hand-made lines in the corpus format (not corpus data). YOU: values book 4, hat 3, ball 1; THEM: 0, 1, 3.
DEAL = (
    "<input> 1 4 1 3 3 1 </input> <dialogue> YOU: i want the book and the hat <eos> "
    "THEM: ok , the balls are mine <eos> YOU: <selection> </dialogue> "
    "<output> item0=1 item1=1 item2=0 item0=0 item1=0 item2=3 </output> <partner_input> 1 0 1 1 3 3 </partner_input>"
)
DEAL_MIRROR = (
    "<input> 1 0 1 1 3 3 </input> <dialogue> THEM: i want the book and the hat <eos> "
    "YOU: ok , the balls are mine <eos> THEM: <selection> </dialogue> "
    "<output> item0=0 item1=0 item2=3 item0=1 item1=1 item2=0 </output> <partner_input> 1 4 1 3 3 1 </partner_input>"
)
NO_DEAL = (
    "<input> 1 4 1 3 3 1 </input> <dialogue> THEM: give me everything <eos> YOU: no way <eos> "
    "THEM: then no deal <eos> YOU: <selection> </dialogue> <output> " + "<no_agreement> " * 6
    + "</output> <partner_input> 1 0 1 1 3 3 </partner_input>"
)


def test_parse_deal_line() -> None:
    ex = C.parse_line(DEAL)
    assert ex.context == Context((1, 1, 3), (4, 3, 1))
    assert ex.partner_context == Context((1, 1, 3), (0, 1, 3))
    assert ex.scenario == Scenario(ex.context, ex.partner_context)
    assert [t.speaker for t in ex.turns] == ["YOU:", "THEM:", "YOU:"]
    assert tuple(ex.turns[0]) == ("YOU:", ("i", "want", "the", "book", "and", "the", "hat", "<eos>"))
    assert ex.turns[0].words[-1] == "hat" and ex.turns[-1].tokens == ("<selection>",)
    assert ex.selected_by == "YOU:"
    assert ex.output == ("item0=1", "item1=1", "item2=0")
    assert ex.partner_output == ("item0=0", "item1=0", "item2=3")
    assert ex.agreed and ex.selection == (1, 1, 0) and ex.no_deal_token is None
    assert ex.scores == (7, 9)
    assert ex.to_line() == DEAL
    assert ex.mirrored() == C.parse_line(DEAL_MIRROR)
    assert ex.mirrored().mirrored() == ex


def test_parse_no_deal_line() -> None:
    ex = C.parse_line(NO_DEAL)
    assert not ex.agreed and ex.selection is None and ex.no_deal_token == "<no_agreement>"
    assert ex.scores == (0, 0)
    assert ex.output_tokens() == ["<no_agreement>"] * 6
    assert ex.to_line() == " ".join(NO_DEAL.split())


def test_three_token_output_gets_its_complement() -> None:
    line = DEAL.replace(" item0=0 item1=0 item2=3 </output>", " </output>")
    ex = C.parse_line(line)
    assert ex.partner_output is None
    assert ex.output_tokens() == C.parse_line(DEAL).output_tokens()
    assert ex.mirrored().output == ("item0=0", "item1=0", "item2=3")


MALFORMED = [
    ("<partner_input> 1 0 1 1 3 3 </partner_input>", "", "missing section <partner_input>"),
    ("<input> 1 4 1 3 3 1 </input>", "<input> 1 4 1 3 3 </input>", "<input>: .*odd number"),
    ("<input> 1 4 1 3 3 1 </input>", "<input> 1 4 1 3 3 2 </input>", "<input>: .*worth 10"),
    ("<partner_input> 1 0 1 1 3 3", "<partner_input> 1 0 1 1 3 2", "<partner_input>: .*worth 10"),
    ("<partner_input> 1 0 1 1 3 3", "<partner_input> 1 0 2 1 2 4", "counts .* differ"),
    ("<input> 1 4 1 3 3 1 </input>", "<input> 1 4 one 3 3 1 </input>", "must be integers"),
    ("YOU: i want", "ME: i want", "unknown speaker prefix 'ME:'"),
    ("THEM: ok", "them: ok", "unknown speaker prefix 'them:'"),
    ("<dialogue> YOU:", "<dialogue> hello YOU:", "unknown speaker prefix 'hello'"),
    ("hat <eos> THEM:", "hat THEM:", "speaker prefix 'THEM:' inside a turn"),
    ("YOU: <selection>", "YOU: deal <eos>", "does not end with <selection>"),
    ("THEM: ok , the balls are mine <eos>", "THEM: <eos>", "empty turn"),
    ("YOU: <selection>", "YOU: <selection> THEM: ok", "tokens after <selection>"),
    ("<dialogue> YOU: i want the book and the hat <eos> THEM: ok , the balls are mine <eos> YOU: <selection>",
     "<dialogue>", "empty dialogue"),
    ("item2=0 item0=0 item1=0 item2=3", "item2=0 item0=0 item1=0 item2=2", "not the complement"),
    ("item0=1 item1=1 item2=0 item0=0", "item0=1 item1=1 item0=0", "<output> has 5 tokens"),
    ("item0=1 item1=1", "item0=2 item1=1", "0..1"),
    ("item0=1 item1=1 item2=0", "item0=1 item2=0 item1=1", "out of order"),
    ("1 3 3 1 </input>", "1 3 3 1", "section <input> is not closed"),
    ("</partner_input>", "</partner_input> extra", "unexpected tokens after </partner_input>"),
]


@pytest.mark.parametrize(("old", "new", "message"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_lines(old: str, new: str, message: str) -> None:
    assert old in DEAL
    with pytest.raises(ValueError, match=message):
        C.parse_line(DEAL.replace(old, new, 1))


def test_sections_out_of_order() -> None:
    sec = DEAL.split(" <output>")[0], "<output>" + DEAL.split("<output>")[1].split("</output>")[0] + "</output>"
    swapped = DEAL.replace(sec[1], "").replace("<dialogue>", sec[1] + " <dialogue>")
    with pytest.raises(ValueError, match="expected <dialogue> at token 8, found '<output>'"):
        C.parse_line(swapped)


def test_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("\n".join([DEAL, DEAL.replace("YOU: i want", "ALICE: i want"), "", NO_DEAL]) + "\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: unknown speaker prefix 'ALICE:'"):
        C.read_examples(path)
    lenient = C.read_examples(path, strict=False)
    assert len(lenient) == 2 and lenient.skipped == 1
    assert "bad.txt:2:" in lenient.problems[0]
    assert [ex.no_deal_token for ex in lenient] == [None, "<no_agreement>"]
    with pytest.raises(FileNotFoundError, match="not found"):
        C.read_examples(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown split"):
        C.load_examples("dev", tmp_path)


def test_pair_perspectives() -> None:
    exs = [C.parse_line(x) for x in (DEAL, DEAL_MIRROR, NO_DEAL)]
    assert C.pair_perspectives(exs) == [(0, 1)]


# --- vocabularies -------------------------------------------------------------------------------------------


def test_word_vocab_round_trip(tmp_path: Path) -> None:
    exs = [C.parse_line(x) for x in (DEAL, DEAL_MIRROR, NO_DEAL)]
    vocab = C.build_word_vocab(exs, min_freq=2)
    assert vocab.itos[: len(C.SPECIAL_TOKENS)] == list(C.SPECIAL_TOKENS)
    assert vocab.pad_id == 0 and vocab.special_ids == list(range(6))
    assert "the" in vocab and "everything" not in vocab  # 6 times vs once
    assert vocab.id("everything") == vocab.id("<unk>") == 1
    assert vocab.tokens(vocab.ids(["i", "want", "zzz"])) == ["i", "want", "<unk>"]
    assert len(C.build_word_vocab(exs, min_freq=1)) > len(vocab)
    assert C.build_word_vocab(reversed(exs), min_freq=2) == vocab  # independent of order
    path = tmp_path / "words.json"
    vocab.save(path)
    assert C.Vocab.load(path) == vocab
    path.write_text('{"tokens": ["a"]}')
    with pytest.raises(ValueError, match="not a saved negotiation vocabulary"):
        C.Vocab.load(path)
    with pytest.raises(ValueError, match="duplicate vocabulary token 'a'"):
        C.Vocab(["<unk>", "a", "a"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        C.Vocab(["a", "b"])  # no <unk>
    with pytest.raises(ValueError, match="min_freq"):
        C.Vocab.build([["a"]], min_freq=0)
    with pytest.raises(IndexError, match="out of range"):
        vocab.token(len(vocab))


def test_item_vocab() -> None:
    items = C.item_vocab()
    assert len(items) == 18 and items.unk is None
    assert items.tokens(items.ids(["item0=0", "item2=4", "<disagree>"])) == ["item0=0", "item2=4", "<disagree>"]
    with pytest.raises(KeyError, match="item0=5"):
        items.id("item0=5")
    choices = C.encode_choices((1, 1, 3), items)
    assert choices.shape == (17, 6) and choices.dtype == torch.long
    assert items.tokens(choices[-1].tolist()) == ["<no_agreement>"] * 6
    assert items.tokens(choices[0].tolist()) == "item0=0 item1=0 item2=0 item0=1 item1=1 item2=3".split()


# --- batching -------------------------------------------------------------------------------------------


def test_batch_shapes_and_contents() -> None:
    exs = [C.parse_line(x) for x in (DEAL, DEAL_MIRROR, NO_DEAL)]
    words, items = C.build_word_vocab(exs, min_freq=1), C.item_vocab()
    batch = C.make_batch(exs, words, items)
    lengths = [len(ex.dialogue_tokens()) for ex in exs]
    assert len(batch) == 3
    assert batch.tokens.shape == (3, max(lengths)) and batch.tokens.dtype == torch.long
    assert batch.lengths.tolist() == lengths
    assert batch.contexts.shape == batch.partner_contexts.shape == (3, 6)
    assert batch.contexts[0].tolist() == [1, 4, 1, 3, 3, 1] and batch.partner_contexts[0].tolist() == [1, 0, 1, 1, 3, 3]
    assert batch.choices.shape == (3, 6)
    for b, ex in enumerate(exs):
        n = lengths[b]
        assert words.tokens(batch.tokens[b, :n].tolist()) == ex.dialogue_tokens()
        assert (batch.tokens[b, n:] == words.pad_id).all()
        assert batch.mask[b].tolist() == [True] * n + [False] * (max(lengths) - n)
        assert items.tokens(batch.choices[b].tolist()) == ex.output_tokens()
    # own-token mask of DEAL: YOU's words and terminators, never the speaker prefixes or THEM's words
    toks = exs[0].dialogue_tokens()
    expected, speaker = [], None
    for t in toks:
        if t in C.SPEAKERS:
            speaker = t
            expected.append(False)
        else:
            expected.append(speaker == "YOU:")
    assert batch.own[0, : len(toks)].tolist() == expected
    assert batch.own[1].sum() == sum(len(t.tokens) for t in exs[1].turns if t.speaker == "YOU:")
    assert batch.to("cpu").tokens.equal(batch.tokens)
    with pytest.raises(ValueError, match="zero examples"):
        C.make_batch([], words, items)


def test_iter_batches() -> None:
    base = [C.parse_line(x) for x in (DEAL, DEAL_MIRROR, NO_DEAL)]
    exs = base * 4  # 12 examples
    words, items = C.build_word_vocab(exs, min_freq=1), C.item_vocab()
    batches = list(C.iter_batches(exs, 5, words, items, seed=3))
    assert [len(b) for b in batches].count(5) == 2 and sum(len(b) for b in batches) == 12
    again = list(C.iter_batches(exs, 5, words, items, seed=3))
    assert all(a.tokens.equal(b.tokens) for a, b in zip(batches, again))
    ordered = list(C.iter_batches(exs, 4, words, items, shuffle=False))
    all_lengths = [n for b in ordered for n in b.lengths.tolist()]
    assert all_lengths == sorted(all_lengths)
    with pytest.raises(ValueError, match="batch_size"):
        list(C.iter_batches(exs, 0, words, items))


# --- Hugging Face schema ---------------------------------------------------------------------------------


def _hf_record(line: str) -> dict[str, Any]:
    """A record as ``deal_or_no_dialog`` (config ``dialogues``) stores it, made from a hand-made line."""
    toks = line.split()

    def tag(name: str) -> list[str]:
        return toks[toks.index(f"<{name}>") + 1 : toks.index(f"</{name}>")]

    def cv(name: str) -> dict[str, list[int]]:
        nums = [int(x) for x in tag(name)]
        return {"count": nums[0::2], "value": nums[1::2]}

    return {"input": cv("input"), "dialogue": " ".join(tag("dialogue")), "output": " ".join(tag("output")),
            "partner_input": cv("partner_input")}


def test_hf_record_converter() -> None:
    rec = {
        "input": {"count": [1, 1, 3], "value": [4, 3, 1]},
        "dialogue": "YOU: i want the book and the hat <eos> THEM: ok , the balls are mine <eos> YOU: <selection>",
        "output": "item0=1 item1=1 item2=0 item0=0 item1=0 item2=3",
        "partner_input": {"count": [1, 1, 3], "value": [0, 1, 3]},
    }
    assert rec == _hf_record(DEAL)
    assert C.example_from_hf(rec) == C.parse_line(DEAL)
    rows = dict(rec, input=[{"count": 1, "value": 4}, {"count": 1, "value": 3}, {"count": 3, "value": 1}])
    assert C.example_from_hf(rows) == C.parse_line(DEAL)  # list-of-dicts form (e.g. from pandas)
    assert C.example_from_hf(_hf_record(NO_DEAL)) == C.parse_line(NO_DEAL)
    bad = dict(rec, partner_input={"count": [1, 1, 3], "value": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"rec7: 'partner_input': .*worth 10"):
        C.example_from_hf(bad, where="rec7")
    with pytest.raises(ValueError, match=r"missing fields \['output'\]"):
        C.example_from_hf({k: v for k, v in rec.items() if k != "output"})
    with pytest.raises(ValueError, match="unknown speaker prefix"):
        C.example_from_hf(dict(rec, dialogue="BOB: hi <eos> YOU: <selection>"))
    with pytest.raises(ValueError, match="3 counts but 2 values"):
        C.example_from_hf(dict(rec, input={"count": [1, 1, 3], "value": [4, 3]}))
    lenient = C.examples_from_hf([rec, bad], source="hf/train", strict=False)
    assert len(lenient) == 1 and lenient.skipped == 1 and lenient.problems[0].startswith("hf/train[1]:")


def test_hf_selfplay_and_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [{"input": {"count": [1, 1, 3], "value": [4, 3, 1]}}, {"input": {"count": [1, 1, 3], "value": [0, 1, 3]}}]
    assert C.hf_selfplay_scenarios(records) == [Scenario(Context((1, 1, 3), (4, 3, 1)), Context((1, 1, 3), (0, 1, 3)))]
    with pytest.raises(ValueError, match="expected an even number"):
        C.hf_selfplay_scenarios(records[:1])

    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(path: str, name: str, *, split: str, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append((path, name, split, kwargs))
        return [_hf_record(DEAL), _hf_record(NO_DEAL)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    corpus = C.load_hf("val", revision="refs/convert/parquet")
    assert calls == [(C.HF_DATASET, "dialogues", "validation", {"revision": "refs/convert/parquet"})]
    assert [ex.to_line() for ex in corpus] == [DEAL, " ".join(NO_DEAL.split())]


# --- the real corpus ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "lines", "pairs"), [("val", 1087, 525), ("test", 1052, 507)])
def test_real_lines(negotiate_dir: Path, split: str, lines: int, pairs: int) -> None:
    corpus = C.load_examples(split, negotiate_dir.parent)
    raw = (negotiate_dir / f"{split}.txt").read_text().splitlines()
    assert len(corpus) == len(raw) == lines
    assert [ex.to_line() for ex in corpus] == raw  # lossless
    assert C.load_examples(split, negotiate_dir.parent, limit=5) == corpus[:5]
    found = C.pair_perspectives(corpus)
    assert len(found) == pairs and all(j == i + 1 for i, j in found)  # mirror lines are adjacent
    assert {ex.no_deal_token for ex in corpus} == {None, "<disagree>", "<no_agreement>", "<disconnect>"}
    assert all(ex.context.counts == ex.partner_context.counts for ex in corpus)
    words = C.build_word_vocab(corpus, min_freq=C.FAIR_MIN_FREQ)
    batch = C.make_batch(corpus[:8], words, C.item_vocab())
    assert batch.tokens.shape[0] == 8 and int(batch.lengths.max()) == batch.tokens.shape[1]
