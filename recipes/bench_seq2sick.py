"""Benchmark Seq2Sick: sentences per second at several batch sizes, the cost of one attack iteration relative to
a plain forward+backward pass of the victim, and peak memory.

    python recipes/bench_seq2sick.py                                     # CPU, the small LSTM victim
    python recipes/bench_seq2sick.py --device cuda --batches 1,16,64,256 --dtype bfloat16

Throughput: ``--sentences`` test sentences attacked ``batch`` at a time for each ``--batches`` size (batch 1 on
the first ``--single`` only), ``--iterations`` non-overlap iterations each without early stop, the median of
``--repeats`` runs. Iteration time comes from the attack's ``on_iteration`` callback (the device synchronised
there, beam checks excluded), the median over the iterations of ``--repeats`` attacks at the largest batch;
the plain pass is a teacher-forced forward + backward to the input embeddings on the same batch, median of
``--reps``. Peak memory: CUDA's peak allocation per batch size, or the process's peak resident set on CPU.
Writes ``recipes/results/bench_seq2sick[_<device>].json`` (or ``--out``) and re-renders ``docs/RESULTS.md``
unless ``--no-render``.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from nlprobust.attacks import AttackItem, Seq2Sick, preset
from nlprobust.core.results import write_recipe_results
from nlprobust.core.runio import run_metadata
from nlprobust.corpora import load_multi30k
from nlprobust.experiments.report import render
from nlprobust.victims import VictimError, load_victim

ROOT = Path(__file__).resolve().parents[1]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mib(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def time_attack(attack: Seq2Sick, items: list[AttackItem], batch_size: int) -> float:
    """Seconds to attack ``items`` ``batch_size`` at a time."""
    dev = attack.victim.device
    _sync(dev)
    t = time.perf_counter()
    for s in range(0, len(items), batch_size):
        attack.attack_batch(items[s : s + batch_size])
    _sync(dev)
    return time.perf_counter() - t


def iteration_seconds(victim, cfg, items: list[AttackItem], repeats: int) -> list[float]:  # noqa: ANN001
    """Wall time of each search iteration (beam checks excluded), from the attack's callback."""
    dev = victim.device
    begun: dict[int, float] = {}
    times: list[float] = []

    def hook(phase: str, it: int) -> None:
        _sync(dev)
        if phase == "begin":
            begun[it] = time.perf_counter()
        elif it > 0:  # the first iteration warms caches up
            times.append(time.perf_counter() - begun[it])

    attack = Seq2Sick(victim, cfg, on_iteration=hook)
    for _ in range(repeats):
        attack.attack_batch(items)
    return times


def forward_backward_seconds(victim, items: list[AttackItem], reps: int) -> list[float]:  # noqa: ANN001
    """Teacher-forced forward + backward to the input embeddings on the greedy outputs of ``items``."""
    dev = victim.device
    srcs = [victim.encode_source(it.text).ids for it in items]
    ids, mask = victim.pad_sources(srcs)
    outs = victim.translate_ids(srcs, beam_size=1)
    tgt = [[victim.tgt_bos_id] + o + [victim.tgt_eos_id] for o in outs]
    n = max(map(len, tgt))
    tgt_t = torch.tensor([t + [victim.tgt_pad_id] * (n - len(t)) for t in tgt], device=dev)
    table = victim.source_embedding_table().detach().float()
    times = []
    with victim.attack_mode():
        for r in range(reps + 1):
            _sync(dev)
            t = time.perf_counter()
            x = table[ids].requires_grad_(True)
            with victim.grad_context():
                z = victim.logits(x.to(victim.dtype), mask, tgt_t[:, :-1])
                loss = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]).float(),
                                                         tgt_t[:, 1:].reshape(-1), ignore_index=victim.tgt_pad_id)
                loss.backward()
            _sync(dev)
            if r:  # the first pass warms up
                times.append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--victim", default=f"onmt:{ROOT / 'runs' / 'multi30k_lstm_small' / 'best.pt'}")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batches", default="1,16,64,256", help="batch sizes timed (comma-separated)")
    ap.add_argument("--sentences", type=int, default=256, help="test sentences attacked per batch size")
    ap.add_argument("--single", type=int, default=16, help="sentences timed at batch 1")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--preset", default="multi30k-lstm", help="Seq2Sick preset (multi30k-marian for the Marian victim)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per batch size (the median is reported)")
    ap.add_argument("--reps", type=int, default=10, help="plain forward+backward passes timed")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-render", action="store_true", help="do not re-render docs/RESULTS.md")
    args = ap.parse_args(argv)
    try:
        batches = sorted({int(b) for b in args.batches.split(",") if b})
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        ap.error(f"--batches must be comma-separated positive integers, not {args.batches!r}")
    torch.manual_seed(0)
    try:
        victim = load_victim(args.victim, trust_checkpoint=True, device=args.device, dtype=args.dtype)  # our own
    except VictimError as exc:
        raise SystemExit(f"error: {exc}") from exc
    dev = victim.device
    test = load_multi30k("test_2016_flickr", args.data_dir)
    idx = sorted(random.Random(0).sample(range(len(test)), min(args.sentences, len(test))))
    items = [AttackItem(i, test.src[i]) for i in idx]
    cfg = preset(args.preset, "nonoverlap", iterations=args.iterations, early_stop=False)
    attack = Seq2Sick(victim, cfg)
    time_attack(attack, items[:4], 4)  # warm-up
    rows = []
    sps: dict[int, float] = {}
    for b in batches:
        part = items[: args.single] if b == 1 else items[: max(b, (len(items) // b) * b)]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        runs = [len(part) / time_attack(attack, part, b) for _ in range(args.repeats)]
        sps[b] = statistics.median(runs)
        rows.append({"table": "bench", "metric": f"sentences/s, batch {b}", "value": sps[b],
                     "runs": ", ".join(f"{r:.3f}" for r in runs), "sentences": len(part)})
        rows.append({"table": "bench", "metric": f"peak memory, batch {b} (MiB)", "value": _peak_mib(dev)})
        print(f"batch {b:4d}: {sps[b]:8.2f} sentences/s (runs {', '.join(f'{r:.2f}' for r in runs)})", flush=True)
    if 1 in sps:
        for b in batches:
            if b > 1:
                rows.append({"table": "bench", "metric": f"speed-up, batch {b} vs one at a time (x)",
                             "value": sps[b] / sps[1]})
    big = max(b for b in batches if b <= len(items))
    it_times = iteration_seconds(victim, preset(args.preset, "nonoverlap", iterations=1 + args.reps,
                                                early_stop=False, check_every=10_000), items[:big], args.repeats)
    fb_times = forward_backward_seconds(victim, items[:big], args.reps)
    t_iter, t_fb = statistics.median(it_times), statistics.median(fb_times)
    rows += [
        {"table": "bench", "metric": f"one attack iteration, batch {big} (s)", "value": t_iter},
        {"table": "bench", "metric": f"plain forward+backward, batch {big} (s)", "value": t_fb},
        {"table": "bench", "metric": "iteration / forward+backward (x)", "value": t_iter / t_fb},
    ]
    for r in rows:
        print(f"{r['metric']:48s} {r['value']:.4f}")
    suffix = "" if dev.type == "cpu" else "_" + dev.type
    out = args.out or str(ROOT / "recipes" / "results" / f"bench_seq2sick{suffix}.json")
    write_recipe_results(out, {
        "recipe": f"bench_seq2sick{suffix}", "title": f"Seq2Sick benchmark ({dev.type})", "scale": "small",
        "seed": 0, **run_metadata(), "victim": {"spec": args.victim, "dtype": str(victim.dtype)},
        "settings": {"iterations": args.iterations, "batches": batches, "sentences": len(items),
                     "single": args.single, "repeats": args.repeats, "reps": args.reps,
                     "threads": torch.get_num_threads()},
        "rows": rows,
        "notes": [f"Throughput: the median of {args.repeats} runs; each run attacks the same test sentences (batch 1: "
                  f"the first {args.single}) with {args.iterations} non-overlap iterations per sentence, beam-5 "
                  "checks every 10 iterations, no early stop, then the reduction pass (on by default) on the "
                  "successes.",
                  "An attack iteration = projection onto the vocabulary + greedy decoding (one pass under autograd "
                  "for OpenNMT-py victims) + backward + prox, timed through the attack's on_iteration callback "
                  "without the beam-5 checks (median over iterations); the plain pass = teacher-forced forward + "
                  "backward to the input embeddings on the same batch (median).",
                  "Peak memory: CUDA's peak allocation during each batch size's runs; on CPU the process's peak "
                  "resident set so far (it only grows)."],
    })
    if not args.no_render:
        render(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
