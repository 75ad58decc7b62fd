"""Attack metrics: success, BLEU between original and adversarial inputs, words changed, chrF, ROUGE and
the perplexity of inputs under an n-gram language model.

* BLEU is the paper's "exponential average of BLEU-1..4": the geometric mean of the modified 1- to 4-gram
  precisions times the brevity penalty (uniform weights), per sentence, with Chen & Cherry's smoothing
  method 1 so that short sentences with one changed word do not score 0.
* Changed words are counted on words (detokenised text for subword victims) with a minimal edit alignment:
  a substitution of ``a`` words by ``b`` words counts ``max(a, b)``.
* Perplexity (thesis Table 3.5) comes from :class:`KneserNeyLM`, an interpolated Kneser-Ney n-gram model.
  nltk's ``KneserNeyInterpolated`` is the same estimator, but it gives probability 0 (infinite perplexity)
  to n-grams whose context was never seen and costs about 0.1 s per token here; this one scores the same
  way with dictionary look-ups (tested against hand-computed values and for normalisation).
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Sequence


def sentence_bleu(reference: Sequence[str], hypothesis: Sequence[str], max_n: int = 4) -> float:
    """Smoothed sentence BLEU of ``hypothesis`` against one ``reference`` (token lists), in [0, 1]."""
    if not hypothesis or not reference:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
        hyp = Counter(tuple(hypothesis[i : i + n]) for i in range(len(hypothesis) - n + 1))
        total = sum(hyp.values())
        match = sum(min(c, ref[g]) for g, c in hyp.items())
        if total == 0:
            # hypothesis shorter than n: smoothing method 1 with epsilon 0.1 over a single "slot"
            p = 0.1
        elif match == 0:
            p = 0.1 / total
        else:
            p = match / total
        log_p += math.log(p) / max_n
    bp = 1.0 if len(hypothesis) > len(reference) else math.exp(1.0 - len(reference) / len(hypothesis))
    return bp * math.exp(log_p)


def changed_words(original: Sequence[str], adversarial: Sequence[str]) -> int:
    """Number of words changed between two word sequences (minimal alignment)."""
    if len(original) == len(adversarial):
        same_len = sum(a != b for a, b in zip(original, adversarial))
    else:
        same_len = None
    sm = difflib.SequenceMatcher(a=list(original), b=list(adversarial), autojunk=False)
    n = 0
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "replace":
            n += max(i2 - i1, j2 - j1)
        elif tag == "delete":
            n += i2 - i1
        elif tag == "insert":
            n += j2 - j1
    return n if same_len is None else min(n, same_len)


def changed_positions(original: Sequence[str], adversarial: Sequence[str]) -> list[int]:
    """Indices of adversarial words that differ from the original (same-length position-wise, else aligned)."""
    if len(original) == len(adversarial):
        return [i for i, (a, b) in enumerate(zip(original, adversarial)) if a != b]
    sm = difflib.SequenceMatcher(a=list(original), b=list(adversarial), autojunk=False)
    out: list[int] = []
    for tag, _i1, _i2, j1, j2 in sm.get_opcodes():
        if tag in ("replace", "insert"):
            out.extend(range(j1, j2))
    return out


def nonoverlap_success(original: Sequence[str], adversarial: Sequence[str], *,
                       criterion: str = "at-least-as-long") -> bool:
    """True when no output position holds the same word in both outputs.

    ``criterion="positional"`` is the thesis's rule: only positions both outputs have are compared, so a
    shorter (even empty) output can succeed. ``"at-least-as-long"`` (the default, TextAttack's rule) also
    requires the adversarial output to be no shorter than the original.
    """
    if criterion == "at-least-as-long":
        if len(adversarial) < len(original):
            return False
    elif criterion != "positional":
        raise ValueError(f"criterion must be 'at-least-as-long' or 'positional', not {criterion!r}")
    return all(a != b for a, b in zip(original, adversarial))


def token_error_rate(original: Sequence[str], adversarial: Sequence[str]) -> float:
    """Word-level edit distance (substitutions, insertions, deletions) divided by the original's length."""
    n, m = len(original), len(adversarial)
    if n == 0:
        return float(m > 0)
    prev = list(range(m + 1))
    for i in range(1, n + 1):
        cur = [i] + [0] * m
        for j in range(1, m + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (original[i - 1] != adversarial[j - 1]))
        prev = cur
    return prev[m] / n


def keywords_success(keywords: Sequence[str], output: Sequence[str]) -> bool:
    """True when every keyword appears in the output."""
    words = set(output)
    return all(k in words for k in keywords)


def chrf(reference: str, hypothesis: str) -> float:
    """Sentence chrF (sacrebleu), in [0, 1]."""
    import sacrebleu

    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score) / 100.0


def mark_changes(words: Sequence[str], positions: Sequence[int], left: str = "[", right: str = "]") -> str:
    """Words joined with changed ones marked, e.g. ``A [children] is ...``."""
    pos = set(positions)
    return " ".join(f"{left}{w}{right}" if i in pos else w for i, w in enumerate(words))


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus ROUGE-1/2/L F1 (Google's ``rouge-score``, mean over pairs, in percent)."""
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no summaries to score")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    tot = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for h, r in zip(hypotheses, references):
        for k, v in scorer.score(r, h).items():
            tot[k] += v.fmeasure
    return {k: round(100 * v / len(hypotheses), 2) for k, v in tot.items()}


class KneserNeyLM:
    """Interpolated Kneser-Ney n-gram language model over whitespace tokens (Chen & Goodman 1999).

    Words seen fewer than ``min_count`` times in training become ``<unk>``; sentences are padded with
    ``order - 1`` ``<s>`` and one ``</s>``. The highest order uses counts, the lower orders continuation
    counts (how many distinct words precede the n-gram), all with absolute discount ``discount``; the
    unigram level is interpolated with the uniform distribution, so every word has a non-zero probability.

    >>> lm = KneserNeyLM([["a", "b"], ["a", "c"]], order=2, min_count=1)
    >>> round(sum(lm.prob(w, ("a",)) for w in lm.vocab), 6)
    1.0
    """

    BOS, EOS, UNK = "<s>", "</s>", "<unk>"

    def __init__(self, sentences: Sequence[Sequence[str]], *, order: int = 3, discount: float = 0.75,
                 min_count: int = 2) -> None:
        if order < 1:
            raise ValueError("order must be at least 1")
        if not 0 < discount < 1:
            raise ValueError("discount must be in (0, 1)")
        self.order, self.d = order, discount
        freq = Counter(w for s in sentences for w in s)
        if not freq:
            raise ValueError("no training text for the language model")
        self.vocab = {w for w, c in freq.items() if c >= min_count} | {self.UNK, self.EOS}
        # counts[n][(context, word)]: raw counts at the top order, continuation counts below it
        self.counts: list[Counter[tuple[tuple[str, ...], str]]] = [Counter() for _ in range(order + 1)]
        top: Counter[tuple[str, ...]] = Counter()
        for s in sentences:
            toks = self._pad(s)
            for i in range(order - 1, len(toks)):
                top[tuple(toks[i - order + 1 : i + 1])] += 1
        self.counts[order] = Counter({(g[:-1], g[-1]): c for g, c in top.items()})
        for n in range(order - 1, 0, -1):  # continuation counts: distinct left extensions of each n-gram
            cont: Counter[tuple[tuple[str, ...], str]] = Counter()
            for (ctx, w) in self.counts[n + 1]:
                g = ctx[1:] + (w,)
                cont[(g[:-1], g[-1])] += 1
            self.counts[n] = cont
        self.ctx_total: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
        self.ctx_types: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
        for n in range(1, order + 1):
            for (ctx, _), c in self.counts[n].items():
                self.ctx_total[n][ctx] += c
                self.ctx_types[n][ctx] += 1

    def _map(self, w: str) -> str:
        return w if w in self.vocab else self.UNK

    def _pad(self, sentence: Sequence[str]) -> list[str]:
        return [self.BOS] * (self.order - 1) + [self._map(w) for w in sentence] + [self.EOS]

    def prob(self, word: str, context: Sequence[str]) -> float:
        """P(word | the last ``order - 1`` words of ``context``)."""
        ctx = tuple(c if c == self.BOS else self._map(c) for c in context)
        return self._prob(self._map(word), ctx)

    def _prob(self, w: str, context: tuple[str, ...]) -> float:
        """:meth:`prob` for a word and context already mapped to the vocabulary."""
        k = self.order - 1
        ctx = (self.BOS,) * max(k - len(context), 0) + (context[len(context) - k:] if k else ())
        p = 1.0 / len(self.vocab)  # uniform base
        for n in range(1, self.order + 1):
            h = ctx[len(ctx) - (n - 1):] if n > 1 else ()
            total = self.ctx_total[n].get(h, 0)
            if total == 0:
                continue  # unseen context: keep the lower-order estimate
            c = self.counts[n].get((h, w), 0)
            p = max(c - self.d, 0.0) / total + self.d * self.ctx_types[n][h] / total * p
        return p

    def sentence_logprob(self, sentence: Sequence[str]) -> tuple[float, int]:
        """(natural-log probability, number of predicted tokens, ``</s>`` included) of one sentence."""
        toks = self._pad(sentence)
        lp = 0.0
        for i in range(self.order - 1, len(toks)):
            lp += math.log(self._prob(toks[i], tuple(toks[i - self.order + 1 : i])))
        return lp, len(toks) - self.order + 1

    def perplexity(self, sentences: Sequence[Sequence[str]]) -> float:
        """Corpus perplexity: exp of the mean negative log-probability per predicted token."""
        lp, n = 0.0, 0
        for s in sentences:
            a, b = self.sentence_logprob(s)
            lp, n = lp + a, n + b
        if n == 0:
            raise ValueError("no sentences to score")
        return math.exp(-lp / n)
