"""Thesis Tables 3.2, 3.3, 3.5 and examples 3.7-3.8: Seq2Sick on Gigaword, DUC2003 and DUC2004 summarizers.

    python recipes/summarization_seq2sick.py --scale small
    python recipes/summarization_seq2sick.py --scale small --victims transformer --methods nonoverlap,1-keyword
    python recipes/summarization_seq2sick.py --scale paper --full-gigaword /data/sumdata   # the thesis's sizes

Victims (``nlprobust.experiments.summarization``, trained into ``runs/`` when missing): ``lstm`` (OpenNMT-py
2-layer LSTM with attention, the thesis's model) and ``transformer`` (Marian, SentencePiece); each is scored by
ROUGE-1/2/L F1 on the 1,951-pair Gigaword test set (beam 5).

Inputs: a seeded sample of the Gigaword test set and of DUC2003 / DUC2004 (``--scale paper``: 1,000 Gigaword
inputs and every DUC input; ``small``: 100 of each for the LSTM and the first 30 of those for the transformer),
normalised as Gigaword (lowercase, digits as ``#``). Attacks: non-overlap (lambda = 1) and 1/2/3 targeted
keywords drawn by the keyword protocol (frequent content words of the Gigaword training headlines, never in
the original output; seeded, saved with the results); the ``police arrest`` attack of Table 3.8 on DUC2004.
Success is judged on the beam-5 output. Perplexity (Table 3.5): an interpolated Kneser-Ney trigram model
trained on every Gigaword article sentence available offline (31,565; none from the test sets) scores the
original and adversarial DUC inputs.

Per-sentence records go to ``runs/recipes/summarization_seq2sick/<scale>/<victim folder>-<fingerprint>/`` as
they finish, so an interrupted run resumes (and a retrained victim starts afresh); with ``--archive
recipes/records/summarization_seq2sick`` also gzipped beside the results, keyed by the inputs and the victim's
beam-5 summaries of them, so a fresh checkout whose (re)trained victim summarises them alike restores the
records instead of attacking again. With both attacks, a ``portfolio`` row (the word swap, then Seq2Sick +
reduction where the swap failed or changed more than one word; the smallest success kept) is built from their
records. Writes
``recipes/results/summarization_seq2sick.json`` (or ``--out``) and renders ``docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from nlprobust.attacks import AttackItem, build_attack, preset
from nlprobust.core.cli import SCALES, echo, parse_choices, parse_counts
from nlprobust.core.runio import run_metadata
from nlprobust.corpora import gigaword_articles
from nlprobust.experiments.report import publish
from nlprobust.experiments.summarization import (
    DATASETS,
    VICTIMS,
    adversarial_words,
    keyword_pool,
    load_summary_corpus,
    summarization_victim,
    victim_fingerprint,
    victim_rouge,
)
from nlprobust.experiments.tables import (
    attack_views,
    judged_on_other_text,
    parse_overrides,
    portfolio_view,
    reused_settings,
    run_attacks,
    table_attack_config,
    table_row,
)
from nlprobust.metrics import KneserNeyLM, mark_changes
from nlprobust.results import summarize

ROOT = Path(__file__).resolve().parents[1]

METHODS = ("nonoverlap", "1-keyword", "2-keyword", "3-keyword")
PAPER = {  # thesis Table 3.2 (non-overlap) and Table 3.3 (keywords): success, BLEU, # changed
    "gigaword": {"nonoverlap": (0.86, 0.828, 2.17), "1-keyword": (0.998, 0.801, 2.04),
                 "2-keyword": (0.965, 0.523, 4.96), "3-keyword": (0.43, 0.413, 8.86)},
    "duc2003": {"nonoverlap": (0.852, 0.774, 2.90), "1-keyword": (0.996, 0.782, 2.25),
                "2-keyword": (0.876, 0.457, 5.57), "3-keyword": (0.383, 0.376, 9.35)},
    "duc2004": {"nonoverlap": (0.842, 0.816, 2.50), "1-keyword": (0.996, 0.773, 2.21),
                "2-keyword": (0.878, 0.421, 5.1), "3-keyword": (0.374, 0.340, 9.3)},
}
PAPER_PPL = {  # thesis Table 3.5
    "duc2003": {"original": 102.02, "nonoverlap": 114.02, "1-keyword": 159.54, "2-keyword": 352.12},
    "duc2004": {"original": 121.09, "nonoverlap": 149.15, "1-keyword": 199.01, "2-keyword": 384.80},
}
# inputs per dataset and victim; at paper scale every DUC input and 1,000 Gigaword test inputs
DEFAULT_N = {"tiny": {"lstm": 2, "transformer": 1}, "small": {"lstm": 100, "transformer": 30},
             "paper": {"lstm": None, "transformer": None}}
PAPER_GIGAWORD_N = 1000
TINY_ITERATIONS = 20  # the tiny scale only checks that everything runs end to end
POLICE_N = {"tiny": 2, "small": 30, "paper": 500}  # DUC2004 inputs for the "police arrest" attack
# Seq2Sick presets per victim kind (tuned on Multi30k validation sentences; see docs/RESULTS.md)
DEFAULT_PRESET = {"lstm": "gigaword-lstm", "transformer": "multi30k-marian"}
# word-swap settings per victim kind: those tuned on Multi30k validation sentences for the word-level LSTM
# (recipes/results/tune_word_swap_lstm.json), not retuned on Gigaword
WORD_SWAP_PRESET = {"lstm": "multi30k-lstm", "transformer": "multi30k-marian"}
ATTACKS = ("seq2sick", "word-swap")
# keyword pool: the most frequent content words of the training headlines. With 11,973 headlines the 2,000th
# word occurs 7 times and the victim can hardly emit such words (24 dev inputs, 1 keyword: 58% success with a
# pool of 2,000, 88% with 500, whose rarest word occurs 27 times); the thesis's 3.8M headlines make any top-2,000
# word frequent. Paper scale keeps 2,000.
POOL = {"tiny": 500, "small": 500, "paper": 2000}


def sample_indices(name: str, size: int, scale: str, n: int | None, seed: int) -> list[int]:
    """The seeded inputs of ``name`` in draw order: ``n`` of them, or at paper scale (``n`` None) 1,000 for
    Gigaword and every DUC input."""
    k = n if n is not None else (PAPER_GIGAWORD_N if name == "gigaword" else size)
    return random.Random(f"{seed}:{name}").sample(range(size), min(k, size))


def archive_key(items: list[AttackItem], summaries: list[str]) -> str:
    """Key of an ``--archive`` file: a short hash of the attacked inputs (index, text, keywords) and the victim's
    beam-5 summaries of them. Equal keys mean the same attack on a victim that summarises every input alike,
    so the archived records hold; other inputs (``--n``, ``--seed``, ``--pool``) or another victim change it."""
    data = {"items": [[it.index, it.text, list(it.keywords)] for it in items], "summaries": summaries}
    return hashlib.sha1(json.dumps(data, ensure_ascii=False).encode("utf-8")).hexdigest()[:12]


def draw(victim: Any, summaries: list[str], ks: list[int], data_dir: str | None, seed: int,
         pool: int = 2000) -> dict[int, list[list[str]]]:
    """Per ``k``, seeded keyword sets for the inputs whose beam-5 summaries are ``summaries`` (never a word of
    the victim's original summary)."""
    from nlprobust.keywords import draw_keyword_sets
    from nlprobust.text import tokenize

    out: dict[int, list[list[str]]] = {0: [[] for _ in summaries]}
    if any(k > 0 for k in ks):
        outputs = [sorted(set(o.split()) | set(tokenize(o))) for o in summaries]
        for k in ks:
            if k > 0:
                out[k] = draw_keyword_sets(victim, outputs, keyword_pool(data_dir, pool), k, seed)
    return out


@functools.lru_cache(maxsize=2)
def article_lm(data_dir: str | None) -> KneserNeyLM:
    """Trigram Kneser-Ney model of every Gigaword article sentence available offline (perplexity of inputs)."""
    return KneserNeyLM([s.split() for s in gigaword_articles(data_dir)], order=3)


def attack_stats(recs: list[dict[str, Any]], lm: KneserNeyLM) -> dict[str, Any]:
    """Success, size, quality, perplexity (on the inputs' own words) and cost of one attack row."""
    return table_row(recs, lm, words=adversarial_words, source=lambda r: r["source"].split())


def _example(r: dict[str, Any]) -> dict[str, Any]:
    return {"source": r["source"], "adversarial": mark_changes(adversarial_words(r), r["changed_positions"],
                                                               "**", "**"),
            "keywords": r["keywords"], "original_output": r["original_output"],
            "adversarial_output": r["adversarial_output"]}


def attack_victim(name: str, args: argparse.Namespace, runs: Path) -> dict[str, Any]:
    """Every dataset x method on victim ``name``: rows, examples, keyword draws, records for perplexity."""
    victim, folder, train_config = summarization_victim(name, args.scale, args.data_dir, runs, device=args.device,
                                                        full_dir=args.full_gigaword, glove=args.glove)
    rg = victim_rouge(victim, folder, args.data_dir, limit=50 if args.scale == "tiny" else None)
    print(f"{name}: Gigaword test ROUGE-1/2/L {rg['rouge1']}/{rg['rouge2']}/{rg['rougeL']} (n={rg['n']})",
          flush=True)
    # records of each trained victim apart: a retrained victim never reuses its predecessor's attacks
    work = runs / "recipes" / "summarization_seq2sick" / args.scale / f"{folder.name}-{victim_fingerprint(folder)}"
    work.mkdir(parents=True, exist_ok=True)
    ks = {m: 0 if m == "nonoverlap" else int(m.split("-")[0]) for m in args.methods}
    n = args.n.get(name, DEFAULT_N[args.scale][name])
    pname = args.preset or DEFAULT_PRESET[name]
    lm = article_lm(args.data_dir)
    rows: list[dict[str, Any]] = []
    examples: dict[str, list[dict[str, Any]]] = {}
    draws: dict[str, Any] = {}
    records: dict[str, dict[str, list[dict[str, Any]]]] = {}
    incomplete: list[str] = []
    for ds in args.datasets:
        data = load_summary_corpus(ds, args.data_dir, args.full_gigaword)
        # every victim draws from the LSTM's sample; the transformer takes its first n inputs
        drawn = sample_indices(ds, len(data), args.scale, args.n.get("lstm", DEFAULT_N[args.scale]["lstm"]),
                               args.seed)
        idx = sorted(drawn[:n] if n is not None else drawn)
        sents = [data.src[i] for i in idx]
        summaries = victim.translate(sents, beam_size=5) if args.archive or any(ks.values()) else []
        kw = draw(victim, summaries, sorted(set(ks.values())), args.data_dir, args.seed, args.pool)
        records[ds] = {}
        for method in args.methods:
            mode = "nonoverlap" if method == "nonoverlap" else "keywords"
            kws = kw[ks[method]]
            draws[f"{ds}/{method}"] = {str(i): k for i, k in zip(idx, kws)}
            items = [AttackItem(i, s, tuple(k)) for i, s, k in zip(idx, sents, kws)]
            paper = PAPER[ds][method]
            members: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
            views: list[tuple[str, bool, list[dict[str, Any]], str, dict[str, Any]]] = []
            for attack_name in args.attacks:
                cfg = table_attack_config(attack_name, mode, ks[method], seq2sick_preset=pname,
                                          word_swap_preset=WORD_SWAP_PRESET[name],
                                          iterations=args.iterations_for.get(method, args.iterations))
                stem = f"{name}_{ds}_{method}_{attack_name}_{cfg.preset}_{cfg.tag()}"
                archive = (Path(args.archive) / args.scale / f"{stem}.jsonl.gz", archive_key(items, summaries)) \
                    if args.archive else None
                what = f"{name} {ds} {method} {attack_name}"
                searched = earlier_search(args, victim, attack_name, cfg, items, archive, work, what,
                                          f"{name}_{ds}_{method}_{attack_name}")
                recs = run_attacks(work / f"{stem}.jsonl", items, build_attack(attack_name, victim, cfg),
                                   args.batch_size, what, args.report_only, echo=echo, archive=archive,
                                   searched=searched, redo=redo(args))
                summ = summarize(recs)
                if summ["n"] + summ["errors"] < len(idx):
                    incomplete.append(f"{name} {ds} {method} {attack_name} ({summ['n'] + summ['errors']} of "
                                      f"{len(idx)} inputs done)")
                    continue
                members[attack_name] = (cfg, recs)
                for label, reduced, view in attack_views(attack_name, cfg, recs):
                    if label == "seq2sick":
                        records[ds][method] = view  # Table 3.5 scores the paper's attack
                    views.append((label, reduced, view, cfg.preset, cfg.__dict__))
                ok = sorted((r for r in recs if r["success"]), key=lambda r: r["changed"])
                if ds != "gigaword" or method in ("nonoverlap", "1-keyword"):
                    examples[f"{name} / {ds} / {method} / {attack_name}"] = [_example(r) for r in ok[:2]]
            if (pv := portfolio_view(members)) is not None:
                views.append(pv)
            for label, reduced, view, preset_name, config in views:
                rows.append({"table": "3.2" if method == "nonoverlap" else "3.3", "dataset": ds, "victim": name,
                             "method": method, "attack": label, "reduction": reduced, **attack_stats(view, lm),
                             "preset": preset_name, "config": config,
                             "paper": {"success": paper[0], "bleu": paper[1], "changed": paper[2]}})
                r = rows[-1]
                print(f"{name} {ds} {method} {label}: success {r['success']}, BLEU {r['bleu']}, changed "
                      f"{r['changed']}", flush=True)
    police = police_arrest(victim, name, args, work, pname, lm)
    notes = [police["skipped"]] if "skipped" in police else []
    if police["rows"]:
        rows += police["rows"]
        examples[f"{name} / duc2004 / keywords 'police arrest' (Table 3.8)"] = police["examples"]
    elif not notes:
        incomplete.append(f"{name} police-arrest")
    where = str(folder.relative_to(runs.parent)) if folder.is_relative_to(runs.parent) else str(folder)
    return {"rows": rows, "examples": examples, "keywords": draws, "incomplete": incomplete, "records": records,
            "notes": notes,
            "victim": {"checkpoint": where, "rouge": {k: v for k, v in rg.items() if k != "examples"},
                       "rouge_examples": rg.get("examples", []), "train_config": train_config}}


def police_arrest(victim: Any, name: str, args: argparse.Namespace, work: Path, pname: str, lm: KneserNeyLM
                  ) -> dict[str, Any]:
    """Table 3.8: the keywords ``police arrest`` on the first DUC2004 inputs (Seq2Sick, with and without the
    reduction pass)."""
    data = load_summary_corpus("duc2004", args.data_dir, None)
    m = min(args.police_n if args.police_n is not None else POLICE_N[args.scale], len(data))
    if m < 1:
        return {"rows": [], "examples": [], "skipped": f"{name}: no 'police arrest' attack (--police-n 0)"}
    cfg = preset(pname, "keywords", reduce=True, **({"iterations": args.iterations} if args.iterations else {}))
    from nlprobust.victims.base import VictimError

    try:
        for w in ("police", "arrest"):
            victim.keyword_id(w)
    except VictimError as exc:  # e.g. a small SentencePiece vocabulary splits the word
        return {"rows": [], "examples": [], "skipped": f"{name}: no 'police arrest' attack ({exc})"}
    items = [AttackItem(i, data.src[i], ("police", "arrest")) for i in range(m)]
    stem = f"{name}_duc2004_police-arrest_{cfg.preset}_{cfg.tag()}"
    archive = (Path(args.archive) / args.scale / f"{stem}.jsonl.gz", archive_key(
        items, victim.translate([it.text for it in items], beam_size=5))) if args.archive else None
    what = f"{name} duc2004 police arrest"
    searched = earlier_search(args, victim, "seq2sick", cfg, items, archive, work, what,
                              f"{name}_duc2004_police-arrest")
    recs = run_attacks(work / f"{stem}.jsonl", items, build_attack("seq2sick", victim, cfg), args.batch_size,
                       what, args.report_only, echo=echo, archive=archive, searched=searched, redo=redo(args))
    summ = summarize(recs)
    if summ["n"] + summ["errors"] < m:
        return {"rows": [], "examples": []}
    ok = sorted((r for r in recs if r["success"]), key=lambda r: r["changed"])
    rows = [{"table": "3.8", "dataset": "duc2004", "victim": name, "method": "police-arrest", "attack": label,
             "reduction": reduced, **attack_stats(view, lm),
             "preset": cfg.preset, "config": cfg.__dict__, "paper": None}
            for label, reduced, view in attack_views("seq2sick", cfg, recs)]
    return {"rows": rows, "examples": [_example(r) for r in ok[:3]]}


def perplexity_rows(per: dict[str, dict[str, Any]], data_dir: str | None) -> list[dict[str, Any]]:
    """Table 3.5: trigram Kneser-Ney perplexity of the original DUC inputs attacked and of the successful
    adversarial inputs (with the originals of those same inputs beside them)."""
    t = time.time()
    lm = article_lm(data_dir)
    rows = []
    for victim, p in per.items():
        for ds in ("duc2003", "duc2004"):
            recs = p["records"].get(ds, {})
            if not recs:
                continue
            first = next(iter(recs.values()))
            rows.append({"table": "3.5", "dataset": ds, "victim": victim, "inputs": "original", "n": len(first),
                         "perplexity": round(lm.perplexity([r["source"].split() for r in first]), 2),
                         "paper": {"perplexity": PAPER_PPL[ds]["original"]}})
            for method in ("nonoverlap", "1-keyword", "2-keyword"):
                ok = [r for r in recs.get(method, []) if r["success"]]
                if not ok:
                    continue
                words = [adversarial_words(r) for r in ok]
                rows.append({"table": "3.5", "dataset": ds, "victim": victim, "inputs": method, "n": len(ok),
                             "perplexity": round(lm.perplexity(words), 2),
                             "original_same_inputs": round(lm.perplexity([r["source"].split() for r in ok]), 2),
                             "paper": {"perplexity": PAPER_PPL[ds][method]}})
    print(f"perplexity rows in {time.time() - t:.0f}s (LM vocabulary {len(lm.vocab)})", flush=True)
    return rows


def earlier_search(args: argparse.Namespace, victim: Any, attack_name: str, cfg: Any, items: list[AttackItem],
                   archive: tuple[Path, str] | None, work: Path, what: str, prefix: str
                   ) -> list[dict[str, Any]] | None:
    """With ``--reuse-search``: the records of the earlier reduction settings (log and archive
    ``<prefix>_<preset>_<tag>``, restored from ``archive``'s folder), whose searches the row's reduction runs on;
    else None."""
    if not args.reuse_search or args.report_only:
        return None
    earlier = reused_settings(cfg, args.reuse_search)
    if earlier.tag() == cfg.tag():
        return None
    stem = f"{prefix}_{earlier.preset}_{earlier.tag()}"
    kept = (archive[0].with_name(f"{stem}.jsonl.gz"), archive[1]) if archive else None
    return run_attacks(work / f"{stem}.jsonl", items, build_attack(attack_name, victim, earlier), args.batch_size,
                       f"{what} (earlier search)", True, echo=echo, archive=kept)


def redo(args: argparse.Namespace) -> Any:
    """The ``redo`` predicate of :func:`run_attacks` that ``--redo-unknown`` asks for (None without it)."""
    return judged_on_other_text if args.redo_unknown else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--full-gigaword", default=None,
                    help="folder of the full Rush et al. Gigaword release, or hub:gigaword to read it through "
                         "`datasets` (training data at paper scale)")
    ap.add_argument("--glove", default=None,
                    help="GloVe-format word vectors for the LSTM victim's embeddings (trained into its own folder)")
    ap.add_argument("--victims", default="lstm,transformer", help=f"comma-separated, among {', '.join(VICTIMS)}")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--attacks", default=",".join(ATTACKS),
                    help="seq2sick (its run gives the paper's row and the reduced one) and/or word-swap")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--n", action="append", default=[], metavar="VICTIM=N",
                    help="inputs per dataset for VICTIM (default small: lstm=100, transformer=30; paper: all DUC, "
                         "1,000 Gigaword); the transformer takes the first N of the LSTM's draw")
    ap.add_argument("--pool", type=int, default=None,
                    help="keyword pool: the N most frequent headline content words (default: 500; paper: 2,000)")
    ap.add_argument("--police-n", type=int, default=None, help="DUC2004 inputs for the 'police arrest' attack")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--iterations-for", action="append", default=[], metavar="METHOD=N",
                    help="iteration budget of one method (repeatable)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "recipes" / "results" / "summarization_seq2sick.json"))
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--note", action="append", default=[], help="a sentence for the results' notes (repeatable)")
    ap.add_argument("--archive", default=None, metavar="DIR",
                    help="also keep every row's per-input records gzipped under DIR/<scale>/ (e.g. "
                         "recipes/records/summarization_seq2sick): a fresh checkout whose victim summarises the inputs "
                         "alike restores them, resumes and reports without attacking again")
    ap.add_argument("--report-only", action="store_true",
                    help="attack nothing: summarise the per-input records written so far")
    ap.add_argument("--reuse-search", type=parse_overrides, default=None, metavar="OPTION=VALUE,...",
                    help="run only the reduction pass, on the records of an earlier run of the same attacks whose "
                         "reduction options were these (e.g. trade=0,swap_lexicon=0), instead of searching again")
    ap.add_argument("--redo-unknown", action="store_true",
                    help="attack again the inputs whose records hold a literal <unk> (source words or adversarial "
                         "text; written by versions before texts kept the input's own words). The LSTM summarizer "
                         "reads pretokenized text, so its judging was right; this gives texts (and their perplexity) "
                         "with the input's words")
    args = ap.parse_args(argv)
    victims = parse_choices(ap, args.victims, VICTIMS, "victim")
    args.datasets = parse_choices(ap, args.datasets, DATASETS, "dataset")
    args.methods = parse_choices(ap, args.methods, METHODS, "method")
    args.attacks = parse_choices(ap, args.attacks, ATTACKS, "attack")
    args.n = parse_counts(ap, args.n, VICTIMS, "--n")
    args.iterations_for = parse_counts(ap, args.iterations_for, METHODS, "--iterations-for")
    args.pool = args.pool or POOL[args.scale]
    if args.iterations is None and args.scale == "tiny":
        args.iterations = TINY_ITERATIONS
    t0 = time.time()
    runs = Path(args.runs)
    per = {v: attack_victim(v, args, runs) for v in victims}
    rows = [r for p in per.values() for r in p["rows"]]
    rows += perplexity_rows(per, args.data_dir)
    payload: dict[str, Any] = {
        "recipe": "summarization_seq2sick",
        "title": "Seq2Sick on Gigaword, DUC2003 and DUC2004 summarizers (thesis Tables 3.2, 3.3, 3.5)",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "victim": {v: p["victim"] for v, p in per.items()},
        "keywords": {v: p["keywords"] for v, p in per.items()},
        "rows": rows,
        "examples": {k: e for p in per.values() for k, e in p["examples"].items()},
        "notes": [
            "Success is judged on the beam-5 output; BLEU (exponential average of BLEU-1..4 between adversarial "
            "and original input) and # changed average the successful attacks.",
            "Training data: the 11,973 Gigaword training pairs available offline (the thesis: 380k); "
            "inputs are normalised as Gigaword (lowercase, digits as #).",
            "Perplexity: interpolated Kneser-Ney trigram model (discount 0.75, words seen once as <unk>) trained "
            "on the 31,565 Gigaword article sentences available offline; 'original' scores every attacked input, "
            "an attack row its successful adversarial inputs (original_same_inputs: the same inputs before the "
            "attack).",
        ],
    }
    spent: dict[str, float] = {}
    for r in rows:
        # seq2sick and portfolio rows come from the same runs as the seq2sick + reduction and word-swap rows
        if "seconds_per_sentence" in r and r["attack"] not in ("seq2sick", "portfolio"):
            spent[r["victim"]] = spent.get(r["victim"], 0.0) + r["n"] * (r["seconds_per_sentence"] or 0.0)
    if spent:
        payload["attack_time_s"] = {v: round(t, 1) for v, t in spent.items()}
        payload["notes"].append("Attack time, summed over the per-input records of the reported rows: "
                                + ", ".join(f"{v} {t / 3600:.2f} h" for v, t in spent.items()) + ".")
    payload["notes"] += [x for p in per.values() for x in p["notes"]] + args.note
    incomplete = [x for p in per.values() for x in p["incomplete"]]
    if incomplete:
        payload["notes"].insert(0, "UNFINISHED run; rows not reported yet: " + "; ".join(incomplete) + ".")
    publish(ROOT, args.out, payload, render_docs=not args.no_render)
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
