"""The dialogue loop: turn cap, first movers, batched vs one-at-a-time play, forced agreement, metrics,
transcripts; self-play of tiny RnnAgents."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import torch

from negotiation import corpus as C
from negotiation import dialog as G
from negotiation.agents import Agent, RnnAgent
from negotiation.domain import (
    MAX_TURNS,
    Context,
    Outcome,
    Scenario,
    Split,
    complement,
    enumerate_splits,
    is_pareto_optimal,
    random_scenario,
    score_selections,
)
from negotiation.model import DialogModel, DialogModelConfig

# Hand-made contexts (not corpus data).
A1, B1 = Context((1, 1, 3), (4, 3, 1)), Context((1, 1, 3), (0, 1, 3))
A2, B2 = Context((2, 2, 1), (1, 2, 4)), Context((2, 2, 1), (3, 0, 4))
GAME1, GAME2 = Scenario(A1, B1), Scenario(A2, B2)
TINY = DialogModelConfig(ctx_embed=8, ctx_hidden=8, word_embed=16, lang_hidden=12, attn_hidden=10, sel_hidden=12,
                         dropout=0.0)
WORDS = "i want the book hat balls you can have rest deal no ok".split()


class ScriptedAgent:
    """Writes ``say(context, turn_in_game)`` and chooses ``pick(context)``; logs every call."""

    def __init__(self, name: str, say, pick) -> None:  # type: ignore[no-untyped-def]
        self.name, self.say, self.pick = name, say, pick
        self.log: list[tuple[str, int, tuple[str, ...]]] = []
        self.outcomes: list[Outcome] = []

    def feed_context(self, contexts: Sequence[Context]) -> None:
        self.contexts = list(contexts)
        self.written = [0] * len(contexts)
        self.heard: list[list[tuple[str, ...]]] = [[] for _ in contexts]

    def write(self, games: Sequence[int]) -> list[list[str]]:
        out = []
        for g in games:
            out.append(list(self.say(self.contexts[g], self.written[g])))
            self.written[g] += 1
            self.log.append(("write", g, tuple(out[-1])))
        return out

    def read(self, games: Sequence[int], messages: Sequence[Sequence[str]]) -> None:
        for g, m in zip(games, messages):
            self.heard[g].append(tuple(m))
            self.log.append(("read", g, tuple(m)))

    def choose(self, games: Sequence[int] | None = None) -> list[Split | None]:
        games = range(len(self.contexts)) if games is None else games
        return [self.pick(self.contexts[g]) for g in games]

    def update(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = list(outcomes)


def chatter(ctx: Context, k: int) -> list[str]:
    return ["i", "want", "the", "book", "<eos>"]


def greedy_take(ctx: Context) -> Split:
    """Take every item I value."""
    return tuple(c if v else 0 for c, v in zip(ctx.counts, ctx.values))


def selects_after(n: int):  # type: ignore[no-untyped-def]
    return lambda ctx, k: ["<selection>"] if k >= n else ["deal", "<eos>"]


def test_scripted_agent_is_an_agent() -> None:
    assert isinstance(ScriptedAgent("x", chatter, greedy_take), Agent)
    assert isinstance(RnnAgent(DialogModel(C.Vocab([*C.SPECIAL_TOKENS, "hi"]), config=TINY)), Agent)


def test_turn_cap_without_selection_is_no_deal() -> None:
    # complementary choices, but nobody ever writes <selection>: the cap ends the game with no deal
    a = ScriptedAgent("a", chatter, lambda ctx: (1, 1, 0))
    b = ScriptedAgent("b", chatter, lambda ctx: (0, 0, 3))
    (rec,) = G.play(a, b, [GAME1])
    assert rec.turns == MAX_TURNS and not rec.selected and not rec.agreed and rec.scores == (0, 0)
    assert rec.choices == ((1, 1, 0), (0, 0, 3)) and rec.pareto is None
    assert [m.speaker for m in rec.messages] == ["a", "b"] * 5
    assert a.written == [5] and b.written == [5] and len(a.heard[0]) == 5
    assert a.outcomes == [Outcome(False, (0, 0))]
    (short,) = G.play(a, b, [GAME1], max_turns=3)
    assert short.turns == 3
    with pytest.raises(ValueError, match="max_turns"):
        G.play(a, b, [GAME1], max_turns=0)


def test_selection_ends_the_game_and_the_reader_sees_it() -> None:
    a = ScriptedAgent("a", selects_after(1), lambda ctx: (1, 1, 0))  # a: "deal", then <selection>
    b = ScriptedAgent("b", chatter, lambda ctx: (0, 0, 3))
    (rec,) = G.play(a, b, [GAME1], first="a")
    assert [m.tokens for m in rec.messages] == [("deal", "<eos>"), tuple(chatter(B1, 0)), ("<selection>",)]
    assert rec.selected and rec.turns == 3 and b.heard[0][-1] == ("<selection>",)
    assert rec.choices == ((1, 1, 0), (0, 0, 3)) and rec.agreed
    assert rec.scores == score_selections(*rec.choices, GAME1).scores == (7, 9)
    assert rec.pareto is is_pareto_optimal((1, 1, 0), GAME1)
    assert a.outcomes == [Outcome(True, (7, 9))] and b.outcomes == [Outcome(True, (9, 7))]
    # mismatched choices after <selection>: no agreement
    c = ScriptedAgent("c", chatter, greedy_take)  # takes the hat and the balls, as a wants the hat
    (rec,) = G.play(a, c, [GAME1], first="a")
    assert rec.selected and not rec.agreed and rec.scores == (0, 0)


def test_first_movers() -> None:
    assert G.first_movers(5, "alternate") == ["a", "b", "a", "b", "a"]
    assert G.first_movers(3, "b") == ["b"] * 3
    rnd = G.first_movers(200, "random", seed=1)
    assert rnd == G.first_movers(200, "random", seed=1) and {"a", "b"} == set(rnd)
    assert G.first_movers(2, ["b", "a"]) == ["b", "a"]
    with pytest.raises(ValueError, match="first must be"):
        G.first_movers(2, "alice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs 2 entries"):
        G.first_movers(2, ["a"])
    a = ScriptedAgent("a", chatter, greedy_take)
    b = ScriptedAgent("b", chatter, greedy_take)
    recs = G.play(a, b, [GAME1, GAME2, GAME1], max_turns=4)
    assert [[m.speaker for m in r.messages] for r in recs] == [list("abab"), list("baba"), list("abab")]
    assert [r.first for r in recs] == ["a", "b", "a"]


def _mixed_agents() -> tuple[ScriptedAgent, ScriptedAgent]:
    """Games of different lengths: a selects after a context-dependent number of its own turns."""
    def say_a(ctx: Context, k: int) -> list[str]:
        return ["<selection>"] if k >= ctx.values[0] % 4 else ["i", "want", "the", "hat", "<eos>"]

    def say_b(ctx: Context, k: int) -> list[str]:
        return ["no", "<eos>"] if ctx.values[2] % 3 else ["ok", "<eos>"]

    return ScriptedAgent("a", say_a, greedy_take), ScriptedAgent("b", say_b, lambda ctx: (0,) * 3)


def test_batched_play_equals_one_game_at_a_time() -> None:
    rng = random.Random(0)
    scenarios = [random_scenario(rng) for _ in range(40)]
    a, b = _mixed_agents()
    batched = G.play(a, b, scenarios, first="random", seed=3)
    single = G.play(a, b, scenarios, first="random", seed=3, batch_size=1)
    chunks = G.play(a, b, scenarios, first="random", seed=3, batch_size=7)
    assert batched == single == chunks
    assert len({r.turns for r in batched}) > 2 and any(r.selected for r in batched)
    for r in batched:  # per-game bookkeeping
        assert r.turns <= MAX_TURNS and (r.selected == (r.messages[-1].tokens[-1] == "<selection>"))
        expected = score_selections(*r.choices, r.scenario) if r.selected else Outcome(False, (0, 0))
        assert (r.agreed, r.scores) == (expected.agreed, expected.scores)
        speakers = [m.speaker for m in r.messages]
        assert speakers[0] == r.first and all(x != y for x, y in zip(speakers, speakers[1:]))


def test_forced_agreement_switch() -> None:
    a = ScriptedAgent("a", selects_after(0), lambda ctx: pytest.fail("the complement side must not choose"))
    b = ScriptedAgent("b", chatter, greedy_take)
    (rec,) = G.play(a, b, [GAME1], complement="a", first="b")
    assert rec.choices == (complement(greedy_take(B1), GAME1.counts), greedy_take(B1)) and rec.agreed
    nodeal = ScriptedAgent("n", chatter, lambda ctx: None)
    (rec,) = G.play(a, nodeal, [GAME1], complement="a")
    assert rec.choices == (None, None) and not rec.agreed
    with pytest.raises(ValueError, match="complement"):
        G.play(a, b, [GAME1], complement="c")  # type: ignore[arg-type]


def test_bad_messages_and_agents_are_refused() -> None:
    good = ScriptedAgent("good", chatter, greedy_take)
    for msg, problem in ((["hello"], "must end with"), ([], "must end with"),
                         (["<eos>", "hi", "<eos>"], "may only end")):
        bad = ScriptedAgent("bad", lambda ctx, k, m=msg: m, greedy_take)
        with pytest.raises(ValueError, match=f"agent 'bad' wrote .*{problem}"):
            G.play(bad, good, [GAME1])
    with pytest.raises(ValueError, match="same object"):
        G.play(good, good, [GAME1])


def _record(scores: tuple[int, int], agreed: bool, pareto: bool | None, turns: int) -> G.GameRecord:
    msgs = tuple(G.Message("ab"[i % 2], ("ok", "<eos>")) for i in range(turns - 1)) + (
        G.Message("ab"[(turns - 1) % 2], ("<selection>",)),)
    return G.GameRecord(GAME1, "a", msgs, ((1, 1, 0), (0, 0, 3)) if agreed else (None, None), agreed, scores,
                        True, pareto)


def test_selfplay_metrics_on_hand_made_records() -> None:
    recs = [_record((7, 9), True, True, 3), _record((10, 2), True, False, 5), _record((0, 0), False, None, 4),
            _record((6, 4), True, True, 2)]
    m = G.selfplay_metrics(recs)
    assert m.games == 4
    assert m.score_a == pytest.approx(23 / 4) and m.score_b == pytest.approx(15 / 4)
    assert m.advantage == pytest.approx((-2 + 8 + 0 + 2) / 4)
    assert m.agreement == pytest.approx(0.75) and m.par == pytest.approx(0.5)  # 10>2 and 6>4; 0=0 is not
    assert m.pareto == pytest.approx(2 / 3) and m.turns == pytest.approx(3.5)
    assert m.score_a_agreed == pytest.approx(23 / 3) and m.selected == 1.0
    assert m.to_dict()["par"] == m.par
    none = G.selfplay_metrics([_record((0, 0), False, None, 1)])
    assert none.pareto is None and none.score_a_agreed is None and none.agreement == 0.0
    with pytest.raises(ValueError, match="no game records"):
        G.selfplay_metrics([])


def test_format_game_like_thesis_table_3_9() -> None:
    a = ScriptedAgent("a", selects_after(1), lambda ctx: (1, 1, 0))
    b = ScriptedAgent("b", lambda ctx, k: ["you", "can", "have", "the", "book", "<eos>"], lambda ctx: (0, 0, 3))
    (rec,) = G.play(a, b, [GAME1])
    text = G.format_game(rec, ("Human", "Agent"))
    assert text.splitlines() == [
        "Input",
        "  Human  1xbook value 4  1xhat value 3  3xball value 1",
        "  Agent  1xbook value 0  1xhat value 1  3xball value 3",
        "Dialogue",
        "  Human  deal",
        "  Agent  you can have the book",
        "  Human  <selection>",
        "Output                 Reward",
        "  Human  1xbook 1xhat  7/10",
        "  Agent  3xball        9/10",
    ]
    assert rec.to_dict()["messages"][0] == ["a", "deal <eos>"]
    (capped,) = G.play(ScriptedAgent("a", chatter, greedy_take), b, [GAME1], max_turns=2)
    assert "turn cap reached" in G.format_game(capped) and "0/10" in G.format_game(capped)
    assert G.describe_take((0, 0, 0)) == "nothing" and G.describe_take(None) == "no deal"


def _tiny_agents(temperature: float) -> tuple[RnnAgent, RnnAgent]:
    torch.manual_seed(0)
    words = C.Vocab([*C.SPECIAL_TOKENS, *WORDS], specials=C.SPECIAL_TOKENS)
    model = DialogModel(words, config=TINY).eval()
    with torch.no_grad():  # make <selection> likely enough that games end at different turns
        model.word_embed.weight[model.sel_id] *= 8.0
    return (RnnAgent(model, name="a", temperature=temperature, max_words=8, seed=0),
            RnnAgent(model, name="b", temperature=temperature, max_words=8, seed=1))


def test_rnn_selfplay_is_consistent() -> None:
    a, b = _tiny_agents(0.5)
    rng = random.Random(1)
    scenarios = [random_scenario(rng) for _ in range(24)]
    recs = G.play(a, b, scenarios)
    lps_a, n_a = a.written_logprobs()
    lps_b, n_b = b.written_logprobs()
    for g, r in enumerate(recs):
        assert 1 <= r.turns <= MAX_TURNS
        for side, agent in (("a", a), ("b", b)):
            own = [m.tokens for m in r.messages if m.speaker == side]
            assert int((n_a if side == "a" else n_b)[g]) == sum(len(m) for m in own)
            assert agent.transcript(g).count("YOU:") == len(own)
        for choice, ctx in zip(r.choices, r.scenario.contexts):
            assert choice is None or choice in enumerate_splits(ctx.counts)
        expected = score_selections(*r.choices, r.scenario) if r.selected else Outcome(False, (0, 0))
        assert (r.agreed, r.scores) == (expected.agreed, expected.scores)
    assert (lps_a <= 0).all() and a.choice_logprobs.shape == (24,) and (a.choice_logprobs <= 0).all()
    assert a.outcomes is not None and [o.scores for o in a.outcomes] == [r.scores for r in recs]
    assert len({r.turns for r in recs}) > 1
    m = G.selfplay_metrics(recs)
    assert 0 <= m.agreement <= 1 and m.games == 24


def test_greedy_rnn_play_is_the_same_batched_or_one_at_a_time() -> None:
    a, b = _tiny_agents(0.0)
    rng = random.Random(2)
    scenarios = [random_scenario(rng) for _ in range(12)]
    batched = G.play(a, b, scenarios)
    single = G.play(a, b, scenarios, batch_size=1)
    assert [r.messages for r in batched] == [r.messages for r in single]
    assert [r.choices for r in batched] == [r.choices for r in single]
    speed = G.benchmark_play(a, b, scenarios[:4], batch_size=4)
    assert speed["games"] == 4 and speed["batched_per_s"] > 0 and speed["one_at_a_time_per_s"] > 0
