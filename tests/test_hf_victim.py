"""HFVictim on tiny random Marian / T5 / BART models with locally trained tokenizers (no Hub access)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_fixtures import FAMILIES, t5_model

from nlprobust.victims.base import VictimError
from nlprobust.victims.huggingface import HFLoadError, HFVictim

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

T5_PREFIX = "translate English to German: "
SENTENCES = ["the dog runs in the park", "a man"]
KEYWORDS = {"marian": "ein", "t5": "ein", "bart": "Hund"}
PREFIXES = {"marian": "", "t5": T5_PREFIX, "bart": ""}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Any]]:
    """``family -> (model, tokenizer)``, built once for the module."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (make_tok, make_model) in FAMILIES.items():
            tok = make_tok(tmp_path_factory.mktemp(name))
            out[name] = (make_model(tok), tok)
    return out


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def victim(built: dict[str, tuple[Any, Any]], family: str) -> HFVictim:
    model, tok = built[family]
    return HFVictim(model, tok, device="cpu", task_prefix=PREFIXES[family])


def _batch(victim: HFVictim) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = victim.pad_sources([victim.encode_source(s).ids for s in SENTENCES])
    assert mask.sum(1).tolist()[0] > mask.sum(1).tolist()[1]  # a padded batch of two lengths
    return ids, mask


def _expected_ids(row: list[int], victim: HFVictim, bos: int | None) -> list[int]:
    """What generate should return for a raw ``model.generate`` row, spelled out per model family."""
    seq = row[1:]
    if bos is not None and seq and seq[0] == bos:
        seq = seq[1:]
    if victim.tgt_eos_id in seq:
        seq = seq[: seq.index(victim.tgt_eos_id)]
    return [t for t in seq if t != victim.tgt_pad_id]


# ---- the embeddings path equals the input_ids path ------------------------------------------------------------
def test_embed_scale_and_table(victim: HFVictim, family: str) -> None:
    assert victim.embed_scale == (1.0 if family == "t5" else 4.0)  # sqrt(d_model=16) for Marian and BART
    assert victim.source_embedding_table() is victim.model.get_encoder().embed_tokens.weight
    assert not victim.model.training and victim.word_level is False


def test_logits_match_input_ids_path(victim: HFVictim) -> None:
    ids, mask = _batch(victim)
    tgt_in = torch.tensor([[victim.tgt_bos_id, 5, 6, 7], [victim.tgt_bos_id, 8, 9, 10]])
    got = victim.logits(victim.embed(ids), mask, tgt_in)
    with torch.no_grad():
        ref = victim.model(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=tgt_in).logits
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("beam", [1, 3])
def test_generate_matches_model_generate(victim: HFVictim, family: str, beam: int) -> None:
    ids, mask = _batch(victim)
    got = victim.generate(victim.embed(ids), mask, beam_size=beam, max_len=8)
    with torch.no_grad():
        raw = victim.model.generate(input_ids=ids, attention_mask=mask.long(),
                                    **victim.generation_kwargs(beam_size=beam, max_len=8))
    bos = victim.tokenizer.bos_token_id if family == "bart" else None
    assert got == [_expected_ids(r, victim, bos) for r in raw.tolist()]
    assert all(victim.tgt_bos_id not in g[:1] and victim.tgt_eos_id not in g for g in got)


def test_gradient_flows(victim: HFVictim) -> None:
    ids, mask = _batch(victim)
    src = victim.embed(ids).detach().clone().requires_grad_(True)
    tgt_in = torch.tensor([[victim.tgt_bos_id, 5, 6], [victim.tgt_bos_id, 7, 8]])
    victim.logits(src, mask, tgt_in).sum().backward()
    assert src.grad is not None and src.grad.abs().sum() > 0


def test_train_mode_is_not_used(victim: HFVictim) -> None:
    ids, mask = _batch(victim)
    tgt_in = torch.tensor([[victim.tgt_bos_id, 5], [victim.tgt_bos_id, 6]])
    ref = victim.logits(victim.embed(ids), mask, tgt_in)
    victim.model.train()
    try:
        for m in victim.model.modules():  # make dropout matter if it ran
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.5
        got = victim.logits(victim.embed(ids), mask, tgt_in)
        assert victim.model.training  # the caller's mode is restored
    finally:
        for m in victim.model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        victim.model.eval()
    assert torch.allclose(got, ref)


# ---- tokenisation ------------------------------------------------------------------------------------------
def test_encode_decode_round_trip(victim: HFVictim) -> None:
    for text in SENTENCES:
        enc = victim.encode_source(text)
        assert len(enc.ids) == len(enc.editable)
        assert victim.decode_source(enc.ids) == text
        toks = victim.source_tokens(enc.ids)
        assert len(toks) == len(enc.ids) and toks[-1] == "</s>" and not enc.editable[-1]
        specials = set(victim.tokenizer.all_special_ids)
        assert not any(e for i, e in zip(enc.ids, enc.editable, strict=True) if i in specials)


def test_t5_task_prefix_is_frozen(built: dict[str, tuple[Any, Any]]) -> None:
    model, tok = built["t5"]
    victim = HFVictim(model, tok, device="cpu", task_prefix=T5_PREFIX)
    enc = victim.encode_source("the dog")
    prefix = tok(T5_PREFIX, add_special_tokens=False)["input_ids"]
    assert enc.ids == tok(T5_PREFIX + "the dog")["input_ids"]
    assert enc.ids[: len(prefix)] == prefix
    assert enc.editable == [False] * len(prefix) + [True] * (len(enc.ids) - len(prefix) - 1) + [False]
    assert victim.decode_source(enc.ids) == "the dog"
    plain = HFVictim(model, tok, device="cpu")
    assert all(plain.encode_source("the dog").editable[:-1])


def test_empty_and_overlong_input(built: dict[str, tuple[Any, Any]], family: str) -> None:
    model, tok = built[family]
    victim = HFVictim(model, tok, device="cpu", max_source_len=8)
    for text in ("", "   \n"):
        with pytest.raises(VictimError, match="empty input"):
            victim.encode_source(text)
    n = len(tok(SENTENCES[0])["input_ids"])
    with pytest.raises(VictimError, match=rf"{n} tokens.*\(8\)"):
        victim.encode_source(SENTENCES[0])
    assert HFVictim(model, tok, device="cpu").max_source_len == (512 if family == "t5" else 64)


def test_candidates(victim: HFVictim, family: str) -> None:
    tok = victim.tokenizer
    cand = victim.candidate_ids().tolist()
    assert cand and not set(cand) & set(tok.all_special_ids)
    assert all(tok.decode([i]).strip() for i in cand)
    if family == "marian":
        sp = tok.spm_source
        source_pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
        pieces = tok.convert_ids_to_tokens(cand)
        assert set(pieces) <= source_pieces
        target_only = [i for i, p in enumerate(tok.convert_ids_to_tokens(list(range(len(tok)))))
                       if p not in source_pieces and i not in tok.all_special_ids]
        assert target_only and not set(target_only) & set(cand)


def test_keyword_id(victim: HFVictim, family: str) -> None:
    word = KEYWORDS[family]
    kid = victim.keyword_id(word)
    marker = "Ġ" if family == "bart" else "▁"
    assert victim.tokenizer.convert_ids_to_tokens([kid]) == [marker + word]
    assert victim.target_words([kid]) == [word] and victim.decode_target([kid]) == word
    with pytest.raises(VictimError, match=r"split into \d+ subwords.*single keyword"):
        victim.keyword_id("Fahrrad")
    with pytest.raises(VictimError, match="one non-empty word"):
        victim.keyword_id("zwei Kinder")


def test_decoder_start_falls_back_to_pad_for_t5(built: dict[str, tuple[Any, Any]]) -> None:
    _, tok = built["t5"]
    model = t5_model(tok, decoder_start=False)
    assert getattr(model.config, "decoder_start_token_id", None) is None
    victim = HFVictim(model, tok, device="cpu")
    assert victim.tgt_bos_id == tok.pad_token_id
    ids, mask = _batch(victim)
    assert len(victim.generate(victim.embed(ids), mask, max_len=3)) == 2


# ---- loading ------------------------------------------------------------------------------------------------
def test_load_from_save_pretrained_dir(built: dict[str, tuple[Any, Any]], family: str, tmp_path: Path) -> None:
    model, tok = built[family]
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    victim = HFVictim(str(tmp_path), device="cpu", task_prefix=PREFIXES[family], local_files_only=True)
    ref = HFVictim(model, tok, device="cpu", task_prefix=PREFIXES[family])
    assert type(victim.model) is type(model) and not victim.model.training
    assert victim.embed_scale == ref.embed_scale
    enc = victim.encode_source(SENTENCES[0])
    assert enc == ref.encode_source(SENTENCES[0])
    assert victim.decode_source(enc.ids) == SENTENCES[0]
    ids, mask = _batch(victim)
    assert victim.generate(victim.embed(ids), mask, beam_size=2, max_len=6) == ref.generate(
        ref.embed(ids), mask, beam_size=2, max_len=6)
    assert victim.keyword_id(KEYWORDS[family]) == ref.keyword_id(KEYWORDS[family])


def test_missing_path_and_unreachable_hub_id(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    for arg in (missing, str(missing), "./no/such/dir"):
        with pytest.raises(HFLoadError, match=r"model directory not found: .*no"):
            HFVictim(arg)
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(HFLoadError, match="is a file"):
        HFVictim(tmp_path / "file.bin")
    with pytest.raises(HFLoadError, match=r"no config\.json"):
        HFVictim(tmp_path)
    with pytest.raises(HFLoadError, match=r"nlprobust-test/surely-not-cached.*local directory"):
        HFVictim("nlprobust-test/surely-not-cached", local_files_only=True)
    with pytest.raises(HFLoadError, match="tokenizer object is required"):
        HFVictim(torch.nn.Linear(2, 2))


def test_prefix_merging_with_text_freezes_the_boundary_token(built: dict[str, tuple[Any, Any]], family: str) -> None:
    model, tok = built[family]
    victim = HFVictim(model, tok, device="cpu", task_prefix="the do")  # "do" + "g" -> one token "dog"
    enc = victim.encode_source("g runs")
    toks = victim.source_tokens(enc.ids)
    dog = next(i for i, t in enumerate(toks) if t.endswith("dog"))
    assert not any(enc.editable[: dog + 1]) and all(enc.editable[dog + 1 : -1])
    assert victim.decode_source(enc.ids) == "g runs"


# ---- the attack's decoding path ------------------------------------------------------------------------------
def test_greedy_with_logits_matches_generate_and_teacher_forcing(victim: HFVictim) -> None:
    _check_greedy_with_logits(victim, forced_bos=False)


def test_greedy_with_logits_replays_a_forced_bos(built: dict[str, tuple[Any, Any]]) -> None:
    model, tok = built["bart"]
    model.generation_config.forced_bos_token_id = tok.bos_token_id  # as bart-large checkpoints
    try:
        _check_greedy_with_logits(HFVictim(model, tok, device="cpu"), forced_bos=True)
    finally:
        model.generation_config.forced_bos_token_id = None


def _check_greedy_with_logits(victim: HFVictim, forced_bos: bool) -> None:
    ids, mask = _batch(victim)
    src = victim.embed(ids).detach().clone().requires_grad_(True)
    outs, logits, valid = victim.greedy_with_logits(src, mask, max_len=8)
    assert victim._plain_greedy  # the cached loop, not the library's generate
    assert outs == victim.generate(victim.embed(ids), mask, beam_size=1, max_len=8)
    assert valid.sum(1).tolist() == [len(o) + 1 for o in outs]
    # step t predicts output token t: the argmax of the aligned logits is the greedy output itself
    for row, out in zip(logits, outs, strict=True):
        assert row[: len(out)].argmax(-1).tolist() == out
    if forced_bos:  # generate emits the forced BOS first; both paths strip it
        raw = victim.model.generate(input_ids=ids, attention_mask=mask.long(),
                                    **victim.generation_kwargs(beam_size=1, max_len=8))
        assert raw[:, 1].eq(victim.tokenizer.bos_token_id).all()
    # the logits equal a teacher-forced pass over what the decoder read (the start token, then a forced BOS)
    lead = [victim.tgt_bos_id] + ([victim.tokenizer.bos_token_id] if forced_bos else [])
    for i, out in enumerate(outs):
        tgt_in = torch.tensor([lead + out])
        ref = victim.logits(victim.embed(ids[i : i + 1, : int(mask[i].sum())]), mask[i : i + 1, : int(mask[i].sum())],
                            tgt_in)[0, len(lead) - 1 :]
        assert torch.allclose(logits[i, : len(out) + 1], ref, atol=1e-4)
    logits[valid].logsumexp(-1).sum().backward()
    assert src.grad is not None and src.grad.abs().sum() > 0
    # without autograd (candidate scoring) the loop's step logits replace the replay pass: the same numbers
    with torch.no_grad():
        outs_ng, logits_ng, valid_ng = victim.greedy_with_logits(victim.embed(ids), mask, max_len=8)
    assert outs_ng == outs and torch.equal(valid_ng, valid)
    assert torch.allclose(logits_ng[valid], logits.detach()[valid], atol=1e-4)
    # rows cut at the length limit: their last valid step (the one that would predict EOS) is there too
    with torch.no_grad():
        short_ng, z_ng, v_ng = victim.greedy_with_logits(victim.embed(ids), mask, max_len=2)
    short, z, v = victim.greedy_with_logits(victim.embed(ids), mask, max_len=2)
    assert short_ng == short and torch.equal(v_ng, v)
    assert torch.allclose(z_ng[v], z.detach()[v], atol=1e-4)


def test_greedy_falls_back_to_generate_for_altered_decoding(built: dict[str, tuple[Any, Any]]) -> None:
    model, tok = built["marian"]
    model.generation_config.no_repeat_ngram_size = 2
    try:
        victim = HFVictim(model, tok, device="cpu")
        assert not victim._plain_greedy
        ids, mask = _batch(victim)
        outs, _, _ = victim.greedy_with_logits(victim.embed(ids), mask, max_len=8)
        assert outs == victim.generate(victim.embed(ids), mask, beam_size=1, max_len=8)
    finally:
        model.generation_config.no_repeat_ngram_size = 0


def test_keyword_with_punctuation_names_the_close_word(tiny_marian_victim) -> None:  # type: ignore[no-untyped-def]
    from nlprobust.victims.base import VictimError

    def single(word: str) -> bool:
        try:
            tiny_marian_victim.keyword_id(word)
        except VictimError:
            return False
        return True

    tokens = tiny_marian_victim.tokenizer.convert_ids_to_tokens(list(range(len(tiny_marian_victim.tokenizer))))
    words = [t[1:] for t in tokens if t.startswith("\u2581") and t[1:].isalpha() and single(t[1:])]
    if not words:
        pytest.skip("the tiny tokenizer has no whole-word target piece")
    word = words[0]
    with pytest.raises(VictimError, match=rf"did you mean .*'{word}'"):
        tiny_marian_victim.keyword_id(word + ".")


def test_from_pipeline_takes_the_model_as_placed_and_the_task_prefix(tiny_marian) -> None:  # type: ignore[no-untyped-def]
    """transformers 4's translation / summarization pipelines (transformers 5 dropped them): their model, tokenizer,
    task and prefix; a stand-in with the same attributes here."""
    from types import SimpleNamespace

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from nlprobust.victims.huggingface import HFVictim

    model = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_marian))
    tok = AutoTokenizer.from_pretrained(str(tiny_marian))
    pipe = SimpleNamespace(model=model, tokenizer=tok, task="translation_en_to_de", prefix=None)
    victim = HFVictim.from_pipeline(pipe)
    assert victim.model is model and victim.task_prefix == ""
    model.config.task_specific_params = {"translation_en_to_de": {"prefix": "translate English to German: "}}
    assert HFVictim.from_pipeline(pipe).task_prefix == "translate English to German: "
    pipe.prefix = "summarize: "
    assert HFVictim.from_pipeline(pipe).task_prefix == "summarize: "
    assert HFVictim.from_pipeline(pipe, task_prefix="x: ").task_prefix == "x: "
    with pytest.raises(Exception, match="expected a transformers pipeline"):
        HFVictim.from_pipeline(object())
