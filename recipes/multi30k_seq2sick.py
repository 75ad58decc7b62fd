"""Thesis Table 3.4: Seq2Sick on English->German Multi30k (non-overlap and 1/2/3-keyword attacks).

    python recipes/multi30k_seq2sick.py --scale small                       # 500 test sentences
    python recipes/multi30k_seq2sick.py --scale small --n 100 --methods nonoverlap,1-keyword

Sentences are drawn (seeded) from test_2016_flickr; keywords follow the keyword protocol of
``nlprobust.keywords`` and the draws are saved with the results. Per-sentence records go to
``runs/recipes/multi30k_seq2sick/<scale>/`` as they finish, so an interrupted run resumes. Writes
``recipes/results/multi30k_seq2sick.json`` (or ``--out``) and renders ``docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, attack_setup, multi30k_lstm, test_bleu  # noqa: E402

from nlprobust.attacks import AttackItem, Seq2Sick, preset  # noqa: E402
from nlprobust.metrics import mark_changes  # noqa: E402
from nlprobust.results import JsonlLog, run_metadata, summarize, write_recipe_results  # noqa: E402

PAPER = {  # thesis Table 3.4
    "nonoverlap": {"success": 0.894, "bleu": 0.349, "changed": 3.5},
    "1-keyword": {"success": 1.0, "bleu": 0.705, "changed": 1.8},
    "2-keyword": {"success": 0.91, "bleu": 0.303, "changed": 4.0},
    "3-keyword": {"success": 0.696, "bleu": 0.205, "changed": 5.3},
}
DEFAULT_N = {"tiny": 6, "small": 500, "paper": 500}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=None, help="test sentences (default: 500; tiny: 6)")
    ap.add_argument("--methods", default="nonoverlap,1-keyword,2-keyword,3-keyword")
    ap.add_argument("--preset", default="multi30k-lstm")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "recipes" / "results" / "multi30k_seq2sick.json"))
    ap.add_argument("--no-render", action="store_true", help="do not re-render docs/RESULTS.md")
    args = ap.parse_args(argv)
    t0 = time.time()
    runs = Path(args.runs)
    n = args.n or DEFAULT_N[args.scale]
    victim = multi30k_lstm(args.scale, args.data_dir, runs, device=args.device)
    ckpt_dir = runs / f"multi30k_lstm_{args.scale}"
    bleu = test_bleu(victim, args.data_dir, ckpt_dir / "bleu.json",
                     limit=100 if args.scale == "tiny" else None)
    print(f"LSTM victim: test_2016_flickr BLEU {bleu['bleu']} (beam 5, n={bleu['n']})", flush=True)

    work = runs / "recipes" / "multi30k_seq2sick" / args.scale
    work.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    n_keywords = {m: 0 if m == "nonoverlap" else int(m.split("-")[0]) for m in methods}
    idx, sents, by_k = attack_setup(victim, "test_2016_flickr", n, tuple(n_keywords.values()), args.data_dir,
                                    args.seed)
    rows, examples, draws = [], {}, {}
    for method in methods:
        mode = "nonoverlap" if method == "nonoverlap" else "keywords"
        over = {"iterations": args.iterations} if args.iterations else {}
        cfg = preset(args.preset, mode, **over)
        kws = by_k[n_keywords[method]]
        draws[method] = {str(i): kw for i, kw in zip(idx, kws)}
        log = JsonlLog(work / f"lstm_{method}_{cfg.preset}_{cfg.tag()}.jsonl", key="index")
        todo = [AttackItem(i, s, tuple(kw)) for i, s, kw in zip(idx, sents, kws) if i not in log.done]
        t = time.time()
        attack = Seq2Sick(victim, cfg)
        for s in range(0, len(todo), args.batch_size):
            for r in attack.attack_batch(todo[s : s + args.batch_size]):
                log.append(r.to_dict())
            print(f"  {method}: {min(len(log.done), n)}/{n} done ({time.time() - t:.0f}s)", flush=True)
        recs = [r for r in log.records if r["index"] in set(idx)]
        summ = summarize(recs)
        rows.append({"table": "3.4", "dataset": "multi30k", "victim": "lstm", "method": method, "n": summ["n"],
                     "success": summ["success"], "bleu": summ["bleu"], "changed": summ["changed"],
                     "errors": summ["errors"], "seconds_per_sentence": summ["time_s"], "preset": cfg.preset,
                     "config": cfg.__dict__, "paper": PAPER.get(method)})
        ok = [r for r in recs if r["success"]][:2]
        examples[method] = [{"source": r["source"], "adversarial": mark_changes(r["adversarial_words"],
                             r["changed_positions"], "**", "**"), "keywords": r["keywords"],
                             "original_output": r["original_output"], "adversarial_output": r["adversarial_output"]}
                            for r in ok]
        print(f"{method}: success {summ['success']}, BLEU {summ['bleu']}, changed {summ['changed']}", flush=True)
    payload = {
        "recipe": "multi30k_seq2sick", "title": f"Seq2Sick on Multi30k en-de (thesis Table 3.4), {n} test sentences",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1),
        **run_metadata(), "victim": {"lstm": {"checkpoint": str(ckpt_dir.relative_to(runs.parent))
                                                if ckpt_dir.is_relative_to(runs.parent) else str(ckpt_dir),
                                              "test_bleu": bleu,
                                              "train_config": json.loads((ckpt_dir / "config.json").read_text())}},
        "sentences": idx, "keywords": draws, "rows": rows, "examples": examples,
        "notes": ["Success is judged on the beam-5 output; BLEU (exponential average of BLEU-1..4 between "
                  "adversarial and original input) and # changed average the successful attacks."],
    }
    write_recipe_results(args.out, payload)
    if not args.no_render:
        from render_results import render

        render()
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
