"""Batched candidate scoring and the greedy word-substitution search of the white-box AdvAgent attacks.

Thesis 3.2.3: the attacker's regular speaking module drafts a message; the attack edits at most
``max_changes`` words of it. Each greedy iteration (a modified Yang et al. greedy, eq. 3.11):

1. **position**: every not-yet-changed word of the message is replaced by ``<pad>`` in turn; the position
   whose blanking lowers the loss most is chosen;
2. **word**: every candidate word (the target's generable vocabulary without ``<eos>``, ``<selection>``,
   ``<unk>``) is tried at that position; among the trials that satisfy the constraint the lowest loss wins
   (none satisfies it: the one closest to it). The change is kept when it improves the message.

Every trial of a step, for every attacked game, is scored in one batched pass through the target model
(:class:`CandidateScorer`, chunked by ``max_rows``): the target reads ``THEM: <message>`` from its cached
state, then

* **reactive** (eqs. 3.9-3.11): ``YOU:``; the constraint is that its next token is ``<selection>``
  (:func:`~negotiation.attacks.objectives.selection_margin` >= 0); then it reads ``<selection>`` and its
  decision module scores the choices over the whole dialogue;
* **preemptive** (eq. 3.12, unconstrained): ``YOU:`` and the target's own reply, sampled at its temperature
  from a generator re-seeded for every batch (common random numbers, so trials differ only by the message);
  then the attacker's ``<selection>`` (unless the reply already ended with it) and the decision.

The loss is :func:`~negotiation.attacks.objectives.decision_hinge` with margin ``kappa``: below 0 exactly
when the target's best choice is one where the attacker, taking the complement, scores more.

Departure from the published code: it evaluates every position and word one forward pass at a time (about
60 s per dialogue); here they are rows of a few batched passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from negotiation.agents import AgentSnapshot
from negotiation.attacks.objectives import choice_advantages, decision_hinge, favourable_choices, selection_margin
from negotiation.corpus import EOS, SELECTION, UNK
from negotiation.domain import Context
from negotiation.model import DialogModel, concat_rows

Mode = Literal["reactive", "preemptive"]
MODES: tuple[str, ...] = ("reactive", "preemptive")
Objective = Literal["hinge", "advantage"]
OBJECTIVES: tuple[str, ...] = ("hinge", "advantage")


@dataclass(frozen=True)
class Scores:
    """Per trial: ``loss`` (eq. 3.10/3.12, < 0 = the target decides in the attacker's favour), ``margin``
    (constraint 3.9; ``+inf`` for the unconstrained preemptive mode) and ``feasible`` (margin >= 0)."""

    loss: torch.Tensor
    margin: torch.Tensor

    @property
    def feasible(self) -> torch.Tensor:
        return self.margin >= 0

    @property
    def success(self) -> torch.Tensor:
        return self.feasible & (self.loss < 0)


def candidate_words(model: DialogModel) -> torch.Tensor:
    """Ids of the words an attack may write: those the model can generate, without ``<eos>``,
    ``<selection>`` and ``<unk>``."""
    ok = model.generation_mask == 0
    for tok in (EOS, SELECTION, UNK):
        if tok in model.words:
            ok[model.words.id(tok)] = False
    return ok.nonzero().squeeze(1)


class CandidateScorer:
    """Scores candidate attacker messages against a white-box target in the games of ``view``.

    Args:
        target: the target's model.
        view: the target's state in the attacked games (:meth:`negotiation.agents.RnnAgent.snapshot`).
        attackers: the attacker's context in each of those games (same counts).
        kappa: confidence margin of the hinge (> 0, so that success is ``loss < 0``).
        sel_margin: how far the ``<selection>`` logit must lead (constraint 3.9 is ``>= 0``; the target samples
            its words at a temperature, so a tie makes it say ``<selection>`` only about half the time).
        temperature: the target's sampling temperature (preemptive mode: its reply).
        max_words: longest target reply (preemptive mode).
        replies: target replies sampled per preemptive trial; the trial's loss is the worst over them (1: the
            thesis' single reply; the target's decision swings with its reply, so one sample is a noisy guide).
        seed: seed of the replies' generator (preemptive mode).
        max_rows: trials per forward pass (memory bound).
        objective: ``"hinge"`` (eq. 3.10 alone: every success is as good) or ``"advantage"`` (the hinge minus
            ``adv_weight`` x the attacker's advantage under the target's best choice, as the thesis author's
            released code scores ``5 x hinge - advantage``; success is still a negative loss, exactly when the
            best choice is favourable).
        adv_weight: lambda of the advantage objective.
    """

    def __init__(self, target: DialogModel, view: AgentSnapshot, attackers: Sequence[Context], *,
                 kappa: float = 0.5, sel_margin: float = 0.0, temperature: float = 0.5, max_words: int = 20,
                 replies: int = 1, seed: int = 0, max_rows: int = 2048, objective: Objective = "hinge",
                 adv_weight: float = 0.2) -> None:
        if kappa <= 0:
            raise ValueError(f"kappa must be > 0 (success is a negative loss), got {kappa}")
        if len(attackers) != view.state.size(0):
            raise ValueError(f"{len(attackers)} attacker contexts for {view.state.size(0)} games")
        self.model, self.view, self.kappa, self.sel_margin = target, view, kappa, sel_margin
        if replies < 1:
            raise ValueError(f"replies must be >= 1, got {replies}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if adv_weight < 0:
            raise ValueError(f"adv_weight must be >= 0, got {adv_weight}")
        self.objective, self.adv_weight = objective, adv_weight
        self.temperature, self.max_words, self.seed, self.max_rows = temperature, max_words, seed, max_rows
        self.replies = replies
        self.counts = [c.counts for c in view.contexts]
        cl = target.choice_logits(torch.zeros(len(self.counts), 6, len(target.items), device=target.device),
                                  self.counts)
        self.favourable = favourable_choices(cl.choices, view.contexts, attackers, device=target.device)
        self.advantages = choice_advantages(cl.choices, view.contexts, attackers, device=target.device)

    @torch.no_grad()
    def score(self, games: torch.Tensor, messages: torch.Tensor, lengths: torch.Tensor, mode: Mode) -> Scores:
        """Scores of trials: row ``i`` is message ``messages[i, :lengths[i]]`` (target ids, ending with the
        terminator; ``<pad>`` allowed inside) said in game ``games[i]`` (an index into the view)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        losses, margins = [], []
        step = max(1, self.max_rows // (self.replies if mode == "preemptive" else 1))
        for k in range(0, games.numel(), step):
            sl = slice(k, k + step)
            loss, margin = self._score(games[sl], messages[sl], lengths[sl], mode)
            losses.append(loss)
            margins.append(margin)
        if not losses:
            empty = torch.zeros(0, device=self.model.device)
            return Scores(empty, empty)
        return Scores(torch.cat(losses), torch.cat(margins))

    @torch.no_grad()
    def win_rate(self, games: torch.Tensor, messages: torch.Tensor, lengths: torch.Tensor, *, samples: int = 8,
                 seed: int = 1) -> torch.Tensor:
        """Preemptive messages checked on ``samples`` fresh target replies (another seed than the search's):
        the share of replies after which the target's decision favours the attacker, ``(N,)``. The greedy
        search picks its message on the replies it scores, so its own loss overstates success."""
        saved = (self.replies, self.seed)
        self.replies, self.seed = samples, seed
        try:
            N, dev = games.numel(), self.model.device
            rates = []
            for k in range(0, N, max(1, self.max_rows // samples)):
                sl = slice(k, k + max(1, self.max_rows // samples))
                per = self._score(games[sl], messages[sl], lengths[sl], "preemptive", worst=False)[0]
                rates.append((per < 0).float().mean(dim=1))
            return torch.cat(rates) if rates else torch.zeros(0, device=dev)
        finally:
            self.replies, self.seed = saved

    def _score(self, games: torch.Tensor, msg: torch.Tensor, msg_len: torch.Tensor, mode: Mode, *,
               worst: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        m, v = self.model, self.view
        N, dev = games.numel(), m.device
        ctx = v.ctx[games]
        if N == 0:
            empty = torch.zeros(0, device=dev)
            return empty, empty
        # THEM: <message> YOU:
        L = msg.size(1) + 2
        toks = torch.full((N, L), m.pad_id, dtype=torch.long, device=dev)
        toks[:, 0] = m.them_id
        toks[:, 1 : msg.size(1) + 1] = msg
        rows = torch.arange(N, device=dev)
        toks[rows, msg_len + 1] = m.you_id
        read_len = msg_len + 2
        speakers = torch.full_like(toks, 2)
        speakers[rows, msg_len + 1] = 1
        speakers = speakers.masked_fill(toks == m.pad_id, 0)
        hid, state = m.read(toks, read_len, v.state[games], ctx, speakers=speakers)
        if mode == "reactive":
            margin = selection_margin(m.word_logits(state), m.sel_id, m.generation_mask) - self.sel_margin
            # the decision loss only matters where the constraint holds: infeasible trials rank by margin alone
            ok = (margin >= 0).nonzero().squeeze(1)
            loss = torch.full((N,), float("inf"), device=dev)
            if ok.numel():
                loss[ok] = self._decide_reactive(games[ok], toks[ok], read_len[ok], hid[ok], state[ok])
            return loss, margin
        margin = torch.full((N,), float("inf"), device=dev)
        K = self.replies
        if K > 1:  # every trial against K sampled replies; its loss is the worst of them
            games, toks, read_len, hid = (t.repeat_interleave(K, 0) for t in (games, toks, read_len, hid))
            state, ctx, rows = state.repeat_interleave(K, 0), ctx.repeat_interleave(K, 0), torch.arange(N * K,
                                                                                                        device=dev)
        gen = torch.Generator(device=dev)
        gen.manual_seed(self.seed)
        out = m.write(state, ctx, max_words=self.max_words, temperature=self.temperature, generator=gen)
        new_tok, new_len = concat_rows(toks, read_len, out.tokens, out.lengths)
        new_hid, _ = concat_rows(hid, read_len, out.hiddens, out.lengths)
        ended = out.tokens[rows, out.lengths - 1] == m.sel_id
        # the attacker answers <selection> where the target did not end the dialogue itself
        them_sel = torch.tensor([[m.them_id, m.sel_id]], device=dev).expand(rows.numel(), 2)
        two = torch.full((rows.numel(),), 2, dtype=torch.long, device=dev)
        sel_hid, _ = m.read(them_sel, two, out.state, ctx)
        add_len = torch.where(ended, torch.zeros_like(two), two)
        new_tok, new_len2 = concat_rows(new_tok, new_len, them_sel, add_len)
        new_hid, _ = concat_rows(new_hid, new_len, sel_hid, add_len)
        loss = self._decision(games, new_tok, new_hid, new_len2).view(N, K)
        return (loss.amax(dim=1) if worst else loss), margin

    def _decide_reactive(self, games: torch.Tensor, toks: torch.Tensor, read_len: torch.Tensor, hid: torch.Tensor,
                         state: torch.Tensor) -> torch.Tensor:
        m, N, dev = self.model, games.numel(), self.model.device
        ctx = self.view.ctx[games]
        sel = torch.full((N, 1), m.sel_id, dtype=torch.long, device=dev)
        ones = torch.ones(N, dtype=torch.long, device=dev)
        sel_hid, _ = m.read(sel, ones, state, ctx, speakers=ones.unsqueeze(1))
        new_tok, new_len = concat_rows(toks, read_len, sel, ones)
        new_hid, _ = concat_rows(hid, read_len, sel_hid, ones)
        return self._decision(games, new_tok, new_hid, new_len)

    def _decision(self, games: torch.Tensor, new_tok: torch.Tensor, new_hid: torch.Tensor,
                  new_len: torch.Tensor) -> torch.Tensor:
        """The hinge of the target's decision after the cached dialogue plus ``new_tok`` (and its states)."""
        m, v = self.model, self.view
        ctx = v.ctx[games]
        all_tok, all_len = concat_rows(v.tokens[games], v.lengths[games], new_tok, new_len)
        all_hid, _ = concat_rows(v.hiddens[games], v.lengths[games], new_hid, new_len)
        slots = m.selection_logits(all_tok, all_hid, all_len, ctx)
        choice = m.choice_logits(slots, [self.counts[g] for g in games.tolist()])
        width = choice.logits.size(1)
        hinge = decision_hinge(choice.logits, self.favourable[games, :width], self.kappa)
        if self.objective == "hinge":
            return hinge
        best = choice.logits.argmax(dim=1, keepdim=True)
        return hinge - self.adv_weight * self.advantages[games, :width].gather(1, best).squeeze(1)


@dataclass
class GreedyResult:
    """Outcome of :func:`greedy_attack` per game: the edited message (target tokens), its loss and margin,
    whether it succeeded, the positions changed, and (preemptive) its share of favourable fresh replies."""

    messages: list[list[str]]
    loss: list[float]
    margin: list[float]
    success: list[bool]
    changed: list[list[int]]
    trials: int
    win_rate: list[float] | None = None


TIE_BREAK = 1e-2
"""Weight of the constraint margin among feasible trials: once the hinge is floored at ``-kappa`` many trials
tie, and the one whose ``<selection>`` leads most is the one the (sampling) target most likely follows."""


def _key(loss: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Ordering of trials, lower is better: feasible ones by loss (ties by margin); infeasible ones after them
    by violation. (Preemptive trials have an infinite margin: loss alone.)"""
    finite = torch.where(torch.isfinite(margin), margin.clamp(max=10.0), torch.zeros_like(margin))
    return torch.where(margin >= 0, loss - TIE_BREAK * finite, 1e6 - margin)


def greedy_attack(scorer: CandidateScorer, drafts: Sequence[Sequence[str]], mode: Mode, *, max_changes: int = 2,
                  words: torch.Tensor | None = None, stop_on_success: bool | None = None, validate: int = 0,
                  min_win_rate: float = 0.5, passes: int | None = None) -> GreedyResult:
    """Edit ``drafts`` (one per game of the scorer's view, tokens ending with ``<eos>``/``<selection>``) by at
    most ``max_changes`` word substitutions to minimise the ``mode`` loss (see the module docstring).

    Args:
        scorer: the batched trial scorer of these games.
        drafts: the attacker's regular messages.
        mode: ``"reactive"`` (constrained, eq. 3.11) or ``"preemptive"`` (eq. 3.12).
        max_changes: words changed at most (thesis: 2).
        passes: greedy iterations (default ``max_changes``: each may change one more word). With more passes
            than ``max_changes`` (the thesis author's released code runs 3 for 2 words) a later pass may also
            re-choose a word it already changed; at most ``max_changes`` positions differ from the draft.
        words: candidate word ids (default :func:`candidate_words`).
        stop_on_success: stop editing a game once its message succeeds (default: for the preemptive mode; the
            reactive mode spends its remaining changes on a larger ``<selection>`` lead).
        validate: preemptive mode: also check the final message on this many fresh target replies and call it
            a success only if at least ``min_win_rate`` of them end in the attacker's favour (0: no check, the
            thesis' single-reply criterion).
    """
    m = scorer.model
    dev = m.device
    n = len(drafts)
    if n != scorer.view.state.size(0):
        raise ValueError(f"{n} drafts for {scorer.view.state.size(0)} games")
    for d in drafts:
        if not d or d[-1] not in (EOS, SELECTION):
            raise ValueError(f"a draft must end with {EOS} or {SELECTION}, got {list(d)}")
    if stop_on_success is None:
        stop_on_success = mode == "preemptive"
    passes = max_changes if passes is None else passes
    if passes < 0 or max_changes < 0:
        raise ValueError(f"passes and max_changes must be >= 0, got {passes} and {max_changes}")
    revisit = passes > max_changes
    words = candidate_words(m) if words is None else words.to(dev)
    width = max(len(d) for d in drafts)
    cur = torch.full((n, width), m.pad_id, dtype=torch.long, device=dev)
    for i, d in enumerate(drafts):
        cur[i, : len(d)] = torch.tensor(m.words.ids(d), dtype=torch.long)
    lengths = torch.tensor([len(d) for d in drafts], dtype=torch.long, device=dev)
    everyone = torch.arange(n, device=dev)
    s = scorer.score(everyone, cur, lengths, mode)
    loss, margin = s.loss.clone(), s.margin.clone()
    changed: list[list[int]] = [[] for _ in range(n)]
    trials = n

    def eligible(g: int, p: int) -> bool:
        return revisit if p in changed[g] else len(changed[g]) < max_changes

    for _ in range(passes):
        active = [g for g in range(n) if not (stop_on_success and margin[g] >= 0 and loss[g] < 0)]
        active = [g for g in active if any(eligible(g, p) for p in range(int(lengths[g]) - 1))]
        if not active:
            break
        # 1. position: blank each word that may change with <pad>
        rows_g, rows_p = [], []
        for g in active:
            for p in range(int(lengths[g]) - 1):
                if eligible(g, p):
                    rows_g.append(g)
                    rows_p.append(p)
        gi = torch.tensor(rows_g, dtype=torch.long, device=dev)
        pi = torch.tensor(rows_p, dtype=torch.long, device=dev)
        trial = cur[gi].clone()
        trial[torch.arange(gi.numel(), device=dev), pi] = m.pad_id
        ts = scorer.score(gi, trial, lengths[gi], mode)
        trials += gi.numel()
        # per game, the first position of lowest key (cells without a trial can never win)
        slot = torch.full((n,), -1, dtype=torch.long, device=dev)
        slot[torch.tensor(active, dtype=torch.long, device=dev)] = torch.arange(len(active), device=dev)
        table = torch.full((len(active), width), float("inf"), device=dev)
        table[slot[gi], pi] = torch.nan_to_num(_key(ts.loss, ts.margin), posinf=1e30)
        best_pos = dict(zip(active, table.argmin(dim=1).tolist()))
        # 2. word: every candidate word at the chosen position
        V = words.numel()
        ga = torch.tensor(active, dtype=torch.long, device=dev)
        gi = ga.repeat_interleave(V)
        pi = torch.tensor([best_pos[g] for g in active], dtype=torch.long, device=dev).repeat_interleave(V)
        trial = cur[gi].clone()
        trial[torch.arange(gi.numel(), device=dev), pi] = words.repeat(len(active))
        ws = scorer.score(gi, trial, lengths[gi], mode)
        trials += gi.numel()
        key = _key(ws.loss, ws.margin).view(len(active), V)
        pick = key.argmin(dim=1)
        for a, g in enumerate(active):
            r = a * V + int(pick[a])
            if float(key[a, pick[a]]) < float(_key(loss[g : g + 1], margin[g : g + 1])[0]):
                cur[g] = trial[r]
                loss[g], margin[g] = ws.loss[r], ws.margin[r]
                if best_pos[g] not in changed[g]:
                    changed[g].append(best_pos[g])
    ok = (margin >= 0) & (loss < 0)
    rate: list[float] | None = None
    if mode == "preemptive" and validate:
        wins = scorer.win_rate(everyone, cur, lengths, samples=validate, seed=scorer.seed + 7919)
        rate = wins.tolist()
        ok = ok & (wins >= min_win_rate)
        trials += n * validate
    out = [m.words.tokens(cur[g, : int(lengths[g])].tolist()) for g in range(n)]
    return GreedyResult(out, loss.tolist(), margin.tolist(), ok.tolist(), changed, trials, rate)


__all__ = ["MODES", "OBJECTIVES", "CandidateScorer", "GreedyResult", "Scores", "candidate_words", "greedy_attack"]
