"""The Deal-or-No-Deal game of Lewis et al. (2017): items, contexts, splits, choices, scoring, Pareto optimality.

Pure Python (no torch), so the rules can be tested exhaustively and shared by every model, agent and attack.

Rules (as in the FAIR ``end-to-end-negotiator`` corpus and section 3.2.1 of the thesis):

* Three item types, in this order: book (``item0``), hat (``item1``), ball (``item2``).
* A side's *context* is ``c0 v0 c1 v1 c2 v2``: the count of each item (the same for both sides) and that
  side's private value of one unit of it. Each side's items are worth 10 in total:
  ``c0*v0 + c1*v1 + c2*v2 == 10`` (the values themselves do not sum to 10: ``1 4 4 1 1 2`` has values
  4, 1, 2 and worth 4 + 4 + 2 = 10). In the corpus every count is 1..4, the total count is 5..7 and every
  value is 0..10; :class:`Context` enforces those ranges. The 438 contexts these rules allow are exactly the
  438 distinct contexts of train/val/test (:func:`all_contexts`).
* A *split* is what one side takes of each item, ``0 <= take[i] <= count[i]``; there are
  ``prod(count + 1)`` of them.
* After the dialogue each side selects independently: a split (what it takes) or no deal. There is an
  agreement only when both selected splits and they are complementary (``mine + theirs == counts`` for
  every item); then each side scores the worth of what it took under its own values, otherwise both score 0.
* A dialogue lasts at most :data:`MAX_TURNS` turns (thesis 3.2.1; the FAIR code never enforced its
  ``max_turns``).

Choice tokens (the ``<output>`` section of the corpus and the selection vocabulary of the model):
``item0=1 item1=0 item2=2`` is a side's take; a full *choice* is six tokens, my take then the partner's
(the complement when agreed). A dialogue without a deal has one of the no-deal tokens six times:
``<disagree>`` (both selected, but the selections were not complementary), ``<no_agreement>`` (a side
chose "no deal") or ``<disconnect>`` (a worker left).
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ITEMS: tuple[str, ...] = ("book", "hat", "ball")
NUM_ITEMS = len(ITEMS)
TOTAL_VALUE = 10
MIN_COUNT, MAX_COUNT = 1, 4
MIN_TOTAL_COUNT, MAX_TOTAL_COUNT = 5, 7
MIN_VALUE, MAX_VALUE = 0, TOTAL_VALUE
MAX_TURNS = 10
CONTEXT_LENGTH = 2 * NUM_ITEMS
SELECTION_LENGTH = 2 * NUM_ITEMS  # my take, then the partner's

DISAGREE = "<disagree>"
NO_AGREEMENT = "<no_agreement>"
DISCONNECT = "<disconnect>"
NO_DEAL_TOKENS: tuple[str, ...] = (DISAGREE, NO_AGREEMENT, DISCONNECT)

Split = tuple[int, ...]
"""What one side takes of each item (length :data:`NUM_ITEMS`)."""

_ITEM_TOKEN = re.compile(r"^item(\d+)=(\d+)$")


def _check_counts(counts: Sequence[int]) -> tuple[int, ...]:
    if len(counts) != NUM_ITEMS:
        raise ValueError(f"expected {NUM_ITEMS} item counts (book, hat, ball), got {len(counts)}: {list(counts)}")
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"item counts must be non-negative integers, got {list(counts)}")
    return tuple(counts)


def _check_split(split: Sequence[int], counts: Sequence[int]) -> Split:
    if len(split) != NUM_ITEMS:
        raise ValueError(f"a split takes {NUM_ITEMS} item amounts, got {len(split)}: {list(split)}")
    for i, (t, c) in enumerate(zip(split, counts)):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= c:
            raise ValueError(f"split {list(split)} takes {t!r} {ITEMS[i]}(s); expected an integer in 0..{c}")
    return tuple(split)


@dataclass(frozen=True)
class Context:
    """One side's private view of a game: item counts and that side's value of each item.

    Args:
        counts: number of books, hats, balls; each 1..4, total 5..7.
        values: this side's value of one book, hat, ball; each 0..10, with ``sum(counts * values) == 10``.

    Raises:
        ValueError: naming the bad field and the rule it breaks.
    """

    counts: tuple[int, ...]
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        counts, values = tuple(self.counts), tuple(self.values)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "values", values)
        _check_counts(counts)
        if len(values) != NUM_ITEMS:
            raise ValueError(f"expected {NUM_ITEMS} item values (book, hat, ball), got {len(values)}: {list(values)}")
        for c in counts:
            if not MIN_COUNT <= c <= MAX_COUNT:
                raise ValueError(f"item counts must each be {MIN_COUNT}..{MAX_COUNT}, got {list(counts)}")
        if not MIN_TOTAL_COUNT <= sum(counts) <= MAX_TOTAL_COUNT:
            raise ValueError(
                f"total item count must be {MIN_TOTAL_COUNT}..{MAX_TOTAL_COUNT}, got {sum(counts)} ({list(counts)})"
            )
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not MIN_VALUE <= v <= MAX_VALUE:
                raise ValueError(f"item values must be integers {MIN_VALUE}..{MAX_VALUE}, got {list(values)}")
        worth = sum(c * v for c, v in zip(counts, values))
        if worth != TOTAL_VALUE:
            raise ValueError(
                f"a side's items must be worth {TOTAL_VALUE} in total (sum of count x value), got {worth} "
                f"for counts {list(counts)} and values {list(values)}"
            )

    @classmethod
    def from_ints(cls, numbers: Sequence[int]) -> Context:
        """From the interleaved ``c0 v0 c1 v1 c2 v2`` integers."""
        if len(numbers) % 2:
            raise ValueError(f"a context is count/value pairs, got an odd number ({len(numbers)}) of integers")
        if len(numbers) != CONTEXT_LENGTH:
            raise ValueError(
                f"a context is {NUM_ITEMS} count/value pairs ({CONTEXT_LENGTH} integers), got {len(numbers)}"
            )
        return cls(tuple(numbers[0::2]), tuple(numbers[1::2]))

    @classmethod
    def from_tokens(cls, tokens: Sequence[str] | str) -> Context:
        """From ``"1 4 4 1 1 2"`` or its tokens (the corpus ``<input>`` section)."""
        toks = tokens.split() if isinstance(tokens, str) else list(tokens)
        if len(toks) % 2:
            raise ValueError(f"a context is count/value pairs, got an odd number ({len(toks)}) of tokens: {toks}")
        try:
            numbers = [int(t) for t in toks]
        except ValueError:
            raise ValueError(f"context tokens must be integers, got {toks}") from None
        return cls.from_ints(numbers)

    def to_ints(self) -> list[int]:
        """The interleaved ``c0 v0 c1 v1 c2 v2`` integers."""
        return [x for pair in zip(self.counts, self.values) for x in pair]

    def to_tokens(self) -> list[str]:
        return [str(x) for x in self.to_ints()]

    def score(self, split: Sequence[int]) -> int:
        """Worth of ``split`` (what this side takes) under this side's values."""
        return score(split, self.values, self.counts)


@dataclass(frozen=True)
class Scenario:
    """A game set-up: the two sides' contexts (same counts, private values).

    In every scenario of the corpus each item is valued by at least one side and some item by both
    (the constraints of Lewis et al. 2017); :func:`random_scenario` draws only such scenarios, but this class
    does not require them.
    """

    first: Context
    second: Context

    def __post_init__(self) -> None:
        if self.first.counts != self.second.counts:
            raise ValueError(
                f"both sides must see the same item counts, got {list(self.first.counts)} "
                f"and {list(self.second.counts)}"
            )

    @property
    def counts(self) -> tuple[int, ...]:
        return self.first.counts

    @property
    def contexts(self) -> tuple[Context, Context]:
        return (self.first, self.second)

    def swapped(self) -> Scenario:
        return Scenario(self.second, self.first)


@dataclass(frozen=True)
class Outcome:
    """Result of the two selections: ``agreed`` and each side's score (both 0 without agreement)."""

    agreed: bool
    scores: tuple[int, int]


# --- splits and scoring ---------------------------------------------------------------------------------


def enumerate_splits(counts: Sequence[int]) -> list[Split]:
    """Every split of ``counts`` (what I take), item0 varying slowest; ``prod(count + 1)`` of them.

    The order is FAIR's ``generate_choices`` order, so choice indices agree with its models.
    """
    cs = _check_counts(counts)
    return [tuple(s) for s in itertools.product(*(range(c + 1) for c in cs))]


def num_splits(counts: Sequence[int]) -> int:
    return math.prod(c + 1 for c in _check_counts(counts))


def complement(split: Sequence[int], counts: Sequence[int]) -> Split:
    """What the partner takes when I take ``split``."""
    cs = _check_counts(counts)
    s = _check_split(split, cs)
    return tuple(c - t for c, t in zip(cs, s))


def score(split: Sequence[int], values: Sequence[int], counts: Sequence[int] | None = None) -> int:
    """Worth of taking ``split`` under ``values``; with ``counts`` the split is checked against them."""
    if len(values) != NUM_ITEMS:
        raise ValueError(f"expected {NUM_ITEMS} item values, got {len(values)}: {list(values)}")
    if counts is not None:
        _check_split(split, _check_counts(counts))
    elif len(split) != NUM_ITEMS:
        raise ValueError(f"a split takes {NUM_ITEMS} item amounts, got {len(split)}: {list(split)}")
    return sum(t * v for t, v in zip(split, values))


def is_agreement(mine: Sequence[int] | None, theirs: Sequence[int] | None, counts: Sequence[int]) -> bool:
    """Both sides selected a split (``None`` = no deal) and the two are complementary for every item."""
    cs = _check_counts(counts)
    if mine is None or theirs is None:
        return False
    a, b = _check_split(mine, cs), _check_split(theirs, cs)
    return all(x + y == c for x, y, c in zip(a, b, cs))


def score_selections(first: Sequence[int] | None, second: Sequence[int] | None, scenario: Scenario) -> Outcome:
    """Score the two sides' selections (what each takes, ``None`` for no deal): 0 for both unless agreed."""
    if not is_agreement(first, second, scenario.counts):
        return Outcome(False, (0, 0))
    assert first is not None and second is not None
    return Outcome(True, (scenario.first.score(first), scenario.second.score(second)))


def is_pareto_optimal(split: Sequence[int], scenario: Scenario) -> bool:
    """Whether the agreed deal where ``scenario.first`` takes ``split`` is Pareto optimal.

    It is unless another split gives one side more without giving the other less.
    """
    counts = scenario.counts
    s = _check_split(split, counts)
    a0, b0 = scenario.first.score(s), scenario.second.score(complement(s, counts))
    for other in enumerate_splits(counts):
        a, b = scenario.first.score(other), scenario.second.score(complement(other, counts))
        if a >= a0 and b >= b0 and (a > a0 or b > b0):
            return False
    return True


def pareto_frontier(scenario: Scenario) -> list[Split]:
    """Every Pareto-optimal split (what ``scenario.first`` takes), in :func:`enumerate_splits` order."""
    return [s for s in enumerate_splits(scenario.counts) if is_pareto_optimal(s, scenario)]


# --- choice tokens ----------------------------------------------------------------------------------------


def item_token(item: int, amount: int) -> str:
    """``item{item}={amount}``, the corpus token for taking ``amount`` of item ``item``."""
    if not 0 <= item < NUM_ITEMS or amount < 0:
        raise ValueError(f"no choice token for item {item} amount {amount}: item must be 0..{NUM_ITEMS - 1}")
    return f"item{item}={amount}"


CHOICE_TOKENS: tuple[str, ...] = tuple(
    item_token(i, n) for i in range(NUM_ITEMS) for n in range(MAX_COUNT + 1)
) + NO_DEAL_TOKENS
"""Every token of an ``<output>`` section: ``item{i}={n}`` for n in 0..4, then the no-deal tokens."""


def split_tokens(split: Sequence[int]) -> list[str]:
    """``[item0=a, item1=b, item2=c]`` for the split ``(a, b, c)``."""
    if len(split) != NUM_ITEMS:
        raise ValueError(f"a split takes {NUM_ITEMS} item amounts, got {len(split)}: {list(split)}")
    return [item_token(i, t) for i, t in enumerate(split)]


def choice_tokens(split: Sequence[int] | None, counts: Sequence[int], *, no_deal: str = NO_AGREEMENT) -> list[str]:
    """The six output tokens: my take and the partner's complement, or ``no_deal`` six times for ``None``."""
    if split is None:
        if no_deal not in NO_DEAL_TOKENS:
            raise ValueError(f"unknown no-deal token {no_deal!r}; expected one of {NO_DEAL_TOKENS}")
        return [no_deal] * SELECTION_LENGTH
    return split_tokens(split) + split_tokens(complement(split, counts))


def parse_split_tokens(tokens: Sequence[str], counts: Sequence[int] | None = None) -> Split | None:
    """Parse one side's three selection tokens: a split, or ``None`` for a repeated no-deal token.

    Raises:
        ValueError: wrong length, unknown token, items out of order, mixed no-deal tokens, amount above count.
    """
    toks = list(tokens)
    if len(toks) != NUM_ITEMS:
        raise ValueError(f"a side's selection is {NUM_ITEMS} tokens, got {len(toks)}: {toks}")
    if toks[0] in NO_DEAL_TOKENS:
        if any(t != toks[0] for t in toks):
            raise ValueError(f"a no-deal selection repeats one token, got {toks}")
        return None
    amounts = []
    for i, t in enumerate(toks):
        m = _ITEM_TOKEN.match(t)
        if m is None:
            raise ValueError(f"unknown selection token {t!r}; expected item{i}=N or one of {NO_DEAL_TOKENS}")
        if int(m.group(1)) != i:
            raise ValueError(f"selection tokens out of order: {toks}; expected item0, item1, item2")
        amounts.append(int(m.group(2)))
    split = tuple(amounts)
    if counts is not None:
        _check_split(split, _check_counts(counts))
    return split


def enumerate_choices(counts: Sequence[int], *, no_deal: Iterable[str] = (NO_AGREEMENT,)) -> list[tuple[str, ...]]:
    """All six-token choices for ``counts``: every split (:func:`enumerate_splits` order), then each ``no_deal``.

    Deviation from FAIR: its ``generate_choices`` also appends ``<disconnect>`` x 6; pass
    ``no_deal=(NO_AGREEMENT, DISCONNECT)`` to get its exact list.
    """
    out = [tuple(choice_tokens(s, counts)) for s in enumerate_splits(counts)]
    for tok in no_deal:
        out.append(tuple(choice_tokens(None, counts, no_deal=tok)))
    return out


# --- scenarios ----------------------------------------------------------------------------------------


def all_contexts() -> list[Context]:
    """Every context the rules allow (438 of them), ordered by counts then values."""
    return list(_all_contexts())


@functools.cache
def _all_contexts() -> tuple[Context, ...]:
    out = []
    for counts in itertools.product(range(MIN_COUNT, MAX_COUNT + 1), repeat=NUM_ITEMS):
        if not MIN_TOTAL_COUNT <= sum(counts) <= MAX_TOTAL_COUNT:
            continue
        for values in itertools.product(range(MIN_VALUE, MAX_VALUE + 1), repeat=NUM_ITEMS):
            if sum(c * v for c, v in zip(counts, values)) == TOTAL_VALUE:
                out.append(Context(counts, values))
    return tuple(out)


def random_scenario(rng: random.Random) -> Scenario:
    """A random scenario as Lewis et al. (2017) drew them: uniform counts, then two value vectors such that
    every item is valued by some side and some item by both (this is true of every corpus scenario)."""
    by_counts: dict[tuple[int, ...], list[Context]] = {}
    for ctx in _all_contexts():
        by_counts.setdefault(ctx.counts, []).append(ctx)
    counts = rng.choice(sorted(by_counts))
    while True:
        a, b = rng.choice(by_counts[counts]), rng.choice(by_counts[counts])
        every = all(x + y > 0 for x, y in zip(a.values, b.values))
        shared = any(x > 0 and y > 0 for x, y in zip(a.values, b.values))
        if every and shared:
            return Scenario(a, b)



def parse_scenario_lines(lines: Iterable[str], *, source: str = "<lines>") -> list[Scenario]:
    """Pair consecutive context lines (``c0 v0 c1 v1 c2 v2``) into scenarios, the ``selfplay.txt`` layout.

    Blank lines are ignored. Raises ValueError naming ``source`` and the line number for a bad line, an
    odd number of lines, or a pair whose counts differ.
    """
    numbered = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    if len(numbered) % 2:
        raise ValueError(f"{source}: {len(numbered)} context lines, expected an even number (one pair per game)")
    contexts = []
    for lineno, ln in numbered:
        try:
            contexts.append(Context.from_tokens(ln))
        except ValueError as exc:
            raise ValueError(f"{source}:{lineno}: {exc}") from None
    out = []
    for k in range(0, len(contexts), 2):
        try:
            out.append(Scenario(contexts[k], contexts[k + 1]))
        except ValueError as exc:
            raise ValueError(f"{source}:{numbered[k][0]}-{numbered[k + 1][0]}: {exc}") from None
    return out
