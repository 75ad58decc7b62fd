"""The keyword protocol of every targeted-keywords experiment.

Keywords are drawn at random (seeded) among the ``top`` most frequent words of the training targets after
removing stop words (spaCy's list for the language, matched case-insensitively), punctuation and numbers,
and never one already in the original output. Keywords drawn from the whole vocabulary (mostly words a
model never emits) would make the targeted attack meaningless.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from nlprobust.text import tokenize

_WORD = re.compile(r"^[^\W\d_]+(?:[-'][^\W\d_]+)*$", re.UNICODE)


def stop_words(lang: str) -> set[str]:
    """spaCy's stop-word list for ``lang`` (no model download needed)."""
    import importlib

    try:
        mod = importlib.import_module(f"spacy.lang.{lang}.stop_words")
    except ImportError as exc:
        raise ImportError(f"stop words for {lang!r} need spaCy (pip install spacy): {exc}") from exc
    return {w.lower() for w in mod.STOP_WORDS}


def frequent_content_words(sentences: Iterable[str], *, lang: str = "de", top: int = 2000,
                           tokenized: bool = False) -> list[str]:
    """The ``top`` most frequent content words (no stop words, punctuation or numbers), most frequent first."""
    stops = stop_words(lang)
    counts: Counter[str] = Counter()
    for s in sentences:
        for w in s.split() if tokenized else tokenize(s):
            if _WORD.match(w) and w.lower() not in stops and len(w) > 1:
                counts[w] += 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def draw_keywords(pool: Sequence[str], k: int, *, exclude: Iterable[str], rng: random.Random,
                  usable: Callable[[str], bool] | None = None) -> list[str]:
    """``k`` distinct keywords from ``pool``, none in ``exclude`` and all ``usable`` (e.g. emittable by the model)."""
    banned = set(exclude)
    choices = [w for w in pool if w not in banned and (usable is None or usable(w))]
    if len(choices) < k:
        raise ValueError(f"only {len(choices)} usable keywords left in the pool, {k} needed")
    return rng.sample(choices, k)


def draw_keyword_sets(victim: object, outputs: Sequence[Sequence[str]], pool: Sequence[str], k: int,
                      seed: int) -> list[list[str]]:
    """Per sentence, ``k`` keywords from ``pool`` that are not in that sentence's original output (tokenised)
    and that ``victim`` can emit as single tokens; seeded, so every run draws the same keywords."""
    rng = random.Random(seed * 1000 + k)
    keyword_id = victim.keyword_id  # type: ignore[attr-defined]

    def usable(w: str) -> bool:
        try:
            keyword_id(w)
            return True
        except ValueError:
            return False

    emittable = {w for w in pool if usable(w)}  # once per pool word, not once per sentence and word
    return [draw_keywords(pool, k, exclude=out, rng=rng, usable=emittable.__contains__) for out in outputs]
