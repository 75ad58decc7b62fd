"""Attack metrics: success, BLEU between original and adversarial inputs, words changed, chrF.

* BLEU is the paper's "exponential average of BLEU-1..4": the geometric mean of the modified 1- to 4-gram
  precisions times the brevity penalty (uniform weights), per sentence, with Chen & Cherry's smoothing
  method 1 so that short sentences with one changed word do not score 0.
* Changed words are counted on words (detokenised text for subword victims) with a minimal edit alignment:
  a substitution of ``a`` words by ``b`` words counts ``max(a, b)``.
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


def nonoverlap_success(original: Sequence[str], adversarial: Sequence[str]) -> bool:
    """True when no output position holds the same word in both outputs."""
    return all(a != b for a, b in zip(original, adversarial))


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
