"""Word-level tokenisation shared by corpora, victims and metrics.

The thesis's victims are word-level OpenNMT-py models trained on tokenised text. We use one small,
deterministic, dependency-free tokeniser for every language the project handles (English, German,
pre-tokenised Gigaword): words keep hyphens and apostrophes inside them, every other punctuation mark
is its own token. ``detokenize`` is its approximate inverse, used only for display and for sacrebleu,
which re-tokenises anyway.
"""

from __future__ import annotations

import re

_TOKEN_RE = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)
_NO_SPACE_BEFORE = {".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "'", "’", "”", "»"}
_NO_SPACE_AFTER = {"(", "[", "{", "“", "„", "«"}


def tokenize(text: str) -> list[str]:
    """Split ``text`` into word and punctuation tokens.

    >>> tokenize("Two young, White males are outside.")
    ['Two', 'young', ',', 'White', 'males', 'are', 'outside', '.']
    """
    return _TOKEN_RE.findall(text)


def detokenize(tokens: list[str]) -> str:
    """Join tokens into readable text (inverse of :func:`tokenize` up to whitespace).

    >>> detokenize(['Ein', 'Hund', ',', 'der', 'läuft', '.'])
    'Ein Hund, der läuft.'
    """
    out: list[str] = []
    glue = True
    for tok in tokens:
        if out and not glue and tok not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(tok)
        glue = tok in _NO_SPACE_AFTER
    return "".join(out)
