"""Benchmark: model queries per second of our Sign-OPT against ART's SignOPT, same model, same images.

    python recipes/bench_signopt.py                      # MNIST and CIFAR-10 CNNs of the small scale, an MLP
    python recipes/bench_signopt.py --n 4 --budget 2000 --threads 1

Both attacks run untargeted L2 with the same hyperparameters (k = Q = 200, alpha 0.2, beta 0.001, 100 initial
directions) and the same exact query budget per image, through the same counting view; ART runs one image
and one query at a time (its design), ours all images in lock step with the 200 sign queries of an estimate in
one batch. Reported: queries per second (queries counted by the view / wall seconds), and the median L2 each
reaches within the budget (speed is worth nothing if the attack gets worse). ``ours_one_image`` runs ours on
one image at a time, to separate batching across images from the rest; ``model_ceiling_qps`` is the model's own
throughput on batches of 200 queries through the same view, the ceiling of any implementation, and
``model_one_query_qps`` its throughput one query per call, the ceiling of ART's design; ``speedup_bound`` =
``model_ceiling_qps / art_qps`` is about the largest speedup over ART that the model allows.

Needs ART (``pip install adversarial-robustness-toolbox``, the ``peers`` extra). Writes
``recipes/results/bench_signopt.json`` and renders ``docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nlprobust.core.runio import run_metadata
from nlprobust.experiments.report import publish
from nlprobust.vision.attacks import get_attack
from nlprobust.vision.datasets import load_images
from nlprobust.vision.models import load_checkpoint
from nlprobust.vision.oracle import HardLabelView
from nlprobust.vision.peers import art_available, run_art
from nlprobust.vision.run import select_images

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "recipes" / "results"


def _measure(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    res = fn()
    return time.perf_counter() - t, res


def mnist_mlp(data_dir: str | None, seed: int) -> torch.nn.Module:
    """A 784-256-10 MLP trained for one epoch on MNIST (about 97%): a model whose forward pass is cheap, so that
    the per-query overhead of each implementation dominates."""
    from nlprobust.vision.models import Normalize

    torch.manual_seed(seed)
    model = torch.nn.Sequential(Normalize((0.1307,), (0.3081,)), torch.nn.Flatten(), torch.nn.Linear(784, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10))
    train = load_images("mnist", "train", data_dir)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(len(train))
    for i in range(0, len(train), 128):
        idx = perm[i:i + 128]
        loss = torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def bench(dataset: str, model: torch.nn.Module, name: str, *, n: int, budget: int, seed: int,
          data_dir: str | None) -> dict[str, Any]:
    test = load_images(dataset, "test", data_dir)
    sel = select_images(model, test.x, test.y, n, seed=seed)
    attack = get_attack("sign-opt", budget=budget, seed=seed)
    out: dict[str, Any] = {"dataset": dataset, "model": name, "n": n, "budget": budget,
                           "threads": torch.get_num_threads()}
    sec, res = _measure(lambda: attack(model, sel.x, sel.y))
    out["ours_qps"] = float(res.queries.sum()) / sec
    out["ours_median_l2"] = float(res.distance.median())
    one = []
    sec1 = 0.0
    for i in range(n):
        s, r = _measure(lambda i=i: attack(model, sel.x[i:i + 1], sel.y[i:i + 1]))
        sec1 += s
        one.append(int(r.queries.sum()))
    out["ours_one_image_qps"] = sum(one) / sec1
    sec, res = _measure(lambda: run_art("art-signopt", model, sel.x, sel.y, budget=budget, seed=seed))
    out["art_qps"] = float(res.queries.sum()) / sec
    out["art_median_l2"] = float(statistics.median(res.curve[-1].tolist())) if res.curve.numel() else \
        float(res.distance.median())
    out["speedup"] = out["ours_qps"] / out["art_qps"]
    # the floor under both: the model's own throughput on batches of 200 queries through the same view
    view = HardLabelView(model, sel.x, sel.y)
    rows = sel.x.repeat_interleave(200 // n + 1, 0)[:200]
    owner = torch.arange(n).repeat_interleave(200 // n + 1)[:200]
    sec, _ = _measure(lambda: [view.labels(rows, owner) for _ in range(10)])
    out["model_ceiling_qps"] = 2000 / sec
    # the ceiling of any one-query-per-call implementation (ART's design, the published code's)
    sec, _ = _measure(lambda: [view.labels(rows[i % 200:i % 200 + 1], owner[i % 200:i % 200 + 1])
                               for i in range(400)])
    out["model_one_query_qps"] = 400 / sec
    # no implementation beats the model's batched throughput: about the largest speedup over ART this model allows
    out["speedup_bound"] = out["model_ceiling_qps"] / out["art_qps"]
    return out


def bound_note(row: dict[str, Any]) -> str:
    """Where the time goes for one benchmarked model: ours against the model's batched throughput, ART against its
    one-query throughput, and the largest speedup over ART that the model's forward pass leaves room for."""
    return (f"{row['dataset']} {row['model']}: ours {row['ours_qps']:.0f} queries/s, "
            f"{row['ours_qps'] / row['model_ceiling_qps']:.0%} of the model's batched throughput "
            f"({row['model_ceiling_qps']:.0f}/s); ART {row['art_qps']:.0f}/s, "
            f"{row['art_qps'] / row['model_one_query_qps']:.0%} of the model's one-query throughput "
            f"({row['model_one_query_qps']:.0f}/s). Speedup {row['speedup']:.1f}x; the model's own batched "
            f"throughput caps any implementation at about {row['speedup_bound']:.1f}x over ART on this model and "
            "hardware.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mnist-cnn,cifar10-cnn,mnist-mlp",
                    help="mnist-cnn, cifar10-cnn (the small-scale C&W CNNs), mnist-mlp (trained here in seconds)")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--budget", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "bench_signopt.json"))
    ap.add_argument("--note", action="append", default=[], help="a line added to the results' notes")
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args(argv)
    if not art_available():
        ap.error("ART is not installed: pip install adversarial-robustness-toolbox (the `peers` extra)")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    rows = []
    for name in [d for d in args.models.split(",") if d]:
        ds, arch = name.split("-", 1)
        if arch == "mlp":
            model = mnist_mlp(args.data_dir, args.seed)
        else:
            ckpt = Path(args.runs) / "vision" / f"{ds}_cnn_small" / "model.pt"
            if not ckpt.exists():
                ap.error(f"{ckpt} not found: train it first (python recipes/vision_hardlabel.py --scale small)")
            model = load_checkpoint(ckpt)[0]
        row = {"table": "bench", **bench(ds, model, arch, n=args.n, budget=args.budget, seed=args.seed,
                                         data_dir=args.data_dir)}
        rows.append(row)
        print(row)
    out = Path(args.out)
    if out.exists():  # keep the rows of models not benchmarked in this run
        done = {r["model"] + r["dataset"] for r in rows}
        rows = [r for r in json.loads(out.read_text()).get("rows", []) if r["model"] + r["dataset"] not in done] + rows
    payload = {"recipe": "bench_signopt", "title": "Benchmark: Sign-OPT queries per second, ours vs ART",
               "scale": "bench", "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
               "rows": rows,
               "notes": ["qps: model queries per second (counted by the same view for both); the attacks run the "
                         "same algorithm with the same hyperparameters and budget. The published code needs one "
                         "model call per query as ART does.",
                         *[bound_note(r) for r in rows if "speedup_bound" in r], *args.note]}
    publish(ROOT, args.out, payload, render_docs=not args.no_render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
