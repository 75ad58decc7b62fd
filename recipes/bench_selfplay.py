"""Self-play speed: dialogues per second played one at a time vs batched (``negotiation.dialog.benchmark_play``).

    python recipes/bench_selfplay.py --scale small                     # the small SV agent, if trained
    python recipes/bench_selfplay.py --scale tiny --out /tmp/bench.json

Both sides are ``RnnAgent``s of one model (temperature 0.5, seeded), playing the first ``--n`` scenarios of
``selfplay.txt`` twice: with ``batch_size=1`` and with ``--batch-size`` games in parallel. The model is
``--checkpoint``, else ``runs/negotiation_sv_<scale>_seed0`` when finished, else an untrained model of the
scale's size (its messages run to the word limit, so it measures the worst case; the JSON says which).
Writes ``recipes/results/bench_selfplay.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from negotiation.agents import RnnAgent
from negotiation.corpus import build_word_vocab, load_examples, load_scenarios
from negotiation.dialog import benchmark_play
from negotiation.experiments import agent_dirs
from negotiation.model import DialogModel
from negotiation.training.checkpoint import is_complete
from negotiation.training.config import sv_preset
from nlprobust.core.results import write_recipe_results
from nlprobust.core.runio import run_metadata

ROOT = Path(__file__).resolve().parents[1]

DEFAULTS = {"tiny": (8, 8), "small": (256, 128), "paper": (2000, 500)}  # (scenarios, batch size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(DEFAULTS), default="small")
    ap.add_argument("--checkpoint", default=None, help="a finished SV/RL folder (default: see above)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=None, help="scenarios (default: tiny 8, small 256, paper 2000)")
    ap.add_argument("--batch-size", type=int, default=None, help="games in parallel (tiny 8, small 128, paper 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "recipes" / "results" / "bench_selfplay.json"))
    args = ap.parse_args(argv)
    t0 = time.time()
    n, batch_size = args.n or DEFAULTS[args.scale][0], args.batch_size or DEFAULTS[args.scale][1]
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folder = Path(args.checkpoint) if args.checkpoint else agent_dirs(Path(args.runs), args.scale, 0)[0]
    if args.checkpoint or is_complete(folder):
        model = DialogModel.from_pretrained(folder, device=device)
        which = str(folder.relative_to(ROOT)) if folder.resolve().is_relative_to(ROOT) else str(folder)
    else:
        cfg = sv_preset(args.scale)
        torch.manual_seed(args.seed)
        words = build_word_vocab(load_examples("train", args.data_dir, limit=cfg.max_train), min_freq=cfg.min_freq)
        model = DialogModel(words, config=cfg.model).to(device).eval()
        which = f"untrained ({args.scale} size)"
    scenarios = load_scenarios("selfplay", args.data_dir, limit=n)
    a = RnnAgent(model, name="a", seed=args.seed)
    b = RnnAgent(model, name="b", seed=args.seed + 1)
    with torch.no_grad():
        speed = benchmark_play(a, b, scenarios, batch_size=batch_size)
    row = {"table": "bench", "model": which, "device": str(device), "threads": torch.get_num_threads(),
           "games": len(scenarios), "batch_size": batch_size, "one_at_a_time_per_s": speed["one_at_a_time_per_s"],
           "batched_per_s": speed["batched_per_s"], "speedup": speed["speedup"]}
    payload = {"recipe": "bench_selfplay",
               "title": f"Self-play speed, one game at a time vs {batch_size} in parallel ({len(scenarios)} games)",
               "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
               "rows": [row],
               "notes": ["Dialogues per second of two RnnAgents sharing one model (temperature 0.5, argmax "
                         "choice), first scenarios of selfplay.txt; the batched run plays the same games."]}
    write_recipe_results(args.out, payload)
    print(f"{len(scenarios)} games on {device}: {speed['one_at_a_time_per_s']:.2f}/s one at a time, "
          f"{speed['batched_per_s']:.2f}/s batched by {batch_size} (x{speed['speedup']:.1f}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
