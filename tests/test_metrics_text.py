import random

import pytest

from nlprobust.keywords import draw_keywords, frequent_content_words
from nlprobust.metrics import (
    changed_positions,
    changed_words,
    keywords_success,
    mark_changes,
    nonoverlap_success,
    sentence_bleu,
)
from nlprobust.text import detokenize, tokenize


def test_tokenize_roundtrip() -> None:
    s = "Two young, White males are outside near many bushes."
    assert tokenize(s)[-2:] == ["bushes", "."]
    assert detokenize(tokenize(s)) == s
    assert tokenize("man's T-shirt") == ["man's", "T-shirt"]
    assert tokenize("   ") == []


def test_bleu_properties() -> None:
    ref = "a child is splashing in the water .".split()
    assert sentence_bleu(ref, ref) == pytest.approx(1.0)
    one = ref.copy()
    one[2] = "was"
    two = one.copy()
    two[4] = "on"
    assert 0 < sentence_bleu(ref, two) < sentence_bleu(ref, one) < 1
    assert sentence_bleu(ref, []) == 0.0


def test_changed_words_and_positions() -> None:
    a = "a child is splashing".split()
    assert changed_words(a, "a children is unionists".split()) == 2
    assert changed_positions(a, "a children is unionists".split()) == [1, 3]
    assert changed_words(a, "a child is".split()) == 1
    assert changed_words(a, a) == 0
    assert mark_changes(["a", "b"], [1]) == "a [b]"


def test_success_criteria() -> None:
    assert nonoverlap_success("ein Kind im Wasser .".split(), "Kinder sind in der Wasser".split())
    assert not nonoverlap_success("ein Kind im Wasser".split(), "zwei Kind".split())
    assert not nonoverlap_success("ein Kind".split(), [])  # at-least-as-long, the default
    assert nonoverlap_success("ein Kind".split(), [], criterion="positional")  # the thesis's rule
    assert keywords_success(["Hund", "sitzt"], "ein Hund sitzt".split())
    assert not keywords_success(["Hund", "sitzt"], "ein Hund".split())


def test_keyword_pool_and_draw() -> None:
    sents = ["Ein Hund läuft im Park.", "Ein Hund sitzt.", "Die Katze schläft 2 Stunden."] * 3
    pool = frequent_content_words(sents, lang="de", top=10)
    assert pool[0] == "Hund"
    assert "Ein" not in pool and "im" not in pool and "2" not in pool and "." not in pool
    kw = draw_keywords(pool, 2, exclude=["Hund"], rng=random.Random(0))
    assert len(set(kw)) == 2 and "Hund" not in kw
    assert kw == draw_keywords(pool, 2, exclude=["Hund"], rng=random.Random(0))
    with pytest.raises(ValueError):
        draw_keywords(pool, 50, exclude=[], rng=random.Random(0))


def test_keyword_sets_ask_the_victim_once_per_pool_word() -> None:
    from nlprobust.keywords import draw_keyword_sets

    class Victim:
        calls = 0

        def keyword_id(self, word: str) -> int:
            Victim.calls += 1
            if word.startswith("x"):
                raise ValueError(f"{word} is not one target token")
            return len(word)

    pool = ["Hund", "Katze", "xylo", "Park", "Ball", "xenon"]
    outputs = [["ein", "Hund"], ["eine", "Katze"], ["der", "Park"], ["ein", "Ball"]] * 5
    sets = draw_keyword_sets(Victim(), outputs, pool, 2, seed=0)
    assert Victim.calls == len(pool)
    assert all(len(set(s)) == 2 and not set(s) & set(o) and not any(w.startswith("x") for w in s)
               for s, o in zip(sets, outputs))
    assert sets == draw_keyword_sets(Victim(), outputs, pool, 2, seed=0)
