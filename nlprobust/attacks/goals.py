"""Attack goals: what counts as success, judged on words, and the differentiable surrogate that agrees with it.

Every goal judges the beam output of the adversarial *text* (re-tokenised) on the victim's word segmentation
(:meth:`~nlprobust.victims.base.Seq2SeqVictim.target_words`: subwords merged, punctuation split off, the
victim's casing) and names its criterion, which is stored with every record and summary.

* :class:`NonOverlap` (thesis eq. 2.8): no output position holds the original output's word.
  Criteria: ``positional`` (the thesis's rule: positions past the shorter output are not compared, so a
  truncated or empty output "succeeds") and ``at-least-as-long`` (also requires the new output to be no
  shorter than the original; the default, and TextAttack's rule for its Seq2Sick recipe).
* :class:`Keywords` (thesis eq. 2.12): every keyword appears in the output.
* :class:`QualityDrop` (TransFool's success rule): the adversarial output's BLEU or chrF falls to at most
  ``fraction`` of the clean output's; against the item's reference when it has one, else against the
  original output (whose score against itself is 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nlprobust.attacks.losses import keywords_loss, nonoverlap_loss
from nlprobust.metrics import chrf, keywords_success, nonoverlap_success, sentence_bleu
from nlprobust.victims.base import Seq2SeqVictim, VictimError

CRITERIA = ("at-least-as-long", "positional")
MODES = ("nonoverlap", "keywords", "quality-drop")


@dataclass
class GoalState:
    """What a goal needs to judge one sentence: the original output (ids, words) and the goal's targets."""

    original_ids: list[int]
    original_words: list[str]
    target: list[int]  # ids the surrogate works on: original output ids, or keyword ids
    keywords: list[str]  # keywords in the victim's casing (keyword goals)
    word_index: list[int]  # word of each original output token (per-word aggregation of the surrogate)
    reference: str | None = None
    clean_score: float = 1.0


class Goal:
    """Base class of the goals. ``name`` and ``criterion`` are recorded with every result."""

    name: str = ""
    criterion: str = ""

    def prepare(self, victim: Seq2SeqVictim, original: list[int], keywords: Sequence[str],
                reference: str | None = None) -> GoalState:
        """The goal's state for one sentence; :class:`VictimError` when it cannot be attacked."""
        if not original:
            raise VictimError("the model's output for the original input is empty")
        return GoalState(original, victim.target_words(original), list(original), [],
                         victim.target_word_index(original), reference)

    def success(self, victim: Seq2SeqVictim, state: GoalState, output: list[int]) -> bool:
        raise NotImplementedError

    def distance(self, victim: Seq2SeqVictim, state: GoalState, output: list[int]) -> float:
        """How far ``output`` is from success on the goal's own terms (0 at success): searches rank
        candidates by it before the surrogate loss."""
        return 0.0 if self.success(victim, state, output) else 1.0

    def loss(self, logits: Tensor, targets: Tensor, word_index: Tensor, valid: Tensor, eos_id: int,
             epsilon: float) -> Tensor:
        """Per-row surrogate loss ``[B]`` (smaller is closer to success)."""
        raise NotImplementedError

    def max_output_len(self, states: Sequence[GoalState]) -> int:
        """How many output steps the surrogate needs."""
        return max(len(s.original_ids) for s in states)


class NonOverlap(Goal):
    """No output position keeps the original output's word (eq. 2.8), under ``criterion``."""

    name = "nonoverlap"

    def __init__(self, criterion: str = "at-least-as-long") -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"non-overlap criterion must be one of {CRITERIA}, not {criterion!r}")
        self.criterion = criterion

    def success(self, victim: Seq2SeqVictim, state: GoalState, output: list[int]) -> bool:
        return nonoverlap_success(state.original_words, victim.target_words(output), criterion=self.criterion)

    def distance(self, victim: Seq2SeqVictim, state: GoalState, output: list[int]) -> float:
        """Positions still holding their original word, plus the missing length (``at-least-as-long``)."""
        words = victim.target_words(output)
        same = sum(a == b for a, b in zip(state.original_words, words))
        short = max(0, len(state.original_words) - len(words)) if self.criterion == "at-least-as-long" else 0
        return float(same + short)

    def loss(self, logits: Tensor, targets: Tensor, word_index: Tensor, valid: Tensor, eos_id: int,
             epsilon: float) -> Tensor:
        eos = eos_id if self.criterion == "at-least-as-long" else None
        return nonoverlap_loss(logits, targets, valid, epsilon, eos_id=eos, word_index=word_index)


class Keywords(Goal):
    """Every keyword appears in the output (eq. 2.12), compared in the victim's casing on its word segmentation."""

    name = "keywords"
    criterion = "all-keywords"

    def prepare(self, victim: Seq2SeqVictim, original: list[int], keywords: Sequence[str],
                reference: str | None = None) -> GoalState:
        if not keywords:
            raise VictimError("keywords mode needs at least one keyword")
        ids = [victim.keyword_id(k) for k in keywords]
        state = super().prepare(victim, original, keywords, reference)
        state.keywords = [victim.normalize_keyword(k) for k in keywords]
        present = [k for k, n in zip(keywords, state.keywords) if n in set(state.original_words)]
        if present:
            raise VictimError(f"keyword(s) {present} already appear in the original output")
        state.target = ids
        return state

    def success(self, victim: Seq2SeqVictim, state: GoalState, output: list[int]) -> bool:
        return keywords_success(state.keywords, victim.target_words(output))

    def distance(self, victim: Seq2SeqVictim, state: GoalState, output: list[int]) -> float:
        """Keywords still missing from the output."""
        words = set(victim.target_words(output))
        return float(sum(k not in words for k in state.keywords))

    def loss(self, logits: Tensor, targets: Tensor, word_index: Tensor, valid: Tensor, eos_id: int,
             epsilon: float) -> Tensor:
        return keywords_loss(logits, targets, valid, epsilon)

    def max_output_len(self, states: Sequence[GoalState]) -> int:
        return int(1.5 * max(len(s.original_ids) for s in states)) + 5


class QualityDrop(Goal):
    """TransFool's success rule: the output's ``metric`` (``chrf`` or ``bleu``) drops to at most ``fraction``
    of the clean output's. The surrogate is the non-overlap hinge (push every original word off its place)."""

    name = "quality-drop"

    def __init__(self, metric: str = "chrf", fraction: float = 0.5) -> None:
        if metric not in ("chrf", "bleu"):
            raise ValueError(f"quality-drop metric must be 'chrf' or 'bleu', not {metric!r}")
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"quality-drop fraction must be in (0, 1), not {fraction}")
        self.metric, self.fraction = metric, fraction
        self.criterion = f"{metric}<={fraction:g}x"

    def _score(self, victim: Seq2SeqVictim, reference: str, output: list[int]) -> float:
        hyp = victim.decode_target(output)
        if self.metric == "chrf":
            return chrf(reference, hyp)
        from nlprobust.text import tokenize

        return sentence_bleu(tokenize(reference), tokenize(hyp))

    def prepare(self, victim: Seq2SeqVictim, original: list[int], keywords: Sequence[str],
                reference: str | None = None) -> GoalState:
        state = super().prepare(victim, original, keywords, reference)
        if reference is not None:
            state.clean_score = self._score(victim, reference, original)
            if state.clean_score <= 0.0:
                raise VictimError(f"the original output already scores 0 {self.metric} against the reference")
        return state

    def success(self, victim: Seq2SeqVictim, state: GoalState, output: list[int]) -> bool:
        ref = state.reference if state.reference is not None else victim.decode_target(state.original_ids)
        return self._score(victim, ref, output) <= self.fraction * state.clean_score

    def loss(self, logits: Tensor, targets: Tensor, word_index: Tensor, valid: Tensor, eos_id: int,
             epsilon: float) -> Tensor:
        return nonoverlap_loss(logits, targets, valid, epsilon, eos_id=eos_id, word_index=word_index)


def make_goal(mode: str, *, criterion: str = "at-least-as-long", quality_metric: str = "chrf",
              quality_fraction: float = 0.5) -> Goal:
    """The goal of ``mode`` (``nonoverlap``, ``keywords`` or ``quality-drop``)."""
    if mode == "nonoverlap":
        return NonOverlap(criterion)
    if mode == "keywords":
        return Keywords()
    if mode == "quality-drop":
        return QualityDrop(quality_metric, quality_fraction)
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


def pad_word_index(states: Sequence[GoalState], device: torch.device) -> Tensor:
    """``[B, M]`` word index of each original output token, ``-1`` past the end."""
    m = max(1, max(len(s.word_index) for s in states))
    out = torch.full((len(states), m), -1, dtype=torch.long)
    for i, s in enumerate(states):
        if s.word_index:
            out[i, : len(s.word_index)] = torch.tensor(s.word_index, dtype=torch.long)
    return out.to(device)
