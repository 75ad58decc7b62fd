"""The keyword lexicon: the victim's own one-word translations of its candidate source words.

For a keyword goal the lexicon names the source words whose one-word input, decoded greedily by the victim,
contains the keyword. Putting one of them anywhere in the input often makes the output contain the keyword: a
swap that a first-order ranking over the whole vocabulary rarely reaches. The word swap tests the best of them
beside the gradient's choices each step; the reduction pass (``reduce_lexicon``) tries inputs made of one of
them per keyword as a shortcut to a smaller success.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from nlprobust.victims.base import Seq2SeqVictim, VictimError

WORD_START_MARKS = "▁Ġ"  # SentencePiece / byte-level BPE word-start marks, stripped before the visibility test

def substitute_mask(victim: Seq2SeqVictim) -> list[bool]:
    """Per candidate token of ``victim`` (:meth:`candidate_ids`, in order): whether a swap may bring it in, i.e.
    it has a letter or digit once its word-start mark is stripped (no punctuation pieces)."""
    from nlprobust.attacks.base import VISIBLE_WORD

    toks = victim.source_tokens(victim.candidate_ids().tolist())
    return [bool(VISIBLE_WORD.search(t.lstrip(WORD_START_MARKS))) for t in toks]


_LEXICONS: weakref.WeakKeyDictionary[Seq2SeqVictim, dict[str, list[int]]] = weakref.WeakKeyDictionary()


def keyword_lexicon(victim: Seq2SeqVictim, *, batch_size: int = 256) -> dict[str, list[int]]:
    """Output word -> the victim's candidate source tokens whose one-word input, decoded greedily by the victim,
    contains that word, in the order of the candidates (the vocabulary's, most frequent first for the word-level
    victims). Built once per victim (one batched greedy pass over its candidate words) and kept while the victim
    lives. Words are compared on the victim's output segmentation (:meth:`target_words`), as keyword success is."""
    lex = _LEXICONS.get(victim)
    if lex is not None:
        return lex
    sources, owners = [], []
    for c, ok in zip(victim.candidate_ids().tolist(), substitute_mask(victim)):
        if not ok:
            continue
        try:
            sources.append(victim.encode_source(victim.decode_source([c])).ids)
        except VictimError:  # a token that is no input on its own (e.g. it decodes to nothing)
            continue
        owners.append(c)
    lex = {}
    with victim.attack_mode():
        outputs = victim.translate_ids(sources, beam_size=1, batch_size=batch_size)
    for c, out in zip(owners, outputs):
        for w in dict.fromkeys(victim.target_words(out)):
            lex.setdefault(w, []).append(c)
    _LEXICONS[victim] = lex
    return lex


def lexicon_columns(victim: Seq2SeqVictim, cand_ids: torch.Tensor, keywords: Sequence[Sequence[str]],
                    words_per_keyword: int) -> torch.Tensor:
    """``[rows, max keywords, candidates]`` mask: for row ``i`` and its ``j``-th keyword, the columns of
    ``cand_ids`` that are among that keyword's first ``words_per_keyword`` lexicon words (on the victim's
    device)."""
    lex = keyword_lexicon(victim)
    column = {c: j for j, c in enumerate(cand_ids.tolist())}
    mask = torch.zeros(len(keywords), max(1, max((len(k) for k in keywords), default=1)), cand_ids.numel(),
                       dtype=torch.bool)
    for i, kws in enumerate(keywords):
        for j, kw in enumerate(kws):
            cols = [column[c] for c in lex.get(kw, [])[:words_per_keyword] if c in column]
            mask[i, j, cols] = True
    return mask.to(victim.device)
