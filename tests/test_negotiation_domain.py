"""Rules of the Deal-or-No-Deal game, checked exhaustively on small cases."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest

from negotiation import domain as D
from negotiation.corpus import load_scenarios
from negotiation.domain import Context, Scenario

# Hand-made contexts (not corpus lines): counts (1, 1, 3).
A = Context((1, 1, 3), (4, 3, 1))  # 4 + 3 + 3 = 10
B = Context((1, 1, 3), (0, 1, 3))  # 0 + 1 + 9 = 10
GAME = Scenario(A, B)


def test_constants() -> None:
    assert D.MAX_TURNS == 10
    assert D.ITEMS == ("book", "hat", "ball")
    assert D.SELECTION_LENGTH == 6 and D.CONTEXT_LENGTH == 6
    assert D.NO_DEAL_TOKENS == ("<disagree>", "<no_agreement>", "<disconnect>")


@pytest.mark.parametrize("counts", list(itertools.product(range(5), repeat=3)))
def test_split_enumeration(counts: tuple[int, int, int]) -> None:
    splits = D.enumerate_splits(counts)
    assert len(splits) == math.prod(c + 1 for c in counts) == D.num_splits(counts)
    assert len(set(splits)) == len(splits)
    assert all(0 <= t <= c for s in splits for t, c in zip(s, counts))
    assert splits[0] == (0, 0, 0) and splits[-1] == tuple(counts)
    assert splits == sorted(splits)  # item0 varies slowest, as FAIR's generate_choices


@pytest.mark.parametrize("counts", [(1, 1, 3), (2, 2, 2), (4, 2, 1), (1, 0, 2)])
def test_agreement_only_for_complementary_selections(counts: tuple[int, int, int]) -> None:
    vals_a = (1, 2, 3)
    splits = D.enumerate_splits(counts)
    for mine, theirs in itertools.product(splits, splits):
        complementary = all(x + y == c for x, y, c in zip(mine, theirs, counts))
        assert D.is_agreement(mine, theirs, counts) is complementary
        assert (D.complement(mine, counts) == theirs) is complementary
    for mine in splits:
        assert D.complement(D.complement(mine, counts), counts) == mine
        assert D.score(mine, vals_a) == sum(t * v for t, v in zip(mine, vals_a))
        assert not D.is_agreement(mine, None, counts) and not D.is_agreement(None, mine, counts)
    assert not D.is_agreement(None, None, counts)


def test_score_selections_exhaustive() -> None:
    splits = D.enumerate_splits(GAME.counts)
    assert len(splits) == 2 * 2 * 4
    for first, second in itertools.product([*splits, None], [*splits, None]):
        out = D.score_selections(first, second, GAME)
        if first is not None and second is not None and D.complement(first, GAME.counts) == second:
            assert out.agreed
            assert out.scores == (D.score(first, A.values), D.score(second, B.values))
        else:
            assert out == D.Outcome(False, (0, 0))
    # worked example: A takes book + hat, B takes the balls
    assert D.score_selections((1, 1, 0), (0, 0, 3), GAME) == D.Outcome(True, (7, 9))
    assert D.score_selections((1, 1, 0), (0, 0, 2), GAME) == D.Outcome(False, (0, 0))  # one ball left over
    assert D.score_selections((1, 1, 1), (0, 0, 3), GAME) == D.Outcome(False, (0, 0))  # both claim a ball


def test_pareto_hand_computed() -> None:
    # A values book 4, hat 3, ball 1; B values book 0, hat 1, ball 3. The book always goes to A (free for B);
    # then A's hat before any ball. Scores (A, B): (1,0,0) 4/10, (1,1,0) 7/9, (1,1,1) 8/6, (1,1,2) 9/3, (1,1,3) 10/0.
    frontier = [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 1, 2), (1, 1, 3)]
    assert D.pareto_frontier(GAME) == frontier
    assert not D.is_pareto_optimal((0, 1, 0), GAME)  # 3/9, dominated by (1,1,0) 7/9
    assert not D.is_pareto_optimal((1, 0, 1), GAME)  # 5/7, dominated by (1,1,0)
    assert not D.is_pareto_optimal((0, 0, 0), GAME)  # 0/10, dominated by (1,0,0) 4/10
    assert [s for s in D.enumerate_splits(GAME.counts) if D.is_pareto_optimal(s, GAME)] == frontier


def test_pareto_properties_on_random_scenarios() -> None:
    rng = random.Random(0)
    for _ in range(30):
        game = D.random_scenario(rng)
        frontier = set(D.pareto_frontier(game))
        counts = game.counts

        def pair(s: tuple[int, ...], g: Scenario = game, c: tuple[int, ...] = counts) -> tuple[int, int]:
            return g.first.score(s), g.second.score(D.complement(s, c))

        best = max(D.enumerate_splits(counts), key=lambda s: sum(pair(s)))
        assert best in frontier  # a max-welfare split is never dominated
        for s in D.enumerate_splits(counts):
            a, b = pair(s)
            dominated = any(x >= a and y >= b and (x, y) != (a, b) for x, y in map(pair, frontier))
            assert (s not in frontier) is dominated


@pytest.mark.parametrize(
    ("counts", "values", "message"),
    [
        ((1, 1), (4, 3), "3 item counts"),
        ((1, 1, 3), (4, 3), "3 item values"),
        ((0, 2, 3), (1, 1, 2), "each be 1..4"),
        ((5, 1, 1), (1, 2, 3), "each be 1..4"),
        ((1, 1, 1), (4, 3, 3), "total item count must be 5..7"),
        ((4, 4, 1), (1, 1, 2), "total item count must be 5..7"),
        ((1, 1, 3), (4, 3, 2), "worth 10 in total"),
        ((1, 4, 1), (4, 2, 4), "worth 10 in total"),  # the values sum to 10 but the items are worth 16
        ((1, 1, 3), (4, -1, 2), "integers 0..10"),
        ((1, 1, 3), (11, 0, 0), "integers 0..10"),
        ((1, 1, 3), (4.0, 3, 1), "integers 0..10"),
    ],
)
def test_context_validation(counts: tuple[int, ...], values: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Context(counts, values)


def test_context_tokens() -> None:
    ctx = Context.from_tokens("1 4 4 1 1 2")  # values sum to 7, but 1x4 + 4x1 + 1x2 = 10
    assert ctx.counts == (1, 4, 1) and ctx.values == (4, 1, 2)
    assert ctx.to_tokens() == "1 4 4 1 1 2".split()
    assert Context.from_ints(ctx.to_ints()) == ctx
    with pytest.raises(ValueError, match="odd number"):
        Context.from_tokens("1 4 4 1 1")
    with pytest.raises(ValueError, match="must be integers"):
        Context.from_tokens("1 4 four 1 1 2")
    with pytest.raises(ValueError, match="3 count/value pairs"):
        Context.from_tokens("1 4 4 1 1 2 1 0")
    with pytest.raises(ValueError, match="same item counts"):
        Scenario(A, Context((1, 2, 2), (2, 2, 2)))


def test_bad_splits() -> None:
    with pytest.raises(ValueError, match="0..1"):
        D.complement((2, 0, 0), (1, 1, 3))
    with pytest.raises(ValueError, match="3 item amounts"):
        D.is_agreement((1, 0), (0, 1), (1, 1, 3))
    with pytest.raises(ValueError, match="non-negative"):
        D.enumerate_splits((1, -1, 2))
    with pytest.raises(ValueError, match="0..3"):
        D.score((0, 0, 4), A.values, A.counts)


def test_choice_tokens() -> None:
    assert len(D.CHOICE_TOKENS) == 3 * 5 + 3 and len(set(D.CHOICE_TOKENS)) == len(D.CHOICE_TOKENS)
    assert D.choice_tokens((1, 0, 2), (1, 1, 3)) == "item0=1 item1=0 item2=2 item0=0 item1=1 item2=1".split()
    assert D.choice_tokens(None, (1, 1, 3)) == ["<no_agreement>"] * 6
    assert D.choice_tokens(None, (1, 1, 3), no_deal="<disagree>") == ["<disagree>"] * 6
    choices = D.enumerate_choices((1, 1, 3))
    assert len(choices) == 16 + 1 and choices[-1] == ("<no_agreement>",) * 6
    fair = D.enumerate_choices((1, 1, 3), no_deal=(D.NO_AGREEMENT, D.DISCONNECT))
    assert len(fair) == 18 and fair[-1] == ("<disconnect>",) * 6
    for split in D.enumerate_splits((1, 1, 3)):
        toks = D.choice_tokens(split, (1, 1, 3))
        assert D.parse_split_tokens(toks[:3], (1, 1, 3)) == split
        assert D.parse_split_tokens(toks[3:], (1, 1, 3)) == D.complement(split, (1, 1, 3))
        assert all(t in D.CHOICE_TOKENS for t in toks)
    for tok in D.NO_DEAL_TOKENS:
        assert D.parse_split_tokens([tok] * 3) is None


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["item0=1", "item1=0"], "3 tokens"),
        (["item1=1", "item0=0", "item2=0"], "out of order"),
        (["item0=1", "item1=x", "item2=0"], "unknown selection token"),
        (["<disagree>", "<no_agreement>", "<disagree>"], "repeats one token"),
        (["item0=2", "item1=0", "item2=0"], "0..1"),
    ],
)
def test_bad_choice_tokens(tokens: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        D.parse_split_tokens(tokens, (1, 1, 3))


def test_all_contexts_and_random_scenarios() -> None:
    contexts = D.all_contexts()
    assert len(contexts) == 438 and len(set(contexts)) == 438
    rng1, rng2 = random.Random(7), random.Random(7)
    games = [D.random_scenario(rng1) for _ in range(50)]
    assert games == [D.random_scenario(rng2) for _ in range(50)]
    for g in games:
        assert all(a + b > 0 for a, b in zip(g.first.values, g.second.values))
        assert any(a > 0 and b > 0 for a, b in zip(g.first.values, g.second.values))


def test_parse_scenario_lines(tmp_path: Path) -> None:
    games = D.parse_scenario_lines(["1 4 1 3 3 1", "1 0 1 1 3 3", "", "2 1 2 2 1 4", "2 3 2 1 1 2"])
    assert games == [
        Scenario(Context((1, 1, 3), (4, 3, 1)), Context((1, 1, 3), (0, 1, 3))),
        Scenario(Context((2, 2, 1), (1, 2, 4)), Context((2, 2, 1), (3, 1, 2))),
    ]
    assert games[0].swapped() == Scenario(games[0].second, games[0].first)
    with pytest.raises(ValueError, match="3 context lines, expected an even number"):
        D.parse_scenario_lines(["1 4 1 3 3 1", "1 0 1 1 3 3", "1 0 1 1 3 3"])
    with pytest.raises(ValueError, match=r"<lines>:2: .*worth 10"):
        D.parse_scenario_lines(["1 4 1 3 3 1", "1 0 1 1 3 2"])
    path = tmp_path / "pairs.txt"
    path.write_text("1 4 1 3 3 1\n2 1 2 2 1 4\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:1-2: both sides must see the same item counts"):
        load_scenarios(path)
    with pytest.raises(FileNotFoundError, match="scenario file not found"):
        load_scenarios(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown scenario split 'train'"):
        load_scenarios("train", tmp_path)


def test_real_selfplay(negotiate_dir: Path) -> None:
    games = load_scenarios("selfplay", negotiate_dir.parent)
    lines = (negotiate_dir / "selfplay.txt").read_text().splitlines()
    assert len(games) == len(lines) // 2 == 4086
    assert len({frozenset(g.contexts) for g in games}) == 2215
    assert games[0] == Scenario(Context.from_tokens(lines[0]), Context.from_tokens(lines[1]))
    assert all(D.pareto_frontier(g) for g in games[:100])


def test_held_out_scenarios_are_disjoint_from_selfplay(negotiate_dir: Path) -> None:
    """test.txt's 200 games appear in neither selfplay.txt (the RL training games) nor val.txt."""
    key = frozenset
    selfplay = {key(g.contexts) for g in load_scenarios("selfplay", negotiate_dir.parent)}
    test = load_scenarios("test", negotiate_dir.parent)
    val = load_scenarios("val", negotiate_dir.parent)
    assert len(test) == len(val) == 200
    assert not {key(g.contexts) for g in test} & (selfplay | {key(g.contexts) for g in val})
    both = load_scenarios("test", negotiate_dir.parent, limit=3, both_orders=True)
    assert both == [s for g in test[:3] for s in (g, g.swapped())]
