"""Seq2Sick (thesis Algorithm 6): white-box attack on seq2seq models, batched over sentences.

Objective (3.4): ``min_delta L(X + delta) + lambda1 sum_i ||delta_i||_2 + lambda2 sum_i min_w ||x_i + delta_i - w||_2``
with ``L`` the non-overlapping loss (2.8) or the targeted-keywords loss (2.12), solved by projected
proximal gradient descent over the input word embeddings.

Every iteration, for a batch of sentences of different lengths at once, on the victim's device:

1. project ``X + delta`` onto the vocabulary (nearest candidate embedding, the original word winning ties);
2. decode greedily from the projected input and get the logits ``z_t`` of the loss with gradient
   (:meth:`~nlprobust.victims.base.Seq2SeqVictim.greedy_with_logits`: greedy decoding without gradient
   plus one teacher-forced pass on that prefix, or, for OpenNMT-py, one decoding pass under autograd,
   which gives the same logits); the projected input is fed straight-through (forward: projected
   embeddings; backward: gradient to delta);
3. add the gradient of the nearest-embedding distance (lambda2), take the gradient step, then the
   group-lasso proximal step (threshold ``lr * lambda1``);
4. a projected input whose greedy output succeeds is a candidate; candidates are judged with beam search
   (``beam_size``, 5 by default) every ``check_every`` iterations; the best beam-verified success (fewest
   changed words) is kept, else the iterate with the lowest loss.

Deviations from the paper (Algorithm 6 / eq. 3.4), each deliberate:

* Gradient *descent*: Algorithm 6 prints ``delta + eta * grad``; the objective is minimised.
* Order of the prox: the proximal step follows the gradient step (standard proximal gradient), so delta is
  exactly group-sparse between iterations; Algorithm 6 shrinks first and then steps.
* Projection: delta itself stays continuous and the projection is applied to the model input every
  iteration with a straight-through gradient (as the released code does); Algorithm 6 writes the
  projection into delta, which with small steps never leaves the original word.
* Keyword mask (2.11): positions held by *other* keywords are masked (see
  :func:`nlprobust.attacks.losses.keywords_loss`).
* Success is judged with beam search on candidates found by greedy decoding, and the attack keeps the
  best verified iterate rather than the last one; with ``early_stop`` a sentence stops at its first
  verified success.
* Non-overlap success is ``at-least-as-long`` by default (the new output may not be shorter); the loss then
  forbids EOS like the original word at every original position (the thesis's rule is ``criterion=
  "positional"``, whose loss ignores positions after the adversarial EOS). For subword victims the hinge is
  aggregated per output word (minimum over its tokens), as success is judged on words.
* After success the template's reduction pass reverts unneeded changes (``reduce=False`` for the
  paper-faithful attack): once the greedy output succeeds the hinge gradient is zero and the nearest-word
  term holds changed words in place, so the optimisation itself never undoes them.
* Learning rates, lambdas and the margin epsilon are per-victim hyperparameters; the ``paper`` preset
  uses the values as written (lambda1 = lambda2 = 1), which barely move keyword attacks on our victims
  (see ``docs/RESULTS.md``), and results name their preset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import Tensor

from nlprobust.attacks.base import AttackConfig, Row, TextAttack
from nlprobust.attacks.losses import nearest_word_distance
from nlprobust.attacks.projection import group_lasso_prox, project_to_vocab
from nlprobust.victims.base import GreedyOutputs

SEQ2SICK_MODES = ("nonoverlap", "keywords", "quality-drop")


@dataclass(frozen=True, kw_only=True)
class Seq2SickConfig(AttackConfig):
    """Hyperparameters of one Seq2Sick run (the goal, criterion, beam and reduction come from
    :class:`~nlprobust.attacks.base.AttackConfig`).

    Attributes:
        iterations: T in Algorithm 6.
        lr: step size eta.
        lr_late: step size from iteration ``lr_switch`` on (the released code's 0.1 -> 0.5 keyword schedule).
        lr_switch: iteration at which ``lr_late`` takes over.
        lambda1: group-lasso weight.
        lambda2: nearest-embedding (gradient regularisation) weight.
        check_every: judge greedy-successful candidates with beam search every this many iterations.
        early_stop: stop a sentence at its first beam-verified success.
        max_pending: candidates per sentence kept between two checks (fewest changes first).
        regularizer: ``"group_lasso"`` (proximal step, the paper) or ``"l2"`` (``lambda1 * ||delta||^2``
            added to the loss; an ablation).
        project_every_iteration: False optimises in continuous embedding space and projects onto the
            vocabulary once, at the end (the "naive" ablation / no projection during optimisation).
        lambda1_growth: when above 1, a sentence keeps searching after its first verified success and its
            group-lasso weight is multiplied by this factor at every check that found it a sparser success
            (a per-sentence search on the sparsity constant, as C&W / EAD search theirs); 1 keeps one
            lambda1 for all sentences.
    """

    _HASHED_WHEN_SET: ClassVar[tuple[str, ...]] = ("lambda1_growth",)

    iterations: int = 200
    lr: float = 2.0
    lr_late: float | None = None
    lr_switch: int = 100
    lambda1: float = 1.0
    lambda2: float = 1.0
    check_every: int = 10
    early_stop: bool = True
    max_pending: int = 1
    regularizer: str = "group_lasso"
    project_every_iteration: bool = True
    lambda1_growth: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lambda1_growth < 1.0:
            raise ValueError(f"lambda1_growth must be >= 1, not {self.lambda1_growth}")
        if self.iterations < 1 or self.lr <= 0 or self.check_every < 1:
            raise ValueError("iterations, lr and check_every must be positive")
        if self.lambda1 < 0 or self.lambda2 < 0:
            raise ValueError("lambda1 and lambda2 must be >= 0")
        if self.regularizer not in ("group_lasso", "l2"):
            raise ValueError(f"regularizer must be 'group_lasso' or 'l2', not {self.regularizer!r}")

    def lr_at(self, it: int) -> float:
        return self.lr_late if (self.lr_late is not None and it >= self.lr_switch) else self.lr

# Named presets. "paper": the thesis's values as written. "original-code": what the released code
# effectively ran (its nearest-word term sends no gradient: lambda2 = 0). "multi30k-lstm": tuned on the
# Multi30k *validation* split for our LSTM victim (recipes/tune_seq2sick.py; see docs/RESULTS.md).
PRESETS: dict[str, dict[str, Seq2SickConfig]] = {
    "paper": {
        "nonoverlap": Seq2SickConfig(mode="nonoverlap", lr=2.0, lambda1=1.0, lambda2=1.0, preset="paper"),
        "keywords": Seq2SickConfig(mode="keywords", lr=0.1, lr_late=0.5, lambda1=1.0, lambda2=1.0, preset="paper"),
    },
    "original-code": {
        "nonoverlap": Seq2SickConfig(mode="nonoverlap", lr=2.0, lambda1=1.0, lambda2=0.0, preset="original-code"),
        "keywords": Seq2SickConfig(mode="keywords", lr=0.1, lr_late=0.5, lambda1=1.0, lambda2=0.0,
                                   preset="original-code"),
    },
    # recipes/results/tune_seq2sick_*.json: 40 validation sentences; non-overlap keeps the paper's values,
    # keywords need a smaller group-lasso weight, no nearest-word pull (lambda2 = 0 as the released code)
    # and, like the released code, a larger step for the sentences still unsolved after 100 iterations;
    # 400 iterations instead of 200 for keywords (100 other validation sentences: 91% solved within 200, 97%
    # within 400; recipes/results/tune_seq2sick_keywords_iters400.json). The keyword reduction (the victim
    # retrained with its seed, 40 other validation sentences, recipes/results/tune_seq2sick_keywords_lexicon_k*.json)
    # first tries the 64 best lexicon inputs (one word per keyword the victim translates as it), then reverts
    # and repairs with 32 substitutions per dropped word: 1 keyword 2.84 -> 2.54 words (lexicon alone 2.65),
    # 2 keywords 6.63 -> 6.09 (repair alone 6.13), 3 keywords 8.53 -> 7.70 (the lexicon adds nothing there),
    # at the same success and about 1.5-2x the reduction's time. Where those no longer shrink a success, it
    # exchanges two changed words for one new swap (64 per dropped pair; 100 validation sentences, 1 keyword,
    # recipes/results/tune_seq2sick_keywords_exchange_k1*.json): 2.42 -> 2.28 words at 98%, 1.7x the attack's time
    # (two runs on the shared 2-core machine; before the beam picks were spread round-robin over the dropped pairs
    # and the dropped substitutes masked: 2.32, with 128 swaps per pair 2.29). Where nothing else shrinks a success
    # of three words or more, it trades three changed words for two new swaps (32 per input and step), and its
    # repair, exchange and trade also test the 16 best swaps among the keywords' lexicon words
    # (recipes/results/tune_seq2sick_keywords_trade_k*.json, the same searches reduced again per setting):
    # 1 keyword, 100 validation sentences, 2.28 -> 2.13 words at 98% (trade alone 2.15, the lexicon swaps alone
    # 2.28); 2 keywords, 40 sentences, 5.41 -> 4.56 at 80% (trade alone 5.22, the lexicon swaps alone 4.94), at
    # about 1.9x the reduction's time; 3 keywords, 40 sentences, 6.87 -> 6.53 at 75% (6.80, 6.90).
    "multi30k-lstm": {
        "nonoverlap": Seq2SickConfig(mode="nonoverlap", lr=2.0, lambda1=1.0, lambda2=1.0, epsilon=0.0,
                                     preset="multi30k-lstm"),
        "keywords": Seq2SickConfig(mode="keywords", iterations=400, lr=0.5, lr_late=2.0, lr_switch=100, lambda1=0.5,
                                   lambda2=0.0, epsilon=1.0, reduce_lexicon=64, repair=32, exchange=64, trade=32,
                                   swap_lexicon=16, preset="multi30k-lstm"),
    },
    # Gigaword LSTM summarizer (recipes/results/tune_seq2sick_gigaword.json, 24 Gigaword dev inputs, one
    # keyword from the 500 most frequent headline content words): the multi30k-lstm values solve 88% within 400
    # iterations; lambda1 0.1-0.25 solves a few more but changes 9-27 words instead of 6, larger steps
    # (lr 2, lr_late 8) change more words for the same success. Keeping 4 candidates between beam checks
    # (max_pending) changes 0.5 words fewer at the same success. The victim of the recipes' small scale was
    # then trained longer (3,000 steps); on the same 24 dev inputs at 400 iterations its group-lasso weight
    # trades success for edits: lambda1 0.5 -> 1 keyword 100% / 7.4 words (200 iterations), 2 keywords 96% /
    # 18.8 words; 1.0 (the thesis's) -> 100% / 5.3 and 75% / 11.3; 1.5 -> 96% / 4.8 and 58% / 8.9. The keyword
    # reduction (the victim retrained with its seed, 40 dev inputs, 97.5% success throughout;
    # recipes/results/tune_seq2sick_gigaword_reduction.json): reverts only 3.59 words, + repair 32 2.95,
    # + exchange 64 2.69, both 2.46 (the keyword-lexicon shortcut adds nothing to them), at 2.8x the attack's time.
    # Then the trade and the keyword-lexicon swaps of the multi30k-lstm preset (the same 40 dev inputs, the attack
    # run afresh per setting; recipes/results/tune_seq2sick_gigaword_trade.json): 2.44 -> 2.18 words at 97.5%
    # (lexicon swaps alone 2.28, trade alone 2.38); 2 keywords carry them over from the Multi30k evidence.
    "gigaword-lstm": {
        "nonoverlap": Seq2SickConfig(mode="nonoverlap", lr=2.0, lambda1=1.0, lambda2=1.0, epsilon=0.0,
                                     preset="gigaword-lstm"),
        "keywords": Seq2SickConfig(mode="keywords", iterations=400, lr=0.5, lr_late=2.0, lr_switch=100, lambda1=1.0,
                                   lambda2=0.0, epsilon=1.0, max_pending=4, repair=32, exchange=64, trade=32,
                                   swap_lexicon=16, preset="gigaword-lstm"),
    },
    # Marian transformer (recipes/results/tune_seq2sick_marian_nonoverlap*.json, 20 validation sentences): its
    # raw embedding rows are ~3x closer together than the LSTM's and scaled by 16 on input, so steps are ~40x
    # smaller. Non-overlap: lr 0.05 with lambda1 = lambda2 = 1 (65%) beat the LSTM values moved by that
    # geometry (lr 0.04, lambda1 = lambda2 = 16: 10%). Keywords (recipes/results/tune_seq2sick_marian_keywords.json,
    # 20 validation sentences, 1 keyword, 200 iterations): lr 0.02 / 0.05 / 0.1 then 0.2 all reach 70%; 0.05
    # changes the fewest words. The 400-iteration budget is carried over from the LSTM evidence.
    "multi30k-marian": {
        "nonoverlap": Seq2SickConfig(mode="nonoverlap", lr=0.05, lambda1=1.0, lambda2=1.0, epsilon=0.0,
                                     preset="multi30k-marian"),
        "keywords": Seq2SickConfig(mode="keywords", iterations=400, lr=0.05, lr_late=0.2, lr_switch=100,
                                   lambda1=0.5, lambda2=0.0, epsilon=1.0, preset="multi30k-marian"),
    },
}


def preset(name: str, mode: str, **overrides: object) -> Seq2SickConfig:
    """The named preset for ``mode``, with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    if mode not in SEQ2SICK_MODES:
        raise ValueError(f"mode must be one of {SEQ2SICK_MODES}, not {mode!r}")
    # the quality-drop goal shares the non-overlap surrogate, so it starts from the non-overlap values
    base = PRESETS[name]["nonoverlap" if mode == "quality-drop" else mode]
    return replace(base, mode=mode, **overrides)  # type: ignore[arg-type]




@dataclass(eq=False)
class _Search:
    """Seq2Sick's per-sentence bookkeeping between beam checks."""

    pending: dict[tuple[int, ...], int] = field(default_factory=dict)
    checked: set[tuple[int, ...]] = field(default_factory=set)  # candidates already judged with beam search
    best_loss: float = float("inf")


class Seq2Sick(TextAttack):
    """Batched Seq2Sick attack on a :class:`~nlprobust.victims.base.Seq2SeqVictim`.

    Example:
        >>> attack = Seq2Sick(victim, preset("multi30k-lstm", "nonoverlap"))
        >>> results = attack.run([AttackItem(0, "A child is splashing in the water.")])
    """

    name = "seq2sick"
    config_class = Seq2SickConfig
    config: Seq2SickConfig

    def _check(self, rows: list[Row], book: dict[int, _Search]) -> list[bool]:
        """Judge pending candidates with beam search (one batched decode) and keep the best success; per row,
        whether this check found it a sparser success."""
        before = [r.best_changed if r.best is not None else None for r in rows]
        trials = [(r, key) for r in rows for key in book[id(r)].pending]
        self.verify(trials)
        improved = []
        for r, old in zip(rows, before):
            b = book[id(r)]
            b.checked.update(b.pending)
            b.pending.clear()
            improved.append(r.best is not None and (old is None or r.best_changed < old))
            growing = self.config.lambda1_growth > 1.0
            if r.best is not None and ((self.config.early_stop and not growing) or r.best_changed <= 1):
                r.done = True  # growing: keep searching for a sparser success (one word is the sparsest)
        return improved

    def _collect(self, rows: list[Row], window: Sequence[tuple[Tensor, Tensor, GreedyOutputs]],
                 book: dict[int, _Search]) -> None:
        """Per-sentence bookkeeping of the iterations since the last check (all on ``rows``), in iteration order:
        the projected input of the lowest surrogate loss becomes the fallback, and new inputs whose greedy output
        already reaches the goal become pending candidates (at most ``max_pending``, fewest changed words kept).
        The iterations' ids, outputs and losses cross to the host together, once per check."""
        if not window:
            return
        ids = [t for adv, _, g in window for t in (adv, g.ids, g.lengths)]
        host = torch.cat([t.flatten() for t in ids]).cpu().split([t.numel() for t in ids])  # waits for the device
        losses = torch.cat([loss for _, loss, _ in window]).tolist()  # ready by now: a copy of a few floats
        lists = [h.view(t.shape).tolist() for h, t in zip(host, ids, strict=True)]
        for k in range(len(window)):
            adv, outs, lengths = lists[3 * k: 3 * k + 3]
            for i, r in enumerate(rows):
                loss = losses[k * len(rows) + i]
                self._note(r, book[id(r)], tuple(adv[i][: len(r.ids)]), outs[i][: lengths[i]], loss)

    def _note(self, r: Row, b: _Search, key: tuple[int, ...], out: list[int], loss: float) -> None:
        if loss < b.best_loss:
            b.best_loss, r.fallback = loss, key
        if key in b.pending or key in b.checked or key == tuple(r.ids):
            return
        if self.greedy_success(r, out) and (ch := self.changed(r, key)) > 0:
            b.pending[key] = ch
            if len(b.pending) > self.config.max_pending:
                worst = max(b.pending, key=lambda k: b.pending[k])
                del b.pending[worst]

    def search(self, rows: list[Row]) -> None:
        v, cfg = self.victim, self.config
        dev = v.device
        book = {id(r): _Search() for r in rows}
        ids, mask = v.pad_sources([r.ids for r in rows])
        editable = torch.zeros_like(mask)
        for i, r in enumerate(rows):
            editable[i, : len(r.editable)] = torch.tensor(r.editable, device=dev)
        editable &= mask
        x0 = self._table[ids]
        delta = torch.zeros_like(x0)
        target, word_index = self.targets(rows)
        active = list(range(len(rows)))
        lam = torch.full((len(rows),), cfg.lambda1, device=dev)  # per-sentence group-lasso weight
        window: list[tuple[Tensor, Tensor, GreedyOutputs]] = []  # iterations since the last check
        sel: Tensor | None = None
        hook = self.on_iteration
        for it in range(cfg.iterations):
            if hook is not None:
                hook("begin", it)
            lr = cfg.lr_at(it)
            if sel is None:  # the active rows change only at a check
                act_rows = [rows[i] for i in active]
                sel = torch.tensor(active, device=dev)
                a_ids, a_mask, a_edit, a_x0 = ids[sel], mask[sel], editable[sel], x0[sel]
                a_target = (target[sel], word_index[sel])
            a_delta = delta[sel].requires_grad_(True)
            x_c = a_x0 + a_delta
            with torch.no_grad():
                if cfg.project_every_iteration:
                    adv_ids = project_to_vocab(x_c.detach(), a_ids, a_x0, a_edit, self._cand_ids,
                                               self._cand_table, self._cand_sq)
                    e_adv = self._table[adv_ids]
                else:
                    adv_ids, e_adv = a_ids, x_c.detach()
            x_in = x_c + (e_adv - x_c).detach()
            with v.grad_context():
                greedy, main = self.surrogate(x_in, a_mask, act_rows, cfg.epsilon, a_target)
                total = main
                if cfg.lambda2 > 0 and cfg.project_every_iteration:
                    total = total + cfg.lambda2 * (nearest_word_distance(x_c, e_adv) * a_edit).sum(1)
                if cfg.regularizer == "l2":
                    total = total + cfg.lambda1 * (a_delta**2).sum((1, 2))
                (grad,) = torch.autograd.grad(total.sum(), a_delta)
            with torch.no_grad():
                new = a_delta.detach() - lr * grad
                if cfg.regularizer == "group_lasso":
                    new = group_lasso_prox(new, (lr * lam[sel]).view(-1, 1, 1))
                delta[sel] = new * a_edit.unsqueeze(-1)
            for r in act_rows:
                r.backward += 1
                r.iterations = it + 1
            if not cfg.project_every_iteration:
                if hook is not None:
                    hook("end", it)
                continue
            # the candidates stay on the device until the next beam check (one host transfer per check window)
            window.append((adv_ids, main.detach(), greedy))
            if hook is not None:
                hook("end", it)
            if (it + 1) % cfg.check_every == 0 or it + 1 == cfg.iterations:
                self._collect(act_rows, window, book)
                window.clear()
                improved = self._check(act_rows, book)
                if cfg.lambda1_growth > 1.0 and any(improved):
                    grow = torch.tensor([i for i, up in zip(active, improved) if up], device=dev)
                    lam[grow] *= cfg.lambda1_growth
                active = [i for i, r in zip(active, act_rows) if not r.done]
                sel = None
                if not active:
                    break
        if not cfg.project_every_iteration:
            # naive / no-projection ablations: one nearest-neighbour projection of the final iterate
            with torch.no_grad():
                final = project_to_vocab(x0 + delta, ids, x0, editable, self._cand_ids, self._cand_table,
                                         self._cand_sq).tolist()
            for r, a in zip(rows, final):
                key = tuple(a[: len(r.ids)])
                r.fallback = key
                if self.changed(r, key) > 0:
                    book[id(r)].pending[key] = 1
            self._check(rows, book)
