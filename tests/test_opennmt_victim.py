"""OpenNMT-py victim trained for a few steps in the test session, then attacked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nlprobust.attacks import AttackItem, Seq2Sick, preset
from nlprobust.synthetic import synthetic_corpus
from nlprobust.victims.base import VictimError
from nlprobust.victims.opennmt import CheckpointError, OpenNMTVictim


def test_checkpoint_needs_trust_and_must_exist(tiny_onmt_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="trust"):
        OpenNMTVictim(tiny_onmt_ckpt)
    with pytest.raises(CheckpointError, match="not found"):
        OpenNMTVictim(tmp_path / "nope.pt", trust_checkpoint=True)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(tiny_onmt_ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        OpenNMTVictim(bad, trust_checkpoint=True)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an OpenNMT-py checkpoint"):
        OpenNMTVictim(other, trust_checkpoint=True)


def test_embedding_path_matches_onmt_forward(tiny_victim: OpenNMTVictim) -> None:
    v = tiny_victim
    src = [v.encode_source(s).ids for s in synthetic_corpus(3, 5).src]
    ids, mask = v.pad_sources(src)
    tgt = torch.tensor([[v.tgt_bos_id, 5, 6, 7]] * len(src))
    ours = v.logits(v.embed(ids), mask, tgt)
    with torch.no_grad():
        # NMTModel.forward drops the last target token (it feeds tgt[:, :-1])
        full = torch.cat([tgt, tgt[:, :1]], dim=1)
        dec_out, _ = v.model(ids.unsqueeze(-1), full.unsqueeze(-1), mask.sum(1))
        ref = v.model.generator(dec_out)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_greedy_matches_teacher_forced_argmax_and_beam_is_batched(tiny_victim: OpenNMTVictim) -> None:
    v = tiny_victim
    texts = synthetic_corpus(6, 7).src
    ids, mask = v.pad_sources([v.encode_source(s).ids for s in texts])
    greedy = v.generate(v.embed(ids), mask, beam_size=1, max_len=30)
    for i, g in enumerate(greedy):
        tgt = torch.tensor([[v.tgt_bos_id] + g])
        z = v.logits(v.embed(ids[i : i + 1, : int(mask[i].sum())]), mask[i : i + 1, : int(mask[i].sum())], tgt)
        assert z.argmax(-1)[0].tolist() == g + [v.tgt_eos_id]
    beams = v.translate_ids([v.encode_source(s).ids for s in texts], beam_size=4)
    singles = [v.translate_ids([v.encode_source(s).ids], beam_size=4)[0] for s in texts]
    assert beams == singles


def test_trained_victim_translates(tiny_victim: OpenNMTVictim) -> None:
    data = synthetic_corpus(30, 9)
    out = tiny_victim.translate(data.src, beam_size=5)
    exact = sum(o == t for o, t in zip(out, data.tgt))
    assert exact >= 10, list(zip(out, data.tgt))[:5]


def test_bad_inputs(tiny_victim: OpenNMTVictim) -> None:
    v = tiny_victim
    with pytest.raises(VictimError, match="empty"):
        v.encode_source("   ")
    with pytest.raises(VictimError, match="more than"):
        v.encode_source("dog " * 500)
    with pytest.raises(VictimError, match="not in the target vocabulary"):
        v.keyword_id("Raumschiff")
    attack = Seq2Sick(v, preset("multi30k-lstm", "keywords", iterations=5))
    res = attack.run([AttackItem(0, ""), AttackItem(1, "A dog runs in the park.", ("Raumschiff",)),
                      AttackItem(2, "A dog runs in the park.", ("Katze",))])
    assert [r.index for r in res] == [0, 1, 2]
    assert "empty" in (res[0].error or "")
    assert "Raumschiff" in (res[1].error or "")
    assert res[2].error is None


@pytest.mark.parametrize("mode", ["nonoverlap", "keywords"])
def test_attack_succeeds_on_trained_victim(tiny_victim: OpenNMTVictim, mode: str) -> None:
    v = tiny_victim
    data = synthetic_corpus(8, 11)
    outs = v.translate(data.src)
    kw = "Katze" if mode == "keywords" else None
    items = [AttackItem(i, s, (kw,) if kw else ()) for i, (s, o) in enumerate(zip(data.src, outs))
             if not kw or kw not in o]
    cfg = preset("paper", mode, iterations=60, lr=2.0, lr_late=None, lambda1=0.1, lambda2=0.0, epsilon=1.0)
    res = Seq2Sick(v, cfg).run(items, batch_size=8)
    ok = [r for r in res if r.success]
    assert len(ok) >= len(items) // 2, [(r.adversarial, r.adversarial_output) for r in res]
    for r in ok:
        assert r.changed >= 1 and r.adversarial != r.source
        if mode == "keywords":
            assert kw in r.adversarial_output
        # re-judge independently with beam 5
        adv_out = v.translate([r.adversarial], beam_size=5)[0]
        assert adv_out == r.adversarial_output


def test_adversarial_text_keeps_out_of_vocabulary_words(tiny_victim: OpenNMTVictim) -> None:
    """An unknown source word stays itself in the adversarial text (not ``<unk>``), so the text a user feeds
    back is the input the attack judged; a literal ``<unk>`` encodes as the unknown word."""
    v = tiny_victim
    data = synthetic_corpus(8, 11)
    srcs = [s.replace("A ", "A Zorblax ", 1) for s in data.src]
    unk = v.encode_source("Zorblax").ids[0]
    assert v.encode_source("a <unk> .").ids == [v.encode_source("a").ids[0], unk, v.encode_source(".").ids[0]]
    enc = v.encode_source(srcs[0])
    assert unk in enc.ids and v.render_source(enc.ids, srcs[0], enc.ids) == srcs[0]
    cfg = preset("paper", "nonoverlap", iterations=60, lr=2.0, lr_late=None, lambda1=0.1, lambda2=0.0, epsilon=1.0)
    res = Seq2Sick(v, cfg).run([AttackItem(i, s) for i, s in enumerate(srcs)], batch_size=8)
    assert any(r.success for r in res)
    for r in res:
        assert "<unk>" not in r.adversarial and "<unk>" not in r.adversarial_words
        if "Zorblax" in r.source_words:
            assert r.adversarial_words[r.source_words.index("Zorblax")] == "Zorblax" or \
                r.source_words.index("Zorblax") in r.changed_positions
        assert len(v.encode_source(r.adversarial).ids) == len(v.encode_source(r.source).ids)
        assert v.translate([r.adversarial], beam_size=5)[0] == r.adversarial_output


def test_batched_equals_one_at_a_time(tiny_victim: OpenNMTVictim) -> None:
    data = synthetic_corpus(4, 13)
    cfg = preset("multi30k-lstm", "nonoverlap", iterations=20, early_stop=False)
    items = [AttackItem(i, s) for i, s in enumerate(data.src)]
    batched = Seq2Sick(tiny_victim, cfg).run(items, batch_size=4)
    single = Seq2Sick(tiny_victim, cfg).run(items, batch_size=1)
    assert [r.adversarial for r in batched] == [r.adversarial for r in single]


def test_single_pass_greedy_logits_equal_teacher_forcing(tiny_victim: OpenNMTVictim) -> None:
    from nlprobust.victims.base import Seq2SeqVictim

    v = tiny_victim
    ids, mask = v.pad_sources([v.encode_source(s).ids for s in synthetic_corpus(5, 17).src])
    x = v.embed(ids).detach().requires_grad_(True)
    outs, z, valid = v.greedy_with_logits(x, mask, max_len=30)
    ref_outs, ref_z, ref_valid = Seq2SeqVictim.greedy_with_logits(v, x, mask, max_len=30)
    assert outs == ref_outs
    t = min(z.shape[1], ref_z.shape[1])
    assert torch.equal(valid[:, :t], ref_valid[:, :t])
    m = valid[:, :t].unsqueeze(-1)
    assert torch.allclose(z[:, :t] * m, ref_z[:, :t] * m, atol=1e-5)
    (z[:, :t] * m).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_training_is_reproducible(tmp_path: Path) -> None:
    """Same seed and thread count -> bit-identical weights (OpenNMT-py ignores a seed <= 0, so 0 is refused)."""
    from nlprobust.training.opennmt import preset as onmt_preset
    from nlprobust.training.opennmt import train_onmt

    with pytest.raises(ValueError, match="seed must be >= 1"):
        onmt_preset("tiny", seed=0)
    cfg = onmt_preset("tiny", train_steps=20, valid_steps=20)
    data = synthetic_corpus(300, 0)
    weights = []
    for run in ("a", "b"):
        ckpt = train_onmt(data, synthetic_corpus(20, 1), tmp_path / run, cfg)
        weights.append(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_loading_prints_no_third_party_notices(tiny_onmt_ckpt: Path) -> None:
    """OpenNMT-py's deprecated decorators and the single-layer dropout notice are silenced where we load it;
    warnings of our own (and others) are not."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        OpenNMTVictim(tiny_onmt_ckpt, trust_checkpoint=True, device="cpu")
        warnings.warn("ours", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["ours"]


def test_keyword_absent_by_case_or_punctuation_names_the_close_word(tiny_victim: OpenNMTVictim) -> None:
    assert tiny_victim.keyword_id("Katze") >= 0
    for near in ("katze", "Katze.", "„Katze“"):
        with pytest.raises(VictimError, match=r"not in the target vocabulary.*did you mean 'Katze'\?"):
            tiny_victim.keyword_id(near)
    with pytest.raises(VictimError) as err:
        tiny_victim.keyword_id("Raumschiff")
    assert "did you mean" not in str(err.value)


def test_training_shows_a_progress_bar_of_the_steps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nlprobust.training.opennmt import preset as onmt_preset
    from nlprobust.training.opennmt import train_onmt

    train_onmt(synthetic_corpus(200, 0), synthetic_corpus(10, 1), tmp_path / "a",
               onmt_preset("tiny", train_steps=10, valid_steps=10))
    err = capsys.readouterr().err
    assert "training: 100%" in err and "10/10" in err and "ppl=" in err
    assert "Step 10/" in (tmp_path / "a" / "train.log").read_text()  # the log keeps OpenNMT-py's own lines
    train_onmt(synthetic_corpus(200, 0), synthetic_corpus(10, 1), tmp_path / "b",
               onmt_preset("tiny", train_steps=10, valid_steps=10), progress=False)
    assert "training:" not in capsys.readouterr().err


def test_victim_of_an_in_memory_model_equals_the_checkpoints(tiny_onmt_ckpt: Path, tiny_victim: OpenNMTVictim) -> None:
    ckpt = torch.load(tiny_onmt_ckpt, map_location="cpu", weights_only=False)
    mem = OpenNMTVictim.from_model(tiny_victim.model, ckpt["vocab"])
    assert mem.model is tiny_victim.model and mem.device == tiny_victim.device
    data = synthetic_corpus(4, 17)
    assert mem.translate(data.src) == tiny_victim.translate(data.src)
    with pytest.raises(VictimError, match="non-empty 'tgt'"):
        OpenNMTVictim.from_model(tiny_victim.model, {"src": ckpt["vocab"]["src"]})
