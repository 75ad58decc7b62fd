"""Thesis Table 3.4: Seq2Sick and the gradient-guided word swap on English->German Multi30k (non-overlap and
1/2/3-keyword attacks).

    python recipes/multi30k_seq2sick.py --scale small                       # 500 test sentences, both victims
    python recipes/multi30k_seq2sick.py --scale small --victims marian --n 100 --methods nonoverlap,1-keyword
    python recipes/multi30k_seq2sick.py --scale small --attacks word-swap --criterion positional

Three rows per method and victim: Seq2Sick as in the paper (no reduction), Seq2Sick + the reduction pass (the
same search: one run gives both rows, see ``AttackResult.before_reduction``), and the gradient-guided word swap
(with reduction). Non-overlap success is judged ``at-least-as-long`` by default (``--criterion``), and every
non-overlap row also reports its success under both criteria. Sizes: words changed, BLEU and chrF to the
original input, token error rate, and perplexity of the adversarial inputs under a trigram Kneser-Ney model of
the English side of the training corpus; ``success_at_k`` is the share of sentences attacked successfully
with at most k changed words. Costs per sentence: victim forward and backward passes and beam decodes.

Victims: ``lstm`` (OpenNMT-py word-level LSTM with attention) and ``marian`` (Hugging Face Marian transformer
with SentencePiece, loaded by path like a Hub model); each is trained into ``runs/`` when missing.

Sentences are drawn (seeded) from test_2016_flickr; keywords follow the keyword protocol of
``nlprobust.keywords`` and the draws are saved with the results. Per-sentence records go to
``runs/recipes/multi30k_seq2sick/<scale>/`` as they finish, so an interrupted run resumes; with ``--archive
recipes/records/multi30k_seq2sick`` a gzipped copy of them is kept in the repository (checked against the
victim's fingerprint, a hash of its translations of the attacked sentences), so a fresh checkout that retrains
the same victim resumes from it. Writes
``recipes/results/multi30k_seq2sick.json`` (or ``--out``) and renders ``docs/RESULTS.md``.

After a change of reduction options only, ``--reuse-search trade=0,swap_lexicon=0`` (the earlier values) runs
the new reduction on the earlier settings' records instead of searching again
(:meth:`~nlprobust.attacks.base.TextAttack.reduce_records`; their search cost carries over). ``--redo-unknown``
does again the sentences whose records hold a literal ``<unk>`` (an out-of-vocabulary source word written as
the LSTM's token, so that its text re-encoded to another input than the attack's).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from nlprobust.attacks import CRITERIA, AttackItem, build_attack
from nlprobust.core.cli import SCALES, echo, parse_choices, parse_counts
from nlprobust.core.results import write_recipe_results
from nlprobust.core.runio import run_metadata
from nlprobust.corpora import load_multi30k
from nlprobust.experiments.multi30k import VICTIMS, attack_setup, recipe_victim, victim_bleu, victim_fingerprint
from nlprobust.experiments.report import render
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
from nlprobust.text import tokenize

SEARCHES = ("seq2sick", "word-swap")  # attacks run one by one; the portfolio is built from their records
ROOT = Path(__file__).resolve().parents[1]

PAPER = {  # thesis Table 3.4
    "nonoverlap": {"success": 0.894, "bleu": 0.349, "changed": 3.5},
    "1-keyword": {"success": 1.0, "bleu": 0.705, "changed": 1.8},
    "2-keyword": {"success": 0.91, "bleu": 0.303, "changed": 4.0},
    "3-keyword": {"success": 0.696, "bleu": 0.205, "changed": 5.3},
}
DEFAULT_N = {"tiny": 6, "small": 500, "paper": 500}
DEFAULT_PRESET = {"lstm": "multi30k-lstm", "marian": "multi30k-marian"}  # tuned on validation sentences
WORD_SWAP_PRESET = {"lstm": "multi30k-lstm", "marian": "multi30k-marian"}  # tuned on validation (tune_word_swap.py)


def attack_victim(name: str, args: argparse.Namespace, n: int, methods: list[str], runs: Path) -> dict:
    """Every method of ``methods`` on victim ``name``: table rows, examples, keyword draws, victim description."""
    victim, folder, train_config = recipe_victim(name, args.scale, args.data_dir, runs, device=args.device)
    bleu = victim_bleu(victim, args.data_dir, folder / "bleu.json", limit=100 if args.scale == "tiny" else None)
    print(f"{name} victim: test_2016_flickr BLEU {bleu['bleu']} (beam 5, n={bleu['n']})", flush=True)
    work = runs / "recipes" / "multi30k_seq2sick" / args.scale
    work.mkdir(parents=True, exist_ok=True)
    n_keywords = {m: 0 if m == "nonoverlap" else int(m.split("-")[0]) for m in methods}
    subset = args.n_for.get(name)
    idx, sents, by_k = attack_setup(victim, "test_2016_flickr", n, tuple(n_keywords.values()), args.data_dir,
                                    args.seed, subset=subset, cache=folder / "attack_outputs.json")
    fingerprint = victim_fingerprint(victim, "test_2016_flickr", n, args.seed, sents, subset=subset,
                                     cache=folder / "attack_outputs.json")
    lm = source_lm(args.data_dir)
    rows, examples, draws, incomplete = [], {}, {}, []
    for method in methods:
        mode = "nonoverlap" if method == "nonoverlap" else "keywords"
        kws = by_k[n_keywords[method]]
        draws[method] = {str(i): kw for i, kw in zip(idx, kws)}
        items = [AttackItem(i, s, tuple(kw)) for i, s, kw in zip(idx, sents, kws)]
        members: dict[str, tuple[Any, list[dict]]] = {}
        views: list[tuple[str, bool, list[dict], str, dict]] = []  # (attack label, reduction, records, preset, config)
        for attack_name in args.attacks:
            cfg = table_attack_config(attack_name, mode, n_keywords[method],
                                      seq2sick_preset=args.preset or DEFAULT_PRESET[name],
                                      word_swap_preset=WORD_SWAP_PRESET[name], iterations=args.iterations,
                                      criterion=args.criterion)
            stem = f"{name}_{method}_{attack_name}_{cfg.preset}"
            archive = (Path(args.archive) / args.scale / f"{stem}_{cfg.tag()}.jsonl.gz", fingerprint) \
                if args.archive else None
            searched = None
            if args.reuse_search and (earlier := reused_settings(cfg, args.reuse_search)).tag() != cfg.tag():
                # the earlier settings' records (restored from their archive) give the searches to reduce again
                old = f"{stem}_{earlier.tag()}"
                searched = run_attacks(work / f"{old}.jsonl", items, build_attack(attack_name, victim, earlier),
                                       args.batch_size, f"{name} {method} {attack_name} (earlier search)", True,
                                       echo=echo, archive=(Path(args.archive) / args.scale / f"{old}.jsonl.gz",
                                                           fingerprint) if args.archive else None)
            recs = run_attacks(work / f"{stem}_{cfg.tag()}.jsonl", items, build_attack(attack_name, victim, cfg),
                               args.batch_size,
                               f"{name} {method} {attack_name}", args.report_only, echo=echo, archive=archive,
                               searched=searched, redo=judged_on_other_text if args.redo_unknown else None)
            done = len(recs)
            if done < len(idx):
                incomplete.append(f"{name} {method} {attack_name} ({done} of {len(idx)} sentences done)")
                continue
            members[attack_name] = (cfg, recs)
            views += [(label, reduced, view, cfg.preset, cfg.__dict__)
                      for label, reduced, view in attack_views(attack_name, cfg, recs)]
            ok = [r for r in recs if r["success"]][:2]
            examples[f"{name} / {method} / {attack_name}"] = [
                {"source": r["source"], "adversarial": mark_changes(r["adversarial_words"], r["changed_positions"],
                                                                    "**", "**"),
                 "keywords": r["keywords"], "original_output": r["original_output"],
                 "adversarial_output": r["adversarial_output"]} for r in ok]
        if (pv := portfolio_view(members)) is not None:
            views.append(pv)
        for label, reduced, view, preset_name, config in views:
            rows.append({"table": "3.4", "dataset": "multi30k", "victim": name, "method": method, "attack": label,
                         "reduction": reduced, **table_row(view, lm), "preset": preset_name, "config": config,
                         "paper": PAPER.get(method)})
            r = rows[-1]
            print(f"{name} {method} {label}: success {r['success']}, changed {r['changed']}, "
                  f"<=1 word {r['success_at_1']}", flush=True)
    where = str(folder.relative_to(runs.parent)) if folder.is_relative_to(runs.parent) else str(folder)
    return {"rows": rows, "examples": examples, "keywords": draws, "sentences": idx, "incomplete": incomplete,
            "victim": {"checkpoint": where, "fingerprint": fingerprint, "test_bleu": bleu,
                       "train_config": train_config, "sentences": idx}}


def kept_victims(out: Path, keep: list[str], scale: str, ap: argparse.ArgumentParser) -> dict[str, dict]:
    """Per victim of ``keep``: its rows, examples, keyword draws and description from the results file ``out``
    (which must hold them at the same scale), in the shape :func:`attack_victim` returns."""
    if not out.is_file():
        ap.error(f"--keep needs the existing results file {out}")
    old = json.loads(out.read_text())
    if old.get("scale") != scale:
        ap.error(f"--keep: {out} is at scale {old.get('scale')!r}, not {scale!r}")
    res = {}
    for v in keep:
        if v not in old.get("victim", {}):
            ap.error(f"--keep: {out} has no {v} victim")
        res[v] = {"rows": [r for r in old["rows"] if r["victim"] == v],
                  "examples": {k: e for k, e in old.get("examples", {}).items() if k.startswith(f"{v} / ")},
                  "keywords": old.get("keywords", {}).get(v, {}), "sentences": old["victim"][v].get("sentences", []),
                  "incomplete": [x for note in old.get("notes", []) if note.startswith("UNFINISHED")
                                 for x in note.split(": ", 1)[1].rstrip(".").split("; ") if x.startswith(f"{v} ")],
                  "victim": old["victim"][v]}
    return res


def comparison_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per victim and method: words changed by each attack against the thesis's, with success."""
    out = []
    for key in dict.fromkeys((r["victim"], r["method"]) for r in rows):
        group = [r for r in rows if (r["victim"], r["method"]) == key]
        paper = group[0].get("paper") or {}
        parts = [f"{r['attack']} {100 * (r['success'] or 0):.1f}% / {r['changed'] or 0:.2f} words" for r in group]
        out.append(f"{key[0]} {key[1]}: " + "; ".join(parts) + f" (thesis {100 * paper.get('success', 0):.1f}% / "
                   f"{paper.get('changed')} words).")
    return out


@functools.lru_cache(maxsize=2)
def source_lm(data_dir: str | None) -> KneserNeyLM:
    """Trigram Kneser-Ney model of the English side of the Multi30k training corpus (perplexity of inputs)."""
    return KneserNeyLM([tokenize(s) for s in load_multi30k("train", data_dir).src], order=3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=None, help="test sentences (default: 500; tiny: 6)")
    ap.add_argument("--n-for", action="append", default=[], metavar="VICTIM=N",
                    help="attack VICTIM on only the first N of the n seeded sentences (repeatable)")
    ap.add_argument("--victims", default="lstm,marian", help=f"comma-separated, among {', '.join(VICTIMS)}")
    ap.add_argument("--methods", default="nonoverlap,1-keyword,2-keyword,3-keyword")
    ap.add_argument("--preset", default=None,
                    help="Seq2Sick preset for every victim (default: " +
                         ", ".join(f"{k}: {v}" for k, v in DEFAULT_PRESET.items()) + ")")
    ap.add_argument("--iterations", type=int, default=None, help="Seq2Sick iterations (default: the preset's)")
    ap.add_argument("--attacks", default=",".join(SEARCHES),
                    help=f"comma-separated, among {', '.join(SEARCHES)} (with both, the portfolio's rows are built "
                         f"from their records)")
    ap.add_argument("--criterion", choices=list(CRITERIA), default="at-least-as-long",
                    help="non-overlap success rule the attacks aim at (rows report both)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "recipes" / "results" / "multi30k_seq2sick.json"))
    ap.add_argument("--no-render", action="store_true", help="do not re-render docs/RESULTS.md")
    ap.add_argument("--note", action="append", default=[],
                    help="a sentence to add to the results' notes (repeatable; e.g. how the runs were split)")
    ap.add_argument("--archive", default=None, metavar="DIR",
                    help="also keep every row's per-sentence records gzipped under DIR/<scale>/ (e.g. "
                         "recipes/records/multi30k_seq2sick): a fresh checkout whose victim translates the sentences "
                         "alike restores them, resumes and reports without attacking again")
    ap.add_argument("--keep", default="", metavar="VICTIMS",
                    help="comma-separated victims not attacked nor loaded: their rows, examples and keyword draws are "
                         "kept from the existing --out file (e.g. a victim whose records live on another machine)")
    ap.add_argument("--report-only", action="store_true",
                    help="attack nothing: summarise the per-sentence records written so far (rows of unfinished "
                         "runs are marked in the notes)")
    ap.add_argument("--reuse-search", type=parse_overrides, default=None, metavar="OPTION=VALUE,...",
                    help="run only the reduction pass, on the records of an earlier run of the same attacks whose "
                         "reduction options were these (e.g. trade=0,swap_lexicon=0), instead of searching again; "
                         "the search's cost carries over from those records")
    ap.add_argument("--redo-unknown", action="store_true",
                    help="attack again the sentences whose records hold a literal <unk> (source words or "
                         "adversarial text): their trials that kept an out-of-vocabulary word were judged on another "
                         "input than the attack's; with --reuse-search, those whose earlier search does are searched "
                         "afresh, the others reduced again")
    args = ap.parse_args(argv)
    victims = parse_choices(ap, args.victims, VICTIMS, "victim")
    methods = parse_choices(ap, args.methods, tuple(PAPER), "method")
    args.attacks = parse_choices(ap, args.attacks, SEARCHES, "attack")
    args.n_for = parse_counts(ap, args.n_for, VICTIMS, "--n-for")
    keep = parse_choices(ap, args.keep, VICTIMS, "victim") if args.keep else []
    t0 = time.time()
    runs = Path(args.runs)
    n = args.n or DEFAULT_N[args.scale]
    kept = kept_victims(Path(args.out), keep, args.scale, ap) if keep else {}
    per = {v: kept[v] if v in kept else attack_victim(v, args, n, methods, runs) for v in dict.fromkeys(victims + keep)}
    victims = list(per)
    first = per[victims[0]]
    payload = {
        "recipe": "multi30k_seq2sick",
        "title": f"Seq2Sick and word swap on Multi30k en-de (thesis Table 3.4), {n} test sentences"
        + "".join(f" ({v}: the first {k} of them)" for v, k in args.n_for.items() if v in per),
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "victim": {v: p["victim"] for v, p in per.items()}, "sentences": first["sentences"],
        "keywords": {v: p["keywords"] for v, p in per.items()},
        "rows": [r for p in per.values() for r in p["rows"]],
        "examples": {k: e for p in per.values() for k, e in p["examples"].items()},
        "notes": ["Success is judged on the beam-5 output of the adversarial text (re-tokenised). criterion: the "
                  "rule the attack aimed at; non-overlap rows also give success under both rules "
                  "(success_at_least_as_long: no output position keeps its word and the new output is no shorter; "
                  "success_positional: the thesis's rule, which accepts a shorter output). BLEU (exponential "
                  "average of BLEU-1..4), chrF, token error rate (ter) between adversarial and original input, "
                  "# changed and perplexity average the successful attacks; success_at_k is the share of all "
                  "sentences attacked successfully with at most k words changed.",
                  "seq2sick rows are the paper's attack (no reduction); seq2sick + reduction is the same search "
                  "followed by the reduction pass (changed words reverted one at a time while the goal holds; where "
                  "the row's config sets repair, a word is also dropped while another's substitute is re-chosen; "
                  "where it sets reduce_lexicon (the LSTM keyword rows), keyword successes are first offered inputs "
                  "that change one word per keyword to a source word the victim itself translates as that keyword); "
                  "word-swap is the gradient-guided word swap (with reduction). portfolio (nlprobust.attacks."
                  "Portfolio, the default attack) is the word swap, then Seq2Sick + reduction on the sentences the "
                  "word swap did not fool with one word, keeping each sentence's success with the fewest words; its "
                  "rows are built from the two rows' per-sentence records (nlprobust.attacks.portfolio."
                  "portfolio_records: the same searches, though a real portfolio run batches Seq2Sick on the "
                  "leftover sentences only, so batch-dependent details can differ), and its costs add both "
                  "attacks' where both ran (seconds: the two runs' per-sentence shares, not a timed portfolio run; "
                  "the peer table times a real one). "
                  "Costs are per sentence: "
                  "forward_passes and backward_passes of the victim, beam_decodes (each judged candidate, the "
                  "original output included).",
                  "perplexity: trigram Kneser-Ney model of the English side of the Multi30k training corpus, on the "
                  "successful adversarial inputs; perplexity_original: the same sentences before the attack.",
                  "Keywords are drawn per victim (never a word of that victim's original output); for the Marian "
                  "victim only words that are one SentencePiece token of its target vocabulary can be drawn.",
                  "# changed counts changed words on the detokenised text for both victims (a word whose "
                  "subwords changed counts once).",
                  "Differences from the thesis: our victims are smaller models trained on Multi30k alone (the "
                  "thesis's LSTM is 2 x 500); the thesis judges non-overlap positionally (success_positional), which "
                  "counts a truncated output as a success, while these rows aim at and report at-least-as-long; "
                  "Seq2Sick's hyperparameters are tuned on validation sentences per victim (the presets name them); "
                  "the word swap is not in the thesis. Word-swap budgets: 5 changed words for non-overlap and 1 "
                  "keyword, 3k + 2 for k >= 2 keywords."],
    }
    payload["notes"] += comparison_notes(payload["rows"])
    spent: dict[str, float] = {}
    for r in payload["rows"]:
        if r["attack"] in ("seq2sick", "portfolio"):  # the same runs as the seq2sick + reduction and word-swap rows
            continue
        spent[r["victim"]] = spent.get(r["victim"], 0.0) + r["n"] * (r["seconds_per_sentence"] or 0.0)
    if spent:
        payload["attack_time_s"] = {v: round(t, 1) for v, t in spent.items()}
        payload["notes"].append("Attack time, summed over the per-sentence records of the reported rows: "
                                + ", ".join(f"{v} {t / 3600:.2f} h" for v, t in spent.items()) + ".")
    if keep:
        payload["notes"].append("Rows of the " + ", ".join(keep) + " victim(s) are kept from the previous results "
                                "file (--keep: not re-attacked in this run; their victim entry says how they were "
                                "made).")
    payload["notes"] += args.note
    incomplete = [x for p in per.values() for x in p["incomplete"]]
    if incomplete:
        payload["notes"].insert(0, "UNFINISHED run; rows not reported yet: "
                                + "; ".join(incomplete) + ".")
    write_recipe_results(args.out, payload)
    if not args.no_render:
        render(ROOT)
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
