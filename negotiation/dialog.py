"""The one dialogue loop of the project (self-play, RL, attacks): B games in parallel, turn cap, metrics.

:func:`play` runs every scenario between side A (``scenario.first``'s context) and side B
(``scenario.second``'s), ``batch_size`` games at a time (``batch_size=1`` is the one-at-a-time mode):

1. Both agents get their contexts (:meth:`~negotiation.agents.Agent.feed_context`).
2. Turn ``t = 0, 1, ...``: in each game still running, the side whose turn it is writes one message and the
   other side reads it. The first mover of each game is set by ``first``; sides then alternate. Games whose
   writer at turn ``t`` is A are handled in one batched ``write``/``read`` call, those whose writer is B in
   another, so games of different lengths simply drop out of later calls.
3. A game ends when a message ends with ``<selection>`` (the other side has read it), or after ``max_turns``
   messages (thesis 3.2.1: 10; the ``<selection>`` message counts as a turn). A game that hits the cap
   without ``<selection>`` is a no deal: 0 for both, whatever they choose (unless forced agreement, below).
4. Both agents choose (what they take, or no deal) for every game; :func:`negotiation.domain.score_selections`
   decides agreement and scores. With ``complement="a"`` (or ``"b"``) that side does not choose but takes
   the complement of the other's choice (the AdvAgent attacker's forced agreement, thesis 3.2.2: "the deal
   always closes"); such a game closes at the cap too, on the other side's choice after the last message
   (``close_at_cap``, default on under forced agreement; off gives the plain cap rule).
5. Both agents get the outcomes from their own view (:meth:`~negotiation.agents.Agent.update`).

:func:`selfplay_metrics` summarises records (each side's score, agreement, PAR, advantage, Pareto
optimality, turns); :func:`format_game` prints a game like Table 3.9 of the thesis.

Deviation from FAIR: FAIR picks the first mover at random and never caps the turns; here ``first`` defaults
to ``"alternate"`` (game ``i`` starts with A when ``i`` is even), which balances first-mover advantage
deterministically, and the cap is enforced.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from tqdm.auto import tqdm

from negotiation.agents import Agent
from negotiation.corpus import EOS, SELECTION
from negotiation.domain import (
    ITEMS,
    MAX_TURNS,
    TOTAL_VALUE,
    Context,
    Outcome,
    Scenario,
    Split,
    is_pareto_optimal,
    score_selections,
)
from negotiation.domain import complement as complement_split

logger = logging.getLogger(__name__)

SIDES: tuple[str, str] = ("a", "b")
FirstMover = Literal["a", "b", "alternate", "random"]
CapRule = Literal["no-deal", "force-selection"]
CAP_RULES: tuple[str, ...] = ("no-deal", "force-selection")
#: the turn rule of Lewis et al.'s self-play as the thesis author's released code plays it: 20 messages, then
#: the writer at the cap is made to select (FAIR's own self-play has no cap)
FAIR_TURNS = 20
FAIR_CAP_RULE: CapRule = "force-selection"


class Message(NamedTuple):
    """One turn: the ``speaker`` side (``"a"`` or ``"b"``) and its tokens (ending ``<eos>``/``<selection>``)."""

    speaker: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class GameRecord:
    """One finished game.

    Attributes:
        scenario: A's context is ``scenario.first``, B's ``scenario.second``.
        first: the side that wrote the first message.
        messages: the transcript.
        choices: what A and B selected to take (None: no deal).
        agreed: whether the game ended with ``<selection>`` (or closed at the cap, see ``close_at_cap``) and the
            choices are complementary.
        scores: A's and B's scores (both 0 without agreement).
        selected: whether the game ended with ``<selection>`` (False: it hit the turn cap).
        pareto: whether the agreed deal is Pareto optimal (None without agreement).
    """

    scenario: Scenario
    first: str
    messages: tuple[Message, ...]
    choices: tuple[Split | None, Split | None]
    agreed: bool
    scores: tuple[int, int]
    selected: bool
    pareto: bool | None

    @property
    def turns(self) -> int:
        return len(self.messages)

    @property
    def advantage(self) -> int:
        """A's score minus B's."""
        return self.scores[0] - self.scores[1]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GameRecord:
        """The record back from :meth:`to_dict` (extra keys ignored)."""
        scenario = Scenario(Context.from_ints(d["contexts"][0]), Context.from_ints(d["contexts"][1]))
        messages = tuple(Message(s, tuple(t.split())) for s, t in d["messages"])
        choices = tuple(None if c is None else tuple(c) for c in d["choices"])
        return cls(scenario, d["first"], messages, choices, d["agreed"], tuple(d["scores"]),  # type: ignore[arg-type]
                   d["selected"], d["pareto"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (contexts as ``c0 v0 c1 v1 c2 v2`` lists)."""
        return {
            "contexts": [self.scenario.first.to_ints(), self.scenario.second.to_ints()],
            "first": self.first,
            "messages": [[m.speaker, " ".join(m.tokens)] for m in self.messages],
            "choices": [list(c) if c is not None else None for c in self.choices],
            "agreed": self.agreed,
            "scores": list(self.scores),
            "selected": self.selected,
            "pareto": self.pareto,
            "turns": self.turns,
        }


def first_movers(n: int, first: FirstMover | Sequence[str], *, seed: int = 0) -> list[str]:
    """The first mover (``"a"``/``"b"``) of each of ``n`` games: always A, always B, alternating (A in even
    games), seeded random, or an explicit list."""
    if isinstance(first, str):
        if first in SIDES:
            return [first] * n
        if first == "alternate":
            return [SIDES[i % 2] for i in range(n)]
        if first == "random":
            rng = random.Random(seed)
            return [rng.choice(SIDES) for _ in range(n)]
        raise ValueError(f"first must be 'a', 'b', 'alternate', 'random' or a list of sides, got {first!r}")
    out = list(first)
    if len(out) != n or any(f not in SIDES for f in out):
        raise ValueError(f"an explicit first-mover list needs {n} entries each 'a' or 'b', got {out[:10]}...")
    return out


def _check_message(agent: Agent, game: int, msg: Sequence[str]) -> tuple[str, ...]:
    toks = tuple(msg)
    if not toks or toks[-1] not in (EOS, SELECTION):
        raise ValueError(f"agent {agent.name!r} wrote {list(toks)} in game {game}; a message must end with "
                         f"{EOS} or {SELECTION}")
    if any(t in (EOS, SELECTION) for t in toks[:-1]):
        raise ValueError(f"agent {agent.name!r} wrote {list(toks)} in game {game}; {EOS}/{SELECTION} may only "
                         f"end a message")
    return toks


def _play_batch(agents: tuple[Agent, Agent], scenarios: Sequence[Scenario], firsts: Sequence[str], *,
                max_turns: int, complement_side: str | None, cap_rule: CapRule) -> list[GameRecord]:
    n = len(scenarios)
    agents[0].feed_context([s.first for s in scenarios])
    agents[1].feed_context([s.second for s in scenarios])
    messages: list[list[Message]] = [[] for _ in range(n)]
    selected = [False] * n
    active = list(range(n))
    for turn in range(max_turns):
        if not active:
            break
        for w in (0, 1):
            # side w writes at this turn in the games it opened when the turn is even, else in the others
            games = [g for g in active if (firsts[g] == SIDES[w]) == (turn % 2 == 0)]
            if not games:
                continue
            writer, reader = agents[w], agents[1 - w]
            written = writer.write(games)
            if len(written) != len(games):
                raise ValueError(f"agent {writer.name!r} wrote {len(written)} messages for {len(games)} games")
            msgs = [_check_message(writer, g, m) for g, m in zip(games, written)]
            reader.read(games, msgs)
            for g, m in zip(games, msgs):
                messages[g].append(Message(SIDES[w], m))
                selected[g] = m[-1] == SELECTION
        active = [g for g in active if not selected[g]]

    everyone = list(range(n))
    chosen: list[list[Split | None]] = [[], []]
    for s in (0, 1):
        if SIDES[s] != complement_side:
            chosen[s] = list(agents[s].choose(everyone))
            if len(chosen[s]) != n:
                raise ValueError(f"agent {agents[s].name!r} made {len(chosen[s])} choices for {n} games")
    if complement_side is not None:
        s = SIDES.index(complement_side)
        chosen[s] = [None if c is None else complement_split(c, sc.counts) for c, sc in zip(chosen[1 - s], scenarios)]

    records = []
    for g, sc in enumerate(scenarios):
        ca, cb = chosen[0][g], chosen[1][g]
        closes = selected[g] or cap_rule == "force-selection"
        out = score_selections(ca, cb, sc) if closes else Outcome(False, (0, 0))
        pareto = is_pareto_optimal(ca, sc) if out.agreed and ca is not None else None
        records.append(GameRecord(sc, firsts[g], tuple(messages[g]), (ca, cb), out.agreed, out.scores,
                                  selected[g], pareto))
    agents[0].update([Outcome(r.agreed, r.scores) for r in records])
    agents[1].update([Outcome(r.agreed, (r.scores[1], r.scores[0])) for r in records])
    return records


def play(agent_a: Agent, agent_b: Agent, scenarios: Sequence[Scenario], *, max_turns: int = MAX_TURNS,
         first: FirstMover | Sequence[str] = "alternate", seed: int = 0, batch_size: int | None = None,
         complement: Literal["a", "b"] | None = None, cap_rule: CapRule | None = None,
         progress: bool = False) -> list[GameRecord]:
    """Play every scenario between ``agent_a`` (``scenario.first``) and ``agent_b`` (``scenario.second``).

    Args:
        agent_a, agent_b: the two sides; the same object may not play both sides.
        scenarios: the games.
        max_turns: cap on messages per game (>= 1); what a game that reaches it without ``<selection>``
            scores is ``cap_rule``'s.
        first: who writes first in each game (:func:`first_movers`); the same for any ``batch_size``.
        seed: seed of ``first="random"``.
        batch_size: games played in parallel (None: all; 1: one at a time). Each chunk starts fresh agents'
            state with ``feed_context`` and ends with ``update``.
        complement: the side that does not choose but takes the complement of the other's choice.
        cap_rule: a game that hits the turn cap is a no deal (``"no-deal"``, the thesis's rule), or its writer
            is made to select and both sides choose (``"force-selection"``, the rule of the thesis author's
            released attack code, with its cap of 20 the closest to FAIR's uncapped self-play). Default:
            ``"force-selection"`` with ``complement``, else ``"no-deal"``.
        progress: show a progress bar over chunks.

    Returns:
        one :class:`GameRecord` per scenario, in order.
    """
    if agent_a is agent_b:
        raise ValueError("agent_a and agent_b are the same object; use two agents (they may share a model)")
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    if complement not in (None, *SIDES):
        raise ValueError(f"complement must be None, 'a' or 'b', got {complement!r}")
    if cap_rule is None:
        cap_rule = "force-selection" if complement is not None else "no-deal"
    if cap_rule not in CAP_RULES:
        raise ValueError(f"cap_rule must be one of {list(CAP_RULES)}, got {cap_rule!r}")
    scenarios = list(scenarios)
    firsts = first_movers(len(scenarios), first, seed=seed)
    size = batch_size or max(1, len(scenarios))
    records: list[GameRecord] = []
    starts = range(0, len(scenarios), size)
    for k in tqdm(starts, desc="dialogues", unit="batch", disable=not progress):
        records += _play_batch((agent_a, agent_b), scenarios[k : k + size], firsts[k : k + size],
                               max_turns=max_turns, complement_side=complement, cap_rule=cap_rule)
    return records


# --- metrics ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfPlayMetrics:
    """Summary of games between sides A and B. Rates are fractions in [0, 1]; scores are raw (0..10).

    Attributes:
        games: number of games.
        score_a, score_b: average score over all games (no deal counts 0).
        advantage: mean of ``score_a - score_b`` (the thesis' "advantage", A being the attacker).
        agreement: share of games with an agreement.
        par: positive advantage rate, the share of games where A scores strictly more than B.
        pareto: share of agreed games whose deal is Pareto optimal (None without agreed games).
        turns: average number of messages per game.
        selected: share of games that ended with ``<selection>`` (the rest hit the turn cap).
        score_a_agreed, score_b_agreed: average scores over agreed games only (None without any).
        ci95: half-width of the 95% confidence interval of each mean above (normal approximation over the
            games, ``1.96 x sd / sqrt(n)``; Pareto over the agreed games), so a row reads ``mean +- ci95``.
    """

    games: int
    score_a: float
    score_b: float
    advantage: float
    agreement: float
    par: float
    pareto: float | None
    turns: float
    selected: float
    score_a_agreed: float | None
    score_b_agreed: float | None
    ci95: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def selfplay_metrics(records: Sequence[GameRecord]) -> SelfPlayMetrics:
    """Each side's average score, advantage, agreement, PAR, Pareto optimality and turns of ``records``."""
    n = len(records)
    if n == 0:
        raise ValueError("no game records to summarise")
    agreed = [r for r in records if r.agreed]
    k = len(agreed)
    per_game: dict[str, list[float]] = {
        "score_a": [r.scores[0] for r in records], "score_b": [r.scores[1] for r in records],
        "advantage": [r.advantage for r in records], "agreement": [float(r.agreed) for r in records],
        "par": [float(r.scores[0] > r.scores[1]) for r in records], "pareto": [float(bool(r.pareto)) for r in agreed],
        "turns": [float(r.turns) for r in records]}
    return SelfPlayMetrics(
        games=n,
        score_a=sum(r.scores[0] for r in records) / n,
        score_b=sum(r.scores[1] for r in records) / n,
        advantage=sum(r.advantage for r in records) / n,
        agreement=k / n,
        par=sum(r.scores[0] > r.scores[1] for r in records) / n,
        pareto=sum(bool(r.pareto) for r in agreed) / k if k else None,
        turns=sum(r.turns for r in records) / n,
        selected=sum(r.selected for r in records) / n,
        score_a_agreed=sum(r.scores[0] for r in agreed) / k if k else None,
        score_b_agreed=sum(r.scores[1] for r in agreed) / k if k else None,
        ci95={name: ci95(values) for name, values in per_game.items()},
    )


def ci95(values: Sequence[float]) -> float | None:
    """Half-width of the normal-approximation 95% confidence interval of the mean of ``values`` (sample
    standard deviation; None for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return 1.96 * math.sqrt(var / n)


# --- transcripts ------------------------------------------------------------------------------------------


def describe_context(context: Context) -> str:
    """``3xbook value 2  3xhat value 1  1xball value 1`` (the Input rows of thesis Table 3.9)."""
    return "  ".join(f"{c}x{item} value {v}" for item, c, v in zip(ITEMS, context.counts, context.values))


def describe_take(split: Split | None) -> str:
    """``3xhat 1xball`` (the Output rows of Table 3.9), ``nothing``, or ``no deal`` for None."""
    if split is None:
        return "no deal"
    parts = [f"{n}x{item}" for item, n in zip(ITEMS, split) if n]
    return " ".join(parts) if parts else "nothing"


def format_game(record: GameRecord, names: tuple[str, str] = ("A", "B")) -> str:
    """A game as thesis Table 3.9 lays it out: Input (contexts), the dialogue, Output and Reward."""
    width = max(len(names[0]), len(names[1]))
    rows = ["Input"]
    for name, ctx in zip(names, record.scenario.contexts):
        rows.append(f"  {name:<{width}}  {describe_context(ctx)}")
    rows.append("Dialogue")
    for m in record.messages:
        text = " ".join(m.tokens[:-1] if m.tokens[-1] == EOS else m.tokens) or EOS  # an empty message shows <eos>
        rows.append(f"  {names[SIDES.index(m.speaker)]:<{width}}  {text}")
    if not record.selected and not record.agreed:
        rows.append("  (turn cap reached without <selection>: no deal)")
    elif not record.selected:
        rows.append("  (turn cap reached: closed on the target's choice)")
    elif not record.agreed:
        rows.append("  (choices do not match: no agreement)")
    takes = [describe_take(c) for c in record.choices]
    col = max(len(t) for t in takes) + 2
    rows.append(f"Output{'':<{width + col - 2}}Reward")
    for name, take, sc in zip(names, takes, record.scores):
        rows.append(f"  {name:<{width}}  {take:<{col}}{sc}/{TOTAL_VALUE}")
    return "\n".join(rows)


# --- benchmark --------------------------------------------------------------------------------------------


def benchmark_play(agent_a: Agent, agent_b: Agent, scenarios: Sequence[Scenario], *,
                   batch_size: int | None = None, **play_kwargs: Any) -> dict[str, float]:
    """Dialogues per second one at a time (``batch_size=1``) and batched (``batch_size``) on ``scenarios``."""
    n = len(scenarios)
    if n == 0:
        raise ValueError("no scenarios to benchmark")
    t0 = time.perf_counter()
    play(agent_a, agent_b, scenarios, batch_size=1, **play_kwargs)
    t1 = time.perf_counter()
    play(agent_a, agent_b, scenarios, batch_size=batch_size, **play_kwargs)
    t2 = time.perf_counter()
    out = {"games": float(n), "batch_size": float(batch_size or n),
           "one_at_a_time_per_s": n / (t1 - t0), "batched_per_s": n / (t2 - t1)}
    out["speedup"] = out["batched_per_s"] / out["one_at_a_time_per_s"]
    logger.info("self-play speed on %d games: %.1f/s one at a time, %.1f/s batched (x%.1f)", n,
                out["one_at_a_time_per_s"], out["batched_per_s"], out["speedup"])
    return out


__all__ = [
    "CAP_RULES",
    "FAIR_CAP_RULE",
    "FAIR_TURNS",
    "CapRule",
    "SIDES",
    "GameRecord",
    "Message",
    "SelfPlayMetrics",
    "benchmark_play",
    "ci95",
    "describe_context",
    "describe_take",
    "first_movers",
    "format_game",
    "play",
    "selfplay_metrics",
]
