"""Supervised training and REINFORCE (negotiation.training): loss goes down, exact validation perplexity, the
discounted REINFORCE loss, an RL update that moves the weights, checkpoints, resume = uninterrupted run.

The dialogues here are generated from templates (:func:`synthetic_examples`), not corpus data, so these tests
need no data folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from negotiation import corpus as C
from negotiation.domain import ITEMS, Scenario, complement, random_scenario, split_tokens
from negotiation.model import DialogModel, DialogModelConfig
from negotiation.training import reinforce as reinforce_module
from negotiation.training.checkpoint import RUN_CONFIG_FILE, is_complete, read_log
from negotiation.training.config import ReinforceConfig, SupervisedConfig, rl_preset, sv_preset
from negotiation.training.evaluate import evaluate_selfplay, evaluate_supervised
from negotiation.training.reinforce import RewardBaseline, UpdateStats, reinforce_loss, reinforce_update, train_rl
from negotiation.training.supervised import train_supervised

TINY = DialogModelConfig(ctx_embed=8, ctx_hidden=8, word_embed=16, lang_hidden=16, attn_hidden=8, sel_hidden=8,
                         dropout=0.0)


def _example(sc: Scenario, rng: random.Random) -> C.Example:
    """YOU asks for the item it values most, THEM agrees or bargains, YOU selects; YOU takes all of it."""
    mine, theirs = sc.first, sc.second
    best = max(range(3), key=lambda i: mine.values[i])
    want = [("i", "want", "the", ITEMS[best] + "s"), ("can", "i", "have", "the", ITEMS[best] + "s", "?")]
    other = max(range(3), key=lambda i: theirs.values[i])
    reply = (("deal",) if other != best else ("no", ",", "i", "need", "the", ITEMS[other] + "s"))
    take = tuple(c if i == best else 0 for i, c in enumerate(mine.counts))
    turns = [C.Turn("YOU:", (*rng.choice(want), "<eos>")), C.Turn("THEM:", (*reply, "<eos>")),
             C.Turn("YOU:", ("<selection>",))]
    return C.Example(mine, theirs, tuple(turns), tuple(split_tokens(take)),
                     tuple(split_tokens(complement(take, mine.counts))))


def synthetic_examples(n: int, seed: int = 0) -> list[C.Example]:
    """``n`` templated dialogues over random scenarios (a stand-in for train.txt in tests)."""
    rng = random.Random(seed)
    return [_example(random_scenario(rng), rng) for _ in range(n)]


def synthetic_scenarios(n: int, seed: int = 0) -> list[Scenario]:
    rng = random.Random(seed)
    return [random_scenario(rng) for _ in range(n)]


def tiny_sv(**overrides: object) -> SupervisedConfig:
    base = {"model": TINY, "min_freq": 1, "max_train": None, "max_valid": None, "batch_size": 8, "epochs": 2,
            "decay_epochs": 1, "eval_batch_size": 16}
    base.update(overrides)
    return sv_preset("tiny", **base)


def tiny_rl(**overrides: object) -> ReinforceConfig:
    base: dict[str, object] = {"batch_size": 4, "epochs": 1, "max_scenarios": None, "max_train": None,
                               "max_valid": None, "max_words": 8, "sv_batch_size": 4, "log_every": 1}
    base.update(overrides)
    return rl_preset("tiny", **base)


def state_dicts_equal(a: DialogModel, b: DialogModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]


# --- configurations ----------------------------------------------------------------------------------------


def test_presets_and_config_checks() -> None:
    for name in ("tiny", "small", "paper"):
        sv, rl = sv_preset(name), rl_preset(name)
        assert SupervisedConfig.from_dict(json.loads(json.dumps(sv.to_dict()))) == sv
        assert ReinforceConfig.from_dict(rl.to_dict()) == rl
    paper = sv_preset("paper")
    assert (paper.optimizer, paper.lr, paper.momentum, paper.nesterov, paper.clip, paper.epochs) == \
        ("sgd", 1.0, 0.1, True, 0.5, 30)
    assert paper.model == DialogModelConfig() and paper.model.dropout == 0.5
    rl = rl_preset("paper")
    assert (rl.gamma, rl.clip, rl.temperature, rl.sv_every, rl.epochs) == (0.95, 1.0, 0.5, 4, 4)
    assert 0.1 <= rl.lr <= 0.2
    with pytest.raises(ValueError, match="lr must be positive"):
        SupervisedConfig(lr=0)
    with pytest.raises(ValueError, match="optimizer"):
        SupervisedConfig(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma"):
        ReinforceConfig(gamma=1.5)
    with pytest.raises(ValueError, match="reward"):
        ReinforceConfig(reward="win")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown supervised preset"):
        sv_preset("huge")
    with pytest.raises(TypeError):
        rl_preset("tiny", nonsense=1)


# --- supervised -------------------------------------------------------------------------------------------


def test_validation_perplexity_is_exact_over_the_lm_targets() -> None:
    exs = synthetic_examples(13, seed=1)
    torch.manual_seed(0)
    model = DialogModel(C.build_word_vocab(exs, min_freq=1), config=TINY).eval()
    nll, n, prefixes = 0.0, 0, 0
    with torch.no_grad():
        for ex in exs:  # one dialogue at a time: the token-weighted mean is the same for any batching
            batch = C.make_batch([ex], model.words, model.items)
            out = model(batch)
            mask = model.lm_target_mask(batch)
            nll += float(F.cross_entropy(out.word_logits[mask], batch.tokens[:, 1:][mask], reduction="sum"))
            n += int(mask.sum())
            tgt = batch.tokens[:, 1:]
            prefixes += int(((tgt == model.you_id) | (tgt == model.them_id)).sum())
    assert 0 < prefixes < n
    for bs in (1, 5, 64):
        val = evaluate_supervised(model, exs, batch_size=bs)
        assert val["tokens"] == n and val["dialogues"] == 13
        assert val["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)
        assert val["ppl_fair"] == pytest.approx(math.exp(nll / (n + prefixes)), rel=1e-5)  # certain targets
    assert not model.training


def test_supervised_training_lowers_the_loss(tmp_path: Path) -> None:
    train, valid = synthetic_examples(96, seed=0), synthetic_examples(24, seed=1)
    cfg = tiny_sv(epochs=3, decay_epochs=0, lr=1e-2)
    out = train_supervised(train, valid, tmp_path / "sv", cfg, device="cpu", progress=False)
    log = read_log(out)
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and log[-1]["kind"] == "summary"
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] and epochs[-1]["val_ppl"] < epochs[0]["val_ppl"]
    assert epochs[0]["val_ppl"] < len(DialogModel.from_pretrained(out).words)  # better than uniform
    assert is_complete(out)
    saved = json.loads((out / RUN_CONFIG_FILE).read_text())
    assert saved["run"]["config"] == json.loads(json.dumps(cfg.to_dict()))
    model = DialogModel.from_pretrained(out)
    best = min(epochs, key=lambda r: r["val_loss"])
    assert evaluate_supervised(model, valid)["ppl"] == pytest.approx(best["val_ppl"], rel=1e-5)


def test_lr_schedule_decays_from_the_best_weights(tmp_path: Path) -> None:
    train, valid = synthetic_examples(32, seed=0), synthetic_examples(8, seed=1)
    cfg = tiny_sv(epochs=2, decay_rate=4.0, decay_epochs=2, lr=8e-3)
    out = train_supervised(train, valid, tmp_path / "sv", cfg, device="cpu", progress=False)
    epochs = [r for r in read_log(out) if r["kind"] == "epoch"]
    assert [(r["phase"], r["lr"]) for r in epochs] == [("constant", 8e-3), ("constant", 8e-3),
                                                      ("decay", 2e-3), ("decay", 5e-4)]


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    train, valid = synthetic_examples(40, seed=0), synthetic_examples(10, seed=1)
    cfg = tiny_sv(model=DialogModelConfig(**{**TINY.to_dict(), "dropout": 0.3}), epochs=2, decay_epochs=1, seed=3)
    straight = train_supervised(train, valid, tmp_path / "a", cfg, device="cpu", progress=False)

    def stop_after_first(record: dict) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supervised(train, valid, tmp_path / "b", cfg, device="cpu", progress=False,
                           on_epoch_end=stop_after_first)
    assert not is_complete(tmp_path / "b")
    assert [r["epoch"] for r in read_log(tmp_path / "b")] == [1]
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 5
    torch.manual_seed(123)  # the resumed run must not depend on the process's RNG state
    resumed = train_supervised(train, valid, tmp_path / "b", cfg, device="cpu", progress=False)
    assert state_dicts_equal(DialogModel.from_pretrained(straight), DialogModel.from_pretrained(resumed))
    assert _strip_times(read_log(straight)) == _strip_times(read_log(resumed))

    # a finished run is returned as it is; other settings on the same folder are refused
    mtime = (resumed / "model.safetensors").stat().st_mtime_ns
    train_supervised(train, valid, resumed, cfg, device="cpu", progress=False)
    assert (resumed / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other settings"):
        train_supervised(train, valid, resumed, tiny_sv(epochs=5), device="cpu", progress=False)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    train, valid = synthetic_examples(16, seed=0), synthetic_examples(4, seed=1)
    cfg = tiny_sv(epochs=1, decay_epochs=0)
    out = train_supervised(train, valid, tmp_path / "sv", cfg, device="cpu", progress=False)
    ckpt = out / "checkpoint"
    assert {p.name for p in ckpt.iterdir()} >= {"config.json", "model.safetensors", "words.json", "items.json",
                                                "trainer_state.json", "optimizer.pt", "rng.pt"}
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert opt["optimizer"]["state"]  # Adam moments
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    assert set(rng) >= {"torch", "python"}
    final, last = DialogModel.from_pretrained(out), DialogModel.from_pretrained(ckpt)
    assert state_dicts_equal(final, last)  # one epoch: the last is the best
    assert final.words == C.build_word_vocab(train, min_freq=1)


# --- REINFORCE ---------------------------------------------------------------------------------------------


def test_reinforce_loss_discounts_from_the_last_action() -> None:
    lps = torch.zeros(2, 3, requires_grad=True)
    choice = torch.zeros(2, requires_grad=True)
    counts, adv = torch.tensor([3, 1]), torch.tensor([1.0, -2.0])
    loss = reinforce_loss(lps, counts, adv, gamma=0.5, choice_logprobs=choice)
    loss.backward()
    assert lps.grad is not None and choice.grad is not None
    # d loss / d logprob = -return / B; the choice (last action) gets A, the token before it gamma * A, ...
    assert torch.allclose(lps.grad, -torch.tensor([[0.125, 0.25, 0.5], [-1.0, 0.0, 0.0]]) / 2)
    assert torch.allclose(choice.grad, -torch.tensor([1.0, -2.0]) / 2)
    lps.grad = None
    reinforce_loss(lps, counts, adv, gamma=0.5).backward()  # words only: the last token gets A
    assert torch.allclose(lps.grad, -torch.tensor([[0.25, 0.5, 1.0], [-2.0, 0.0, 0.0]]) / 2)
    choice.grad = None
    reinforce_loss(lps, counts, adv, gamma=0.5, choice_logprobs=choice,
                     choice_mask=torch.tensor([False, True])).backward()
    assert torch.allclose(choice.grad, -torch.tensor([0.0, -2.0]) / 2)


def test_reward_baseline_is_the_running_mean_and_std() -> None:
    base = RewardBaseline()
    assert base.advantages([4.0, 8.0]) == pytest.approx([-1.0, 1.0])  # mean 6, std 2
    assert base.advantages([6.0]) == pytest.approx([0.0])
    plain = RewardBaseline(normalize=False)
    assert plain.advantages([10.0, 0.0]) == pytest.approx([5.0, -5.0])
    assert RewardBaseline(**base.to_dict()) == base


def test_rl_update_changes_the_agent_not_the_partner() -> None:
    exs = synthetic_examples(20)
    torch.manual_seed(0)
    model = DialogModel(C.build_word_vocab(exs, min_freq=1), config=TINY)
    partner = DialogModel(model.words, config=TINY)
    partner.load_state_dict(model.state_dict())
    partner.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.1, nesterov=True)
    # an untrained agent scores 0 everywhere: past rewards (mean 5) make its advantages negative
    base = RewardBaseline(n=2, total=10.0, total_sq=50.0, normalize=False)
    stats = reinforce_update(model, partner, synthetic_scenarios(8), cfg=tiny_rl(), optimizer=opt, baseline=base,
                               seed=0)
    assert stats.dialogues == 8 and len(stats.records) == 8 and base.n == 10
    assert 0.0 <= stats.agreement <= 1.0 and stats.grad_norm > 0 and math.isfinite(stats.loss)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "word_embed.weight" in changed and "sel_decoder.weight" in changed
    assert all(torch.equal(v, before[k]) for k, v in partner.state_dict().items())


@pytest.mark.parametrize("forced", [False, True])
def test_rl_update_with_forced_agreement_and_advantage_reward(forced: bool) -> None:
    """With ``complement`` the agent takes the complement of the partner's choice: every dialogue that reaches
    <selection> with a partner's deal agrees; the advantage reward is score minus the partner's."""
    exs = synthetic_examples(20)
    torch.manual_seed(1)
    model = DialogModel(C.build_word_vocab(exs, min_freq=1), config=TINY)
    partner = DialogModel(model.words, config=TINY).requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    base = RewardBaseline(n=2, total=10.0, total_sq=50.0, normalize=False)  # past rewards: advantages != 0
    cfg = tiny_rl(complement=forced, reward="advantage", max_words=4, max_turns=2)
    stats = reinforce_update(model, partner, synthetic_scenarios(16), cfg=cfg, optimizer=opt, baseline=base,
                               seed=0)
    rewards = [r.scores[0] - r.scores[1] for r in stats.records]
    assert stats.reward == pytest.approx(sum(rewards) / len(rewards))
    deals = [r for r in stats.records if r.selected and r.choices[1] is not None]
    if forced:
        assert deals and all(r.agreed for r in deals)
        assert all(r.choices[0] == complement(r.choices[1], r.scenario.counts) for r in deals)
    else:
        assert not any(r.agreed for r in deals if r.choices[0] != complement(r.choices[1], r.scenario.counts))
    assert stats.grad_norm > 0


def _sv_checkpoint(path: Path) -> tuple[Path, list[C.Example]]:
    exs = synthetic_examples(24)
    torch.manual_seed(0)
    config = DialogModelConfig(**{**TINY.to_dict(), "dropout": 0.2})  # the supervised batches draw dropout masks
    DialogModel(C.build_word_vocab(exs, min_freq=1), config=config).save_pretrained(path)
    return path, exs


@pytest.mark.parametrize("select_every", [0, 1])
def test_rl_training_resumes_mid_epoch_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               select_every: int) -> None:
    sv, exs = _sv_checkpoint(tmp_path / "sv")
    scen = synthetic_scenarios(12)
    cfg = tiny_rl(epochs=2, save_every=1, seed=5, select_every=select_every)
    kw = {"scenarios": scen, "train": exs, "valid": exs[:6], "device": "cpu", "progress": False,
          "select_scenarios": synthetic_scenarios(6, seed=9)}
    straight = train_rl(sv, tmp_path / "a", cfg, **kw)  # type: ignore[arg-type]
    log = read_log(straight)
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and epochs[-1]["dialogues"] == 24
    assert epochs[1]["sv_batches"] == 3  # one supervised batch every 4 dialogues
    assert not state_dicts_equal(DialogModel.from_pretrained(sv), DialogModel.from_pretrained(straight))

    real, calls = reinforce_update, []

    def interrupted(*args: object, **kwargs: object) -> UpdateStats:
        calls.append(1)
        if len(calls) == 5:  # the second update of epoch 2; the first was checkpointed
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reinforce_module, "reinforce_update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_rl(sv, tmp_path / "b", cfg, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(reinforce_module, "reinforce_update", real)
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert (state["epoch"], state["update"], state["dialogues"]) == (1, 1, 16)
    resumed = train_rl(sv, tmp_path / "b", cfg, **kw)  # type: ignore[arg-type]
    assert state_dicts_equal(DialogModel.from_pretrained(straight), DialogModel.from_pretrained(resumed))
    assert _strip_times(read_log(straight)) == _strip_times(read_log(resumed))
    selects = [r for r in log if r["kind"] == "select"]
    summary = log[-1]
    if select_every:  # after each of the 6 updates; the result is the first of the best
        assert len(selects) == 6 and summary["selected"] == max(selects, key=lambda r: r["reward"])
        assert summary["selected"]["best"] and selects[0]["best"]
        assert state_dicts_equal(DialogModel.from_pretrained(straight), DialogModel.from_pretrained(straight / "best"))
    else:
        assert not selects and summary["selected"] is None


def test_rl_selection_needs_validation_games(tmp_path: Path) -> None:
    sv, exs = _sv_checkpoint(tmp_path / "sv")
    with pytest.raises(ValueError, match="select_every > 0 needs select_scenarios"):
        train_rl(sv, tmp_path / "rl", tiny_rl(select_every=2), scenarios=synthetic_scenarios(4), train=exs,
                   valid=exs[:4], device="cpu", progress=False)


def test_selfplay_evaluation_is_seeded() -> None:
    exs = synthetic_examples(10)
    torch.manual_seed(0)
    model = DialogModel(C.build_word_vocab(exs, min_freq=1), config=TINY)
    scen = synthetic_scenarios(6)
    r1, m1 = evaluate_selfplay(model, model, scen, seed=4, max_words=6, batch_size=4)
    r2, m2 = evaluate_selfplay(model, model, scen, seed=4, max_words=6, batch_size=4)
    assert r1 == r2 and m1 == m2 and m1.games == 6


def test_under_a_partners_forced_agreement_the_agents_choice_is_not_reinforced() -> None:
    """Against a partner that takes the complement, the agent's choice decides the split alone: reinforcing
    it teaches the agent to claim everything, so only its words learn (the decision module stays put)."""
    exs = synthetic_examples(20)
    torch.manual_seed(2)
    model = DialogModel(C.build_word_vocab(exs, min_freq=1), config=TINY)
    partner = DialogModel(model.words, config=TINY).requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    base = RewardBaseline(n=2, total=10.0, total_sq=50.0, normalize=False)
    stats = reinforce_update(model, partner, synthetic_scenarios(16), cfg=tiny_rl(max_words=4, max_turns=2),
                               optimizer=opt, baseline=base, seed=0, partner_complement=True)
    assert stats.grad_norm > 0
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert "word_embed.weight" in changed
    assert not {k for k in changed if k.startswith(("sel_", "sel_rnn", "sel_encoder", "sel_decoder"))}


def test_same_seed_and_threads_train_bit_identical_agents(tmp_path: Path) -> None:
    """The recipe's reproducibility promise on a tiny run: SV then RL (with checkpoint selection) twice from
    scratch, same seed and thread count, give the same weights; another seed does not."""
    train, valid = synthetic_examples(40, seed=0), synthetic_examples(10, seed=1)
    sv_cfg = tiny_sv(model=DialogModelConfig(**{**TINY.to_dict(), "dropout": 0.3}), epochs=2, decay_epochs=1, seed=7)
    rl_cfg = tiny_rl(epochs=1, seed=7, select_every=2)
    kw = {"scenarios": synthetic_scenarios(8), "train": train, "valid": valid[:6], "device": "cpu", "progress": False,
          "select_scenarios": synthetic_scenarios(4, seed=3)}
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        sv = train_supervised(train, valid, tmp_path / f"sv_{name}", dataclasses.replace(sv_cfg, seed=seed),
                              device="cpu", progress=False)
        rl = train_rl(sv, tmp_path / f"rl_{name}", dataclasses.replace(rl_cfg, seed=seed), **kw)  # type: ignore[arg-type]
        runs.append((DialogModel.from_pretrained(sv), DialogModel.from_pretrained(rl)))
    assert state_dicts_equal(runs[0][0], runs[1][0]) and state_dicts_equal(runs[0][1], runs[1][1])
    assert not state_dicts_equal(runs[0][0], runs[2][0])
