"""AdvAgent attacks on a tiny trained negotiation agent: the batched scorer agrees with the agent's own
computation, the greedy search respects its budget and constraint, attack agents in the dialogue loop,
forced agreement at the cap, transfer sentences, resumable runs, and one adversarial-training round.

The agent is trained in seconds on templated dialogues (tests/test_negotiation_train.py), so no data folder
is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from negotiation.agents import RnnAgent
from negotiation.attacks.agent import AttackAgent
from negotiation.attacks.greedy import CandidateScorer, candidate_words, greedy_attack
from negotiation.attacks.objectives import favourable_choices
from negotiation.attacks.run import run_attack, summarize_games
from negotiation.attacks.transfer import collect_transfer_sentences
from negotiation.dialog import play
from negotiation.domain import complement, score
from negotiation.model import DialogModel
from negotiation.training import adversarial as AT
from negotiation.training.checkpoint import CHECKPOINT_DIR, STATE_FILE
from negotiation.training.reinforce import RewardBaseline, reinforce_update
from negotiation.training.supervised import train_supervised
from tests.test_negotiation_train import TINY, synthetic_examples, synthetic_scenarios, tiny_rl, tiny_sv


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SV agent trained on templated dialogues (ask for your best item, agree or bargain, select)."""
    out = tmp_path_factory.mktemp("tiny_sv")
    exs = synthetic_examples(240)
    cfg = tiny_sv(model=TINY, epochs=4, batch_size=16, lr=2e-2)
    train_supervised(exs[:200], exs[200:], out, cfg, device="cpu", progress=False)
    return out


@pytest.fixture()
def model(trained: Path) -> DialogModel:
    return DialogModel.from_pretrained(trained)


def _after_one_turn(model: DialogModel, n: int = 6, seed: int = 0) -> tuple[RnnAgent, RnnAgent, list]:
    """Attacker A opens every game, the target B has read it and answered; A's next message is due."""
    scen = synthetic_scenarios(n, seed=seed)
    a = RnnAgent(model, name="a", seed=1)
    b = RnnAgent(model, name="b", seed=2)
    a.feed_context([s.first for s in scen])
    b.feed_context([s.second for s in scen])
    games = list(range(n))
    b.read(games, a.write(games))
    a.read(games, b.write(games))
    return a, b, scen


def _ids(model: DialogModel, msgs: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(m) for m in msgs)
    ids = torch.zeros(len(msgs), width, dtype=torch.long)
    for i, m in enumerate(msgs):
        ids[i, : len(m)] = torch.tensor(model.words.ids(m))
    return ids, torch.tensor([len(m) for m in msgs])


def test_reactive_scores_match_what_the_target_then_computes(model: DialogModel) -> None:
    a, b, scen = _after_one_turn(model)
    games = list(range(len(scen)))
    msgs = [["i", "want", "the", "books", "<eos>"], ["deal", "<eos>"], ["no", "<eos>"],
            ["can", "i", "have", "the", "hats", "?", "<eos>"], ["deal", "<eos>"], ["i", "<pad>", "<eos>"]]
    scorer = CandidateScorer(model, b.snapshot(games), [s.first for s in scen], kappa=0.5)
    ids, lens = _ids(model, msgs)
    s = scorer.score(torch.arange(len(games)), ids, lens, "reactive")
    # the target itself: read the message, its next-token logits, then <selection> and its choice logits
    b.read(games, [[t if t != "<pad>" else "<unk>" for t in m] for m in msgs[:-1]] + [["i", "<eos>"]])
    snap = b.snapshot(games[:-1])
    you = torch.full((len(games) - 1, 1), model.you_id)
    _, st = model.read(you, torch.ones(len(games) - 1, dtype=torch.long), snap.state, snap.ctx)
    z = model.word_logits(st) + model.generation_mask
    others = z.clone()
    others[:, model.sel_id] = float("-inf")
    margin = z[:, model.sel_id] - others.amax(dim=1)
    assert torch.allclose(s.margin[:-1], margin, atol=1e-4)
    feasible = s.margin >= 0
    b.say(games[:-1], [["<selection>"]] * (len(games) - 1))
    cl = b.choice_logits(games[:-1])
    fav = favourable_choices(cl.choices, [x.second for x in scen[:-1]], [x.first for x in scen[:-1]])
    for g in range(len(games) - 1):
        if not feasible[g]:
            assert torch.isinf(s.loss[g])  # infeasible trials are ranked by the constraint alone
            continue
        row = cl.logits[g]
        best_fav = row[fav[g]].max() if fav[g].any() else torch.tensor(float("-inf"))
        best_other = row[~fav[g] & torch.isfinite(row)].max()
        assert s.loss[g].item() == pytest.approx(max((best_other - best_fav).item(), -0.5), abs=1e-4)


def test_greedy_changes_at_most_two_words_and_reports_success_honestly(model: DialogModel) -> None:
    a, b, scen = _after_one_turn(model, n=8)
    games = list(range(len(scen)))
    drafts = a.draft(games)
    drafts = [d if len(d) > 1 else ["i", "want", "the", "hats", "<eos>"] for d in drafts]
    scorer = CandidateScorer(model, b.snapshot(games), [s.first for s in scen], kappa=0.5)
    words = candidate_words(model)
    assert not {model.eos_id, model.sel_id, model.pad_id, model.you_id, model.them_id} & set(words.tolist())
    for mode in ("reactive", "preemptive"):
        res = greedy_attack(scorer, drafts, mode, max_changes=2)
        ids, lens = _ids(model, res.messages)
        again = scorer.score(torch.arange(len(games)), ids, lens, mode)
        for g, (d, m) in enumerate(zip(drafts, res.messages)):
            assert len(m) == len(d) and m[-1] == d[-1]
            diff = [i for i, (x, y) in enumerate(zip(d, m)) if x != y]
            assert len(diff) <= 2 and set(diff) <= set(res.changed[g])
            assert "<pad>" not in m
            assert res.success[g] == (res.margin[g] >= 0 and res.loss[g] < 0)
            assert again.loss[g].item() == pytest.approx(res.loss[g], abs=1e-4)  # deterministic, reproducible
        if mode == "preemptive":
            assert all(x == float("inf") for x in res.margin)  # unconstrained


def test_a_successful_reactive_message_makes_the_greedy_target_select_in_the_attackers_favour(
        model: DialogModel) -> None:
    found = 0
    for seed in range(4):
        a, b, scen = _after_one_turn(model, n=8, seed=seed)
        b.temperature = 0.0  # greedy target: constraint 3.9 then decides its next token exactly
        games = list(range(len(scen)))
        drafts = [d if len(d) > 1 else ["deal", "<eos>"] for d in a.draft(games)]
        scorer = CandidateScorer(model, b.snapshot(games), [s.first for s in scen], kappa=0.5)
        res = greedy_attack(scorer, drafts, "reactive")
        ok = [g for g in games if res.success[g]]
        if not ok:
            continue
        b.read(ok, [res.messages[g] for g in ok])
        replies = b.write(ok)
        assert all(r == ["<selection>"] for r in replies)
        for g, take in zip(ok, b.choose(ok)):
            assert take is not None
            sc = scen[g]
            assert score(complement(take, sc.first.counts), sc.first.values) > score(take, sc.second.values)
        found += len(ok)
    assert found > 0


@pytest.mark.parametrize("method", ["reactive", "preemptive", "ra-pa-da", "ra-pa-ta", "transfer", "none"])
def test_attack_agents_play_with_forced_agreement(model: DialogModel, method: str) -> None:
    scen = synthetic_scenarios(10, seed=3)
    target = RnnAgent(model, name="target", seed=1)
    pool = [["i", "want", "the", "books", "<eos>"], ["deal", "<eos>"]]
    attacker = AttackAgent(RnnAgent(model, name="adv", seed=2), target, method=method, start_turn=1,
                           transfer_sentences=pool)
    records = play(attacker, target, scen, complement="a")
    for r, events in zip(records, attacker.events):
        if r.choices[1] is not None:
            assert r.agreed and r.choices[0] == complement(r.choices[1], r.scenario.counts)
        said = [list(m.tokens) for m in r.messages if m.speaker == "a"]
        for e in events:
            assert e.turn >= 1
            if e.kind in ("reactive", "preemptive") and e.success:
                assert e.message in said
            if e.kind == "transfer":
                assert e.message in pool and e.message in said
        if method == "none":
            assert not events
    if method in ("reactive", "preemptive", "transfer"):
        assert all(sum(e.kind == method for e in ev) <= 1 for ev in attacker.events)  # one fixed-turn attack


def test_attack_agent_checks_its_inputs(model: DialogModel) -> None:
    sp = RnnAgent(model)
    with pytest.raises(ValueError, match="unknown attack"):
        AttackAgent(sp, None, method="magic")
    with pytest.raises(ValueError, match="white-box"):
        AttackAgent(sp, None, method="reactive")
    with pytest.raises(ValueError, match="transfer sentences"):
        AttackAgent(sp, RnnAgent(model), method="ra-pa-ta")
    with pytest.raises(ValueError, match="kappa"):
        CandidateScorer(model, _after_one_turn(model, 2)[1].snapshot([0, 1]), synthetic_scenarios(2), kappa=0)


@pytest.mark.parametrize("cap_rule", ["no-deal", "force-selection"])
def test_forced_agreement_closes_capped_games_only_when_asked(model: DialogModel, cap_rule: str) -> None:
    scen = synthetic_scenarios(12, seed=4)
    a, b = RnnAgent(model, name="a", seed=0), RnnAgent(model, name="b", seed=1)
    close = cap_rule == "force-selection"
    records = play(a, b, scen, complement="a", max_turns=1, cap_rule=cap_rule)  # type: ignore[arg-type]
    capped = [r for r in records if not r.selected]
    assert capped
    for r in capped:
        assert r.agreed == (close and r.choices[1] is not None)
        if not r.agreed:
            assert r.scores == (0, 0)
    plain = play(RnnAgent(model, seed=0), RnnAgent(model, seed=1), scen, max_turns=1)
    assert not any(r.agreed for r in plain if not r.selected)
    forced = play(RnnAgent(model, seed=0), RnnAgent(model, seed=1), scen, max_turns=1, cap_rule="force-selection")
    assert [r.scores for r in forced if r.selected] == [r.scores for r in plain if r.selected]
    with pytest.raises(ValueError, match="cap_rule"):
        play(RnnAgent(model, seed=0), RnnAgent(model, seed=1), scen, cap_rule="stop")  # type: ignore[arg-type]


def test_transfer_sentences_come_from_winning_games(model: DialogModel) -> None:
    scen = synthetic_scenarios(30, seed=5)
    pool = collect_transfer_sentences(model, model, scen, min_advantage=1)
    assert pool and all(s[-1] == "<eos>" and len(s) > 1 for s in pool)
    assert len({tuple(s) for s in pool}) == len(pool)
    with pytest.raises(ValueError, match="advantage"):
        collect_transfer_sentences(model, model, scen[:2], min_advantage=11)


def test_run_attack_resumes_and_summarises(model: DialogModel, trained: Path, tmp_path: Path) -> None:
    scen = synthetic_scenarios(12, seed=6)
    kw = {"target": model, "speaker": model, "scenarios": scen, "batch_size": 4, "seed": 3, "progress": False}
    full = run_attack("reactive", **kw)  # type: ignore[arg-type]
    out = tmp_path / "r.jsonl"
    run_attack("reactive", out_jsonl=out, **{**kw, "scenarios": scen[:4]})  # type: ignore[arg-type]
    assert len(out.read_text().splitlines()) == 4
    resumed = run_attack("reactive", out_jsonl=out, **kw)  # type: ignore[arg-type]
    strip = [{k: v for k, v in g.items() if k != "seconds"} for g in resumed]
    assert strip == [{k: v for k, v in g.items() if k != "seconds"} for g in full]
    s = summarize_games(resumed)
    assert s["games"] == 12 and 0 <= s["par"] <= 1 and s["agreement"] <= 1
    assert s["advantage"] == pytest.approx(s["score_attacker"] - s["score_target"])
    with pytest.raises(ValueError, match="another scenario"):
        run_attack("reactive", out_jsonl=out, **{**kw, "scenarios": synthetic_scenarios(12, seed=7)})  # type: ignore[arg-type]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        run_attack("none", out_jsonl=bad, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown attack"):
        run_attack("magic", **kw)  # type: ignore[arg-type]


def test_rl_attacker_reward_is_the_advantage_under_forced_agreement(model: DialogModel) -> None:
    attacker = DialogModel(model.words, model.items, model.config)
    attacker.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(attacker.parameters(), lr=0.1)
    cfg = tiny_rl(reward="advantage", complement=True, max_words=8)
    stats = reinforce_update(attacker, model, synthetic_scenarios(8, seed=8), cfg=cfg, optimizer=opt,
                               baseline=RewardBaseline(n=2, total=2.0, total_sq=10.0), seed=0)
    assert stats.reward == pytest.approx(sum(r.scores[0] - r.scores[1] for r in stats.records) / 8)
    assert all(r.agreed for r in stats.records if r.choices[1] is not None)


def _two_untrained_agents(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A target and an attacker, initialised differently: the templated model always ends its games the same way
    (equal rewards, no policy gradient), these vary."""
    out = []
    for seed, name in ((0, "t0"), (1, "a0")):
        torch.manual_seed(seed)
        DialogModel(DialogModel.from_pretrained(trained).words, config=TINY).save_pretrained(tmp_path / name)
        out.append(tmp_path / name)
    return out[0], out[1]


def test_one_adversarial_training_round_changes_both_models(trained: Path, tmp_path: Path) -> None:
    # no supervised batches: one at lr 0.5 on the templated dialogues collapses these untrained targets' choice
    # to "nothing", after which every attacker game scores the same (no policy gradient)
    cfg = AT.AdvTrainConfig(rounds=1, target_updates=2, attacker_updates=4, batch_size=8, eval_scenarios=6,
                            sv_every=0)
    exs = synthetic_examples(40)
    trained_target, trained_attacker = _two_untrained_agents(trained, tmp_path)
    out = AT.adversarial_training(trained_target, trained_attacker, tmp_path / "adv", cfg,
                                  scenarios=synthetic_scenarios(20), eval_scenarios=synthetic_scenarios(6, seed=9),
                                  train=exs, device="cpu",
                                  progress=False)
    ckpt = out / CHECKPOINT_DIR
    for side, first in (("target", trained_target), ("attacker", trained_attacker)):
        start = DialogModel.from_pretrained(first).state_dict()
        after = DialogModel.from_pretrained(ckpt / side).state_dict()
        assert any(not torch.equal(after[k], start[k]) for k in start), side
    log = AT.read_log(out)
    assert [r["round"] for r in log] == [0, 1] and "advantage" in log[1]["eval"]
    assert AT.is_complete(out)
    state = json.loads((ckpt / STATE_FILE).read_text())
    assert state["done"] and state["round"] == 1
    # a finished run is returned as is; other settings in the same folder are refused
    assert AT.adversarial_training(trained_target, trained_attacker, out, cfg, scenarios=synthetic_scenarios(20),
                                   eval_scenarios=synthetic_scenarios(6, seed=9), train=exs, device="cpu",
                                   progress=False) == out
    with pytest.raises(ValueError, match="other settings"):
        AT.adversarial_training(trained_target, trained_attacker, out, AT.AdvTrainConfig(rounds=2, target_updates=2,
                                attacker_updates=2, batch_size=4, eval_scenarios=6, sv_every=4),
                                scenarios=synthetic_scenarios(20), eval_scenarios=synthetic_scenarios(6, seed=9),
                                train=exs, device="cpu", progress=False)


def test_adversarial_training_with_normal_rule_updates_keeps_an_agreeing_target(trained: Path, tmp_path: Path) -> None:
    exs = synthetic_examples(40)
    starts = _two_untrained_agents(trained, tmp_path)
    kw = {"scenarios": synthetic_scenarios(20), "eval_scenarios": synthetic_scenarios(6, seed=9), "train": exs,
          "device": "cpu", "progress": False}
    cfg = AT.AdvTrainConfig(rounds=2, target_updates=2, attacker_updates=2, normal_updates=3, batch_size=4,
                            eval_scenarios=6, sv_every=4, min_agreement=0.5, patience=2)
    with pytest.raises(ValueError, match="normal_updates > 0 needs partner_dir"):
        AT.adversarial_training(*starts, tmp_path / "x", cfg, **kw)  # type: ignore[arg-type]
    out = AT.adversarial_training(*starts, tmp_path / "adv", cfg, partner_dir=trained, **kw)  # type: ignore[arg-type]
    log = AT.read_log(out)
    assert [r["round"] for r in log] == [0, 1, 2]
    assert all(r["eval_normal"] is not None and 0 <= r["eval_normal"]["agreement"] <= 1 for r in log)
    assert all(r["normal_reward"] is not None for r in log[1:])
    state = json.loads((out / CHECKPOINT_DIR / STATE_FILE).read_text())
    eligible = [r for r in log if r["eval_normal"]["agreement"] >= 0.5]
    if eligible:  # the kept round: the lowest attacker advantage among the rounds that still agree
        best = min(eligible, key=lambda r: (r["eval"]["advantage"], r["round"]))
        assert state["best_round"] == best["round"]
        assert state["best_advantage"] == pytest.approx(best["eval"]["advantage"])
    else:
        assert state["best_round"] is None


def test_preemptive_validation_on_fresh_replies(model: DialogModel) -> None:
    a, b, scen = _after_one_turn(model, n=8, seed=2)
    games = list(range(len(scen)))
    drafts = [d if len(d) > 1 else ["i", "want", "the", "hats", "<eos>"] for d in a.draft(games)]
    # a greedy target replies deterministically: every fresh reply is the searched one
    greedy = CandidateScorer(model, b.snapshot(games), [s.first for s in scen], kappa=0.5, temperature=0.0)
    plain = greedy_attack(greedy, drafts, "preemptive")
    checked = greedy_attack(greedy, drafts, "preemptive", validate=4)
    assert checked.success == plain.success and checked.win_rate is not None
    assert all(r in (0.0, 1.0) for r in checked.win_rate)
    assert [r == 1.0 for r in checked.win_rate] == [x < 0 for x in plain.loss]
    # a sampling target: success needs at least half of the fresh replies to favour the attacker
    sampled = CandidateScorer(model, b.snapshot(games), [s.first for s in scen], kappa=0.5, temperature=1.0)
    res = greedy_attack(sampled, drafts, "preemptive", validate=6, min_win_rate=0.5)
    assert res.win_rate is not None
    for ok, loss, rate in zip(res.success, res.loss, res.win_rate):
        assert ok == (loss < 0 and rate >= 0.5)


def test_forced_selection_makes_the_agent_select_once(model: DialogModel) -> None:
    scen = synthetic_scenarios(3, seed=1)
    agent = RnnAgent(model, name="b", seed=0)
    agent.feed_context([s.second for s in scen])
    agent.force_selection([1])
    first = agent.write([0, 1, 2])
    assert first[1] == ["<selection>"] and agent.transcript(1)[-2:] == ["YOU:", "<selection>"]
    again = agent.write([1])  # only once
    assert again[0][-1] in ("<eos>", "<selection>") and len(agent.transcript(1)) > 2 + len(again[0])
    with pytest.raises(IndexError):
        agent.force_selection([7])


def test_released_code_protocol_ends_the_game_after_a_successful_reactive_edit(model: DialogModel) -> None:
    scen = synthetic_scenarios(40, seed=6)
    target = RnnAgent(model, name="target", seed=1)
    attacker = AttackAgent(RnnAgent(model, name="adv", seed=2), target, method="ra-pa-da", start_turn=0,
                           protocol="released-code", objective="advantage", passes=3)
    records = play(attacker, target, scen, complement="a")
    hits = 0
    for r, events in zip(records, attacker.events):
        won = [e for e in events if e.kind == "reactive" and e.success]
        if won:  # the edited message, then the target's <selection>, and nothing after
            hits += 1
            said = [list(m.tokens) for m in r.messages]
            k = said.index(won[0].message)
            assert said[k + 1 :] == [["<selection>"]] and r.messages[k + 1].speaker == "b" and r.selected
    assert hits > 0
    with pytest.raises(ValueError, match="unknown protocol"):
        AttackAgent(RnnAgent(model), target, method="reactive", protocol="loose")  # type: ignore[arg-type]


def test_advantage_objective_prefers_larger_advantages(model: DialogModel) -> None:
    a, b, scen = _after_one_turn(model, n=8)
    games = list(range(len(scen)))
    drafts = [d if len(d) > 1 else ["i", "want", "the", "hats", "<eos>"] for d in a.draft(games)]
    hinge = CandidateScorer(model, b.snapshot(games), [s.first for s in scen], kappa=0.5)
    adv = CandidateScorer(model, b.snapshot(games), [s.first for s in scen], kappa=0.5, objective="advantage",
                          adv_weight=0.2)
    ids, lens = _ids(model, drafts)
    everyone = torch.arange(len(games))
    h, v = hinge.score(everyone, ids, lens, "preemptive"), adv.score(everyone, ids, lens, "preemptive")
    assert torch.equal(h.loss < 0, v.loss < 0)  # the same successes
    assert bool((v.loss <= h.loss + 1e-6)[h.loss < 0].all())  # a success scores lower by its advantage
    for passes in (2, 3):
        res = greedy_attack(adv, drafts, "reactive", max_changes=2, passes=passes)
        for d, m in zip(drafts, res.messages):
            assert sum(x != y for x, y in zip(d, m)) <= 2
    with pytest.raises(ValueError, match="objective"):
        CandidateScorer(model, b.snapshot(games), [s.first for s in scen], objective="score")  # type: ignore[arg-type]


def test_rollout_agent_with_one_candidate_writes_what_the_agent_would(model: DialogModel) -> None:
    from negotiation.agents import RolloutAgent

    scen = synthetic_scenarios(12, seed=8)
    plain = play(RnnAgent(model, name="a", seed=3), RnnAgent(model, name="b", seed=4), scen)
    planned = play(RolloutAgent(RnnAgent(model, name="a", seed=3), candidates=1, rollouts=1, rollout_turns=0),
                   RnnAgent(model, name="b", seed=4), scen)
    assert planned == plain


def test_rollout_agent_plans_in_chunks_and_plays_full_games(model: DialogModel) -> None:
    from negotiation.agents import RolloutAgent

    scen = synthetic_scenarios(10, seed=9)
    agent = RolloutAgent(RnnAgent(model, name="a", seed=3), candidates=4, rollouts=3, rollout_turns=4, max_rows=24)
    records = play(agent, RnnAgent(model, name="b", seed=4), scen, max_turns=6)
    assert len(records) == 10
    for r in records:
        assert all(m.tokens[-1] in ("<eos>", "<selection>") for m in r.messages)
        if r.agreed:
            assert r.scores[0] == score(r.choices[0], r.scenario.first.values)
    with pytest.raises(ValueError, match="candidates and rollouts"):
        RolloutAgent(RnnAgent(model), candidates=0)
