"""A small, project-made English->German corpus for tests and for the demo when no real corpus is given.

Sentences are drawn from a tiny grammar (determiner, adjective, noun, verb, place) and translated by a
fixed lexicon, so a small model learns the task in seconds. It is a fixture, not a benchmark: every
reported number in ``docs/RESULTS.md`` comes from real corpora.
"""

from __future__ import annotations

import random

from nlprobust.corpora import ParallelCorpus

_SUBJECTS = [
    ("A man", "Ein Mann", "m"), ("A woman", "Eine Frau", "f"), ("A child", "Ein Kind", "n"),
    ("A dog", "Ein Hund", "m"), ("A girl", "Ein Mädchen", "n"), ("A boy", "Ein Junge", "m"),
    ("A cat", "Eine Katze", "f"), ("A worker", "Ein Arbeiter", "m"), ("A player", "Ein Spieler", "m"),
]
_ADJ = {
    "young": {"m": "junger", "f": "junge", "n": "junges"},
    "old": {"m": "alter", "f": "alte", "n": "altes"},
    "small": {"m": "kleiner", "f": "kleine", "n": "kleines"},
    "happy": {"m": "glücklicher", "f": "glückliche", "n": "glückliches"},
    "tall": {"m": "großer", "f": "große", "n": "großes"},
}
_VERBS = [
    ("runs", "läuft"), ("sits", "sitzt"), ("plays", "spielt"), ("stands", "steht"), ("sleeps", "schläft"),
    ("jumps", "springt"), ("walks", "geht"), ("waits", "wartet"), ("eats", "isst"),
]
_PLACES = [
    ("in the park", "im Park"), ("on the street", "auf der Straße"), ("in the water", "im Wasser"),
    ("on the beach", "am Strand"), ("in the snow", "im Schnee"), ("near the house", "neben dem Haus"),
    ("on the grass", "auf dem Gras"), ("in the city", "in der Stadt"),
]


def synthetic_corpus(n: int, seed: int = 0) -> ParallelCorpus:
    """``n`` sentence pairs from the grammar, reproducibly."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        en_s, de_s, gender = rng.choice(_SUBJECTS)
        if rng.random() < 0.5:
            adj = rng.choice(sorted(_ADJ))
            art_en, noun_en = en_s.split(" ", 1)
            art_de, noun_de = de_s.split(" ", 1)
            en_s, de_s = f"{art_en} {adj} {noun_en}", f"{art_de} {_ADJ[adj][gender]} {noun_de}"
        en_v, de_v = rng.choice(_VERBS)
        en_p, de_p = rng.choice(_PLACES)
        src.append(f"{en_s} {en_v} {en_p}.")
        tgt.append(f"{de_s} {de_v} {de_p}.")
    return ParallelCorpus(src, tgt)
