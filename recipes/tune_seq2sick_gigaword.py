"""Tune the keyword attack on the Gigaword LSTM summarizer with Gigaword *dev* inputs (never test ones).

    python recipes/tune_seq2sick_gigaword.py --n 24

One keyword per input, drawn by the keyword protocol from the most frequent headline content words (pools of
500 and 2,000); every setting of the built-in grid is attacked on the same seeded dev inputs (outside the 500 dev
pairs used for early stopping).

    python recipes/tune_seq2sick_gigaword.py --n 24 --grid '{"exchange": [0, 64]}' --tag _exchange

tunes options of the ``gigaword-lstm`` preset instead (here its reduction's exchange step).
Writes ``recipes/results/tune_seq2sick_gigaword<tag>.json``; the ``gigaword-lstm`` preset
in ``nlprobust/attacks/seq2sick.py`` and the summarization recipe's keyword pool
(``nlprobust.experiments.summarization.keyword_pool``) hold the choices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

from nlprobust.attacks import AttackItem, Seq2Sick, preset
from nlprobust.core.cli import SCALES
from nlprobust.core.results import write_recipe_results
from nlprobust.core.runio import run_metadata
from nlprobust.corpora import load_gigaword, preprocess_summary
from nlprobust.experiments.summarization import VALID, keyword_pool, summarization_victim
from nlprobust.keywords import draw_keyword_sets
from nlprobust.results import summarize

ROOT = Path(__file__).resolve().parents[1]

GRID = [  # (pool, overrides of the multi30k-lstm keyword preset)
    (2000, {"iterations": 200, "lr": 0.5, "lr_late": 2.0, "lambda1": 0.5}),
    (2000, {"iterations": 200, "lr": 0.5, "lr_late": 2.0, "lambda1": 0.1}),
    (2000, {"iterations": 200, "lr": 2.0, "lr_late": 8.0, "lambda1": 0.5}),
    (500, {"iterations": 200, "lr": 0.5, "lambda1": 0.5}),
    (500, {"iterations": 200, "lr": 0.5, "lambda1": 0.25}),
    (500, {"iterations": 400, "lr": 0.5, "lambda1": 0.5}),
    (500, {"iterations": 400, "lr": 0.5, "lambda1": 0.5, "max_pending": 4}),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--grid", default=None,
                    help='JSON {"param": [values]}: tune these options of --base-preset (keyword pool 500) instead of '
                         'the built-in grid')
    ap.add_argument("--base-preset", default="gigaword-lstm", help="preset the --grid values override")
    ap.add_argument("--tag", default="", help="suffix of the default output file name")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.grid and not (args.tag or args.out):
        ap.error("--grid needs --tag (or --out): the built-in grid's results file is not overwritten")
    if not args.grid and args.base_preset != "gigaword-lstm":
        ap.error("--base-preset is what --grid overrides: give a --grid too")
    out = args.out or str(ROOT / "recipes" / "results" / f"tune_seq2sick_gigaword{args.tag}.json")
    base = "multi30k-lstm"
    grid = GRID
    if args.grid:
        spec = json.loads(args.grid)
        base = args.base_preset
        grid = [(500, dict(zip(spec, vals))) for vals in itertools.product(*spec.values())]
    t0 = time.time()
    victim, _, _ = summarization_victim("lstm", args.scale, args.data_dir, Path(args.runs))
    dev = load_gigaword("dev", args.data_dir)
    idx = random.Random(args.seed).sample(range(VALID, len(dev)), args.n)
    sents = [preprocess_summary(dev.src[i]) for i in idx]
    outs = [o.split() for o in victim.translate(sents, beam_size=5)]
    rows, draws = [], {}
    for pool, over in grid:
        if pool not in draws:
            draws[pool] = draw_keyword_sets(victim, outs, keyword_pool(args.data_dir, pool), 1, 0)
        items = [AttackItem(i, s, tuple(k)) for i, s, k in zip(idx, sents, draws[pool])]
        cfg = preset(base, "keywords", **over)
        t = time.time()
        s = summarize(r.to_dict() for r in Seq2Sick(victim, cfg).run(items, batch_size=len(items)))
        row = {"table": "tuning (1 keyword, Gigaword dev)", "victim": "lstm", "preset": base, "pool": pool, **over,
               "n": s["n"], "success": s["success"], "bleu": s["bleu"], "changed": s["changed"],
               "success_at_1": s["success_at_1"],
               "seconds": round(time.time() - t, 1)}
        rows.append(row)
        print(row, flush=True)
    write_recipe_results(out, {
        "recipe": "tune_seq2sick_gigaword",
        "title": "Seq2Sick keyword attack tuned on Gigaword dev inputs (LSTM summarizer)",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "dev_inputs": idx, "keywords": {str(pool): {str(i): k for i, k in zip(idx, kw)} for pool, kw in draws.items()},
        "rows": rows,
        "notes": [f"{args.n} Gigaword dev inputs, 1 keyword, beam-5 judged; unlisted values are those of the "
                  f"{base} keyword preset" + (" (lr 0.5, lr_late 2.0 from iteration 100, lambda1 0.5, lambda2 0, "
                                              "epsilon 1)." if base == "multi30k-lstm" else ".")]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
