"""The attack portfolio: the smallest success of its members, later members only where earlier ones fell short,
costs summed; and the same records rebuilt from the members' separate runs (how the recipes build its rows)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nlprobust.attacks import AttackItem, Portfolio, PortfolioConfig, build_attack, portfolio_preset, preset
from nlprobust.attacks.portfolio import best_of, done_enough, portfolio_records
from nlprobust.attacks.word_swap import WordSwapConfig
from nlprobust.synthetic import synthetic_corpus
from nlprobust.victims.opennmt import OpenNMTVictim

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

S2S_TINY = dict(iterations=60, lr=2.0, lr_late=None, lambda1=0.1, lambda2=0.0, epsilon=1.0)


def rec(index: int, attack: str, success: bool, changed: int, **extra: object) -> dict:
    return {"index": index, "attack": attack, "success": success, "changed": changed, "error": None,
            "forward_passes": 10, "backward_passes": 5, "beam_decodes": 2, "time_s": 0.5, "iterations": 3,
            "preset": f"{attack}-preset", **extra}


def test_best_of_keeps_the_fewest_words_and_sums_costs() -> None:
    out = best_of([rec(0, "word-swap", True, 3), rec(0, "seq2sick", True, 2)])
    assert (out["attack"], out["member"], out["changed"], out["preset"]) == ("portfolio", "seq2sick", 2,
                                                                            "seq2sick-preset")
    assert (out["forward_passes"], out["backward_passes"], out["beam_decodes"], out["time_s"]) == (20, 10, 4, 1.0)
    assert out["iterations"] == 3  # the kept member's own (iterations of different searches do not add up)
    # ties go to the earlier member; a failure never beats a success, whatever its size
    assert best_of([rec(0, "word-swap", True, 2), rec(0, "seq2sick", True, 2)])["member"] == "word-swap"
    assert best_of([rec(0, "word-swap", False, 1), rec(0, "seq2sick", True, 4)])["member"] == "seq2sick"
    none = best_of([rec(0, "word-swap", False, 1), rec(0, "seq2sick", False, 6)])
    assert not none["success"] and none["member"] == "word-swap"
    with pytest.raises(ValueError, match="different sentences"):
        best_of([rec(0, "word-swap", True, 1), rec(1, "seq2sick", True, 1)])
    with pytest.raises(ValueError, match="their source differ"):
        best_of([rec(0, "word-swap", True, 1, source="A"), rec(0, "seq2sick", True, 1, source="B")])
    # a cost a member did not record stays unknown; the kept member's search-only result is not the portfolio's
    unknown = best_of([rec(0, "word-swap", True, 2, beam_decodes=None), rec(0, "seq2sick", True, 1)])
    assert unknown["beam_decodes"] is None
    assert best_of([rec(0, "seq2sick", True, 1, before_reduction={"changed": 3})], "p")["before_reduction"] == {}
    assert best_of([rec(0, "seq2sick", True, 1)], "p")["preset"] == "p"
    with pytest.raises(ValueError, match="at least one"):
        best_of([])


def test_portfolio_records_use_later_members_only_where_needed() -> None:
    ws = [rec(0, "word-swap", True, 1), rec(1, "word-swap", True, 3), rec(2, "word-swap", False, 2),
          rec(3, "word-swap", False, 0, error="bad input"), rec(4, "word-swap", False, 1)]
    s2s = [rec(0, "seq2sick", True, 1), rec(1, "seq2sick", True, 2), rec(2, "seq2sick", True, 5),
           rec(3, "seq2sick", False, 0, error="bad input")]  # sentence 4 not attacked by Seq2Sick yet
    got = {r["index"]: r for r in portfolio_records([ws, s2s])}
    assert sorted(got) == [0, 1, 2, 3]  # 4 needs Seq2Sick's record
    assert got[0]["member"] == "word-swap" and got[0]["forward_passes"] == 10  # one word: Seq2Sick not run
    assert got[1]["member"] == "seq2sick" and got[1]["changed"] == 2 and got[1]["forward_passes"] == 20
    assert got[2]["member"] == "seq2sick" and got[2]["success"]
    assert got[3]["error"] == "bad input" and got[3]["forward_passes"] == 10
    assert done_enough(rec(0, "x", True, 2), 2) and not done_enough(rec(0, "x", True, 2), 1)
    with pytest.raises(ValueError, match="two records of sentence 0"):
        portfolio_records([ws[:1] * 2, s2s])


def test_config_checks_members_judge_the_same_goal() -> None:
    ws = WordSwapConfig(mode="nonoverlap")
    with pytest.raises(ValueError, match="criterion"):
        PortfolioConfig(mode="nonoverlap", members=(("word-swap", ws),), criterion="positional")
    with pytest.raises(ValueError, match="at least one member"):
        PortfolioConfig(mode="nonoverlap")
    with pytest.raises(ValueError, match="enough"):
        PortfolioConfig(mode="nonoverlap", members=(("word-swap", ws),), enough=0)
    cfg = portfolio_preset("multi30k-lstm", "keywords", criterion="at-least-as-long", beam_size=4)
    assert [n for n, _ in cfg.members] == ["word-swap", "seq2sick"]
    assert all(c.beam_size == 4 and c.mode == "keywords" for _, c in cfg.members)
    assert cfg.members[1][1].reduce and cfg.members[1][1].preset == "multi30k-lstm"
    assert cfg.tag() != portfolio_preset("multi30k-lstm", "keywords").tag()  # members' settings are hashed
    # through the members' own tags, which ignore options their class added later until they are set
    assert portfolio_preset("multi30k-lstm", "nonoverlap").tag() == PortfolioConfig(
        mode="nonoverlap", preset="multi30k-lstm",
        members=tuple((n, replace(c, repair=c.repair)) for n, c in portfolio_preset("multi30k-lstm", "nonoverlap")
                      .members)).tag()
    # members' settings, not ignored
    for setting in ({"epsilon": 1.0}, {"repair": 4}, {"reduce_lexicon": 8}, {"exchange": 8}, {"trade": 8},
                    {"swap_lexicon": 4}):
        with pytest.raises(ValueError, match="member's setting"):
            portfolio_preset("multi30k-lstm", "keywords", **setting)
    with pytest.raises(ValueError, match="unknown portfolio preset"):
        portfolio_preset("nope", "nonoverlap")


def test_portfolio_run_equals_its_members_records(tiny_victim: OpenNMTVictim) -> None:
    items = [AttackItem(i, s) for i, s in enumerate(synthetic_corpus(8, 11).src)]
    members = (("word-swap", WordSwapConfig(mode="nonoverlap", max_changes=2)),
               ("seq2sick", preset("paper", "nonoverlap", **S2S_TINY)))  # type: ignore[arg-type]
    alone = [[r.to_dict() for r in build_attack(n, tiny_victim, c).run(items, batch_size=8)] for n, c in members]
    # enough=99: every member attacks every sentence in the same batch as alone, so the results agree exactly
    every = Portfolio(tiny_victim, PortfolioConfig(mode="nonoverlap", members=members, enough=99)).run(items)
    expect = portfolio_records(alone, enough=99)
    for got, want in zip(every, expect):
        assert (got.success, got.changed, got.member, got.adversarial) == \
            (want["success"], want["changed"], want["member"], want["adversarial"])
        assert got.forward_passes == want["forward_passes"] and got.beam_decodes == want["beam_decodes"]
    assert any(r.success for r in every)
    best = [min((a["changed"] for a in pair if a["success"]), default=None) for pair in zip(*alone)]
    assert [r.changed if r.success else None for r in every] == best
    # enough=1: Seq2Sick only where the word swap found no one-word success
    with pytest.raises(ValueError, match="distinct item indices"):
        Portfolio(tiny_victim, PortfolioConfig(mode="nonoverlap", members=members)).run([items[0], items[0]])
    lazy = Portfolio(tiny_victim, PortfolioConfig(mode="nonoverlap", members=members)).run(items, batch_size=8)
    for r, w in zip(lazy, alone[0]):
        if w["success"] and w["changed"] == 1:
            assert r.member == "word-swap" and r.forward_passes == w["forward_passes"]
        else:
            assert r.forward_passes > w["forward_passes"]  # Seq2Sick ran too
