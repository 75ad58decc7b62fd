"""Summarization corpora (Gigaword, DUC), the n-gram perplexity model, ROUGE, and the summarization recipe."""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import pytest

from nlprobust.core.data import DataNotFoundError
from nlprobust.corpora import (
    SummaryCorpus,
    gigaword_articles,
    load_duc,
    load_gigaword,
    preprocess_summary,
)
from nlprobust.metrics import KneserNeyLM, rouge

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.fixture()
def mini_data(tmp_path: Path) -> Path:
    """A data folder laid out like the real one, with three pairs per file."""
    arts = ["police arrest ## men in paris .", "the un calls for talks .", "UNK shares close higher ."]
    heads = ["police arrest men", "un calls for talks", "shares close higher"]
    _write(tmp_path / "gigaword" / "train" / "article.txt.gz", arts)
    _write(tmp_path / "gigaword" / "train" / "title.txt.gz", heads)
    _write(tmp_path / "gigaword" / "dev" / "valid.article.filter.4K.txt", arts)
    _write(tmp_path / "gigaword" / "dev" / "valid.title.filter.4K.txt", heads)
    _write(tmp_path / "gigaword" / "dev" / "valid.src.small.txt", ["a source only sentence .", ""])
    _write(tmp_path / "gigaword" / "test_1951" / "input.txt", arts)
    _write(tmp_path / "gigaword" / "test_1951" / "task1_ref0.txt", heads)
    _write(tmp_path / "duc2004" / "input.txt", ["rebels entered 3 towns on friday ."] * 3)
    for k in range(4):
        _write(tmp_path / "duc2004" / f"task1_ref{k}.txt", [f"Rebels enter towns {k}"] * 3)
    return tmp_path


def test_preprocess_summary_is_the_gigaword_normalisation() -> None:
    assert preprocess_summary("Rebels took 12 Towns  in 1998 UNK") == "rebels took ## towns in #### UNK"
    once = preprocess_summary("A 3-0 Win")
    assert once == "a #-# win" and preprocess_summary(once) == once


def test_loaders_read_every_split_and_all_references(mini_data: Path) -> None:
    for split in ("train", "dev", "test"):
        c = load_gigaword(split, mini_data)
        assert len(c) == 3 and c.refs[0][0] == "police arrest men" and c.src[2].startswith("UNK")
    duc = load_duc(2004, mini_data)
    assert len(duc) == 3 and len(duc.refs) == 4 and duc.refs[3][0] == "Rebels enter towns 3"
    assert duc.pairs().tgt == duc.refs[0]
    assert gigaword_articles(mini_data)[-1] == "a source only sentence ."  # blank lines dropped
    assert len(gigaword_articles(mini_data)) == 3 + 3 + 1


def test_misaligned_files_are_named(mini_data: Path) -> None:
    _write(mini_data / "duc2004" / "task1_ref2.txt", ["only one line"])
    with pytest.raises(ValueError, match=r"misaligned.*task1_ref2.txt"):
        load_duc(2004, mini_data)
    _write(mini_data / "gigaword" / "test_1951" / "task1_ref0.txt", ["a", "b"])
    with pytest.raises(ValueError, match="gigaword/test: files are misaligned"):
        load_gigaword("test", mini_data)
    with pytest.raises(ValueError, match="reference 0 has 1 lines but there are 2 inputs"):
        SummaryCorpus(["x", "y"], [["a"]])


def test_bad_requests_get_clear_errors(mini_data: Path) -> None:
    with pytest.raises(ValueError, match="unknown Gigaword split 'valid'"):
        load_gigaword("valid", mini_data)
    with pytest.raises(ValueError, match="unknown DUC year"):
        load_duc(2005, mini_data)
    with pytest.raises(DataNotFoundError, match="duc2003"):
        load_duc(2003, mini_data)
    _write(mini_data / "gigaword" / "dev" / "valid.article.filter.4K.txt", ["a", "", "c"])
    with pytest.raises(ValueError, match="empty input lines .* line 2"):
        load_gigaword("dev", mini_data)
    with pytest.raises(DataNotFoundError, match="train.article.txt"):
        load_gigaword("train", full_dir=mini_data)


def test_full_release_layout_is_read(tmp_path: Path) -> None:
    _write(tmp_path / "sumdata" / "train" / "train.article.txt.gz", ["an article ."])
    _write(tmp_path / "sumdata" / "train" / "train.title.txt.gz", ["a title"])
    c = load_gigaword("train", full_dir=tmp_path)
    assert c.src == ["an article ."] and c.refs == [["a title"]]


def _need_summarization_data(data_dir: Path) -> None:
    if not all((data_dir / d).is_dir() for d in ("gigaword", "duc2003", "duc2004")):
        pytest.skip(f"Gigaword/DUC folders not found under {data_dir}")


def test_real_corpora_sizes(data_dir: Path) -> None:
    _need_summarization_data(data_dir)
    assert [len(load_gigaword(s, data_dir)) for s in ("train", "dev", "test")] == [11973, 4000, 1951]
    assert [len(load_duc(y, data_dir)) for y in (2003, 2004)] == [624, 500]
    assert all(len(r) == 4 for r in (load_duc(2003, data_dir).refs, load_duc(2004, data_dir).refs))


# ---- language model ------------------------------------------------------------------------------------------

def test_kneser_ney_is_normalised_for_seen_and_unseen_contexts() -> None:
    sents = [s.split() for s in ["the cat sat", "the dog sat", "a cat ran", "the cat ran"]]
    lm = KneserNeyLM(sents, order=3, min_count=1)
    for ctx in (("the", "cat"), ("a", "dog"), ("zebra", "quux"), ()):
        assert math.isclose(sum(lm.prob(w, ctx) for w in lm.vocab), 1.0, rel_tol=1e-9)
    assert lm.prob("sat", ("the", "cat")) > lm.prob("ran", ("the", "dog"))
    assert lm.prob("zebra", ("the",)) == lm.prob("<unk>", ("the",)) > 0


def test_kneser_ney_bigram_matches_hand_computation() -> None:
    lm = KneserNeyLM([["a", "b"], ["a", "c"]], order=2, min_count=1, discount=0.5)
    # vocab {a, b, c, </s>, <unk>}: |V| = 5. Unigram continuation counts over bigram types
    # (<s> a) (a b) (b </s>) (a c) (c </s>): N1+(. a) = 1, N1+(. b) = 1, N1+(. </s>) = 2, total 5, 4 types.
    p_uni_b = max(1 - 0.5, 0) / 5 + 0.5 * 4 / 5 * (1 / 5)
    # bigram: c(a b) = 1, c(a .) = 2, two distinct followers of a
    expected = (1 - 0.5) / 2 + 0.5 * 2 / 2 * p_uni_b
    assert math.isclose(lm.prob("b", ("a",)), expected, rel_tol=1e-12)


def test_perplexity_prefers_fluent_text() -> None:
    text = ["police arrest two men in paris on friday .", "the police said on friday that two men were held ."] * 20
    lm = KneserNeyLM([s.split() for s in text], order=3)
    fluent = lm.perplexity([["police", "arrest", "two", "men", "on", "friday", "."]])
    scrambled = lm.perplexity([["friday", "men", "on", ".", "arrest", "police", "two"]])
    assert fluent < scrambled
    with pytest.raises(ValueError, match="no training text"):
        KneserNeyLM([])
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM([["a"]], order=0)


def test_rouge_bounds_and_errors() -> None:
    assert rouge(["police arrest men"], ["police arrest men"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert rouge(["a b"], ["c d"])["rouge1"] == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        rouge(["a", "b"], ["a"])


# ---- victims and recipe --------------------------------------------------------------------------------------

def test_pretokenized_training_text_keeps_gigaword_tokens(tmp_path: Path) -> None:
    from nlprobust.corpora import ParallelCorpus
    from nlprobust.training.opennmt import write_parallel

    src, _ = write_parallel(ParallelCorpus(["nec 's ## -lrb- x -rrb-"], ["h"]), tmp_path / "d", pretokenized=True)
    assert src.read_text().split() == ["nec", "'s", "##", "-lrb-", "x", "-rrb-"]


def test_glove_vectors_initialise_the_lstm(tmp_path: Path) -> None:
    """OpenNMT-py reads a GloVe-format file for both embeddings when the config names one."""
    pytest.importorskip("onmt")
    from nlprobust.corpora import ParallelCorpus
    from nlprobust.training.opennmt import preset, train_onmt
    from nlprobust.victims.opennmt import OpenNMTVictim

    words = ["police", "arrest", "men", "in", "paris", "rebels", "enter", "towns"]
    src = [" ".join(words[i:] + words[:i]) for i in range(8)] * 4
    corpus = ParallelCorpus(src, [" ".join(s.split()[:3]) for s in src])
    glove = tmp_path / "vectors.txt"
    glove.write_text("".join(f"{w} " + " ".join(str((i + 1) * 0.01 + j * 0.001) for j in range(16)) + "\n"
                             for i, w in enumerate(words[:5])))
    cfg = preset("tiny", word_vec_size=16, hidden_size=16, train_steps=2, valid_steps=2, embeddings=str(glove))
    train_onmt(corpus, corpus, tmp_path / "run", cfg, pretokenized=True)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Reading encoder and decoder embeddings" in log and "enc: 5 match" in log
    victim = OpenNMTVictim(tmp_path / "run" / "best.pt", trust_checkpoint=True, device="cpu", pretokenized=True)
    assert victim.decode_source(victim.encode_source("police 's arrest").ids) == "police <unk> arrest"
    with pytest.raises(FileNotFoundError, match="word-vector file not found"):
        train_onmt(corpus, corpus, tmp_path / "run2", preset("tiny", embeddings=str(tmp_path / "none.txt")))


def test_shared_embeddings_tie_encoder_decoder_and_output(tmp_path: Path) -> None:
    """``share_embeddings``: one vocabulary, one matrix for encoder, decoder and output layer; the attack still
    edits the source."""
    pytest.importorskip("onmt")
    from nlprobust.attacks import AttackItem, Seq2Sick
    from nlprobust.attacks import preset as attack_preset
    from nlprobust.corpora import ParallelCorpus
    from nlprobust.training.opennmt import preset, train_onmt
    from nlprobust.victims.opennmt import OpenNMTVictim

    words = ["police", "arrest", "men", "in", "paris", "rebels", "enter", "towns"]
    src = [" ".join(words[i:] + words[:i]) for i in range(8)] * 4
    corpus = ParallelCorpus(src, [" ".join(s.split()[:3]) for s in src])
    with pytest.raises(ValueError, match="word_vec_size .* must equal hidden_size"):
        train_onmt(corpus, corpus, tmp_path / "bad", preset("tiny", share_embeddings=True))
    cfg = preset("tiny", word_vec_size=32, hidden_size=32, train_steps=60, valid_steps=60, share_embeddings=True)
    train_onmt(corpus, corpus, tmp_path / "run", cfg, pretokenized=True)
    victim = OpenNMTVictim(tmp_path / "run" / "best.pt", trust_checkpoint=True, device="cpu", pretokenized=True)
    m = victim.model
    lut = m.encoder.embeddings.word_lut.weight
    assert lut is m.decoder.embeddings.word_lut.weight and lut is m.generator.weight
    assert victim.src_itos == victim.tgt_itos
    cfg_a = attack_preset("multi30k-lstm", "nonoverlap", iterations=3)
    res = Seq2Sick(victim, cfg_a).attack_batch([AttackItem(0, src[0], ())])[0]
    assert res.error is None and len(res.adversarial_words) == len(src[0].split())


def test_victim_folder_trained_with_other_settings_is_refused(tmp_path: Path) -> None:
    from dataclasses import asdict

    from nlprobust.experiments.summarization import onmt_config, run_dir, summarization_victim

    run = run_dir("lstm", "tiny", tmp_path)
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"preset": {**asdict(onmt_config("tiny", None)), "hidden_size": 9}}))
    with pytest.raises(ValueError, match="other settings than this recipe's \\(hidden_size differ\\)"):
        summarization_victim("lstm", "tiny", None, tmp_path)


def test_summarization_recipe_tiny(data_dir: Path, tmp_path: Path) -> None:
    import summarization_seq2sick as rec

    from nlprobust.experiments.summarization import DATASETS

    _need_summarization_data(data_dir)
    out = tmp_path / "res.json"
    argv = ["--scale", "tiny", "--data-dir", str(data_dir), "--runs", str(tmp_path / "runs"), "--out", str(out),
            "--no-render", "--archive", str(tmp_path / "records")]
    assert rec.main(argv) == 0
    res = json.loads(out.read_text())
    attack_rows = [r for r in res["rows"] if r["table"] in ("3.2", "3.3")]
    labels = ("seq2sick", "seq2sick + reduction", "word-swap", "portfolio")
    assert {(r["victim"], r["dataset"], r["method"], r["attack"]) for r in attack_rows} == {
        (v, d, m, a) for v in ("lstm", "transformer") for d in DATASETS for m in rec.METHODS for a in labels}
    fields = ("attack", "criterion", "reduction", "changed", "success", "bleu", "chrf", "perplexity",
              "success_at_1", "success_at_2", "success_at_3", "seconds_per_sentence", "forward_passes",
              "backward_passes", "beam_decodes")
    for r in attack_rows:
        assert r["n"] + r["errors"] == (2 if r["victim"] == "lstm" else 1) and r["paper"]["success"] > 0
        assert all(f in r for f in fields), [f for f in fields if f not in r]
        assert r["reduction"] == (r["attack"] != "seq2sick")
        if r["attack"].startswith("seq2sick"):
            assert r["config"]["iterations"] == rec.TINY_ITERATIONS
        if r["method"] == "nonoverlap":
            assert {"success_at_least_as_long", "success_positional"} <= set(r)
    ppl = [r for r in res["rows"] if r["table"] == "3.5"]
    assert {(r["victim"], r["dataset"]) for r in ppl if r["inputs"] == "original"} == {
        (v, d) for v in ("lstm", "transformer") for d in ("duc2003", "duc2004")}
    assert all(r["perplexity"] > 1 for r in ppl)
    assert any(r["table"] == "3.8" and r["victim"] == "lstm" for r in res["rows"])
    kw = res["keywords"]["lstm"]["duc2004/2-keyword"]
    assert len(kw) == 2 and all(len(set(v)) == 2 for v in kw.values())
    assert {"rouge1", "rouge2", "rougeL", "n"} <= set(res["victim"]["lstm"]["rouge"])
    # a second run resumes from the per-input records: nothing is attacked again
    before = {p: p.stat().st_size for p in (tmp_path / "runs" / "recipes").rglob("*.jsonl")}
    assert rec.main(argv + ["--report-only"]) == 0
    assert before == {p: p.stat().st_size for p in (tmp_path / "runs" / "recipes").rglob("*.jsonl")}
    assert json.loads(out.read_text())["rows"] == res["rows"]
    # a checkout without the per-input logs restores every row from the archive (same victim, same summaries),
    # the 'police arrest' rows included
    archived = list((tmp_path / "records" / "tiny").glob("*.jsonl.gz"))
    police = {r["victim"] for r in res["rows"] if r["table"] == "3.8"}  # the transformer's vocabulary splits "police"
    assert len(archived) == 2 * len(DATASETS) * len(rec.METHODS) * len(rec.ATTACKS) + len(police)  # 2 victims
    for log in (tmp_path / "runs" / "recipes").rglob("*.jsonl"):
        log.unlink()
    assert rec.main(argv + ["--report-only"]) == 0
    assert json.loads(out.read_text())["rows"] == res["rows"]


def test_adversarial_text_keeps_the_spelling_of_unchanged_unknown_words() -> None:
    from nlprobust.experiments.summarization import adversarial_words

    rec = {"source": "kindu falls to rebels", "source_words": ["<unk>", "falls", "to", "rebels"],
           "adversarial_words": ["<unk>", "falls", "to", "police"], "adversarial": "<unk> falls to police"}
    assert adversarial_words(rec) == ["kindu", "falls", "to", "police"]
    sub = {**rec, "source_words": ["kin", "du", "falls", "to", "rebels"]}  # a subword victim: its own text
    assert adversarial_words(sub) == ["<unk>", "falls", "to", "police"]


def test_best_checkpoint_by_perplexity_or_accuracy() -> None:
    from nlprobust.training.opennmt import _best_step, preset, train_onmt

    log = "\n".join(["Step 250/ 500; acc: 10", "Validation perplexity: 300.0", "Validation accuracy: 20.0",
                     "Step 500/ 500; acc: 12", "Validation perplexity: 320.0", "Validation accuracy: 21.5"])
    assert _best_step(log) == (250, 300.0)
    assert _best_step(log, "accuracy") == (500, 21.5)
    with pytest.raises(ValueError, match="select_by must be one of"):
        train_onmt(None, None, "unused", preset("tiny", select_by="bleu"))  # type: ignore[arg-type]


def test_summarization_recipe_reuses_the_earlier_reduction_settings_search(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import argparse

    import summarization_seq2sick as rec

    from nlprobust.attacks import preset

    cfg = preset("gigaword-lstm", "keywords")
    seen: dict = {}

    def fake_run_attacks(path, items, attack, batch, what, report_only, **kw):  # noqa: ANN001, ANN202
        seen.update(path=path, report_only=report_only, archive=kw.get("archive"), exchange=attack.config.exchange)
        return [{"index": 0}]

    monkeypatch.setattr(rec, "run_attacks", fake_run_attacks)
    monkeypatch.setattr(rec, "build_attack", lambda name, victim, config: argparse.Namespace(config=config))
    args = argparse.Namespace(reuse_search=None, report_only=False, batch_size=4)
    archive = (tmp_path / "small" / "row_new.jsonl.gz", "key")
    assert rec.earlier_search(args, None, "seq2sick", cfg, [], archive, tmp_path, "row", "lstm_duc2004_1-keyword") \
        is None
    args.reuse_search = {"exchange": 0}
    assert rec.earlier_search(args, None, "seq2sick", cfg, [], archive, tmp_path, "row", "lstm_duc2004_1-keyword") \
        == [{"index": 0}]
    stem = f"lstm_duc2004_1-keyword_gigaword-lstm_{preset('gigaword-lstm', 'keywords', exchange=0).tag()}"
    assert seen == {"path": tmp_path / f"{stem}.jsonl", "report_only": True, "exchange": 0,
                    "archive": (tmp_path / "small" / f"{stem}.jsonl.gz", "key")}
    args.reuse_search = {"lr": 9.0}  # not a reduction option: the search would differ
    with pytest.raises(SystemExit, match="--reuse-search"):
        rec.earlier_search(args, None, "seq2sick", cfg, [], archive, tmp_path, "row", "lstm_duc2004_1-keyword")
