"""A portfolio of attacks: each sentence gets the smallest success of several attacks, run one after another.

As AutoAttack does for image classifiers, the members run in order and each later member attacks only the
sentences the earlier ones left undone: here, those without a success of at most ``enough`` changed words (one
word by default: nothing smaller exists). Every member runs its own search and reduction; the sentence keeps the
success with the fewest changed words (ties: the earlier member), and its cost is the sum of what every member
spent on it. The default members are the gradient-guided word swap (small, fast, but it gives up on some
sentences) and then Seq2Sick with the reduction pass (slower and larger, but it succeeds almost everywhere).

Because the members' searches do not depend on one another, :func:`portfolio_records` rebuilds a portfolio's
records from the members' records of separate runs (the recipes build their portfolio rows that way from records
they keep). It is an approximation: a later member then ran on full batches, not only on the leftover sentences,
so batch-dependent details and the time per sentence can differ from a real portfolio run.

Example:
    >>> attack = Portfolio(victim, portfolio_preset("multi30k-lstm", "nonoverlap"))
    >>> [res] = attack.run([AttackItem(0, "A child is splashing in the water.")])
    >>> res.member  # the attack whose success was kept
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from nlprobust.attacks.base import AttackConfig, AttackItem, AttackResult, run_in_batches

# the fields a member's config must share with the portfolio's (the goal and how success is judged)
# (and whether they run their reduction pass)
SHARED = ("mode", "criterion", "beam_size", "quality_metric", "quality_fraction", "reduce")
COSTS = ("forward_passes", "backward_passes", "beam_decodes", "time_s")
# settings of AttackConfig that only the members use (each takes them from its own preset): a portfolio refuses them
MEMBER_ONLY = ("epsilon", "repair", "reduce_lexicon", "lexicon_words", "exchange", "exchange_pairs", "trade",
               "trade_beam", "trade_sets", "swap_lexicon")
# what every member's record of one sentence must agree on
SAME_SENTENCE = ("index", "source", "keywords", "mode", "criterion")


@dataclass(frozen=True, kw_only=True)
class PortfolioConfig(AttackConfig):
    """Settings of :class:`Portfolio`: the goal (shared by every member) and the members in order.

    Attributes:
        members: ``(attack name, config)`` pairs, run in this order (names of ``nlprobust.attacks.ATTACKS``).
        enough: a success with at most this many changed words ends a sentence's attack (later members skip it).

    The search settings of ``AttackConfig`` (``epsilon``, ``repair``, ``reduce_lexicon``, ``lexicon_words``,
    ``exchange``, ``exchange_pairs``, ``trade``, ``trade_beam``, ``trade_sets``, ``swap_lexicon``) belong to the
    members' own configs; a portfolio refuses values other than the defaults rather than ignore them.
    """

    members: tuple[tuple[str, AttackConfig], ...] = ()
    enough: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.members:
            raise ValueError("a portfolio needs at least one member attack")
        if self.enough < 1:
            raise ValueError(f"enough must be >= 1 changed word, not {self.enough}")
        for f in MEMBER_ONLY:
            if getattr(self, f) != AttackConfig.__dataclass_fields__[f].default:
                raise ValueError(f"{f} is a member's setting: set it in the member's config, not the portfolio's")
        for name, cfg in self.members:
            if name == "portfolio":
                raise ValueError("a portfolio cannot hold another portfolio")
            if not isinstance(cfg, AttackConfig):
                raise TypeError(f"member {name!r} needs an AttackConfig, not {type(cfg).__name__}")
            for f in SHARED:
                if getattr(cfg, f) != getattr(self, f):
                    raise ValueError(f"member {name!r} has {f}={getattr(cfg, f)!r} but the portfolio "
                                     f"{getattr(self, f)!r}: every member must judge the same goal")

    def tag(self) -> str:
        """A short hash of the portfolio's own values and its members' tags (each member's tag ignores the options
        its class added later until they are set, so the portfolio's does too)."""
        own = {k: v for k, v in asdict(self).items() if k != "members"}
        own["members"] = [[name, cfg.tag()] for name, cfg in self.members]
        return hashlib.sha1(json.dumps(own, sort_keys=True).encode()).hexdigest()[:8]


#: per victim preset: the members' own presets, in order (word swap first: it is the smaller when it succeeds)
PORTFOLIO_PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    "multi30k-lstm": (("word-swap", "multi30k-lstm"), ("seq2sick", "multi30k-lstm")),
    "multi30k-marian": (("word-swap", "multi30k-marian"), ("seq2sick", "multi30k-marian")),
    "gigaword-lstm": (("word-swap", "multi30k-lstm"), ("seq2sick", "gigaword-lstm")),
    "default": (("word-swap", "default"), ("seq2sick", "multi30k-lstm")),
}


def member_config(attack: str, preset_name: str, mode: str, **shared: Any) -> AttackConfig:
    """The config of member ``attack`` from its own preset ``preset_name`` for ``mode``, with ``shared`` values."""
    from nlprobust.attacks.seq2sick import preset
    from nlprobust.attacks.word_swap import word_swap_preset

    if attack == "seq2sick":
        return preset(preset_name, mode, **{"reduce": True, **shared})
    if attack == "word-swap":
        return word_swap_preset(preset_name, mode, **shared)
    raise ValueError(f"no preset of attack {attack!r} for a portfolio member")


def portfolio_preset(name: str, mode: str, *, members: Sequence[tuple[str, AttackConfig]] | None = None,
                     **overrides: Any) -> PortfolioConfig:
    """The portfolio of preset ``name`` (``PORTFOLIO_PRESETS``) for goal ``mode``; ``overrides`` of the shared
    goal fields (criterion, beam_size, ...) reach every member; ``members`` replaces the preset's."""
    if name not in PORTFOLIO_PRESETS:
        raise ValueError(f"unknown portfolio preset {name!r}; expected one of {sorted(PORTFOLIO_PRESETS)}")
    shared = {k: v for k, v in overrides.items() if k in SHARED and k != "mode"}
    if members is None:
        members = tuple((a, member_config(a, p, mode, **shared)) for a, p in PORTFOLIO_PRESETS[name])
    return PortfolioConfig(mode=mode, preset=name, members=tuple(members), **overrides)


def done_enough(record: dict[str, Any], enough: int) -> bool:
    """Whether a record ends its sentence's portfolio: an error (every member would fail alike) or a success
    with at most ``enough`` changed words."""
    return bool(record.get("error")) or (bool(record.get("success")) and record.get("changed", 1 << 30) <= enough)


def best_of(records: Sequence[dict[str, Any]], preset: str | None = None) -> dict[str, Any]:
    """One sentence's portfolio record from its members' records (in member order): the success with the fewest
    changed words (ties: the earlier member), else the first member's result; costs summed over the members (None
    where a member's record lacks one); ``attack`` is ``"portfolio"``, ``member`` names the attack whose result
    was kept, ``preset`` is ``preset`` (default: that member's). The kept member's search-only result
    (``before_reduction``) is dropped: it would pair one member's unreduced input with every member's cost."""
    if not records:
        raise ValueError("best_of needs at least one member record")
    for f in SAME_SENTENCE:
        if len({json.dumps(r.get(f), sort_keys=True) for r in records}) > 1:
            raise ValueError(f"member records of different sentences (their {f} differ: "
                             f"{[r.get(f) for r in records]})")
    succ = [r for r in records if r.get("success") and not r.get("error")]
    win = min(succ, key=lambda r: r["changed"]) if succ else records[0]
    out = {**win, "attack": "portfolio", "member": win.get("attack", ""), "before_reduction": {},
           "preset": win.get("preset", "") if preset is None else preset}
    for c in COSTS:
        vals = [r.get(c) for r in records]
        out[c] = None if any(v is None for v in vals) else sum(vals)
    if isinstance(out["time_s"], float):
        out["time_s"] = round(out["time_s"], 4)
    return out


def portfolio_records(member_records: Sequence[Iterable[dict[str, Any]]], enough: int = 1
                      ) -> list[dict[str, Any]]:
    """The portfolio's records from its members' records of separate runs on the same sentences (in member
    order): a member's record counts for a sentence only where the earlier members left it undone
    (:func:`done_enough`), as :class:`Portfolio` would run it. The same searches, but not the same batches: a
    portfolio runs a later member on the leftover sentences only, so batch-dependent details (the greedy decoding
    length of a batch) can differ, and each record's ``time_s`` is the members' shares of their own batches'
    time, not what a portfolio run would spend. Sentences missing from any member's records that the portfolio
    would have reached are left out."""
    by_member: list[dict[int, dict[str, Any]]] = []
    for recs in member_records:
        rows: dict[int, dict[str, Any]] = {}
        for r in recs:
            if r["index"] in rows:
                raise ValueError(f"two records of sentence {r['index']} in one member's records")
            rows[r["index"]] = r
        by_member.append(rows)
    out = []
    for idx in by_member[0]:
        got: list[dict[str, Any]] = []
        for member in by_member:
            if got and done_enough(best_of(got), enough):
                break
            if idx not in member:
                got = []
                break
            got.append(member[idx])
        if got:
            out.append(best_of(got))
    return out


class Portfolio:
    """Runs its member attacks one after another on the sentences still undone and keeps the smallest success
    (:func:`best_of`); the same ``run`` / ``attack_batch`` interface as :class:`~nlprobust.attacks.TextAttack`."""

    name: ClassVar[str] = "portfolio"
    config_class: ClassVar[type[AttackConfig]] = PortfolioConfig

    def __init__(self, victim: Any, config: AttackConfig, *,
                 on_iteration: Callable[[str, int], None] | None = None) -> None:
        from nlprobust.attacks import build_attack

        if not isinstance(config, PortfolioConfig):
            raise TypeError(f"Portfolio needs a PortfolioConfig, not {type(config).__name__}")
        self.victim = victim
        self.config = config
        self.members = [build_attack(n, victim, c, on_iteration=on_iteration) for n, c in config.members]

    def run(self, items: Iterable[AttackItem], *, batch_size: int = 32,
            on_result: Callable[[AttackResult], None] | None = None) -> list[AttackResult]:
        """Attack ``items`` in batches; ``on_result`` is called as each result is ready."""
        return run_in_batches(self.attack_batch, items, batch_size, on_result)

    def attack_batch(self, items: list[AttackItem]) -> list[AttackResult]:
        """Every member on the batch's sentences the earlier members left undone; one result per item, in order."""
        got: dict[int, list[dict[str, Any]]] = {it.index: [] for it in items}
        if len(got) < len(items):
            raise ValueError("a portfolio batch needs distinct item indices (results are matched by index)")
        todo = list(items)
        for attack in self.members:
            if not todo:
                break
            for r in attack.attack_batch(todo):
                got[r.index].append(r.to_dict())
            todo = [it for it in todo if not done_enough(best_of(got[it.index]), self.config.enough)]
        return [AttackResult(**best_of(got[it.index], self.config.preset)) for it in items]


__all__ = ["PORTFOLIO_PRESETS", "Portfolio", "PortfolioConfig", "best_of", "done_enough", "member_config",
           "portfolio_preset", "portfolio_records"]
