"""Tune Seq2Sick hyperparameters on Multi30k *validation* sentences (never on test ones).

    python recipes/tune_seq2sick.py --scale small --n 40

For each mode, a small grid over (lr, lambda1, lambda2, epsilon) is attacked on the same seeded validation
sentences (1 keyword for the keywords mode). The best setting (highest beam-5 success, then fewest changed
words) is reported; the ``multi30k-lstm`` preset in ``nlprobust/attacks/seq2sick.py`` holds the winners.
Also runs the ``paper`` and ``original-code`` presets on the same sentences for comparison.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, draw_keyword_sets, multi30k_lstm  # noqa: E402

from nlprobust.attacks import AttackItem, Seq2Sick, preset  # noqa: E402
from nlprobust.corpora import load_multi30k  # noqa: E402
from nlprobust.keywords import frequent_content_words  # noqa: E402
from nlprobust.results import run_metadata, summarize, write_recipe_results  # noqa: E402
from nlprobust.text import tokenize  # noqa: E402

GRID = {
    "nonoverlap": {"lr": [0.5, 2.0], "lambda1": [0.1, 1.0], "lambda2": [1.0], "epsilon": [0.0, 1.0]},
    "keywords": {"lr": [0.5, 2.0], "lambda1": [0.1, 1.0], "lambda2": [0.0, 1.0], "epsilon": [1.0]},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--modes", default="nonoverlap,keywords")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--out", default=str(ROOT / "recipes" / "results" / "tune_seq2sick.json"))
    args = ap.parse_args(argv)
    t0 = time.time()
    victim = multi30k_lstm(args.scale, args.data_dir, Path(args.runs))
    val = load_multi30k("val", args.data_dir)
    idx = sorted(random.Random(args.seed).sample(range(len(val)), args.n))
    sents = [val.src[i] for i in idx]
    outputs = [tokenize(o) for o in victim.translate(sents, beam_size=5)]
    pool = frequent_content_words(load_multi30k("train", args.data_dir).tgt, lang="de", top=2000)
    kws = draw_keyword_sets(victim, outputs, pool, 1, args.seed)
    rows = []
    for mode in args.modes.split(","):
        items = [AttackItem(i, s, tuple(k) if mode == "keywords" else ()) for i, s, k in zip(idx, sents, kws)]
        grid = GRID[mode]
        settings = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
        named = [("paper", {}), ("original-code", {})] + [("grid", s) for s in settings]
        for name, over in named:
            base = "paper" if name == "grid" else name
            cfg = preset(base, mode, iterations=args.iterations, **over)
            t = time.time()
            res = Seq2Sick(victim, cfg).run(items, batch_size=args.n)
            s = summarize(r.to_dict() for r in res)
            row = {"table": f"tuning ({mode}, validation)", "mode": mode, "preset": name,
                   "lr": cfg.lr, "lr_late": cfg.lr_late, "lambda1": cfg.lambda1, "lambda2": cfg.lambda2,
                   "epsilon": cfg.epsilon, "n": s["n"], "success": s["success"], "bleu": s["bleu"],
                   "changed": s["changed"], "seconds": round(time.time() - t, 1)}
            rows.append(row)
            print({k: row[k] for k in ("mode", "preset", "lr", "lambda1", "lambda2", "epsilon", "success",
                                       "changed", "seconds")}, flush=True)
    best = {}
    for mode in args.modes.split(","):
        cand = [r for r in rows if r["mode"] == mode and r["preset"] == "grid"]
        b = max(cand, key=lambda r: (r["success"] or 0.0, -(r["changed"] or 99.0)))
        best[mode] = {k: b[k] for k in ("lr", "lambda1", "lambda2", "epsilon", "success", "changed")}
    write_recipe_results(args.out, {
        "recipe": "tune_seq2sick", "title": "Seq2Sick hyperparameters tuned on Multi30k validation",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "validation_sentences": idx, "keywords": {str(i): k for i, k in zip(idx, kws)}, "rows": rows,
        "best": best, "notes": [f"{args.n} validation sentences, {args.iterations} iterations, beam-5 judged; "
                                f"best per mode: {best}"]})
    print("best:", best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
