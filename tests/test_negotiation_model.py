"""DialogModel (Lewis et al. 2017): shapes, loss, legal choices, generation mask, incremental reading and
writing, checkpoints; RnnAgent bookkeeping against teacher-forced passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from negotiation import corpus as C
from negotiation.agents import RnnAgent
from negotiation.domain import NO_AGREEMENT, Context, enumerate_splits
from negotiation.model import DialogModel, DialogModelConfig, generation_mask_tokens

# Hand-made lines in the corpus format (not corpus data).
LINES = [
    "<input> 1 4 1 3 3 1 </input> <dialogue> YOU: i want the book and the hat <eos> "
    "THEM: ok , the balls are mine <eos> YOU: <selection> </dialogue> "
    "<output> item0=1 item1=1 item2=0 item0=0 item1=0 item2=3 </output> <partner_input> 1 0 1 1 3 3 </partner_input>",
    "<input> 1 0 1 1 3 3 </input> <dialogue> THEM: i want the book and the hat <eos> "
    "YOU: ok , the balls are mine <eos> THEM: <selection> </dialogue> "
    "<output> item0=0 item1=0 item2=3 item0=1 item1=1 item2=0 </output> <partner_input> 1 4 1 3 3 1 </partner_input>",
    "<input> 1 4 1 3 3 1 </input> <dialogue> THEM: give me everything <eos> YOU: no way <eos> "
    "THEM: then no deal <eos> YOU: <selection> </dialogue> <output> " + "<no_agreement> " * 6
    + "</output> <partner_input> 1 0 1 1 3 3 </partner_input>",
    "<input> 2 1 2 2 1 4 </input> <dialogue> YOU: i need the hats and the ball <eos> THEM: you can have the hats "
    "<eos> YOU: deal <eos> THEM: <selection> </dialogue> <output> item0=0 item1=2 item2=0 item0=2 item1=0 "
    "item2=1 </output> <partner_input> 2 3 2 0 1 4 </partner_input>",
]
TINY = DialogModelConfig(ctx_embed=8, ctx_hidden=8, word_embed=16, lang_hidden=12, attn_hidden=10, sel_hidden=12,
                         dropout=0.0)


def hand_made() -> list[C.Example]:
    return C.parse_lines(LINES).examples


def tiny_model(examples: list[C.Example] | None = None, config: DialogModelConfig = TINY,
               seed: int = 0) -> DialogModel:
    torch.manual_seed(seed)
    words = C.build_word_vocab(examples or hand_made(), min_freq=1)
    return DialogModel(words, config=config).eval()


@pytest.fixture(scope="module")
def real_train(negotiate_dir: Path) -> list[C.Example]:
    path = negotiate_dir / "train.txt"
    with path.open(encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(64)]
    return C.parse_lines(lines, source=str(path)).examples


def test_config_checks_and_dict_round_trip() -> None:
    cfg = DialogModelConfig()
    assert (cfg.ctx_embed, cfg.word_embed, cfg.lang_hidden, cfg.attn_hidden, cfg.sel_hidden) == (64, 256, 128, 256, 256)
    assert cfg.dropout == 0.5 and cfg.sel_weight == 0.5 and cfg.lm_targets == "all"
    assert DialogModelConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown DialogModelConfig fields \\['nhid'\\]"):
        DialogModelConfig.from_dict({"nhid": 3})
    with pytest.raises(ValueError, match="lang_hidden must be a positive integer"):
        DialogModelConfig(lang_hidden=0)
    with pytest.raises(ValueError, match="dropout"):
        DialogModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="lm_targets"):
        DialogModelConfig(lm_targets="mine")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DialogModelConfig(64)  # type: ignore[misc]  # keyword-only


def test_forward_shapes_and_vocab_checks() -> None:
    exs = hand_made()
    model = tiny_model(exs)
    batch = C.make_batch(exs, model.words, model.items)
    out = model(batch)
    B, T = batch.tokens.shape
    assert out.word_logits.shape == (B, T - 1, len(model.words))
    assert out.slot_logits.shape == (B, 6, len(model.items))
    assert out.hiddens.shape == (B, T, TINY.lang_hidden)
    assert model.encode_context(batch.contexts).shape == (B, TINY.ctx_hidden)
    assert sum(p.numel() for p in DialogModel(model.words).parameters()) > 10 * sum(
        p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="lacks special tokens"):
        DialogModel(C.Vocab(["<pad>", "<unk>", "hello"]), config=TINY)
    with pytest.raises(ValueError, match="shape \\(B, 6\\)"):
        model.encode_context(torch.zeros(2, 4, dtype=torch.long))


def test_lm_targets_all_fair_or_own() -> None:
    exs = hand_made()
    batch = C.make_batch(exs, C.build_word_vocab(exs, min_freq=1), C.item_vocab())
    own = tiny_model(exs, DialogModelConfig(**{**TINY.to_dict(), "lm_targets": "own"}))
    every = tiny_model(exs)
    assert torch.equal(own.lm_target_mask(batch), batch.own[:, 1:])
    n_words = sum(len(t.tokens) for ex in exs for t in ex.turns)  # words and terminators, no prefixes
    assert int(every.lm_target_mask(batch).sum()) == n_words
    assert every.loss(batch).lm_tokens == n_words
    assert own.loss(batch).lm_tokens == int(batch.own.sum()) < n_words
    # no speaker prefix is ever a target
    tgt = batch.tokens[:, 1:][every.lm_target_mask(batch)]
    assert not ((tgt == every.you_id) | (tgt == every.them_id) | (tgt == every.pad_id)).any()
    # FAIR's convention: the prefixes after the first are targets too (never padding)
    fair = tiny_model(exs, DialogModelConfig(**{**TINY.to_dict(), "lm_targets": "fair"}))
    n_prefixes = sum(len(ex.turns) - 1 for ex in exs)
    assert fair.loss(batch).lm_tokens == n_words + n_prefixes
    tgt = batch.tokens[:, 1:][fair.lm_target_mask(batch)]
    assert int(((tgt == fair.you_id) | (tgt == fair.them_id)).sum()) == n_prefixes and not (tgt == fair.pad_id).any()


def _train(model: DialogModel, batch: C.Batch, steps: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        out = model.loss(batch)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


def test_loss_decreases_on_hand_made_dialogues() -> None:
    exs = hand_made()
    model = tiny_model(exs, DialogModelConfig(**{**TINY.to_dict(), "dropout": 0.1}))
    losses = _train(model, C.make_batch(exs, model.words, model.items), 30)
    assert losses[-1] < 0.8 * losses[0], losses


def test_loss_decreases_on_real_dialogues(real_train: list[C.Example]) -> None:
    model = tiny_model(real_train)
    batch = C.make_batch(real_train, model.words, model.items)
    losses = _train(model, batch, 30)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("counts", [(1, 1, 3), (2, 2, 2), (4, 2, 1), (1, 4, 1), (3, 3, 1)])
def test_choice_logits_cover_exactly_the_legal_choices(counts: tuple[int, int, int]) -> None:
    model = tiny_model()
    other = (2, 2, 3)  # batched with a game of more choices: padding columns are -inf
    slots = torch.randn(2, 6, len(model.items))
    scores = model.choice_logits(slots, torch.tensor([counts, other]))
    legal = [*enumerate_splits(counts), None]
    assert scores.choices[0] == legal and scores.choices[1] == [*enumerate_splits(other), None]
    n = len(legal)
    assert torch.isfinite(scores.logits[0, :n]).all() and torch.isinf(scores.logits[0, n:]).all()
    assert torch.isfinite(scores.logits[1]).all()
    table = C.encode_choices(counts, model.items)
    expected = slots[0, torch.arange(6), table].sum(-1)
    assert torch.allclose(scores.logits[0, :n], expected)
    no_deal = model.items.id(NO_AGREEMENT)
    assert torch.allclose(scores.logits[0, n - 1], slots[0, :, no_deal].sum())


def test_generation_mask_is_respected_when_sampling() -> None:
    model = tiny_model()
    masked = set(generation_mask_tokens(model.words))
    assert masked == {"<pad>", "<unk>", "YOU:", "THEM:"}
    with torch.no_grad():  # make the masked words the most likely ones by far
        for t in masked:
            model.word_embed.weight[model.words.id(t)] = 5.0 * model.decoder(torch.ones(TINY.lang_hidden))
    state = torch.ones(64, TINY.lang_hidden)
    ctx = torch.zeros(64, TINY.ctx_hidden)
    assert model.word_logits(state).argmax(-1).tolist()[0] in model.words.ids(sorted(masked))
    gen = torch.Generator().manual_seed(0)
    out = model.write(state, ctx, max_words=20, temperature=3.0, generator=gen)
    written = set(model.words.tokens(out.tokens[out.tokens != model.pad_id].tolist()))
    assert written and not written & masked
    assert model.write(state, ctx, max_words=20, temperature=0.0).tokens.numel() > 0


def test_write_stops_at_terminators_and_forces_eos_at_max_words() -> None:
    model = tiny_model()
    state, ctx = torch.randn(32, TINY.lang_hidden), torch.randn(32, TINY.ctx_hidden)
    out = model.write(state, ctx, max_words=4, temperature=1.0, generator=torch.Generator().manual_seed(1))
    terminators = {model.eos_id, model.sel_id}
    for row, n, lp in zip(out.tokens.tolist(), out.lengths.tolist(), out.logprobs):
        assert 1 <= n <= 4 and row[n - 1] in terminators
        assert not terminators & set(row[: n - 1]) and all(t == model.pad_id for t in row[n:])
        assert (lp[n:] == 0).all() and (lp[: n - 1] < 0).all()
        if n == 4 and row[3] == model.eos_id:
            assert lp[3] == 0 or lp[3] < 0  # forced (0) or sampled
    # the returned state is the one after each message's last token
    idx = torch.arange(32)
    assert torch.allclose(out.state, out.hiddens[idx, out.lengths - 1])


def test_incremental_reading_matches_the_teacher_forced_pass() -> None:
    exs = hand_made()
    model = tiny_model(exs)
    batch = C.make_batch(exs, model.words, model.items)
    with torch.no_grad():
        full = model(batch)
        ctx = model.encode_context(batch.contexts)
        state = model.initial_state(len(batch))
        cut = 5
        h1, state = model.read(batch.tokens[:, :cut], torch.full((len(batch),), cut), state, ctx)
        rest = batch.lengths - cut
        with pytest.raises(ValueError, match="explicit speakers"):  # a chunk that starts mid-turn
            model.read(batch.tokens[:, cut:], rest, state, ctx)
        speakers = model.speaker_ids(batch.tokens)[:, cut:]
        h2, _ = model.read(batch.tokens[:, cut:], rest, state, ctx, speakers=speakers)
    for b in range(len(batch)):
        n = int(batch.lengths[b])
        pieces = torch.cat([h1[b], h2[b, : n - cut]])
        assert torch.allclose(pieces, full.hiddens[b, :n], atol=1e-6)


def test_agent_bookkeeping_matches_the_teacher_forced_pass() -> None:
    """An RnnAgent's transcript, token log-probabilities and choice scores equal a fresh teacher-forced pass."""
    model = tiny_model(seed=3)
    you, them = Context((1, 1, 3), (4, 3, 1)), Context((2, 2, 1), (1, 2, 4))
    agent = RnnAgent(model, temperature=0.7, max_words=6, seed=0)
    agent.feed_context([you, them])
    partner = [["ok", "<eos>"], ["no", "way", "<eos>"]]
    written = [agent.write([0, 1])]
    agent.read([1, 0], [partner[1], partner[0]])  # games listed in any order
    written.append(agent.write([1]))  # only game 1 continues
    agent.read([1], [["<selection>"]])
    assert agent.transcript(0) == ["YOU:", *written[0][0], "THEM:", "ok", "<eos>"]
    assert agent.transcript(1) == ["YOU:", *written[0][1], "THEM:", "no", "way", "<eos>", "YOU:",
                                   *written[1][0], "THEM:", "<selection>"]
    choices = agent.choose()
    lps, counts = agent.written_logprobs()
    for g, ctx in enumerate((you, them)):
        ids = torch.tensor([agent.token_ids(g)])
        ex_ctx = torch.tensor([ctx.to_ints()])
        with torch.no_grad():
            c = model.encode_context(ex_ctx)
            hid = model.read_embeds(model.embed(ids), model.initial_state(1), c)
            logp = torch.log_softmax((model.word_logits(hid[0, :-1]) + model.generation_mask) / 0.7, -1)
            slots = model.selection_logits(ids, hid, torch.tensor([ids.size(1)]), c)
        toks = ids[0].tolist()
        own = []  # positions of the tokens the agent wrote (after its YOU: prefix, up to a terminator)
        writing = False
        for i, t in enumerate(toks):
            if writing:
                own.append(i)
                writing = t not in (model.eos_id, model.sel_id)
            elif t == model.you_id:
                writing = True
        assert int(counts[g]) == len(own)
        expected = torch.stack([logp[i - 1, toks[i]] for i in own])
        forced = lps[g, : len(own)] == 0  # a forced <eos> at max_words
        assert torch.allclose(lps[g, : len(own)][~forced], expected[~forced], atol=1e-5)
        scores = model.choice_logits(slots, [ctx.counts])
        assert torch.allclose(agent.choice_logits([g]).logits, scores.logits, atol=1e-5)
        best = int(scores.logits.argmax())
        assert choices[g] == scores.choices[0][best]
        assert torch.allclose(agent.choice_logprobs[g], torch.log_softmax(scores.logits, -1)[0, best], atol=1e-5)


def test_agent_records_gradients_only_when_asked() -> None:
    model = tiny_model()
    ctxs = [Context((1, 1, 3), (4, 3, 1))] * 3
    for track in (False, True):
        agent = RnnAgent(model, track_grad=track, seed=0)
        agent.feed_context(ctxs)
        agent.write([0, 1, 2])
        agent.read([0, 1, 2], [["<selection>"]] * 3)
        agent.choose()
        lps, _ = agent.written_logprobs()
        assert lps.requires_grad is track and agent.choice_logprobs.requires_grad is track
        if track:
            (lps.sum() + agent.choice_logprobs.sum()).backward()
            assert model.word_embed.weight.grad is not None and model.sel_decoder.weight.grad is not None
    with pytest.raises(IndexError, match="out of range"):
        agent.write([3])
    with pytest.raises(ValueError, match="must end with"):
        agent.read([0], [["hello"]])


def test_speaker_ids_follow_the_latest_prefix() -> None:
    model = tiny_model()
    w = model.words
    rows = [["YOU:", "i", "want", "THEM:", "ok", "<eos>", "<pad>"], ["book", "<eos>", "YOU:", "no", "<pad>",
                                                                     "<pad>", "<pad>"]]
    tokens = torch.tensor([w.ids(r) for r in rows])
    assert model.speaker_ids(tokens).tolist() == [[1, 1, 1, 2, 2, 2, 0], [0, 0, 1, 1, 0, 0, 0]]
    assert model.speaker_ids(tokens, first=torch.tensor([1, 2])).tolist()[1] == [2, 2, 1, 1, 0, 0, 0]


def test_speaker_embedding_tells_the_speakers_apart() -> None:
    """The same words after YOU: and after THEM: reach different states through the speaker vectors only."""
    model = tiny_model(seed=2)
    with torch.no_grad():
        model.word_embed.weight[[model.you_id, model.them_id]] = 0.0  # the prefixes' own vectors are equal
        ids = torch.tensor([model.words.ids(["YOU:", "i", "want", "the", "book"]),
                            model.words.ids(["THEM:", "i", "want", "the", "book"])])
        ctx = model.encode_context(torch.tensor([[1, 4, 1, 3, 3, 1]] * 2))
        h, _ = model.read(ids, torch.tensor([5, 5]), model.initial_state(2), ctx)
        assert not torch.allclose(h[0, -1], h[1, -1], atol=1e-4)
        plain = tiny_model(config=DialogModelConfig(**{**TINY.to_dict(), "speaker_embed": False}), seed=2)
        assert plain.speaker_embed is None
        plain.word_embed.weight[[plain.you_id, plain.them_id]] = 0.0
        h, _ = plain.read(ids, torch.tensor([5, 5]), plain.initial_state(2), plain.encode_context(
            torch.tensor([[1, 4, 1, 3, 3, 1]] * 2)))
        assert torch.allclose(h[0, -1], h[1, -1])


def test_selection_loss_skips_unknown_human_selections() -> None:
    exs = hand_made()
    model = tiny_model(exs)
    batch = C.make_batch(exs, model.words, model.items)
    disagree = torch.full_like(batch.choices, model.items.id("<disagree>"))
    with torch.no_grad():
        slots = model(batch).slot_logits
        assert model.selection_loss(slots, disagree).item() == 0.0  # nothing counts: 0, not nan
        mixed = torch.cat([disagree[:2], batch.choices[2:]])
        ref = torch.nn.functional.cross_entropy(slots[2:].reshape(-1, len(model.items)), batch.choices[2:].reshape(-1))
        torch.testing.assert_close(model.selection_loss(slots, mixed), ref)
        keep = tiny_model(exs, config=DialogModelConfig(**{**TINY.to_dict(), "sel_skip_unknown": False}))
        assert keep.selection_loss(slots, disagree).item() > 0


def test_checkpoints_from_before_the_speaker_option_still_load(tmp_path: Path) -> None:
    exs = hand_made()
    old = tiny_model(exs, config=DialogModelConfig(**{**TINY.to_dict(), "speaker_embed": False,
                                                      "sel_skip_unknown": False}), seed=4)
    d = old.save_pretrained(tmp_path / "old")
    meta = json.loads((d / "config.json").read_text())
    for k in ("speaker_embed", "sel_skip_unknown"):
        del meta["config"][k]
    (d / "config.json").write_text(json.dumps(meta))
    loaded = DialogModel.from_pretrained(d)
    assert loaded.config == old.config
    batch = C.make_batch(exs, old.words, old.items)
    with torch.no_grad():
        assert torch.equal(loaded(batch).slot_logits, old(batch).slot_logits)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    exs = hand_made()
    model = tiny_model(exs, seed=5)
    batch = C.make_batch(exs, model.words, model.items)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "items.json", "model.safetensors", "words.json"]
    loaded = DialogModel.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training and loaded.config == model.config and loaded.words == model.words
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    assert torch.equal(a.word_logits, b.word_logits) and torch.equal(a.slot_logits, b.slot_logits)
    assert torch.equal(loaded.generation_mask, model.generation_mask)


def test_checkpoint_errors(tmp_path: Path) -> None:
    model = tiny_model()
    d = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        DialogModel.from_pretrained(tmp_path / "nowhere")
    for name in ("config.json", "model.safetensors", "words.json", "items.json"):
        broken = tmp_path / f"no_{name}"
        model.save_pretrained(broken)
        (broken / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"missing {name}"):
            DialogModel.from_pretrained(broken)
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="model.safetensors: cannot read weights"):
        DialogModel.from_pretrained(d)
    (d / "model.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read weights"):
        DialogModel.from_pretrained(d)
    (d / "model.safetensors").write_bytes(weights)
    (d / "config.json").write_text("{ truncated")
    with pytest.raises(ValueError, match="config.json: not JSON"):
        DialogModel.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a DialogModel config"):
        DialogModel.from_pretrained(d)
    bigger = {**TINY.to_dict(), "lang_hidden": 14}
    (d / "config.json").write_text(json.dumps({"format": "negotiation.DialogModel", "version": 1, "config": bigger}))
    with pytest.raises(ValueError, match="tensor shapes do not match"):
        DialogModel.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({"format": "negotiation.DialogModel", "version": 1,
                                               "config": {**TINY.to_dict(), "dropout": 2}}))
    with pytest.raises(ValueError, match="config.json: DialogModelConfig.dropout"):
        DialogModel.from_pretrained(d)
    model.save_pretrained(d)
    for bad in ("[]", '{"format": "negotiation.Vocab"}', "{"):
        (d / "words.json").write_text(bad)
        with pytest.raises(ValueError, match="words.json"):
            DialogModel.from_pretrained(d)
