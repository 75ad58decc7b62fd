"""Gigaword summarization victims of the summarization recipes (``nlprobust.experiments.summarization``),
trained into ``runs/`` when missing.

    python recipes/summarization_victims.py --scale small --victims lstm        # train (or just load) one
    python recipes/summarization_victims.py --scale small --victims lstm --rouge  # and score it on the test set

``lstm``: the thesis's victim, a word-level OpenNMT-py LSTM with attention (2 layers; ``--glove FILE`` starts
its embeddings from a GloVe-format file). ``transformer``: a Marian transformer with SentencePiece trained from
config on the same pairs (the thesis's remark that transformers are more robust), saved and loaded as a
Hugging Face model directory. Both learn from the Gigaword training pairs available (11,973 offline; the
thesis used 380k), validate on the first 500 dev pairs, and decode with beam 5.

Measured at ``--scale small`` on one CPU thread each: the LSTM (2 x 256, 3,000 steps, last checkpoint) in 28
min, Gigaword test ROUGE-1/2/L F1 15.1 / 3.3 / 14.5; the transformer (3 layers, d 256, 9.7M parameters) in 56
min, 18.2 / 5.6 / 17.2. Models trained on the full corpus reach about 30 / 12 / 28.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nlprobust.core.cli import SCALES
from nlprobust.experiments.summarization import summarization_victim, victim_rouge

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--victims", default="lstm,transformer")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--full-gigaword", default=None,
                    help="folder of the full Rush et al. release, or hub:gigaword to read it through `datasets`")
    ap.add_argument("--glove", default=None, help="GloVe-format word vectors for the LSTM's embeddings")
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--rouge", action="store_true", help="score each victim on the Gigaword test set")
    args = ap.parse_args(argv)
    for name in [v for v in args.victims.split(",") if v]:
        t = time.time()
        victim, run, _ = summarization_victim(name, args.scale, args.data_dir, Path(args.runs), glove=args.glove,
                                              full_dir=args.full_gigaword)
        print(f"{name}: {run} ready ({time.time() - t:.0f}s)", flush=True)
        if args.rouge:
            print(json.dumps(victim_rouge(victim, run, args.data_dir), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
