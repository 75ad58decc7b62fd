"""What ``recipes/robust_seq2seq.py`` needs: robust Marian models trained from the Multi30k victim, their clean
and noisy translation quality, and adaptive attacks on each model with a word budget.

* :func:`robust_model` -- ``runs/robust_<adversary>_<scale>``: :func:`nlprobust.training.robust.train_robust`
  from the natural victim (``none``: natural fine-tuning with the same schedule, the cost baseline).
* :func:`noisy_sentences` -- a seeded synthetic-noise version of a test set: one typo (``typo``: two adjacent
  letters of a word of at least four letters swapped), one dropped word (``drop``) or two adjacent words
  swapped (``swap``) per sentence.
* :func:`translation_scores` -- corpus BLEU and chrF (sacrebleu, beam 5), cached beside the model.
* :func:`attack_rows` -- the project's attacks run against the model itself (adaptive), with
  :func:`nlprobust.experiments.tables.table_row`'s columns plus the BLEU of the adversarial outputs to the
  references (translation quality under attack).
* :func:`transfer_row` -- adversarial inputs made on one model translated by another.
* :func:`opening_share` -- the share of successful attacks that change one of a sentence's first words: where
  a budgeted attack hits (a new subject rewrites the translation's first words, which is a faithful translation
  of a changed meaning rather than a mistranslation).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nlprobust.corpora import ParallelCorpus, load_multi30k

NOISE_KINDS: tuple[str, ...] = ("typo", "drop", "swap")
TINY_TRAIN = 3000  # training pairs of the tiny scale

__all__ = ["NOISE_KINDS", "attack_rows", "noisy_sentences", "opening_share", "robust_model", "transfer_row",
           "translation_scores"]


def robust_model(natural_dir: Path, adversary: str, scale: str, data_dir: str | None, runs: Path, *,
                 progress: bool = True, **overrides: Any) -> Path:
    """The model of ``adversary`` fine-tuned from ``natural_dir`` at ``scale`` (trained, resumed or found in
    ``runs/robust_<adversary>_<scale>``)."""
    from nlprobust.training.robust import preset, train_robust

    train = load_multi30k("train", data_dir)
    if scale == "tiny":
        train = ParallelCorpus(train.src[:TINY_TRAIN], train.tgt[:TINY_TRAIN])
    valid = load_multi30k("val", data_dir)
    if scale == "tiny":
        valid = ParallelCorpus(valid.src[:100], valid.tgt[:100])
    cfg = preset(scale, adversary=adversary, **overrides)
    return train_robust(natural_dir, train, valid, runs / f"robust_{adversary}_{scale}", cfg, progress=progress)


def noisy_sentences(sentences: Sequence[str], kind: str, seed: int) -> list[str]:
    """One seeded perturbation of ``kind`` (:data:`NOISE_KINDS`) per sentence; a sentence too short for it is
    kept as it is."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise {kind!r}; expected one of {NOISE_KINDS}")
    out = []
    for i, s in enumerate(sentences):
        rng = random.Random(seed * 1_000_003 + i)
        words = s.split()
        if kind == "typo":
            long = [k for k, w in enumerate(words) if sum(c.isalpha() for c in w) >= 4]
            if long:
                k = rng.choice(long)
                w = words[k]
                j = rng.randrange(len(w) - 1)
                words[k] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        elif kind == "drop" and len(words) > 2:
            del words[rng.randrange(1, len(words))]
        elif kind == "swap" and len(words) > 2:
            j = rng.randrange(len(words) - 1)
            words[j], words[j + 1] = words[j + 1], words[j]
        out.append(" ".join(words))
    return out


def translation_scores(victim: Any, sources: Sequence[str], references: Sequence[str], cache: Path,
                       key: str) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacrebleu, beam 5) of ``victim`` on ``sources``, cached under ``key`` in the JSON
    file ``cache``."""
    import time

    import sacrebleu

    data = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in data:
        t = time.time()
        hyp = victim.translate(list(sources), beam_size=5)
        bleu = sacrebleu.BLEU()
        data[key] = {"bleu": round(bleu.corpus_score(hyp, [list(references)]).score, 2),
                     "chrf": round(sacrebleu.CHRF().corpus_score(hyp, [list(references)]).score, 2),
                     "n": len(sources), "signature": str(bleu.get_signature()),
                     "seconds": round(time.time() - t, 1)}
        cache.write_text(json.dumps(data, indent=2))
    return dict(data[key])


def attack_rows(victim: Any, items: Sequence[Any], references: dict[int, str], attacks: Sequence[str], mode: str,
                max_changes: int, log_dir: Path, name: str, lm: Any, *, stem: str | None = None, batch: int = 16,
                report_only: bool = False,
                echo: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Each of ``attacks`` (``word-swap``, ``seq2sick``) against ``victim`` on ``items`` with goal ``mode``, at most
    ``max_changes`` words changed (word swap: its budget; Seq2Sick: successes with more words count as
    failures), the reduction pass on; one row per attack (``model``: ``name``) and the records. Per-sentence
    logs go to ``log_dir/<stem>_<mode>_<attack>_<tag>.jsonl`` (``stem`` default ``name``) and resume."""
    import sacrebleu

    from nlprobust.attacks import build_attack, preset, word_swap_preset
    from nlprobust.experiments.tables import run_attacks, table_row

    rows, records = [], {}
    for attack in attacks:
        if attack == "word-swap":
            cfg: Any = word_swap_preset("multi30k-marian", mode, max_changes=max_changes)
        else:
            cfg = preset("multi30k-marian", mode, reduce=True)
        recs = run_attacks(log_dir / f"{stem or name}_{mode}_{attack}_{cfg.tag()}.jsonl", list(items),
                           build_attack(attack, victim, cfg), batch, f"{name} {mode} {attack}", report_only,
                           echo=echo)
        if len(recs) < len(items):
            continue
        within = [dict(r, success=bool(r["success"]) and r["changed"] <= max_changes) for r in recs]
        hyp = [r["adversarial_output"] if r["success"] else r["original_output"] for r in within]
        refs = [references[r["index"]] for r in within]
        row = {"model": name, "attack": attack, "mode": mode, "max_changes": max_changes,
               **table_row(within, lm), "opening_changed": opening_share(within),
               "bleu_under_attack": round(sacrebleu.BLEU().corpus_score(hyp, [refs]).score, 2),
               "bleu_clean_outputs": round(sacrebleu.BLEU().corpus_score(
                   [r["original_output"] for r in within], [refs]).score, 2)}
        rows.append(row)
        records[attack] = within
    return rows, records


def opening_share(records: Sequence[dict[str, Any]], first: int = 2) -> float | None:
    """Percentage of the successful ``records`` with a changed word among the source's first ``first`` words
    (``changed_positions``, 0-based word positions); None without successes."""
    if first < 1:
        raise ValueError(f"first must be >= 1, got {first}")
    ok = [r for r in records if r["success"]]
    if not ok:
        return None
    return round(100.0 * sum(bool(r["changed_positions"]) and min(r["changed_positions"]) < first
                             for r in ok) / len(ok), 1)


def transfer_row(victim: Any, records: Sequence[dict[str, Any]], references: dict[int, str], name: str,
                 source: str) -> dict[str, Any]:
    """The successful non-overlap inputs of ``records`` (made on model ``source``) translated by ``victim``:
    the share that still changes every word of its clean output (at least as long), and BLEU."""
    import sacrebleu

    from nlprobust.metrics import nonoverlap_success
    from nlprobust.text import tokenize

    ok = [r for r in records if r["success"]]
    if not ok:
        return {"model": name, "attack": f"transfer from {source}", "n": 0, "success": None}
    clean = victim.translate([r["source"] for r in ok], beam_size=5)
    adv = victim.translate([r["adversarial"] for r in ok], beam_size=5)
    still = [nonoverlap_success(tokenize(c), tokenize(a), criterion="at-least-as-long") for c, a in zip(clean, adv)]
    refs = [references[r["index"]] for r in ok]
    return {"model": name, "attack": f"transfer from {source}", "mode": "nonoverlap", "n": len(ok),
            "success": sum(still) / len(ok), "changed": sum(r["changed"] for r in ok) / len(ok),
            "bleu_under_attack": round(sacrebleu.BLEU().corpus_score(adv, [refs]).score, 2)}
