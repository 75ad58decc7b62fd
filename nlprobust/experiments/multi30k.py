"""Multi30k English->German experiments: the victims of each scale (trained into ``<runs>`` when missing), their
test BLEU, the keyword pool and the seeded sentence and keyword draws of the keyword protocol."""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

from nlprobust.core.runio import atomic_write_json
from nlprobust.corpora import load_multi30k
from nlprobust.victims.huggingface import HFVictim
from nlprobust.victims.opennmt import OpenNMTVictim

__all__ = ["TINY_TRAIN", "VICTIMS", "attack_setup", "keyword_pool", "multi30k_lstm", "multi30k_marian",
           "recipe_victim", "victim_bleu"]

VICTIMS = ("lstm", "marian")
TINY_TRAIN = 3000  # training pairs used at --scale tiny


def multi30k_lstm(scale: str, data_dir: str | None, runs: Path, *, device: str | None = None) -> OpenNMTVictim:
    """The Multi30k LSTM victim of ``scale``, trained into ``runs/multi30k_lstm_<scale>`` when missing."""
    from nlprobust.training.opennmt import preset, train_onmt

    run = runs / f"multi30k_lstm_{scale}"
    ckpt = run / "best.pt"
    if not ckpt.exists():
        train = load_multi30k("train", data_dir)
        if scale == "tiny":
            train = type(train)(train.src[:TINY_TRAIN], train.tgt[:TINY_TRAIN])
        cfg = preset(scale, train_steps=100, valid_steps=100) if scale == "tiny" else preset(scale)
        train_onmt(train, load_multi30k("val", data_dir), run, cfg)
    return OpenNMTVictim(ckpt, trust_checkpoint=True, device=device)  # trained by this project


def multi30k_marian(scale: str, data_dir: str | None, runs: Path, *, device: str | None = None) -> HFVictim:
    """The Multi30k Marian transformer victim of ``scale``, trained into ``runs/multi30k_marian_<scale>`` when
    missing, and loaded by path exactly as a Hub checkpoint would be."""
    from nlprobust.training.marian import preset, train_marian

    run = runs / f"multi30k_marian_{scale}"
    if not (run / "config.json").exists():
        train = load_multi30k("train", data_dir)
        if scale == "tiny":
            train = type(train)(train.src[:TINY_TRAIN], train.tgt[:TINY_TRAIN])
            cfg = preset("tiny", vocab_size=1000, max_steps=80, eval_every=40)
        else:
            cfg = preset(scale)
        train_marian(train, load_multi30k("val", data_dir), run, cfg)
    return HFVictim(run, device=device, local_files_only=True)


def recipe_victim(name: str, scale: str, data_dir: str | None, runs: Path, *,
                  device: str | None = None) -> tuple[Any, Path, dict[str, Any]]:
    """Victim ``name`` (``lstm`` or ``marian``) of ``scale``: the model, its folder and its training config."""
    if name == "lstm":
        victim: Any = multi30k_lstm(scale, data_dir, runs, device=device)
        folder = runs / f"multi30k_lstm_{scale}"
        return victim, folder, json.loads((folder / "config.json").read_text())
    if name == "marian":
        victim = multi30k_marian(scale, data_dir, runs, device=device)
        folder = runs / f"multi30k_marian_{scale}"
        return victim, folder, json.loads((folder / "train_config.json").read_text())
    raise ValueError(f"unknown victim {name!r}; expected one of {VICTIMS}")


def victim_bleu(victim: Any, data_dir: str | None, cache: Path, *, split: str = "test_2016_flickr",
                limit: int | None = None) -> dict[str, Any]:
    """sacrebleu BLEU (beam 5) of a victim on ``split`` (its first ``limit`` pairs), cached in ``cache`` (a JSON
    file next to the checkpoint)."""
    import sacrebleu

    key = f"{split}:{limit}"
    data = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in data:
        d = load_multi30k(split, data_dir)
        src, ref = d.src[:limit], d.tgt[:limit]
        t = time.time()
        hyp = victim.translate(src, beam_size=5)
        metric = sacrebleu.BLEU()
        b = metric.corpus_score(hyp, [ref])
        data[key] = {"bleu": round(b.score, 2), "n": len(src), "signature": str(metric.get_signature()),
                     "seconds": round(time.time() - t, 1)}
        cache.write_text(json.dumps(data, indent=2))
    return data[key]


@functools.lru_cache(maxsize=4)
def keyword_pool(data_dir: str | None) -> list[str]:
    """The keyword protocol's pool: the 2,000 most frequent German content words of the training targets
    (read once per process, whatever the number of victims)."""
    from nlprobust.keywords import frequent_content_words

    return frequent_content_words(load_multi30k("train", data_dir).tgt, lang="de", top=2000)


def _cached_translations(victim: Any, sents: list[str], key: str, cache: Path | None) -> list[str]:
    """``victim.translate(sents, beam_size=5)``, kept under ``key`` in the JSON file ``cache`` when given."""
    data = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    hit = data.get(key)
    if hit is not None and hit.get("sources") == sents:
        return list(hit["outputs"])
    outputs = victim.translate(sents, beam_size=5)
    if cache is not None:
        data[key] = {"sources": sents, "outputs": outputs}
        atomic_write_json(cache, data)
    return outputs


def victim_fingerprint(victim: Any, split: str, n: int, seed: int, sents: list[str], *, subset: int | None = None,
                       cache: Path | None = None) -> str:
    """Short hash of the victim's beam-5 translations of the recipe's sentences ``sents`` (the draw
    :func:`attack_setup` made with the same ``split``, ``n``, ``seed`` and ``subset``; read from its ``cache``):
    victims with equal fingerprints translate every attacked sentence alike, so their attack records agree."""
    outputs = _cached_translations(victim, sents, f"{split}:{seed}:{n}:{subset}", cache)
    return hashlib.sha1(json.dumps(outputs, ensure_ascii=False).encode("utf-8")).hexdigest()[:12]


def attack_setup(victim: Any, split: str, n: int, ks: tuple[int, ...], data_dir: str | None,
                 seed: int, *, subset: int | None = None,
                 cache: Path | None = None) -> tuple[list[int], list[str], dict[int, list[list[str]]]]:
    """Seeded sentence indices of ``split``, their texts and, per ``k`` in ``ks``, keyword draws per the protocol.

    ``subset``: keep only the first ``subset`` sentences of the seeded draw of ``n`` (the same sentences for
    every victim attacked on fewer sentences). The sentences are translated and the keyword pool is built
    once, whatever the number of ``k``s. ``cache``: a JSON file next to the victim's checkpoint that keeps
    those beam-5 translations per split and sentence draw, so that a resumed or report-only run does not
    decode them again (it goes with the checkpoint: a retrained victim starts a new folder)."""
    from nlprobust.keywords import draw_keyword_sets
    from nlprobust.text import tokenize

    data = load_multi30k(split, data_dir)
    drawn = random.Random(seed).sample(range(len(data)), n)
    idx = sorted(drawn[:subset] if subset is not None else drawn)
    sents = [data.src[i] for i in idx]
    draws: dict[int, list[list[str]]] = {0: [[] for _ in idx]}
    if any(k > 0 for k in ks):
        outputs = [tokenize(o) for o in _cached_translations(victim, sents, f"{split}:{seed}:{n}:{subset}", cache)]
        pool = keyword_pool(data_dir)
        for k in ks:
            if k > 0:
                draws[k] = draw_keyword_sets(victim, outputs, pool, k, seed)
    return idx, sents, draws
