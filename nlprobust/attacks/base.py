"""The text-attack template: everything but the search.

:meth:`TextAttack.attack_batch` (final) validates the items, puts the victim in attack mode, decodes the
original outputs, runs the subclass's :meth:`TextAttack.search`, verifies candidates with beam search on the
re-tokenised adversarial *text* (what a user would feed the model), shrinks every success with the reduction
pass, and packages one :class:`AttackResult` per item with its cost and quality. An attack writes only its
search: it proposes adversarial id lists through :meth:`TextAttack.verify` and may use the surrogate helpers
:meth:`TextAttack.loss_and_grad` / :meth:`TextAttack.loss_only`.

Reduction pass (on by default; ``reduce=False`` gives the paper-faithful attack): after a verified success,
the changed words are reverted to the original one at a time, least useful first (first-order estimate of
how much reverting a word raises the surrogate loss, from one gradient at the adversarial input), and each
revert is kept while the goal still holds under beam judging. The trials of all sentences of a batch are
decoded together, one revert per sentence per beam decode. With ``repair`` set, a success no single revert can
shrink is then tried with one word dropped and another changed word's substitute re-chosen (first-order
ranked, greedy-decoded in one batch, beam-verified), alternating with reverts while words go. With
``reduce_lexicon`` set, keyword successes that change more words than they have keywords are first offered a
shortcut: inputs that change one word per keyword, each a word the victim itself translates as that keyword
(:mod:`nlprobust.attacks.lexicon`), placed where the first-order score at the original input ranks best.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, final

import torch
from torch import Tensor

from nlprobust.attacks.goals import CRITERIA, MODES, Goal, GoalState, make_goal, pad_word_index
from nlprobust.attacks.lexicon import lexicon_columns, substitute_mask
from nlprobust.metrics import changed_positions, chrf, nonoverlap_success, sentence_bleu, token_error_rate
from nlprobust.victims.base import GreedyOutputs, Seq2SeqVictim, VictimError, pad_targets

VISIBLE_WORD = re.compile(r"\w", re.UNICODE)  # a word with some letter or digit (not punctuation only)


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """Settings every text attack shares.

    Attributes:
        mode: the goal: ``"nonoverlap"``, ``"keywords"`` or ``"quality-drop"``.
        criterion: non-overlap success rule, ``"at-least-as-long"`` (default) or ``"positional"`` (the thesis's).
        beam_size: beam of the judging decode (the thesis's victims decode with beam 5).
        reduce: run the reduction pass after success.
        quality_metric: ``"chrf"`` or ``"bleu"`` for the quality-drop goal.
        quality_fraction: quality-drop success: score at most this fraction of the clean output's.
        epsilon: confidence margin of the surrogate loss (eq. 2.8 / 2.12).
        repair: when positive, the reduction also drops a word and re-chooses another changed word's substitute
            where no single revert holds, testing this many substitutions per dropped word (0: reverts only).
        reduce_lexicon: keyword goals only: when positive, the reduction first tries inputs that change one word
            per keyword, each one of that keyword's lexicon words (:mod:`nlprobust.attacks.lexicon`), placed at
            any editable position: the ``reduce_lexicon`` best by first-order score at the original input are
            decoded greedily and the best beam-judged; one that succeeds with fewer words replaces the success.
        lexicon_words: lexicon words considered per keyword (the most frequent source words first).
        exchange: when positive, the reduction also exchanges two changed words for one new swap anywhere in the
            input where neither reverts nor repairs shrink the success, testing this many swaps per dropped pair
            (of at most ``exchange_pairs`` pairs, those whose revert costs least at first order).
        exchange_pairs: dropped pairs tried per sentence and round of the exchange.
        trade: when positive, the reduction also trades three changed words for two new swaps where neither
            reverts, repairs nor exchanges shrink a success of three words or more: a two-step search from each
            reduced input (of at most ``trade_sets`` dropped triples, those whose revert costs least at first
            order) that tests this many swaps per input and step.
        trade_beam: inputs of the trade's first step (the lowest surrogate loss per dropped triple) that the
            second step grows.
        trade_sets: dropped triples tried per sentence and round of the trade.
        swap_lexicon: keyword goals only: the reduction's repair, exchange and trade also test, per input they
            grow, this many more swaps: the best by first-order score among the keywords' lexicon words (at most
            ``lexicon_words`` per keyword), which the ranking over the whole vocabulary rarely reaches.
        preset: name of the hyperparameter set these values came from (recorded with every result).
    """

    mode: str = "nonoverlap"
    criterion: str = "at-least-as-long"
    beam_size: int = 5
    reduce: bool = True
    quality_metric: str = "chrf"
    quality_fraction: float = 0.5
    epsilon: float = 0.0
    repair: int = 0
    reduce_lexicon: int = 0
    lexicon_words: int = 16
    exchange: int = 0
    exchange_pairs: int = 16
    trade: int = 0
    trade_beam: int = 4
    trade_sets: int = 4
    swap_lexicon: int = 0
    preset: str = "custom"

    # options added after results were first recorded: hashed only when set (each class lists its own)
    _HASHED_WHEN_SET: ClassVar[tuple[str, ...]] = ("repair", "reduce_lexicon", "lexicon_words", "exchange",
                                                    "exchange_pairs", "trade", "trade_beam", "trade_sets",
                                                    "swap_lexicon")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, not {self.criterion!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be positive, not {self.beam_size}")
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, not {self.epsilon}")
        if self.repair < 0:
            raise ValueError(f"repair must be >= 0, not {self.repair}")
        if self.exchange < 0 or self.exchange_pairs < 1:
            raise ValueError(f"exchange must be >= 0 and exchange_pairs positive, not {self.exchange} and "
                             f"{self.exchange_pairs}")
        if self.swap_lexicon < 0:
            raise ValueError(f"swap_lexicon must be >= 0, not {self.swap_lexicon}")
        if self.trade < 0 or self.trade_beam < 1 or self.trade_sets < 1:
            raise ValueError(f"trade must be >= 0, trade_beam and trade_sets positive, not {self.trade}, "
                             f"{self.trade_beam} and {self.trade_sets}")
        if self.reduce_lexicon < 0 or self.lexicon_words < 1:
            raise ValueError(f"reduce_lexicon must be >= 0 and lexicon_words positive, not {self.reduce_lexicon} "
                             f"and {self.lexicon_words}")

    # options only the reduction pass reads: two settings that differ in these alone run the same search
    _REDUCTION_ONLY: ClassVar[tuple[str, ...]] = ("reduce", "repair", "reduce_lexicon", "exchange", "exchange_pairs",
                                                   "trade", "trade_beam", "trade_sets", "swap_lexicon")

    def same_search(self, other: AttackConfig) -> bool:
        """Whether ``other`` runs the same search as these settings (same class, equal but for reduction-only
        options), so that the reduction of one may be run again on the searches of the other
        (:meth:`TextAttack.reduce_records`)."""
        if type(other) is not type(self):
            return False
        only = {n for c in type(self).__mro__ for n in vars(c).get("_REDUCTION_ONLY", ())}
        mine, theirs = asdict(self), asdict(other)
        return all(mine[k] == theirs[k] for k in mine if k not in only and k != "preset")

    def goal(self) -> Goal:
        return make_goal(self.mode, criterion=self.criterion, quality_metric=self.quality_metric,
                         quality_fraction=self.quality_fraction)

    def tag(self) -> str:
        """A short hash of every value: results files carry it so a resumed run never mixes settings. Options
        added later (``_HASHED_WHEN_SET``) count only when set, so earlier runs' records stay resumable."""
        values = asdict(self)
        defaults = {f.name: f.default for f in fields(self)}
        late = {n for c in type(self).__mro__ for n in vars(c).get("_HASHED_WHEN_SET", ())}
        for name in late:
            if values[name] == defaults[name]:
                del values[name]
        return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class AttackItem:
    """One sentence to attack (``keywords`` for the keywords goal, ``reference`` optional for quality-drop;
    ``error``: the input could not be read, e.g. undecodable bytes, and becomes an error record)."""

    index: int
    text: str
    keywords: tuple[str, ...] = ()
    reference: str | None = None
    error: str | None = None


@dataclass
class AttackResult:
    """Outcome for one sentence; ``error`` is set (and nothing else meaningful) when it could not run.

    ``changed`` counts changed words (after reduction); ``changed_before_reduction`` what the search returned.
    ``success_by_criterion`` judges a non-overlap result under both criteria. ``before_reduction`` is the
    search's own result (adversarial text, size, quality) and cost, i.e. the attack without the reduction pass:
    the search does not depend on it, so one run gives both rows. Costs are per sentence:
    forward and backward passes of the victim (one batched pass counts once for each sentence in it) and
    beam decodes (each judged candidate counts one). ``member``: for a portfolio's result, the member attack
    whose result was kept (:mod:`nlprobust.attacks.portfolio`)."""

    index: int
    mode: str
    source: str
    keywords: list[str] = field(default_factory=list)
    attack: str = ""
    criterion: str = ""
    reduction: bool = False
    adversarial: str = ""
    source_words: list[str] = field(default_factory=list)
    adversarial_words: list[str] = field(default_factory=list)
    changed_positions: list[int] = field(default_factory=list)
    original_output: str = ""
    adversarial_output: str = ""
    success: bool = False
    success_by_criterion: dict[str, bool] = field(default_factory=dict)
    changed: int = 0
    changed_before_reduction: int = 0
    bleu: float = 1.0
    chrf: float = 1.0
    ter: float = 0.0
    iterations: int = 0
    time_s: float = 0.0
    forward_passes: int = 0
    backward_passes: int = 0
    beam_decodes: int = 0
    preset: str = ""
    before_reduction: dict[str, Any] = field(default_factory=dict)
    member: str = ""
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(eq=False)
class Row:
    """One sentence under attack: its ids, goal state, best verified success and cost counters."""

    item: AttackItem
    ids: list[int]
    editable: list[bool]
    state: GoalState
    word_of: list[int]  # source word of each token (-1: not text)
    best: tuple[int, ...] | None = None
    best_output: list[int] | None = None
    best_changed: int = 1 << 30
    fallback: tuple[int, ...] | None = None  # the search's best guess when nothing succeeded
    iterations: int = 0
    forward: int = 0
    backward: int = 0
    beams: int = 0
    done: bool = False
    # (best, output, changed, forward, backward, beams) when the search ended, before any reduction
    unreduced: tuple[Any, ...] | None = None


def run_in_batches(attack_batch: Callable[[list[AttackItem]], list[AttackResult]], items: Iterable[AttackItem],
                   batch_size: int, on_result: Callable[[AttackResult], None] | None = None) -> list[AttackResult]:
    """``attack_batch`` over ``items`` in batches of ``batch_size``; ``on_result`` is called as each result is
    ready."""
    items = list(items)
    results: list[AttackResult] = []
    for s in range(0, len(items), batch_size):
        for r in attack_batch(items[s : s + batch_size]):
            results.append(r)
            if on_result is not None:
                on_result(r)
    return results


class TextAttack(ABC):
    """Template of every text attack on a :class:`~nlprobust.victims.base.Seq2SeqVictim`.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`search`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[AttackConfig]] = AttackConfig

    def __init__(self, victim: Seq2SeqVictim, config: AttackConfig, *,
                 on_iteration: Callable[[str, int], None] | None = None) -> None:
        """``on_iteration(phase, iteration)``, when given, is called with ``"begin"`` and ``"end"`` around each
        search iteration (beam verification excluded): a benchmark times iterations there (synchronising the
        device itself), so the attack keeps no timing state and adds no host sync."""
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, not {type(config).__name__}")
        self.victim = victim
        self.config = config
        self.on_iteration = on_iteration
        self.goal = config.goal()
        # attack state in float32 whatever the victim's dtype (cast at the victim boundary)
        self._table = victim.source_embedding_table().detach().float()
        self._cand_ids = victim.candidate_ids()
        self._cand_table = self._table[self._cand_ids]
        self._cand_sq = (self._cand_table * self._cand_table).sum(1)
        # substitutes a swap may bring in: candidate tokens with some letter or digit (no punctuation pieces)
        self._sub_ok = torch.tensor(substitute_mask(victim), dtype=torch.bool, device=victim.device)

    # ---- the template ----------------------------------------------------------------------------
    def run(self, items: Iterable[AttackItem], *, batch_size: int = 32,
            on_result: Callable[[AttackResult], None] | None = None) -> list[AttackResult]:
        """Attack ``items`` in batches; ``on_result`` is called as each result is ready."""
        return run_in_batches(self.attack_batch, items, batch_size, on_result)

    @final
    def attack_batch(self, items: list[AttackItem]) -> list[AttackResult]:
        """Attack one batch of sentences together; one result per item, in order."""
        t0 = time.perf_counter()
        with self.victim.attack_mode():
            rows, errors = self._prepare(items)
            t_red = 0.0
            if rows:
                self.search(rows)
                for r in rows:
                    r.unreduced = (r.best, r.best_output, r.best_changed, r.forward, r.backward, r.beams)
                if self.config.reduce:
                    t1 = time.perf_counter()
                    self.reduce(rows)
                    t_red = time.perf_counter() - t1
            n = max(1, len(items))
            results = errors + self._finish(rows, (time.perf_counter() - t0) / n, t_red / n)
        order = {it.index: i for i, it in enumerate(items)}
        return sorted(results, key=lambda r: order.get(r.index, 0))

    @final
    def reduce_records(self, records: Sequence[dict[str, Any]], items: Sequence[AttackItem] | None = None
                       ) -> list[AttackResult]:
        """This attack's reduction pass run again on the records of an earlier run of the same search (settings
        that :meth:`AttackConfig.same_search` accepts, e.g. before a change of reduction options), instead of
        searching again: each record's success before its reduction (``before_reduction``; the record itself
        when it was not reduced) is re-encoded, judged again with beam search (one beam decode, counted with
        the reduction) and reduced. The search's iterations, passes and seconds carry over from the record
        (``before_reduction`` keeps them); the reduction's are added. A record without success stays a failure
        (its adversarial input re-encoded, or the original input where that text does not re-encode to its
        length); error records are returned as they were. A success whose text does not re-encode to its
        input's length (e.g. a substitute whose text the tokenizer splits), or is not judged a success again, is
        searched again, with its cost and seconds measured afresh. One result per record, in order.

        ``items``: the records' inputs as first attacked, by index (records do not keep a quality-drop goal's
        ``reference``); without them, each input is rebuilt from its record (text and keywords)."""
        recs = list(records)
        t0 = time.perf_counter()
        given = {it.index: it for it in items or ()}
        if self.config.mode == "quality-drop" and items is None:
            raise ValueError("reduce_records: a quality-drop goal needs the records' items (their references)")
        todo, searched = [], {}
        for rec in recs:
            if rec.get("error"):
                continue
            if rec.get("mode") != self.config.mode:
                raise ValueError(f"record {rec.get('index')}: mode {rec.get('mode')!r}, these settings "
                                 f"{self.config.mode!r}")
            if items is not None and rec["index"] not in given:
                raise ValueError(f"record {rec['index']}: not among the items given")
            it = given.get(rec["index"])
            if it is not None and (it.text != rec["source"] or list(it.keywords) != list(rec.get("keywords") or ())):
                raise ValueError(f"record {rec['index']}: its input or keywords differ from the item's")
            todo.append(given.get(rec["index"]) or AttackItem(rec["index"], rec["source"],
                                                               tuple(rec.get("keywords") or ())))
            searched[rec["index"]] = {**rec, **(rec.get("before_reduction") or {})}
        trials: list[tuple[Row, tuple[int, ...]]] = []
        again: list[Row] = []
        t1, t_again, t_red = t0, 0.0, 0.0
        with self.victim.attack_mode():
            rows, errors = self._prepare(todo)
            if rows:
                for r in rows:
                    s = searched[r.item.index]
                    r.iterations = int(s.get("iterations", 0))
                    r.forward, r.backward = int(s.get("forward_passes", 0)), int(s.get("backward_passes", 0))
                    r.beams = int(s.get("beam_decodes", 1)) - (0 if s.get("success") else 1)
                    try:
                        adv = self.victim.encode_source(s.get("adversarial") or r.item.text).ids
                    except VictimError:
                        adv = list(r.ids)
                    r.fallback = tuple(adv) if len(adv) == len(r.ids) else tuple(r.ids)
                    if s.get("success") and len(adv) == len(r.ids) and adv != r.ids:
                        trials.append((r, tuple(adv)))
                    elif s.get("success"):
                        again.append(r)
                searched_beams = {id(r): r.beams for r in rows}  # the re-judging decode counts as reduction
                self.verify(trials)
                again += [r for r, _ in trials if r.best is None]  # not judged a success again: search afresh
                t_again = time.perf_counter()
                if again:
                    for r in again:
                        r.iterations, r.forward, r.backward, r.beams, r.fallback = 0, 0, 0, 1, None
                    self.search(again)
                    searched_beams.update((id(r), r.beams) for r in again)
                t_again = time.perf_counter() - t_again
                for r in rows:
                    r.unreduced = (r.best, r.best_output, r.best_changed, r.forward, r.backward,
                                   searched_beams[id(r)])
                t1 = time.perf_counter()
                if self.config.reduce:
                    self.reduce(rows)
                t_red = (time.perf_counter() - t1) / len(rows)
            results = errors + (self._finish(rows, 0.0, 0.0) if rows else [])
        t_prep = (t1 - t0 - t_again) / len(rows) if rows else 0.0
        fresh = {r.item.index for r in again}
        for res in results:  # the search's seconds from its record (or this run's), this run's for the reduction
            earlier = searched.get(res.index)
            if earlier is None or res.error is not None:
                continue
            search_s = t_again / len(fresh) if res.index in fresh else float(earlier.get("time_s", 0.0))
            res.time_s = search_s + t_prep + (t_red if self.config.reduce else 0.0)
            if res.before_reduction:
                res.before_reduction["time_s"] = search_s
        by_index = {r.index: r for r in results}
        out: list[AttackResult] = []
        for rec in recs:
            if rec.get("error"):
                out.append(AttackResult(**{k: v for k, v in rec.items() if k in AttackResult.__dataclass_fields__}))
            else:
                out.append(by_index[rec["index"]])
        return out

    @abstractmethod
    def search(self, rows: list[Row]) -> None:
        """Look for adversarial inputs: offer candidates with :meth:`verify`, set ``row.fallback`` and
        ``row.iterations``; a row whose search is over may be marked ``done``."""

    # ---- helpers for searches ---------------------------------------------------------------------
    def _error(self, it: AttackItem, msg: str, output: str = "") -> AttackResult:
        cfg = self.config
        return AttackResult(index=it.index, mode=cfg.mode, source=it.text, keywords=list(it.keywords),
                            attack=self.name, criterion=self.goal.criterion, reduction=cfg.reduce,
                            original_output=output, preset=cfg.preset, error=msg)

    def _prepare(self, items: list[AttackItem]) -> tuple[list[Row], list[AttackResult]]:
        v = self.victim
        errors: list[AttackResult] = []
        encoded = []
        for it in items:
            try:
                if it.error is not None:
                    raise VictimError(it.error)
                if not it.text.strip():
                    raise VictimError("empty input: nothing to attack")
                enc = v.encode_source(it.text)
                if not any(enc.editable):
                    raise VictimError("no editable token in the input")
                if self.config.mode == "keywords":
                    if not it.keywords:
                        raise VictimError("keywords mode needs at least one keyword")
                    for k in it.keywords:
                        v.keyword_id(k)
                encoded.append((it, enc))
            except VictimError as exc:
                errors.append(self._error(it, str(exc)))
        if not encoded:
            return [], errors
        outs = v.translate_ids([e.ids for _, e in encoded], beam_size=self.config.beam_size)
        rows = []
        for (it, enc), out in zip(encoded, outs):
            try:
                state = self.goal.prepare(v, out, it.keywords, it.reference)
            except VictimError as exc:
                errors.append(self._error(it, str(exc), v.decode_target(out)))
                continue
            word_of = v.source_word_index(enc.ids)
            rows.append(Row(it, enc.ids, enc.editable, state, word_of, beams=1))
        return rows, errors

    def changed(self, row: Row, adv: Sequence[int]) -> int:
        return self.victim.count_changed(row.ids, list(adv))

    def text(self, row: Row, adv: Sequence[int]) -> str:
        """The adversarial text of ``adv``, an edit of ``row``'s input (its own words where the edit kept them)."""
        return self.victim.render_source(list(adv), row.item.text, row.ids)

    def reencode(self, row: Row, adv: Sequence[int]) -> list[int] | None:
        """The ids a user gets by feeding the adversarial *text* back to the model (None if unusable)."""
        try:
            return self.victim.encode_source(self.text(row, adv)).ids
        except VictimError:
            return None

    def verify(self, trials: Sequence[tuple[Row, tuple[int, ...]]]) -> list[tuple[bool, list[int]]]:
        """Judge ``(row, adversarial ids)`` trials with one batched beam decode of the re-encoded text; keep each
        row's success with the fewest changed words. Returns ``(success, output ids)`` per trial."""
        todo = [(k, r, ids) for k, (r, key) in enumerate(trials) if (ids := self.reencode(r, key)) is not None]
        outs = self.victim.translate_ids([ids for _, _, ids in todo], beam_size=self.config.beam_size) if todo else []
        res: list[tuple[bool, list[int]]] = [(False, []) for _ in trials]
        for (k, r, _), out in zip(todo, outs):
            r.beams += 1
            key = trials[k][1]
            ok = self.goal.success(self.victim, r.state, out)
            res[k] = (ok, out)
            if ok:
                ch = self.changed(r, key)
                if 0 < ch < r.best_changed:
                    r.best, r.best_changed, r.best_output = tuple(key), ch, out
        return res

    def greedy_success(self, row: Row, output: list[int]) -> bool:
        """The goal judged on a greedy output (a cheap filter before beam verification)."""
        return self.goal.success(self.victim, row.state, output)

    def targets(self, rows: Sequence[Row]) -> tuple[Tensor, Tensor]:
        """``(targets [B, M], word_index [B, M])`` of the surrogate loss for ``rows`` (padded with -1)."""
        dev = self.victim.device
        return (pad_targets([r.state.target for r in rows], -1, dev),
                pad_word_index([r.state for r in rows], dev))

    def max_len(self, rows: Sequence[Row]) -> int:
        return self.goal.max_output_len([r.state for r in rows])

    def surrogate(self, x: Tensor, mask: Tensor, rows: Sequence[Row], epsilon: float,
                  targets: tuple[Tensor, Tensor] | None = None) -> tuple[GreedyOutputs, Tensor]:
        """Greedy outputs (still on the device until read) and per-row surrogate loss for float32 source
        embeddings ``x`` ``[B, N, d]``."""
        v = self.victim
        tgt, widx = targets if targets is not None else self.targets(rows)
        greedy, logits, valid = v.greedy_with_logits(x.to(v.dtype), mask, max_len=self.max_len(rows))
        loss = self.goal.loss(logits.float(), tgt, widx, valid, v.tgt_eos_id, epsilon)
        for r in rows:
            r.forward += 1
        return greedy, loss

    def loss_and_grad(self, rows: Sequence[Row], adv: Sequence[Sequence[int]], epsilon: float
                      ) -> tuple[GreedyOutputs, Tensor, Tensor, Tensor]:
        """Greedy outputs, loss ``[B]``, gradient w.r.t. the input embeddings ``[B, N, d]`` and ids ``[B, N]``."""
        ids, mask = self.victim.pad_sources([list(a) for a in adv])
        x = self._table[ids].requires_grad_(True)
        with self.victim.grad_context():
            greedy, loss = self.surrogate(x, mask, rows, epsilon)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        for r in rows:
            r.backward += 1
        return greedy, loss.detach(), grad, ids

    @torch.no_grad()
    def loss_only(self, rows: Sequence[Row], adv: Sequence[Sequence[int]], epsilon: float, *,
                  chunk: int = 256) -> tuple[list[list[int]], Tensor]:
        """Greedy outputs and surrogate loss of many candidate inputs (``rows`` may repeat), in chunks."""
        outs: list[list[int]] = []
        losses = []
        for s in range(0, len(adv), chunk):
            part_rows, part = rows[s : s + chunk], [list(a) for a in adv[s : s + chunk]]
            ids, mask = self.victim.pad_sources(part)
            g, loss = self.surrogate(self._table[ids], mask, part_rows, epsilon)
            outs.extend(g)
            losses.append(loss)
        return outs, torch.cat(losses) if losses else torch.zeros(0)

    def beam_candidates(self, losses: Sequence[float], greedy_ok: Sequence[bool]) -> list[int]:
        """Which of one sentence's tested inputs (their surrogate ``losses`` and whether their greedy output met
        the goal) go to beam judging, best first: here the greedy successes, lowest loss first, at most four.
        An attack may widen this (the word swap's ``verify_by`` / ``verify``)."""
        return sorted((n for n, ok in enumerate(greedy_ok) if ok), key=lambda n: losses[n])[:4]

    def beam_trials(self, ns: Sequence[int], trial_rows: Sequence[Row], trials: Sequence[Sequence[int]],
                    greedy: Sequence[list[int]], losses: Sequence[float]) -> list[tuple[Row, tuple[int, ...]]]:
        """The trials ``ns`` of one sentence that :meth:`beam_candidates` sends to beam judging, as
        :meth:`verify` takes them."""
        ok = [self.greedy_success(trial_rows[n], greedy[n]) for n in ns]
        picked = self.beam_candidates([losses[n] for n in ns], ok)
        return [(trial_rows[ns[j]], tuple(trials[ns[j]])) for j in picked]

    def swap_pairs(self, val: Tensor, flat: Tensor) -> list[list[tuple[int, int]]]:
        """Per row, the (position, candidate word id) swaps of a top-k over flattened [position x candidate]
        first-order scores (``val``, ``flat``), those with an infinite (disallowed) score left out; one host read."""
        n_c = self._cand_ids.numel()
        pos, word = (flat // n_c).tolist(), self._cand_ids[flat % n_c].tolist()
        finite = torch.isfinite(val).tolist()
        return [[(p, w) for p, w, f in zip(ps, ws, fs) if f] for ps, ws, fs in zip(pos, word, finite)]

    def lexicon_columns(self, rows: Sequence[Row]) -> Tensor:
        """[rows, candidates] mask of the candidate words in the keyword lexicon of each row's keywords (at most
        ``lexicon_words`` per keyword)."""
        return lexicon_columns(self.victim, self._cand_ids, [r.state.keywords for r in rows],
                               self.config.lexicon_words).any(1)

    def add_lexicon_swaps(self, swaps: list[list[tuple[int, int]]], scores: Tensor, lex_cols: Tensor, k: int) -> None:
        """Append to each row's ``swaps`` its ``k`` best (position, word) swaps by first-order score among its
        lexicon words (``scores`` [B, N, C] with disallowed swaps already at +inf; ``lex_cols`` from
        :meth:`lexicon_columns`), those it holds already left out."""
        masked = scores.masked_fill(~lex_cols.unsqueeze(1), float("inf")).flatten(1)
        val, flat = masked.topk(min(k, masked.shape[1]), dim=1, largest=False)
        for row_swaps, extra in zip(swaps, self.swap_pairs(val, flat)):
            have = set(row_swaps)
            row_swaps.extend(x for x in extra if x not in have)

    # ---- reduction -----------------------------------------------------------------------------
    def _units(self, row: Row, adv: Sequence[int]) -> list[list[int]]:
        """Changed token positions grouped by the source word they belong to."""
        groups: dict[int, list[int]] = {}
        for p, (a, b) in enumerate(zip(row.ids, adv)):
            if a != b:
                groups.setdefault(row.word_of[p] if row.word_of[p] >= 0 else -1 - p, []).append(p)
        return list(groups.values())

    def reduce(self, rows: list[Row]) -> None:
        """Shrink every verified success: revert changed words while the goal holds (:meth:`_revert`); with
        ``repair``, then drop one word and repair the rest (:meth:`_repair`); with ``exchange``, where that did not
        shrink it, exchange two changed words for one new swap (:meth:`_exchange`); with ``trade``, where nothing
        shrank a success of three words or more, trade three for two (:meth:`_trade`); and again while a word
        goes."""
        todo = [r for r in rows if r.best is not None and len(r.best) == len(r.ids) and r.best_changed > 1]
        if self.config.reduce_lexicon and self.config.mode == "keywords":
            self._lexicon_shortcut([r for r in todo if r.best_changed > len(r.state.keywords)])
            todo = [r for r in todo if r.best_changed > 1]
        while todo:
            self._revert(todo)
            todo = [r for r in todo if r.best_changed > 1]
            shrunk = self._repair(todo) if self.config.repair else []
            if self.config.exchange:
                gone = {id(r) for r in shrunk}
                shrunk += self._exchange([r for r in todo if id(r) not in gone])
            if self.config.trade:
                gone = {id(r) for r in shrunk}
                shrunk += self._trade([r for r in todo if id(r) not in gone and r.best_changed >= 3])
            todo = shrunk

    def _lexicon_shortcut(self, todo: list[Row], chunk: int = 64) -> None:
        """Offer every row inputs that change one word per keyword, each among that keyword's first
        ``lexicon_words`` lexicon words, at editable positions with a visible word (distinct per input). One
        gradient at the original input ranks each keyword's (position, word) swaps by first-order score; the
        per-keyword lists are combined (best summed score first) into ``reduce_lexicon`` inputs per row, decoded
        greedily in one batched pass, and those :meth:`beam_candidates` picks are judged with beam search
        (:meth:`verify` keeps a success with fewer words)."""
        cfg = self.config
        n_trials = cfg.reduce_lexicon
        trial_rows: list[Row] = []
        trials: list[list[int]] = []
        for s in range(0, len(todo), chunk):
            part = todo[s : s + chunk]
            _, _, grad, ids = self.loss_and_grad(part, [r.ids for r in part], cfg.epsilon)
            scores = grad @ self._cand_table.T - (grad * self._table[ids]).sum(-1, keepdim=True)  # [B, N, C]
            words = [self.victim.source_words(r.ids) for r in part]
            ok_pos = torch.zeros(ids.shape, dtype=torch.bool)
            for i, (r, ws) in enumerate(zip(part, words)):
                for p, e in enumerate(r.editable):
                    word = ws[r.word_of[p]] if e and 0 <= r.word_of[p] < len(ws) else ""
                    ok_pos[i, p] = bool(VISIBLE_WORD.search(word))
            bad = ~ok_pos.to(scores.device).unsqueeze(-1) | (ids.unsqueeze(-1) == self._cand_ids.view(1, 1, -1))
            scores = scores.masked_fill(bad, float("inf"))
            cols = lexicon_columns(self.victim, self._cand_ids, [r.state.keywords for r in part], cfg.lexicon_words)
            # per keyword: each row's best swaps, as many as its number of keywords lets combine into n_trials
            m_of = [n_trials if len(r.state.keywords) == 1
                    else max(2, round(n_trials ** (1 / len(r.state.keywords)))) for r in part]
            per_kw = []  # [keyword][row] -> [(score, position, word)]
            for j in range(cols.shape[1]):
                masked = scores.masked_fill(~cols[:, j].unsqueeze(1), float("inf")).flatten(1)
                val, flat = masked.topk(min(max(m_of), masked.shape[1]), dim=1, largest=False)
                vals = val.tolist()
                per_kw.append([[(vals[i][n], p, w) for n, (p, w) in enumerate(ps[: m_of[i]])]
                               for i, ps in enumerate(self.swap_pairs(val, flat))])
            for i, r in enumerate(part):
                lists = [per_kw[j][i] for j in range(len(r.state.keywords))]
                if any(not lst for lst in lists):
                    continue
                combos = []
                for combo in itertools.product(*lists):
                    if len({p for _, p, _ in combo}) == len(combo):
                        combos.append((sum(v for v, _, _ in combo), combo))
                combos.sort(key=lambda c: c[0])
                for _, combo in combos[:n_trials]:
                    t = list(r.ids)
                    for _, p, tok in combo:
                        t[p] = tok
                    trial_rows.append(r)
                    trials.append(t)
        self._judge_smaller(trial_rows, trials)

    def _judge_smaller(self, trial_rows: list[Row], trials: list[list[int]], groups: Sequence[int] | None = None,
                       picks: int = 8) -> None:
        """Decode ``trials`` greedily in one batched pass and judge with beam search those
        :meth:`beam_candidates` picks among each row's trials that change fewer words than its success
        (:meth:`verify` keeps the smallest success). With ``groups`` (a group number per trial, e.g. the reduced
        input it grew from), each group's first pick competes, and a row's ``picks`` of them with the lowest
        surrogate loss are judged, then each group's second pick, and so on (up to :meth:`beam_candidates`' limit)
        while a row has fewer than ``picks``; an input is judged once: the judged inputs spread over the groups."""
        if not trials:
            return
        greedy, loss = self.loss_only(trial_rows, trials, self.config.epsilon)
        losses = loss.tolist()
        by_row: dict[int, dict[int, list[int]]] = {}
        for n, r in enumerate(trial_rows):
            if self.changed(r, trials[n]) < r.best_changed:
                by_row.setdefault(id(r), {}).setdefault(groups[n] if groups is not None else 0, []).append(n)
        to_verify: list[tuple[Row, tuple[int, ...]]] = []
        for by_group in by_row.values():
            if groups is None:
                to_verify.extend(self.beam_trials(by_group[0], trial_rows, trials, greedy, losses))
                continue
            ranked = []  # per group, its picks best first
            for ns in by_group.values():
                ok = [self.greedy_success(trial_rows[n], greedy[n]) for n in ns]
                ranked.append([ns[j] for j in self.beam_candidates([losses[n] for n in ns], ok)])
            chosen: list[int] = []
            seen: set[tuple[int, ...]] = set()
            for rank in range(max(map(len, ranked), default=0)):  # every group's best, then every group's second...
                for n in sorted((g[rank] for g in ranked if rank < len(g)), key=losses.__getitem__):
                    if len(chosen) < picks and tuple(trials[n]) not in seen:
                        seen.add(tuple(trials[n]))
                        chosen.append(n)
            to_verify.extend((trial_rows[n], tuple(trials[n])) for n in chosen)
        if to_verify:
            self.verify(to_verify)

    def _revert(self, todo: list[Row]) -> None:
        """Revert changed words of every row one at a time, least useful first, keeping each revert while the goal
        still holds under beam judging (all rows' trials in one batched decode per step)."""
        # first-order cost of reverting each changed word, summed over its tokens
        order = self._revert_gain(todo)
        current = [list(r.best or ()) for r in todo]
        # a second pass retries, for the rows the first pass shrank, the reverts that failed before
        for _ in range(2):
            queues = []
            for r, g, cur in zip(todo, order, current):
                units = self._units(r, cur)
                units.sort(key=lambda u, g=g: sum(g[p] for p in u))  # type: ignore[misc]
                queues.append(units if len(units) > 1 else [])
            changed_any = [False] * len(todo)
            step = 0
            while True:
                trials, owners = [], []
                for i, (r, q) in enumerate(zip(todo, queues)):
                    if step < len(q):
                        reverted = list(current[i])
                        for p in q[step]:
                            reverted[p] = r.ids[p]
                        if any(a != b for a, b in zip(reverted, r.ids)):
                            trials.append((r, tuple(reverted)))
                            owners.append(i)
                if not trials:
                    break
                for (ok, out), i, (_, t) in zip(self.verify(trials), owners, trials):
                    r = todo[i]
                    # keep a revert that holds the goal and does not raise the word count (for subword victims
                    # reverting one piece of a word can split it into more changed words of the decoded text)
                    if ok and (ch := self.changed(r, t)) <= r.best_changed:
                        current[i] = list(t)
                        r.best, r.best_output, r.best_changed = t, out, ch
                        changed_any[i] = True
                step += 1
            keep = [i for i, c in enumerate(changed_any) if c]
            if not keep:
                break
            todo = [todo[i] for i in keep]
            order = [order[i] for i in keep]
            current = [current[i] for i in keep]

    def _repair(self, todo: list[Row]) -> list[Row]:
        """Drop one changed word and re-choose the substitute at one of the other changed positions, so that the
        goal holds with one word fewer where no single revert could. For every (row, dropped word) the gradient
        at the input with that word reverted ranks the swaps at the remaining changed positions (first-order
        score, as the word swap); the ``repair`` best per dropped word are decoded greedily in one batched pass
        and those :meth:`beam_candidates` picks per row are judged with beam search. Returns the rows that lost
        a word."""
        bases: list[list[int]] = []
        base_rows: list[Row] = []
        movable: list[list[int]] = []  # changed positions whose substitute may be re-chosen
        for r in todo:
            cur = list(r.best or ())
            units = self._units(r, cur)
            for u in units:
                b = list(cur)
                for p in u:
                    b[p] = r.ids[p]
                rest = [p for v in units if v is not u for p in v]
                bases.append(b)
                base_rows.append(r)
                movable.append(rest)
        trial_rows, trials, _ = self._swap_trials(base_rows, bases, movable, self.config.repair)
        before = {id(r): r.best_changed for r in todo}
        self._judge_smaller(trial_rows, trials)
        return [r for r in todo if r.best_changed < before[id(r)]]

    def _exchange(self, todo: list[Row]) -> list[Row]:
        """Drop two changed words and add one new swap anywhere in the input, so that the goal holds with one word
        fewer where no revert or repair could (a success of two words becomes a one-word search from the original
        input). Per row, the ``exchange_pairs`` pairs whose revert costs least at first order are dropped; the
        gradient at each reduced input ranks the swaps at every editable position (first-order score, as the word
        swap); the ``exchange`` best per pair are decoded greedily in one batched pass, and the best greedy
        successes compete for a row's beam judging round-robin over the pairs (:meth:`_judge_smaller` with
        groups). A swap never puts a dropped one-token word's substitute back. Returns the rows that lost a word."""
        if not todo:
            return []
        base_rows, bases, avoid = self._dropped(todo, 2, self.config.exchange_pairs)
        editable = [[p for p, e in enumerate(r.editable) if e] for r in base_rows]
        trial_rows, trials, groups = self._swap_trials(base_rows, bases, editable, self.config.exchange, avoid=avoid)
        before = {id(r): r.best_changed for r in todo}
        self._judge_smaller(trial_rows, trials, groups)
        return [r for r in todo if r.best_changed < before[id(r)]]

    def _dropped(self, todo: list[Row], size: int, limit: int
                 ) -> tuple[list[Row], list[list[int]], list[list[tuple[int, int]]]]:
        """Per row, its success with ``size`` changed words reverted, for the ``limit`` sets of words whose revert
        costs least at first order (distinct inputs only): the rows, the reduced inputs, and per input the
        dropped one-token words' (position, substitute) pairs, which a swap must not put back (that is a revert,
        which the revert passes have tried; for a word of several tokens, putting one token back is not)."""
        base_rows: list[Row] = []
        bases: list[list[int]] = []
        avoid: list[list[tuple[int, int]]] = []
        for r, g in zip(todo, self._revert_gain(todo)):
            cur = list(r.best or ())
            units = self._units(r, cur)
            cost = [sum(g[p] for p in u) for u in units]
            sets = sorted(itertools.combinations(range(len(units)), size), key=lambda c: sum(cost[i] for i in c))
            seen: set[tuple[int, ...]] = set()
            for c in sets[:limit]:
                b = list(cur)
                for i in c:
                    for p in units[i]:
                        b[p] = r.ids[p]
                if tuple(b) not in seen:
                    seen.add(tuple(b))
                    base_rows.append(r)
                    bases.append(b)
                    avoid.append([(units[i][0], cur[units[i][0]]) for i in c if len(units[i]) == 1])
        return base_rows, bases, avoid

    def _trade(self, todo: list[Row]) -> list[Row]:
        """Drop three changed words and add two new swaps, so that the goal holds with one word fewer where no
        revert, repair or exchange could (a success of three words becomes a two-word search from the original
        input). Per row, the ``trade_sets`` triples whose revert costs least at first order are dropped; from each
        reduced input, its ``trade`` best single swaps by first-order score are decoded greedily, the
        ``trade_beam`` of lowest surrogate loss each get their ``trade`` best second swaps at another position,
        and all of them (one or two swaps) compete for a row's beam judging round-robin over the triples
        (:meth:`_judge_smaller` with groups). No swap puts a dropped one-token word's substitute back. Returns
        the rows that lost a word."""
        if not todo:
            return []
        cfg = self.config
        base_rows, bases, avoid = self._dropped(todo, 3, cfg.trade_sets)
        editable = [[p for p, e in enumerate(r.editable) if e] for r in base_rows]
        rows1, trials1, groups1 = self._swap_trials(base_rows, bases, editable, cfg.trade, avoid=avoid)
        _, loss1 = self.loss_only(rows1, trials1, cfg.epsilon)
        by_base: dict[int, list[int]] = {}
        for n, g1 in enumerate(groups1):
            by_base.setdefault(g1, []).append(n)
        losses1 = loss1.tolist()
        grown = [n for ns in by_base.values() for n in sorted(ns, key=losses1.__getitem__)[: cfg.trade_beam]]
        # the second swap goes elsewhere than the first one (whose position now differs from the base)
        second = [[p for p in editable[groups1[n]] if trials1[n][p] == bases[groups1[n]][p]] for n in grown]
        rows2, trials2, groups2 = self._swap_trials([rows1[n] for n in grown], [trials1[n] for n in grown], second,
                                                    cfg.trade, avoid=[avoid[groups1[n]] for n in grown])
        before = {id(r): r.best_changed for r in todo}
        self._judge_smaller(rows1 + rows2, trials1 + trials2, groups1 + [groups1[grown[g]] for g in groups2])
        return [r for r in todo if r.best_changed < before[id(r)]]

    def _revert_gain(self, todo: list[Row]) -> list[list[float]]:
        """Per row, the first-order cost of reverting each token of its success: grad . (e_orig - e_adv)."""
        _, _, grad, adv_ids = self.loss_and_grad(todo, [list(r.best or ()) for r in todo], self.config.epsilon)
        orig_ids, _ = self.victim.pad_sources([r.ids for r in todo])
        return (grad * (self._table[orig_ids] - self._table[adv_ids])).sum(-1).tolist()  # one sync per batch

    def _swap_trials(self, base_rows: list[Row], bases: list[list[int]], positions: list[list[int]], k: int,
                     chunk: int = 64, avoid: Sequence[Sequence[tuple[int, int]]] | None = None,
                     ) -> tuple[list[Row], list[list[int]], list[int]]:
        """For each input of ``bases``, its ``k`` best single swaps at ``positions`` by first-order score (the
        gradient at that input, as the word swap), never to the current or the original token nor to the
        (position, token) pairs of that base's ``avoid`` (one token per position): the rows, inputs and the base
        number of each trial. Keyword goals with ``swap_lexicon``: also that many best swaps among the keywords'
        lexicon words (those not among the ``k`` already)."""
        dev = self.victim.device
        lex = self.config.swap_lexicon if self.config.mode == "keywords" else 0
        trial_rows: list[Row] = []
        trials: list[list[int]] = []
        groups: list[int] = []
        cand = self._cand_ids.view(1, 1, -1)
        for s in range(0, len(bases), chunk):
            part_rows, part = base_rows[s : s + chunk], bases[s : s + chunk]
            _, _, grad, ids = self.loss_and_grad(part_rows, part, self.config.epsilon)
            scores = grad @ self._cand_table.T - (grad * self._table[ids]).sum(-1, keepdim=True)  # [B, N, C]
            orig_ids, _ = self.victim.pad_sources([r.ids for r in part_rows])
            ok_pos = torch.zeros(ids.shape, dtype=torch.bool)
            for i, ps in enumerate(positions[s : s + chunk]):
                ok_pos[i, ps] = True
            bad = (~ok_pos.to(dev).unsqueeze(-1) | ~self._sub_ok.view(1, 1, -1)
                   | (ids.unsqueeze(-1) == cand) | (orig_ids[:, : ids.shape[1]].unsqueeze(-1) == cand))
            if avoid is not None:
                taken = torch.full(ids.shape, -1, dtype=torch.long)  # per position, one more token it may not take
                for i, pairs in enumerate(avoid[s : s + chunk]):
                    for p, tok in pairs:
                        taken[i, p] = tok
                bad |= taken.to(dev).unsqueeze(-1) == cand
            scores = scores.masked_fill(bad, float("inf"))
            flat_scores = scores.flatten(1)
            val, flat = flat_scores.topk(min(k, flat_scores.shape[1]), dim=1, largest=False)
            chosen = self.swap_pairs(val, flat)
            if lex:
                self.add_lexicon_swaps(chosen, scores, self.lexicon_columns(part_rows), lex)
            for i, (b, swaps) in enumerate(zip(part, chosen)):
                for p, w in swaps:
                    t = list(b)
                    t[p] = w
                    trial_rows.append(part_rows[i])
                    trials.append(t)
                    groups.append(s + i)
        return trial_rows, trials, groups

    # ---- packaging ---------------------------------------------------------------------------------
    def _finish(self, rows: list[Row], time_per: float, reduction_time: float = 0.0) -> list[AttackResult]:
        v, cfg = self.victim, self.config
        need = [r for r in rows if r.best is None]
        fallback = [list(r.fallback or tuple(r.ids)) for r in need]
        outs = v.translate_ids([self.reencode(r, a) or r.ids for a, r in zip(fallback, need)],
                               beam_size=cfg.beam_size) if need else []
        fb = {id(r): (a, o) for r, a, o in zip(need, fallback, outs)}
        results = []
        for r in rows:
            if r.best is not None:
                adv, out, ok = list(r.best), r.best_output or [], True
            else:
                adv, out = fb[id(r)]
                r.beams += 1
                ok = self.goal.success(v, r.state, out)
            src_words = v.render_words(r.ids, r.item.text, r.ids)
            size = self._size(r, adv, src_words)
            by_crit = self._by_criterion(r, adv, out)
            before: dict[str, Any] = {}
            if cfg.reduce and r.unreduced is not None:
                best0, out0, _, fw0, bw0, beams0 = r.unreduced
                adv0 = list(best0) if best0 is not None else adv
                before = {**self._size(r, adv0, src_words), "adversarial_output": v.decode_target(out0 or out),
                          "success_by_criterion": self._by_criterion(r, adv0, out0 or out),
                          "forward_passes": fw0, "backward_passes": bw0, "beam_decodes": beams0 + (best0 is None),
                          "time_s": time_per - reduction_time}
                before.pop("adversarial_words")
                before.pop("changed_positions")
            results.append(AttackResult(
                index=r.item.index, mode=cfg.mode, source=r.item.text, keywords=list(r.item.keywords),
                attack=self.name, criterion=self.goal.criterion, reduction=cfg.reduce,
                source_words=src_words, **size,
                original_output=v.decode_target(r.state.original_ids), adversarial_output=v.decode_target(out),
                success=ok, success_by_criterion=by_crit,
                changed_before_reduction=r.unreduced[2] if r.unreduced and r.unreduced[0] is not None
                else size["changed"],
                iterations=r.iterations, time_s=time_per, forward_passes=r.forward, backward_passes=r.backward,
                beam_decodes=r.beams, preset=cfg.preset, before_reduction=before,
            ))
        return results

    def _by_criterion(self, row: Row, adv: list[int], out: list[int]) -> dict[str, bool]:
        """A non-overlap result judged under every criterion (empty for other goals)."""
        if self.config.mode != "nonoverlap":
            return {}
        words = self.victim.target_words(out)
        return {c: adv != row.ids and nonoverlap_success(row.state.original_words, words, criterion=c)
                for c in CRITERIA}

    def _size(self, row: Row, adv: list[int], src_words: list[str]) -> dict[str, Any]:
        """The adversarial input and its size and quality against the original input."""
        v = self.victim
        adv_words = v.render_words(adv, row.item.text, row.ids)
        text = self.text(row, adv)
        return {"adversarial": text, "adversarial_words": adv_words,
                "changed_positions": changed_positions(src_words, adv_words), "changed": self.changed(row, adv),
                "bleu": sentence_bleu(src_words, adv_words), "chrf": chrf(self.text(row, row.ids), text),
                "ter": token_error_rate(src_words, adv_words)}
