"""Train a tiny Marian transformer on the synthetic corpus and load it back like a hub checkpoint.

One training run (the ``tiny`` preset, a few hundred steps, about 15 s on one CPU thread) is shared by the
module; the tests check the saved directory through ``HFVictim`` and ``AutoModelForSeq2SeqLM.from_pretrained``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from nlprobust.corpora import ParallelCorpus
from nlprobust.synthetic import synthetic_corpus
from nlprobust.training.marian import (
    PRESETS,
    MarianTrainConfig,
    evaluate_bleu,
    evaluate_loss,
    preset,
    train_marian,
)

STEPS = 300  # the session fixture tiny_marian (conftest.py) trains this many steps
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.fixture(scope="module")
def victim(tiny_marian: Path):
    from nlprobust.victims.huggingface import HFVictim

    return HFVictim(tiny_marian, device="cpu")


def _log(run: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [r for r in records if "val_loss" in r], records[-1]


def test_directory_is_a_hub_style_model(tiny_marian: Path) -> None:
    for name in ("config.json", "generation_config.json", "model.safetensors", "source.spm", "target.spm",
                 "vocab.json", "tokenizer_config.json", "train_config.json", "train_log.jsonl"):
        assert (tiny_marian / name).is_file(), name
    meta = json.loads((tiny_marian / "train_config.json").read_text())
    assert meta["config"] == json.loads(json.dumps(vars(preset("tiny", max_steps=STEPS, eval_every=100))))
    assert meta["seed"] == 0 and meta["train_size"] == 2000 and meta["valid_size"] == 100
    assert meta["steps"] == STEPS
    config = json.loads((tiny_marian / "config.json").read_text())
    assert config["model_type"] == "marian"
    assert config["decoder_start_token_id"] == config["pad_token_id"] == config["vocab_size"] - 1
    assert config["eos_token_id"] == 0 and config["scale_embedding"] is True
    assert config["max_position_embeddings"] >= meta["config"]["max_len"]
    gen = json.loads((tiny_marian / "generation_config.json").read_text())
    assert gen["num_beams"] == 5 and gen["decoder_start_token_id"] == config["pad_token_id"]
    assert gen["bad_words_ids"] == [[config["pad_token_id"]]]


def test_translates_the_synthetic_task(victim, tiny_marian: Path) -> None:
    held_out = synthetic_corpus(30, 9)
    hyps = victim.translate(held_out.src, beam_size=5)
    exact = sum(h == r for h, r in zip(hyps, held_out.tgt)) / len(hyps)
    assert exact >= 0.5, list(zip(hyps, held_out.tgt))[:5]
    scores = evaluate_bleu(tiny_marian, held_out, beam=5, device="cpu")
    assert scores["hypotheses"] == hyps
    assert scores["n"] == 30 and scores["exact_match"] == pytest.approx(exact)
    assert scores["bleu"] >= 50.0 and "tok:13a" in scores["signature"]


def test_plain_generate_uses_saved_defaults(tiny_marian: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_marian)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_marian).eval()
    held_out = synthetic_corpus(8, 9)
    out = model.generate(**tok(held_out.src, return_tensors="pt", padding=True))
    hyps = tok.batch_decode(out, skip_special_tokens=True)
    assert sum(h == r for h, r in zip(hyps, held_out.tgt)) >= 4
    for row in out.tolist():  # decoder start (pad), tokens, </s>, then padding only
        assert row[0] == tok.pad_token_id and tok.eos_token_id in row
        assert tok.pad_token_id not in row[1:row.index(tok.eos_token_id)]


def test_tokenizer_round_trips(victim, tiny_marian: Path) -> None:
    from transformers import AutoTokenizer, MarianTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_marian)
    assert isinstance(tok, MarianTokenizer)
    assert (tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (0, 1, len(tok) - 1)
    assert tok.pad_token_id == victim.config.pad_token_id == victim.config.decoder_start_token_id
    assert len(tok) == victim.config.vocab_size
    sample = synthetic_corpus(20, 5)
    for src, tgt in zip(sample.src, sample.tgt):
        ids = tok(src)["input_ids"]
        assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True, use_source_tokenizer=True) == src
        tids = tok(text_target=tgt)["input_ids"]
        assert tids[-1] == tok.eos_token_id and tok.unk_token_id not in tids
        assert tok.decode(tids, skip_special_tokens=True) == tgt
        assert victim.decode_source(victim.encode_source(src).ids) == src
        assert victim.decode_target(tids[:-1]) == tgt
    # source candidates for attacks are English pieces only
    cands = set(tok.convert_ids_to_tokens(victim.candidate_ids().tolist()))
    src_pieces = {tok.spm_source.id_to_piece(i) for i in range(tok.spm_source.get_piece_size())}
    tgt_only = {tok.spm_target.id_to_piece(i) for i in range(tok.spm_target.get_piece_size())} - src_pieces
    assert cands and cands <= src_pieces and tgt_only and not cands & tgt_only
    assert set(tok.get_vocab()) == src_pieces | tgt_only | {"<pad>"}


def test_log_shows_validation_loss_decreasing(tiny_marian: Path) -> None:
    evals, summary = _log(tiny_marian)
    assert [r["step"] for r in evals] == list(range(100, STEPS + 1, 100))
    losses = [r["val_loss"] for r in evals]
    assert losses[-1] < losses[0] * 0.5, losses
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    assert all(r["train_loss"] > 0 and r["lr"] > 0 for r in evals)
    assert summary["done"] and summary["best_val_loss"] == min(losses)
    assert summary["best_step"] == evals[losses.index(min(losses))]["step"]


def test_reload_gives_identical_logits(victim, tiny_marian: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_marian).eval()
    again = AutoModelForSeq2SeqLM.from_pretrained(tiny_marian).eval()
    sample = synthetic_corpus(4, 3)
    batch = [victim.encode_source(s).ids for s in sample.src]
    ids, mask = victim.pad_sources(batch)
    tgt_in = torch.tensor([[victim.tgt_bos_id, 5, 6, 7]] * len(batch))
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=tgt_in).logits
        b = again(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=tgt_in).logits
    assert torch.equal(a, b)
    torch.testing.assert_close(victim.logits(victim.embed(ids), mask, tgt_in), a, rtol=0, atol=1e-5)
    # the saved weights are those of the best validation, reproduced exactly after reloading
    _, summary = _log(tiny_marian)
    loss = evaluate_loss(tiny_marian, synthetic_corpus(100, 1))
    assert loss["loss"] == pytest.approx(summary["best_val_loss"], abs=1e-4)


# ---- configuration and errors ------------------------------------------------------------------------------
def test_presets_and_overrides() -> None:
    assert set(PRESETS) == {"tiny", "small", "paper"}
    assert PRESETS["paper"].d_model == 512 and PRESETS["paper"].layers == 6 and PRESETS["paper"].heads == 8
    assert PRESETS["small"].vocab_size == 8000
    cfg = preset("small", seed=3)
    assert cfg.seed == 3 and cfg.d_model == PRESETS["small"].d_model
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(TypeError):
        preset("tiny", no_such_field=1)
    with pytest.raises(ValueError, match="divisible"):
        MarianTrainConfig(d_model=30, heads=4)
    with pytest.raises(ValueError, match="max_steps"):
        preset("tiny", max_steps=0)
    with pytest.raises(AttributeError):
        cfg.seed = 1  # type: ignore[misc]


def test_clear_errors(tmp_path: Path) -> None:
    good = synthetic_corpus(10, 0)
    cfg = preset("tiny", max_steps=1)
    with pytest.raises(ValueError, match="training corpus is empty"):
        train_marian(ParallelCorpus([], []), good, tmp_path / "a", cfg)
    with pytest.raises(ValueError, match="validation corpus is empty"):
        train_marian(good, ParallelCorpus([], []), tmp_path / "a", cfg)
    with pytest.raises(ValueError, match="non-empty"):
        train_marian(ParallelCorpus(["", " "], ["a", "b"]), good, tmp_path / "a", cfg)
    with pytest.raises(ValueError, match="differ in length"):
        ParallelCorpus(["a"], [])
    bad = synthetic_corpus(10, 0)
    bad.src.append("one more line")  # mutated after the ParallelCorpus check
    with pytest.raises(ValueError, match="differ in length"):
        train_marian(bad, good, tmp_path / "a", cfg)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError):
        train_marian(good, good, a_file, cfg)
    with pytest.raises(OSError, match="cannot create or write"):
        train_marian(good, good, a_file / "sub", cfg)
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only directories")
def test_unwritable_out_dir(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            train_marian(synthetic_corpus(10, 0), synthetic_corpus(10, 1), locked / "run", preset("tiny"))
    finally:
        locked.chmod(0o700)
