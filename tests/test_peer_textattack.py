"""TextAttack's black-box seq2sick recipe against an nlprobust victim (``nlprobust.peers.textattack``), our
attacks on the same sentences (``nlprobust.experiments.peer``) and ``recipes/peer_textattack.py``.

TextAttack lives in its own venv (``make peers``); in the main venv the attack tests are skipped and only the
helpers that do not need it run:

    .venv-peers/bin/python -m pytest -q tests/test_peer_textattack.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlprobust.core.runio import JsonlLog
from nlprobust.experiments import peer
from nlprobust.peers import textattack as ta
from nlprobust.synthetic import synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def textattack_api() -> Any:
    if importlib.util.find_spec("textattack") is None:
        pytest.skip("textattack is not installed in this venv (it has its own: `make peers`, then run this file "
                    "with .venv-peers/bin/python -m pytest)")
    try:
        return ta.textattack_api()
    except ta.PeerSetupError as exc:
        pytest.skip(f"textattack is installed but cannot be imported: {exc}")


def test_attack_two_synthetic_sentences(textattack_api: Any, tiny_victim: Any, tmp_path: Path) -> None:
    data = synthetic_corpus(2, 7)
    items = list(enumerate(data.src))
    embedding = ta.embedding_from_onmt(tiny_victim)
    words = embedding[1]
    assert words and all(w.isalpha() and w == w.lower() for w in words)
    assert not {"<unk>", "<blank>", "<s>", "</s>"} & set(words)
    stopwords, source = ta.stopword_list("auto")
    cfg = ta.PeerConfig(stopwords=source, embedding="lstm:tiny")
    log = JsonlLog(tmp_path / "peer.jsonl", key="index")
    recs = ta.run_peer(tiny_victim, items, embedding=embedding, stopwords=stopwords, cfg=cfg, log=log,
                       progress=False)
    assert [r["index"] for r in recs] == [0, 1]
    for r, (_, src) in zip(recs, items):
        assert "error" not in r, r
        assert r["source"] == src
        # the ground truth is the victim's own beam-5 output, not the reference translation
        assert r["original_output"] == tiny_victim.translate([src], beam_size=5)[0]
        assert r["adversarial_output"] == tiny_victim.translate([r["adversarial"]], beam_size=5)[0]
        assert r["result"] in ("successful", "failed", "skipped")
        assert r["success"] == (r["result"] == "successful")
        assert isinstance(r["success_nlprobust"], bool)
        assert r["num_queries"] >= 1 and 1 <= r["model_calls"] <= r["num_queries"]
        assert 0.0 <= r["bleu"] <= 1.0 and r["seconds"] > 0
        assert r["changed"] == len(r["changed_positions"])
        if r["success"] or r["success_nlprobust"]:
            assert r["changed"] > 0 and r["adversarial"] != src
    row = ta.summary_row(recs, "tiny", cfg)
    assert row["table"] == "peer" and row["n"] == 2 and row["errors"] == 0
    assert 0.0 <= row["success"] <= 1.0 and row["queries"] >= 1
    # resume: nothing is attacked again
    log2 = JsonlLog(tmp_path / "peer.jsonl", key="index")
    again = ta.run_peer(tiny_victim, items, embedding=embedding, stopwords=stopwords, cfg=cfg, log=log2,
                        progress=False)
    assert again == recs
    assert len((tmp_path / "peer.jsonl").read_text().splitlines()) == 2


def test_local_embedding_neighbours(textattack_api: Any) -> None:
    matrix = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    emb = textattack_api.LocalWordEmbedding(matrix, ["dog", "cat", "car", "pup"])
    assert emb.nearest_neighbours(emb.word2index("dog"), 2) == [3, 1]
    assert emb.nearest_neighbours("car", 10) == [1, 0, 3]  # never the word itself, at most V - 1


def test_embedding_file_and_helpers(tmp_path: Path) -> None:
    glove = tmp_path / "vec.txt"
    glove.write_text("4 2\nDog 1 0\ndog 5 5\n, 0 1\nt-shirt 1 1\ncat 0 2\n", encoding="utf-8")
    matrix, words = ta.embedding_from_file(glove)
    assert words == ["dog", "cat"] and matrix.tolist() == [[1.0, 0.0], [0.0, 2.0]]
    bad = tmp_path / "bad.txt"
    bad.write_text("dog 1 0\ncat 1\n", encoding="utf-8")
    with pytest.raises(ta.PeerSetupError, match="expected 2"):
        ta.embedding_from_file(bad)
    with pytest.raises(ta.PeerSetupError, match="not found"):
        ta.embedding_from_file(tmp_path / "missing.txt")

    res = tmp_path / "res.json"
    with pytest.raises(ta.PeerSetupError, match="results file not found"):
        peer.read_sentence_indices(res)
    res.write_text(json.dumps({"rows": []}))
    with pytest.raises(ta.PeerSetupError, match="'sentences'"):
        peer.read_sentence_indices(res)
    res.write_text(json.dumps({"sentences": [3, 1]}))
    assert peer.read_sentence_indices(res) == [3, 1]

    assert peer.victim_name("onmt:runs/multi30k_lstm_small/best.pt") == "multi30k_lstm_small"
    assert peer.victim_name("hf:runs/multi30k_marian_small/") == "multi30k_marian_small"
    assert ta.PeerConfig().tag() != ta.PeerConfig(query_budget=100).tag()


def test_missing_results_file_is_a_clear_error(tmp_path: Path) -> None:
    res = tmp_path / "res.json"
    sys.path.insert(0, str(ROOT / "recipes"))
    import peer_textattack

    with pytest.raises(SystemExit, match="results file not found"):
        peer_textattack.main(["--results", str(res), "--out", str(tmp_path / "o.json")])


def test_our_attacks_run_on_the_same_sentences(tiny_victim: Any, tmp_path: Path) -> None:
    items = list(enumerate(synthetic_corpus(3, 7).src))
    rows = peer.run_ours(tiny_victim, items, ["word-swap", "word-swap:max_changes=1", "seq2sick", "portfolio"], "tiny",
                         tmp_path)
    assert [r["method"] for r in rows] == ["nlprobust word-swap (white-box)",
                                           "nlprobust word-swap, at most 1 word (white-box)",
                                           "nlprobust seq2sick (white-box)",
                                           "nlprobust seq2sick + reduction (white-box)",
                                           "nlprobust portfolio (white-box)"]
    for r in rows:
        assert r["n"] == 3 and r["config"]["criterion"] == "at-least-as-long"
        assert r["queries"] >= 1 and r["model_calls"] >= 1
        assert r["success_positional"] >= r["success"]
    assert rows[1]["config"]["overrides"] == {"max_changes": 1}
    assert rows[1]["success"] == 0 or rows[1]["changed"] == 1  # the budget holds
    assert rows[2]["success"] == rows[3]["success"]  # one search, with and without the reduction pass
    assert rows[4]["config"]["attack"] == "portfolio" and rows[4]["queries"] >= rows[0]["queries"]
    logs = sorted((tmp_path / "recipes" / "peer_textattack").glob("ours_tiny_*.jsonl"))
    assert len(logs) == 4 and all(len(p.read_text().splitlines()) == 3 for p in logs)


def test_attack_specs_name_registry_attacks_and_integer_settings() -> None:
    assert peer.split_attack_specs("word-swap,word-swap:max_changes=2,verify=8,seq2sick") == [
        "word-swap", "word-swap:max_changes=2,verify=8", "seq2sick"]
    assert peer.parse_attack_spec("word-swap:max_changes=2,verify=8") == ("word-swap", {"max_changes": 2, "verify": 8})
    assert peer.parse_attack_spec("seq2sick") == ("seq2sick", {})
    for bad, msg in [("hotflip", "unknown attack"), ("word-swap:max_changes", "NAME=INTEGER"),
                     ("word-swap:max_changes=two", "NAME=INTEGER"), ("word-swap:budget=2", "no setting 'budget'")]:
        with pytest.raises(ValueError, match=msg):
            peer.parse_attack_spec(bad)
