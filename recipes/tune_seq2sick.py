"""Tune Seq2Sick hyperparameters on Multi30k *validation* sentences (never on test ones).

    python recipes/tune_seq2sick.py --scale small --n 40

For each mode, a small grid over (lr, lambda1, lambda2, epsilon) is attacked on the same seeded validation
sentences (1 keyword for the keywords mode). The setting with the best ``success - 0.02 x changed words`` (one
changed word is worth two points of success, beam-5 judged; ``nlprobust.experiments.tables.select_best``) is
reported; the ``multi30k-lstm`` preset in ``nlprobust/attacks/seq2sick.py`` holds the winners.
Also runs the ``paper`` and ``original-code`` presets on the same sentences for comparison.

    python recipes/tune_seq2sick.py --modes keywords --keywords 2 --base-preset multi30k-lstm --no-baselines \
        --grid '{"reduce_lexicon": [0, 64]}' --tag _lexicon_k2

tunes options of a named preset instead (here its reduction's keyword-lexicon shortcut, on 2-keyword goals).
Settings that differ from an earlier one in reduction options only reuse its searches and run only the reduction.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from nlprobust.attacks import AttackItem, Seq2Sick, preset
from nlprobust.core.cli import SCALES
from nlprobust.core.results import write_recipe_results
from nlprobust.core.runio import run_metadata
from nlprobust.experiments.multi30k import VICTIMS, attack_setup, recipe_victim
from nlprobust.experiments.tables import select_best
from nlprobust.results import summarize

ROOT = Path(__file__).resolve().parents[1]

GRID = {
    "nonoverlap": {"lr": [1.0, 2.0], "lambda1": [1.0, 3.0], "lambda2": [1.0], "epsilon": [0.0, 1.0]},
    "keywords": {"lr": [0.5, 1.0], "lambda1": [0.5, 1.0], "lambda2": [0.0, 1.0], "epsilon": [1.0]},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--victim", choices=VICTIMS, default="lstm")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--base-preset", default="paper",
                    help="preset the grid's values override (e.g. multi30k-lstm to tune its reduction options)")
    ap.add_argument("--keywords", type=int, default=1, help="keywords per sentence for the keywords mode")
    ap.add_argument("--modes", default="nonoverlap,keywords")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--grid", default=None, help='JSON {"param": [values]} replacing the built-in grid of each mode')
    ap.add_argument("--tag", default="", help="suffix of the default output file name")
    ap.add_argument("--no-baselines", action="store_true", help="skip the paper and original-code presets")
    ap.add_argument("--records", default=None, help="also write every per-sentence record to this JSONL file")
    ap.add_argument("--out", default=None, help="default: recipes/results/tune_seq2sick_<modes>.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    stem = f"tune_seq2sick_{'' if args.victim == 'lstm' else args.victim + '_'}{args.modes.replace(',', '_')}"
    out = args.out or str(ROOT / "recipes" / "results" / f"{stem}{args.tag}.json")
    victim, _, _ = recipe_victim(args.victim, args.scale, args.data_dir, Path(args.runs))
    if args.keywords < 1:
        ap.error(f"--keywords must be positive, not {args.keywords}")
    idx, sents, draws = attack_setup(victim, "val", args.n, (args.keywords,), args.data_dir, args.seed)
    kws = draws[args.keywords]
    rows = []
    grid_keys: list[str] = []
    for mode in args.modes.split(","):
        items = [AttackItem(i, s, tuple(k) if mode == "keywords" else ()) for i, s, k in zip(idx, sents, kws)]
        grid = json.loads(args.grid) if args.grid else GRID[mode]
        settings = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
        grid_keys += [k for k in grid if k not in grid_keys]
        named = [] if args.no_baselines else [("paper", {}), ("original-code", {})]
        named += [("grid", s) for s in settings]
        searched: list[tuple[object, list[dict]]] = []  # (settings, records) of the searches run so far
        for name, over in named:
            base = args.base_preset if name == "grid" else name
            cfg = preset(base, mode, iterations=args.iterations, **over)
            t = time.time()
            earlier = next((recs for c, recs in searched if cfg.same_search(c)), None)
            if earlier is not None:  # only reduction options differ: reduce the same searches again
                res = Seq2Sick(victim, cfg).reduce_records(earlier)
            else:
                res = Seq2Sick(victim, cfg).run(items, batch_size=args.n)
                searched.append((cfg, [r.to_dict() for r in res]))
            s = summarize(r.to_dict() for r in res)
            if args.records:
                with open(args.records, "a", encoding="utf-8") as fh:
                    for r in res:
                        fh.write(json.dumps({"setting": name, **over, **r.to_dict()}, ensure_ascii=False) + "\n")
            row = {"table": f"tuning ({mode}, validation)", "victim": args.victim, "mode": mode, "preset": name,
                   "lr": cfg.lr, "lr_late": cfg.lr_late, "lambda1": cfg.lambda1, "lambda2": cfg.lambda2,
                   "epsilon": cfg.epsilon, **({"keywords": args.keywords} if mode == "keywords" else {}),
                   **{k: v for k, v in over.items() if k not in ("lr", "lambda1", "lambda2", "epsilon")},
                   "base_preset": base, "n": s["n"], "success": s["success"], "bleu": s["bleu"],
                   "changed": s["changed"], "success_at_1": s.get("success_at_1"),
                   "search_reused": earlier is not None, "seconds": round(time.time() - t, 1)}
            rows.append(row)
            print({k: row[k] for k in ("mode", "preset", "lr", "lambda1", "lambda2", "epsilon", *over, "success",
                                       "changed", "seconds") if k in row}, flush=True)
    best = {}
    for mode in args.modes.split(","):
        cand = [r for r in rows if r["mode"] == mode and r["preset"] == "grid"]
        b = select_best(cand)
        best[mode] = {k: b[k] for k in ("lr", "lr_late", "lambda1", "lambda2", "epsilon", *grid_keys, "success",
                                        "changed") if k in b}
    write_recipe_results(out, {
        "recipe": "tune_seq2sick",
        "title": f"Seq2Sick hyperparameters tuned on Multi30k validation ({args.victim} victim, {args.modes})",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "validation_sentences": idx, "keywords": {str(i): k for i, k in zip(idx, kws)}, "rows": rows,
        "best": best, "notes": [f"{args.n} validation sentences, {args.iterations} iterations, beam-5 judged; "
                                f"best per mode: {best}",
                                "search_reused: the setting differs from an earlier row's in reduction options only, "
                                "so the earlier row's searches were reduced again (TextAttack.reduce_records); its "
                                "seconds are the reduction's alone"]})
    print("best:", best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
