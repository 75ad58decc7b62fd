"""Thesis Table 3.4: Seq2Sick on English->German Multi30k (non-overlap and 1/2/3-keyword attacks).

    python recipes/multi30k_seq2sick.py --scale small                       # 500 test sentences, both victims
    python recipes/multi30k_seq2sick.py --scale small --victims marian --n 100 --methods nonoverlap,1-keyword

Victims: ``lstm`` (OpenNMT-py word-level LSTM with attention) and ``marian`` (Hugging Face Marian transformer
with SentencePiece, loaded by path like a Hub model); each is trained into ``runs/`` when missing.

Sentences are drawn (seeded) from test_2016_flickr; keywords follow the keyword protocol of
``nlprobust.keywords`` and the draws are saved with the results. Per-sentence records go to
``runs/recipes/multi30k_seq2sick/<scale>/`` as they finish, so an interrupted run resumes. Writes
``recipes/results/multi30k_seq2sick.json`` (or ``--out``) and renders ``docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, VICTIMS, attack_setup, parse_choices, parse_counts, recipe_victim, test_bleu  # noqa: E402

from nlprobust.attacks import AttackItem, Seq2Sick, Seq2SickConfig, preset  # noqa: E402
from nlprobust.metrics import mark_changes  # noqa: E402
from nlprobust.results import JsonlLog, run_metadata, summarize, write_recipe_results  # noqa: E402

PAPER = {  # thesis Table 3.4
    "nonoverlap": {"success": 0.894, "bleu": 0.349, "changed": 3.5},
    "1-keyword": {"success": 1.0, "bleu": 0.705, "changed": 1.8},
    "2-keyword": {"success": 0.91, "bleu": 0.303, "changed": 4.0},
    "3-keyword": {"success": 0.696, "bleu": 0.205, "changed": 5.3},
}
DEFAULT_N = {"tiny": 6, "small": 500, "paper": 500}
DEFAULT_PRESET = {"lstm": "multi30k-lstm", "marian": "multi30k-marian"}  # tuned on validation sentences


def reuse_shorter_runs(log: JsonlLog, work: Path, stem: str, cfg: Seq2SickConfig, wanted: set[int]) -> int:
    """Copy into ``log`` the successes of runs that differ from ``cfg`` only by a smaller iteration budget.

    The attack stops at its first beam-verified success, so a sentence solved within T' iterations has the
    same result under any budget T >= T' (the updates do not depend on the budget, the step-size schedule
    included; batch padding may change the last floating-point digits): only the failures of the shorter run
    are attacked again. Returns the number of records copied."""
    copied = 0
    for t in range(cfg.check_every, cfg.iterations, cfg.check_every):
        old = work / f"{stem}_{replace(cfg, iterations=t).tag()}.jsonl"
        if not old.exists():
            continue
        for rec in JsonlLog(old, key="index").records:
            i = rec["index"]
            if i in wanted and i not in log.done and rec.get("success") and rec.get("iterations", t + 1) <= t:
                log.append({**rec, "reused_from_budget": t})
                copied += 1
    if copied:
        print(f"  reused {copied} successes of shorter runs ({stem})", flush=True)
    return copied


def run_attacks(victim: Any, log: JsonlLog, items: list[AttackItem], cfg: Any, batch: int, what: str,
                report_only: bool) -> list[dict[str, Any]]:
    """Attack the ``items`` not yet in ``log`` (in batches of ``batch``; none with ``report_only``) and return
    the records of all ``items``."""
    todo = [it for it in items if it.index not in log.done]
    if report_only and todo:
        print(f"  {what}: {len(todo)} of {len(items)} inputs not attacked yet (--report-only)", flush=True)
        todo = []
    attack = Seq2Sick(victim, cfg)
    t = time.time()
    for s in range(0, len(todo), batch):
        for r in attack.attack_batch(todo[s : s + batch]):
            log.append(r.to_dict())
        done = sum(1 for it in items if it.index in log.done)
        print(f"  {what}: {done}/{len(items)} done ({time.time() - t:.0f}s)", flush=True)
    wanted = {it.index for it in items}
    return [r for r in log.records if r["index"] in wanted]


def attack_victim(name: str, args: argparse.Namespace, n: int, methods: list[str], runs: Path) -> dict:
    """Every method of ``methods`` on victim ``name``: table rows, examples, keyword draws, victim description."""
    victim, folder, train_config = recipe_victim(name, args.scale, args.data_dir, runs, device=args.device)
    bleu = test_bleu(victim, args.data_dir, folder / "bleu.json", limit=100 if args.scale == "tiny" else None)
    print(f"{name} victim: test_2016_flickr BLEU {bleu['bleu']} (beam 5, n={bleu['n']})", flush=True)
    work = runs / "recipes" / "multi30k_seq2sick" / args.scale
    work.mkdir(parents=True, exist_ok=True)
    n_keywords = {m: 0 if m == "nonoverlap" else int(m.split("-")[0]) for m in methods}
    subset = args.n_for.get(name)
    idx, sents, by_k = attack_setup(victim, "test_2016_flickr", n, tuple(n_keywords.values()), args.data_dir,
                                    args.seed, subset=subset)
    preset_name = args.preset or DEFAULT_PRESET[name]
    rows, examples, draws, incomplete = [], {}, {}, []
    for method in methods:
        mode = "nonoverlap" if method == "nonoverlap" else "keywords"
        over = {"iterations": args.iterations} if args.iterations else {}
        cfg = preset(preset_name, mode, **over)
        kws = by_k[n_keywords[method]]
        draws[method] = {str(i): kw for i, kw in zip(idx, kws)}
        log = JsonlLog(work / f"{name}_{method}_{cfg.preset}_{cfg.tag()}.jsonl", key="index")
        reuse_shorter_runs(log, work, f"{name}_{method}_{cfg.preset}", cfg, set(idx))
        items = [AttackItem(i, s, tuple(kw)) for i, s, kw in zip(idx, sents, kws)]
        recs = run_attacks(victim, log, items, cfg, args.batch_size, f"{name} {method}", args.report_only)
        summ = summarize(recs)
        if summ["n"] + summ["errors"] < len(idx):  # a partial summary would be biased (reused successes first)
            incomplete.append(f"{name} {method} ({summ['n'] + summ['errors']} of {len(idx)} sentences done)")
            continue
        rows.append({"table": "3.4", "dataset": "multi30k", "victim": name, "method": method, "n": summ["n"],
                     "success": summ["success"], "bleu": summ["bleu"], "changed": summ["changed"],
                     "errors": summ["errors"], "seconds_per_sentence": summ["time_s"], "preset": cfg.preset,
                     "config": cfg.__dict__, "paper": PAPER.get(method)})
        ok = [r for r in recs if r["success"]][:2]
        examples[f"{name} / {method}"] = [
            {"source": r["source"], "adversarial": mark_changes(r["adversarial_words"], r["changed_positions"],
                                                                "**", "**"),
             "keywords": r["keywords"], "original_output": r["original_output"],
             "adversarial_output": r["adversarial_output"]} for r in ok]
        print(f"{name} {method}: success {summ['success']}, BLEU {summ['bleu']}, changed {summ['changed']}",
              flush=True)
    where = str(folder.relative_to(runs.parent)) if folder.is_relative_to(runs.parent) else str(folder)
    return {"rows": rows, "examples": examples, "keywords": draws, "sentences": idx, "incomplete": incomplete,
            "victim": {"checkpoint": where, "test_bleu": bleu, "train_config": train_config, "sentences": idx}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=None, help="test sentences (default: 500; tiny: 6)")
    ap.add_argument("--n-for", action="append", default=[], metavar="VICTIM=N",
                    help="attack VICTIM on only the first N of the n seeded sentences (repeatable)")
    ap.add_argument("--victims", default="lstm,marian", help=f"comma-separated, among {', '.join(VICTIMS)}")
    ap.add_argument("--methods", default="nonoverlap,1-keyword,2-keyword,3-keyword")
    ap.add_argument("--preset", default=None,
                    help="Seq2Sick preset for every victim (default: " +
                         ", ".join(f"{k}: {v}" for k, v in DEFAULT_PRESET.items()) + ")")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "recipes" / "results" / "multi30k_seq2sick.json"))
    ap.add_argument("--no-render", action="store_true", help="do not re-render docs/RESULTS.md")
    ap.add_argument("--note", action="append", default=[],
                    help="a sentence to add to the results' notes (repeatable; e.g. how the runs were split)")
    ap.add_argument("--report-only", action="store_true",
                    help="attack nothing: summarise the per-sentence records written so far (rows of unfinished "
                         "runs are marked in the notes)")
    args = ap.parse_args(argv)
    victims = parse_choices(ap, args.victims, VICTIMS, "victim")
    methods = parse_choices(ap, args.methods, tuple(PAPER), "method")
    args.n_for = parse_counts(ap, args.n_for, VICTIMS, "--n-for")
    t0 = time.time()
    runs = Path(args.runs)
    n = args.n or DEFAULT_N[args.scale]
    per = {v: attack_victim(v, args, n, methods, runs) for v in victims}
    first = per[victims[0]]
    payload = {
        "recipe": "multi30k_seq2sick", "title": f"Seq2Sick on Multi30k en-de (thesis Table 3.4), {n} test sentences"
        + "".join(f" ({v}: the first {k} of them)" for v, k in args.n_for.items() if v in per),
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "victim": {v: p["victim"] for v, p in per.items()}, "sentences": first["sentences"],
        "keywords": {v: p["keywords"] for v, p in per.items()},
        "rows": [r for p in per.values() for r in p["rows"]],
        "examples": {k: e for p in per.values() for k, e in p["examples"].items()},
        "notes": ["Success is judged on the beam-5 output; BLEU (exponential average of BLEU-1..4 between "
                  "adversarial and original input) and # changed average the successful attacks.",
                  "Keywords are drawn per victim (never a word of that victim's original output); for the Marian "
                  "victim only words that are one SentencePiece token of its target vocabulary can be drawn.",
                  "# changed counts changed words on the detokenised text for both victims (a word whose "
                  "subwords changed counts once)."],
    }
    spent = {}
    for r in payload["rows"]:
        spent[r["victim"]] = spent.get(r["victim"], 0.0) + r["n"] * (r["seconds_per_sentence"] or 0.0)
    if spent:
        payload["attack_time_s"] = {v: round(t, 1) for v, t in spent.items()}
        payload["notes"].append("Attack time, summed over the per-sentence records of the reported rows: "
                                + ", ".join(f"{v} {t / 3600:.2f} h" for v, t in spent.items()) + ".")
    payload["notes"] += args.note
    incomplete = [x for p in per.values() for x in p["incomplete"]]
    if incomplete:
        payload["notes"].insert(0, "UNFINISHED run; rows not reported yet: "
                                + "; ".join(incomplete) + ".")
    write_recipe_results(args.out, payload)
    if not args.no_render:
        from render_results import render

        render()
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
