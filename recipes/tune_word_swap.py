"""Tune the gradient-guided word swap on Multi30k *validation* sentences (never on test ones).

    python recipes/tune_word_swap.py --scale small --n 40

A small grid over the number of swaps tested per step (``candidates``), whether stop words may change, and the
surrogate margin is attacked on the same seeded validation sentences (1 keyword for the keywords mode). The
setting with the best ``success - 0.02 x changed words`` (``nlprobust.experiments.tables.select_best``, as
``tune_seq2sick.py``) is reported per mode.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from nlprobust.attacks import AttackItem, GradientWordSwap, WordSwapConfig
from nlprobust.core.cli import SCALES
from nlprobust.core.results import write_recipe_results
from nlprobust.core.runio import run_metadata
from nlprobust.experiments.multi30k import VICTIMS, attack_setup, recipe_victim
from nlprobust.experiments.tables import select_best
from nlprobust.results import summarize

ROOT = Path(__file__).resolve().parents[1]

GRID = {"candidates": [16, 32, 64], "skip_stopwords": [True, False], "epsilon": [0.0, 1.0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--victim", choices=VICTIMS, default="lstm")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--modes", default="nonoverlap,keywords")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--grid", default=None, help='JSON {"setting": [values]} replacing the built-in grid, or a '
                    "list of such grids (their settings one after the other)")
    ap.add_argument("--out", default=None, help="default: recipes/results/tune_word_swap_<victim>.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = args.out or str(ROOT / "recipes" / "results" / f"tune_word_swap_{args.victim}.json")
    victim, _, _ = recipe_victim(args.victim, args.scale, args.data_dir, Path(args.runs))
    idx, sents, draws = attack_setup(victim, "val", args.n, (1,), args.data_dir, args.seed)
    grids = json.loads(args.grid) if args.grid else GRID
    grids = grids if isinstance(grids, list) else [grids]
    settings = [dict(zip(g, vals)) for g in grids for vals in itertools.product(*g.values())]
    keys = list(dict.fromkeys(k for g in grids for k in g))
    rows = []
    for mode in args.modes.split(","):
        items = [AttackItem(i, s, tuple(k) if mode == "keywords" else ()) for i, s, k in zip(idx, sents, draws[1])]
        for setting in settings:
            t = time.time()
            res = GradientWordSwap(victim, WordSwapConfig(mode=mode, **setting)).run(items, batch_size=args.n)
            s = summarize(r.to_dict() for r in res)
            row = {"table": f"tuning ({mode}, validation)", "victim": args.victim, "mode": mode, **setting,
                   "n": s["n"], "success": s["success"], "changed": s["changed"], "success_at_1": s["success_at_1"],
                   "bleu": s["bleu"], "seconds_per_sentence": round((time.time() - t) / max(1, len(items)), 3)}
            rows.append(row)
            print(row, flush=True)
    best = {m: {k: v for k, v in select_best([r for r in rows if r["mode"] == m]).items()
                if k in (*keys, "success", "changed")} for m in args.modes.split(",")}
    write_recipe_results(out, {
        "recipe": "tune_word_swap",
        "title": f"Word-swap settings tuned on Multi30k validation ({args.victim} victim, {args.modes})",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "validation_sentences": idx, "rows": rows, "best": best,
        "notes": [f"{args.n} validation sentences, beam-5 judged, non-overlap at-least-as-long; best per mode "
                  f"(success - 0.02 x changed words): {best}"]})
    print("best:", best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
