"""Helpers shared by the recipes: scale handling, victims, keyword draws, results files."""

from __future__ import annotations

import functools
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nlprobust.corpora import load_multi30k  # noqa: E402
from nlprobust.training.marian import preset as marian_preset  # noqa: E402
from nlprobust.training.marian import train_marian  # noqa: E402
from nlprobust.training.opennmt import preset as onmt_preset  # noqa: E402
from nlprobust.training.opennmt import train_onmt  # noqa: E402
from nlprobust.victims.huggingface import HFVictim  # noqa: E402
from nlprobust.victims.opennmt import OpenNMTVictim  # noqa: E402

SCALES = ("tiny", "small", "paper")
VICTIMS = ("lstm", "marian")
TINY_TRAIN = 3000  # training pairs used at --scale tiny


def multi30k_lstm(scale: str, data_dir: str | None, runs: Path, *, device: str | None = None) -> OpenNMTVictim:
    """The Multi30k LSTM victim of ``scale``, trained into ``runs/multi30k_lstm_<scale>`` when missing."""
    run = runs / f"multi30k_lstm_{scale}"
    ckpt = run / "best.pt"
    if not ckpt.exists():
        train = load_multi30k("train", data_dir)
        if scale == "tiny":
            train = type(train)(train.src[:TINY_TRAIN], train.tgt[:TINY_TRAIN])
        cfg = onmt_preset(scale, train_steps=100, valid_steps=100) if scale == "tiny" else onmt_preset(scale)
        train_onmt(train, load_multi30k("val", data_dir), run, cfg)
    return OpenNMTVictim(ckpt, trust_checkpoint=True, device=device)  # trained by this recipe


def multi30k_marian(scale: str, data_dir: str | None, runs: Path, *, device: str | None = None) -> HFVictim:
    """The Multi30k Marian transformer victim of ``scale``, trained into ``runs/multi30k_marian_<scale>`` when
    missing, and loaded by path exactly as a Hub checkpoint would be."""
    run = runs / f"multi30k_marian_{scale}"
    if not (run / "config.json").exists():
        train = load_multi30k("train", data_dir)
        if scale == "tiny":
            train = type(train)(train.src[:TINY_TRAIN], train.tgt[:TINY_TRAIN])
            cfg = marian_preset("tiny", vocab_size=1000, max_steps=80, eval_every=40)
        else:
            cfg = marian_preset(scale)
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


def test_bleu(victim: Any, data_dir: str | None, cache: Path, *, split: str = "test_2016_flickr",
              limit: int | None = None) -> dict[str, Any]:
    """sacrebleu BLEU (beam 5) of a victim, cached in ``cache`` (a JSON file next to the checkpoint)."""
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


def attack_setup(victim: Any, split: str, n: int, ks: tuple[int, ...], data_dir: str | None,
                 seed: int, *, subset: int | None = None) -> tuple[list[int], list[str], dict[int, list[list[str]]]]:
    """Seeded sentence indices of ``split``, their texts and, per ``k`` in ``ks``, keyword draws per the protocol.

    ``subset``: keep only the first ``subset`` sentences of the seeded draw of ``n`` (the same sentences for
    every victim attacked on fewer sentences). The sentences are translated and the keyword pool is built
    once, whatever the number of ``k``s."""
    from nlprobust.keywords import draw_keyword_sets
    from nlprobust.text import tokenize

    data = load_multi30k(split, data_dir)
    drawn = random.Random(seed).sample(range(len(data)), n)
    idx = sorted(drawn[:subset] if subset is not None else drawn)
    sents = [data.src[i] for i in idx]
    draws: dict[int, list[list[str]]] = {0: [[] for _ in idx]}
    if any(k > 0 for k in ks):
        outputs = [tokenize(o) for o in victim.translate(sents, beam_size=5)]
        pool = keyword_pool(data_dir)
        for k in ks:
            if k > 0:
                draws[k] = draw_keyword_sets(victim, outputs, pool, k, seed)
    return idx, sents, draws


def run_attacks(victim: Any, log: Any, items: list[Any], attack: Any, batch: int, what: str,
                report_only: bool) -> list[dict[str, Any]]:
    """Attack the ``items`` not yet in ``log`` (in batches of ``batch``; none with ``report_only``) and return
    the records of all ``items``."""
    todo = [it for it in items if it.index not in log.done]
    if report_only and todo:
        print(f"  {what}: {len(todo)} of {len(items)} inputs not attacked yet (--report-only)", flush=True)
        todo = []
    t = time.time()
    for s in range(0, len(todo), batch):
        for r in attack.attack_batch(todo[s : s + batch]):
            log.append(r.to_dict())
        done = sum(1 for it in items if it.index in log.done)
        print(f"  {what}: {done}/{len(items)} done ({time.time() - t:.0f}s)", flush=True)
    wanted = {it.index for it in items}
    return [r for r in log.records if r["index"] in wanted]



def parse_choices(ap: Any, text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """A comma-separated list of ``allowed`` names; anything else is an argparse error naming it."""
    items = [x for x in text.split(",") if x]
    for x in items:
        if x not in allowed:
            ap.error(f"unknown {what} {x!r}; expected some of {', '.join(allowed)}")
    return items


def parse_counts(ap: Any, items: list[str], keys: tuple[str, ...], flag: str) -> dict[str, int]:
    """``KEY=N`` options (``N`` a positive integer, ``KEY`` among ``keys``) as a dict; errors name ``flag``."""
    out = {}
    for item in items:
        k, _, n = item.partition("=")
        if k not in keys or not n.isdigit() or int(n) < 1:
            ap.error(f"{flag} expects KEY=N with KEY among {', '.join(keys)}, got {item!r}")
        out[k] = int(n)
    return out


def table_row(recs: list[dict[str, Any]], lm: Any, *,
              words: Callable[[dict[str, Any]], list[str]] | None = None,
              source: Callable[[dict[str, Any]], list[str]] | None = None) -> dict[str, Any]:
    """One attack-table row from per-sentence records: success, size, quality and cost. Perplexity under ``lm``
    (a :class:`~nlprobust.metrics.KneserNeyLM`) of the successful adversarial inputs, split by ``words``
    (default: tokenised text), beside that of the same inputs before the attack (``source``)."""
    from nlprobust.results import summarize
    from nlprobust.text import tokenize

    words = words or (lambda r: tokenize(r["adversarial"]))
    source = source or (lambda r: tokenize(r["source"]))
    summ = summarize(recs)
    ok = [r for r in recs if r.get("success") and not r.get("error")]
    row: dict[str, Any] = {
        "n": summ["n"], "criterion": summ["criterion"], "success": summ["success"],
        "changed": summ["changed"], "bleu": summ["bleu"], "chrf": summ["chrf"], "ter": summ["ter"],
        "perplexity": round(lm.perplexity([words(r) for r in ok]), 1) if ok else None,
        "perplexity_original": round(lm.perplexity([source(r) for r in ok]), 1) if ok else None,
        "success_at_1": summ["success_at_1"], "success_at_2": summ["success_at_2"],
        "success_at_3": summ["success_at_3"], "seconds_per_sentence": summ["time_s"],
        "forward_passes": summ["forward_passes"], "backward_passes": summ["backward_passes"],
        "beam_decodes": summ["beam_decodes"], "errors": summ["errors"],
    }
    for crit, rate in (summ.get("success_by_criterion") or {}).items():
        row[f"success_{crit.replace('-', '_')}"] = rate
    return row


def attack_views(attack_name: str, cfg: Any, recs: list[dict[str, Any]]
                 ) -> list[tuple[str, bool, list[dict[str, Any]]]]:
    """``(row label, reduction, records)`` per table row one attack's run gives: a reduced Seq2Sick run gives the
    paper-faithful row (the search's own result, kept in every record) and the reduced row."""
    from nlprobust.results import without_reduction

    if attack_name == "seq2sick" and cfg.reduce:
        return [("seq2sick", False, [without_reduction(r) for r in recs]), ("seq2sick + reduction", True, recs)]
    return [(attack_name, cfg.reduce, recs)]


def table_attack_config(attack: str, mode: str, k: int, *, seq2sick_preset: str, word_swap_preset: str,
                        iterations: int | None = None, **common: Any) -> Any:
    """The configuration of ``attack`` for one table row (``k`` keywords): Seq2Sick with the reduction pass (one
    run gives the paper's row and the reduced one; ``iterations`` overrides the preset's), or the word swap
    with a word budget that grows with the keywords (each needs at least one word of its own)."""
    from nlprobust.attacks import preset
    from nlprobust.attacks import word_swap_preset as ws_preset

    if attack == "seq2sick":
        its = {"iterations": iterations} if iterations else {}
        return preset(seq2sick_preset, mode, reduce=True, **common, **its)
    return ws_preset(word_swap_preset, mode, **common, **({"max_changes": 3 * k + 2} if k > 1 else {}))
