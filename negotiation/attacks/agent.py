"""The AdvAgent attacker as a negotiation agent: a regular speaker whose messages an attack replaces or edits.

:class:`AttackAgent` plays the :class:`~negotiation.agents.Agent` protocol, so :func:`negotiation.dialog.play`
runs it against a target unchanged (with ``complement`` set to the attacker's side: forced agreement). Its
``speaker`` (an :class:`~negotiation.agents.RnnAgent`, the attacker's "regular speaking module") drafts every
message; depending on ``method`` the draft is then

* ``"none"``: said as is (the attacker without attack);
* ``"transfer"`` (3.2.2.2): at the first attacker turn at or after message ``start_turn``, replaced by a
  sentence drawn (seeded) from ``transfer_sentences``, the last sentences of high-reward dialogues of the RL
  attacker (:func:`negotiation.attacks.transfer.collect_transfer_sentences`);
* ``"reactive"`` / ``"preemptive"`` (3.2.3.1-3.2.3.3): at that turn, edited by the greedy search
  (:mod:`negotiation.attacks.greedy`) against the white-box ``target``; after a preemptive edit the attacker
  says ``<selection>`` at its next turn;
* ``"ra-pa-da"`` / ``"ra-pa-ta"`` (Algorithm 7): at every attacker turn from ``start_turn`` on, the
  reactive edit is tried, then (where it did not reach a negative loss) the preemptive one; where neither
  succeeds the attacker speaks normally (delayed attack) or plays a transfer sentence.

Every game's attack events (turn, kind, draft, message, loss, success) are kept in :attr:`events` for
transcripts and statistics. The ``target`` must be the :class:`~negotiation.agents.RnnAgent` object that plays
the other side in the same :func:`~negotiation.dialog.play` call (same game ids).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from negotiation.agents import RnnAgent
from negotiation.attacks.greedy import CandidateScorer, Objective, greedy_attack
from negotiation.corpus import EOS, SELECTION
from negotiation.domain import Context, Outcome, Split

METHODS: tuple[str, ...] = ("none", "transfer", "reactive", "preemptive", "ra-pa-da", "ra-pa-ta")
Protocol = Literal["strict", "released-code"]
PROTOCOLS: tuple[str, ...] = ("strict", "released-code")


def default_start_turn(method: str) -> int:
    """Messages before the first attack turn: Algorithm 7's combined attacks from the attacker's first message
    (0; the thesis's Table 3.15 finds the earliest start strongest), the single attacks after two (n = 2)."""
    return 0 if method in ("ra-pa-da", "ra-pa-ta") else 2


@dataclass
class AttackEvent:
    """One attacker turn where an attack was tried: ``kind`` is ``reactive``/``preemptive``/``transfer``/
    ``delayed`` (Algorithm 7's fallback)."""

    turn: int
    kind: str
    draft: list[str]
    message: list[str]
    loss: float | None = None
    success: bool | None = None
    changed: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, "kind": self.kind, "draft": " ".join(self.draft), "message": " ".join(self.message),
                "loss": self.loss, "success": self.success, "changed": self.changed}


class AttackAgent:
    """An attacker negotiating ``B`` games at once (see the module docstring).

    Args:
        speaker: the attacker's regular speaking module.
        target: the white-box target (needed by the greedy methods).
        method: one of :data:`METHODS`.
        start_turn: messages exchanged before the first attack turn (thesis: n = 2).
        kappa: hinge margin of the greedy loss.
        sel_margin: lead of the ``<selection>`` logit the reactive constraint demands (see
            :class:`~negotiation.attacks.greedy.CandidateScorer`).
        replies: target replies sampled per preemptive trial (worst case counts; thesis: 1).
        validate: fresh target replies on which a preemptive edit must win at least half the time to count as
            a success (0: no check, as the thesis).
        max_changes: words the greedy search may change (thesis: 2).
        transfer_sentences: the pool of the transfer methods (token lists ending ``<eos>``).
        max_rows: trials per forward pass.
        seed: seeds the transfer draws and the preemptive replies.
        name: a label.
        protocol: ``"strict"``: a successful reactive edit is said and the dialogue goes on by the target's own
            words (it ends only if the target then writes ``<selection>``). ``"released-code"``: the protocol
            of the thesis author's released attack code, whose numbers the thesis reports: after a successful
            reactive edit the target is made to say ``<selection>`` and the game ends on its decision.
        objective: the greedy loss (:class:`~negotiation.attacks.greedy.CandidateScorer`): ``"hinge"`` or
            ``"advantage"`` (hinge minus ``adv_weight`` x the attacker's advantage, the released code's).
        adv_weight: lambda of the advantage objective.
        passes: greedy iterations (default ``max_changes``; the released code runs 3).
    """

    def __init__(self, speaker: RnnAgent, target: RnnAgent | None = None, *, method: str = "ra-pa-da",
                 start_turn: int = 2, kappa: float = 0.5, sel_margin: float = 0.0, replies: int = 1,
                 validate: int = 0, max_changes: int = 2,
                 transfer_sentences: Sequence[Sequence[str]] | None = None, max_rows: int = 2048, seed: int = 0,
                 name: str = "attacker", protocol: Protocol = "strict", objective: Objective = "hinge",
                 adv_weight: float = 0.2, passes: int | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown attack method {method!r}; expected one of {METHODS}")
        if method in ("reactive", "preemptive", "ra-pa-da", "ra-pa-ta") and not isinstance(target, RnnAgent):
            raise ValueError(f"the {method} attack needs white-box access to the target (an RnnAgent)")
        if method in ("transfer", "ra-pa-ta") and not transfer_sentences:
            raise ValueError(f"the {method} attack needs transfer sentences (collect_transfer_sentences)")
        if start_turn < 0:
            raise ValueError(f"start_turn must be >= 0, got {start_turn}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
        pool = [list(s) for s in (transfer_sentences or [])]
        for s in pool:
            if not s or s[-1] != EOS:
                raise ValueError(f"a transfer sentence must end with {EOS}, got {s}")
        self.speaker, self.target, self.method = speaker, target, method
        self.sel_margin, self.replies, self.validate = sel_margin, replies, validate
        self.start_turn, self.kappa, self.max_changes, self.max_rows = start_turn, kappa, max_changes, max_rows
        self.transfer_sentences = pool
        self.seed, self.name = seed, name
        self.protocol, self.objective, self.adv_weight, self.passes = protocol, objective, adv_weight, passes
        self._calls = 0
        self._rng = random.Random(seed)
        self.contexts: list[Context] = []
        self.outcomes: list[Outcome] | None = None
        self.events: list[list[AttackEvent]] = []
        self._turns: list[int] = []
        self._done: list[bool] = []
        self._select_next: list[bool] = []

    # --- the Agent interface ----------------------------------------------------------------------------

    def feed_context(self, contexts: Sequence[Context]) -> None:
        self.speaker.feed_context(contexts)
        self.contexts = list(contexts)
        self.outcomes = None
        n = len(self.contexts)
        self.events = [[] for _ in range(n)]
        self._turns, self._done, self._select_next = [0] * n, [False] * n, [False] * n

    def read(self, games: Sequence[int], messages: Sequence[Sequence[str]]) -> None:
        self.speaker.read(games, messages)
        for g in games:
            self._turns[g] += 1

    def choose(self, games: Sequence[int] | None = None) -> list[Split | None]:
        return self.speaker.choose(games)

    def update(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = list(outcomes)
        self.speaker.update(outcomes)

    def write(self, games: Sequence[int]) -> list[list[str]]:
        games = list(games)
        if not games:
            return []
        drafts = self.speaker.draft(games)
        out = {g: d for g, d in zip(games, drafts)}
        for g in games:
            if self._select_next[g]:  # the preemptive attack's second half
                out[g] = [SELECTION]
                self._select_next[g] = False
        due = [g for g, d in zip(games, drafts) if self._due(g) and out[g] == d and self._editable(d)]
        if due:
            self._attack(due, out)
        final = [out[g] for g in games]
        self.speaker.say(games, final)
        for g in games:
            self._turns[g] += 1
        return final

    # --- attacks ----------------------------------------------------------------------------------------

    def _due(self, g: int) -> bool:
        if self.method == "none" or self._turns[g] < self.start_turn:
            return False
        return self.method in ("ra-pa-da", "ra-pa-ta") or not self._done[g]

    @staticmethod
    def _editable(draft: Sequence[str]) -> bool:
        return len(draft) >= 2 and draft[-1] == EOS  # at least one word; a <selection> draft ends the dialogue

    def _transfer(self, g: int, draft: list[str], kind: str = "transfer") -> list[str]:
        msg = list(self._rng.choice(self.transfer_sentences))
        self.events[g].append(AttackEvent(self._turns[g], kind, draft, msg))
        return msg

    def _greedy(self, games: list[int], drafts: list[list[str]], mode: str) -> Any:
        assert self.target is not None
        self._calls += 1
        view = self.target.snapshot(games)
        scorer = CandidateScorer(self.target.model, view, [self.contexts[g] for g in games], kappa=self.kappa,
                                 sel_margin=self.sel_margin, replies=self.replies,
                                 temperature=self.target.temperature, max_words=min(20, self.target.max_words),
                                 seed=self.seed * 1_000_003 + self._calls, max_rows=self.max_rows,
                                 objective=self.objective, adv_weight=self.adv_weight)
        return greedy_attack(scorer, drafts, mode, max_changes=self.max_changes,  # type: ignore[arg-type]
                             validate=self.validate, passes=self.passes)

    def _attack(self, games: list[int], out: dict[int, list[str]]) -> None:
        drafts = {g: list(out[g]) for g in games}
        for g in games:
            self._done[g] = True
        if self.method == "transfer":
            for g in games:
                out[g] = self._transfer(g, drafts[g])
            return
        todo = games
        modes = {"reactive": ["reactive"], "preemptive": ["preemptive"]}.get(self.method, ["reactive", "preemptive"])
        for mode in modes:
            if not todo:
                break
            res = self._greedy(todo, [drafts[g] for g in todo], mode)
            left = []
            for i, g in enumerate(todo):
                ok = bool(res.success[i])
                self.events[g].append(AttackEvent(self._turns[g], mode, drafts[g], list(res.messages[i]),
                                                  res.loss[i], ok, res.changed[i]))
                if ok:
                    out[g] = list(res.messages[i])
                    self._select_next[g] = mode == "preemptive"
                    if mode == "reactive" and self.protocol == "released-code":
                        self.target.force_selection([g])  # type: ignore[union-attr]
                else:  # a failed edit is not said: the draft stands (fixed turn) or the next mode is tried
                    left.append(g)
            todo = left
        if self.method in ("reactive", "preemptive"):
            return
        for g in todo:  # Algorithm 7's fallback
            if self.method == "ra-pa-ta":
                out[g] = self._transfer(g, drafts[g])
            else:
                self.events[g].append(AttackEvent(self._turns[g], "delayed", drafts[g], drafts[g]))


__all__ = ["METHODS", "PROTOCOLS", "AttackAgent", "AttackEvent", "Protocol", "default_start_turn"]
