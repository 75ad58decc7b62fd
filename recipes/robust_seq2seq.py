"""Robust translation models: adversarial fine-tuning of the Multi30k Marian victim, measured by adaptive attacks.

    python recipes/robust_seq2seq.py --scale small
    python recipes/robust_seq2seq.py --scale tiny --out /tmp/robust_tiny.json --runs /tmp/runs

Starts from the Marian victim of ``recipes/multi30k_seq2sick.py`` (``runs/multi30k_marian_<scale>``, trained when
missing) and fine-tunes it (``nlprobust.training.robust``) with each adversary of ``--adversaries``: ``hotflip``
(first-order word swaps on the training loss), ``embedding`` (PGD in embedding space) and ``none`` (natural
fine-tuning with the same schedule: the cost baseline and a control for the extra training). For the natural
victim and every fine-tuned model:

* clean BLEU and chrF (beam 5) on ``test_2016_flickr`` and ``test_2017_flickr``;
* BLEU and chrF on seeded synthetic-noise versions of ``test_2016_flickr`` (one typo, one dropped word, two
  swapped words per sentence; ``nlprobust.experiments.robust.noisy_sentences``);
* the project's attacks run against the model itself (adaptive, never only transferred) on ``--n`` seeded test
  sentences (small: 200): non-overlap, 1 and 2 keywords, at most ``--max-changes`` (2) words changed: success,
  words changed, success with at most 1 / 2 words, BLEU of the outputs under attack;
* as a secondary column, the natural victim's successful non-overlap inputs translated by each model
  (transfer).

Writes ``recipes/results/robust_seq2seq.json`` (or ``--out``) with the training cost of each model beside
natural fine-tuning, and renders ``docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nlprobust.attacks import AttackItem
from nlprobust.core.cli import SCALES, echo, parse_choices
from nlprobust.core.runio import run_metadata
from nlprobust.corpora import load_multi30k
from nlprobust.experiments.multi30k import attack_setup, multi30k_marian
from nlprobust.experiments.report import publish
from nlprobust.experiments.robust import (
    NOISE_KINDS,
    attack_rows,
    noisy_sentences,
    robust_model,
    transfer_row,
    translation_scores,
)
from nlprobust.metrics import KneserNeyLM
from nlprobust.text import tokenize
from nlprobust.training.robust import ADVERSARIES
from nlprobust.victims.huggingface import HFVictim

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "recipes" / "results"
DEFAULT_N = {"tiny": 4, "small": 200, "paper": 500}
METHODS = {"nonoverlap": 0, "1-keyword": 1, "2-keyword": 2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--adversaries", default="hotflip,embedding,none",
                    help=f"fine-tuning adversaries, of {', '.join(a for a in ADVERSARIES)}")
    ap.add_argument("--n", type=int, default=None, help="attacked test sentences (small: 200; tiny: 4)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"attack goals, of {', '.join(METHODS)}")
    ap.add_argument("--attacks", default="word-swap", help="of word-swap, seq2sick")
    ap.add_argument("--max-changes", type=int, default=2, help="word budget of the attacks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16, help="sentences attacked together")
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(RESULTS / "robust_seq2seq.json"))
    ap.add_argument("--models", default=None,
                    help="evaluate only these models (natural, robust-<adversary>, 'natural fine-tuned'; comma-"
                         "separated): fills their caches and attack logs and writes no results, so that several "
                         "processes can share the models; a run without --models then assembles the tables")
    ap.add_argument("--report-only", action="store_true", help="attack nothing: tables from the logs found")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args(argv)
    t0 = time.time()
    adversaries = parse_choices(ap, args.adversaries, ADVERSARIES, "adversary")
    methods = parse_choices(ap, args.methods, tuple(METHODS), "method")
    attacks = parse_choices(ap, args.attacks, ("word-swap", "seq2sick"), "attack")
    runs = Path(args.runs)
    natural = multi30k_marian(args.scale, args.data_dir, runs, device=args.device)
    natural_dir = runs / f"multi30k_marian_{args.scale}"
    dirs = {"natural": natural_dir}
    names = {adv: f"robust-{adv}" if adv != "none" else "natural fine-tuned" for adv in adversaries}
    wanted = None if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    if wanted is not None:
        unknown = sorted(set(wanted) - {"natural", *names.values()})
        if unknown:
            ap.error(f"--models: unknown model(s) {unknown}; expected natural or one of {sorted(names.values())}")
        adversaries = [a for a in adversaries if names[a] in wanted]
        if "natural" not in wanted:
            dirs = {}
    for adv in adversaries:
        echo(f"fine-tuning with the {adv} adversary")
        dirs[names[adv]] = robust_model(
            natural_dir, adv, args.scale, args.data_dir, runs, progress=not args.quiet)
    limit = 100 if args.scale == "tiny" else None
    tests = {s: load_multi30k(s, args.data_dir) for s in ("test_2016_flickr", "test_2017_flickr")}
    noise = {k: noisy_sentences(tests["test_2016_flickr"].src[:limit], k, args.seed) for k in NOISE_KINDS}
    n = args.n or DEFAULT_N[args.scale]
    idx, sents, draws = attack_setup(natural, "test_2016_flickr", n, tuple(METHODS[m] for m in methods),
                                     args.data_dir, args.seed, cache=natural_dir / "attack_outputs.json")
    refs = {i: tests["test_2016_flickr"].tgt[i] for i in idx}
    lm = KneserNeyLM([tokenize(s) for s in load_multi30k("train", args.data_dir).src], order=3)
    work = runs / "recipes" / "robust_seq2seq" / args.scale
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    natural_records: list[dict[str, Any]] = []
    for name, folder in dirs.items():
        victim = natural if name == "natural" else HFVictim(folder, device=args.device)
        cache = folder / "robust_eval.json"
        meta = {} if name == "natural" else _meta(folder)
        models[name] = {"path": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder),
                        **{k: meta.get(k) for k in ("steps", "seconds_per_step", "adversary_seconds_per_step",
                                                    "val_loss")}, "config": (meta.get("run") or {}).get("config")}
        quality: dict[str, Any] = {"table": "clean and noisy", "model": name}
        for split, data in tests.items():
            s = translation_scores(victim, data.src[:limit], data.tgt[:limit], cache, f"{split}:{limit}")
            quality[f"bleu_{split}"], quality[f"chrf_{split}"] = s["bleu"], s["chrf"]
        for kind, src in noise.items():
            s = translation_scores(victim, src, tests["test_2016_flickr"].tgt[:limit], cache,
                                   f"noise-{kind}-{args.seed}:{limit}")
            quality[f"bleu_{kind}"], quality[f"chrf_{kind}"] = s["bleu"], s["chrf"]
        rows.append(quality)
        echo(f"{name}: BLEU {quality['bleu_test_2016_flickr']} (2016), {quality['bleu_test_2017_flickr']} (2017); "
             f"noisy: " + ", ".join(f"{k} {quality[f'bleu_{k}']}" for k in NOISE_KINDS))
        for method in methods:
            mode = "nonoverlap" if method == "nonoverlap" else "keywords"
            items = [AttackItem(i, s, tuple(kw)) for i, s, kw in zip(idx, sents, draws[METHODS[method]])]
            got, recs = attack_rows(victim, items, refs, attacks, mode, args.max_changes, work, name, lm,
                                    stem=f"{name.replace(' ', '_')}_{method}", batch=args.batch_size,
                                    report_only=args.report_only, echo=echo)
            for r in got:
                rows.append({"table": "adaptive attacks", "method": method, **r})
                echo(f"{name} {method} {r['attack']}: success {r['success']}, {r['changed']} words, "
                     f"<=1 word {r['success_at_1']}, BLEU under attack {r['bleu_under_attack']}")
            if name == "natural" and method == "nonoverlap" and recs:
                natural_records = recs[attacks[0]]
        if name != "natural" and natural_records:
            rows.append({"table": "transfer", **transfer_row(victim, natural_records, refs, name, "natural")})
    if wanted is not None:
        echo(f"evaluated {', '.join(dirs)}: caches and attack logs are in place (no results written with --models)")
        return 0
    _add_cost_ratio(rows, models)
    payload = {
        "recipe": "robust_seq2seq",
        "title": "Robust translation models: adversarial fine-tuning of the Multi30k Marian victim, adaptive attacks",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "victims": models, "sentences": idx, "rows": rows,
        "notes": [
            "Every attack row attacks the model of its row (adaptive): the robust models are never judged only on "
            "inputs made against the natural victim; 'transfer' rows show those as a secondary measure.",
            f"Attacks: the project's {', '.join(attacks)} with the reduction pass, at most {args.max_changes} words "
            f"changed (a success needing more counts as a failure); non-overlap judged at-least-as-long, beam 5. "
            f"bleu_under_attack: corpus BLEU to the references of the adversarial outputs of the successes and the "
            f"clean outputs elsewhere, on the {len(idx)} attacked sentences.",
            "opening_changed: % of the successful attacks that change one of the sentence's first two words. A "
            "new subject ('A man' -> 'women young') rewrites the opening of a faithful translation and shifts "
            "every later word, which the non-overlap goal counts as a success; training a model to translate such "
            "inputs as the original would teach it to ignore real changes of meaning.",
            f"Noisy test sets: test_2016_flickr with one typo, one dropped word or two swapped words per sentence, "
            f"seed {args.seed} (nlprobust.experiments.robust.noisy_sentences).",
            "'natural fine-tuned' continues the natural victim's training with the same schedule and no adversary: "
            "the cost baseline (cost_ratio) and a control for the extra training steps.",
            *args.note,
        ],
    }
    publish(ROOT, args.out, payload, render_docs=not args.no_render)
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


def _meta(folder: Path) -> dict[str, Any]:
    import json

    meta: dict[str, Any] = json.loads((folder / "train_config.json").read_text(encoding="utf-8"))
    run = folder / "run_config.json"
    if run.is_file():
        meta["run"] = json.loads(run.read_text(encoding="utf-8")).get("run")
    return meta


def _add_cost_ratio(rows: list[dict[str, Any]], models: dict[str, Any]) -> None:
    """Seconds per step of each fine-tuning against natural fine-tuning's, in the quality rows."""
    base = (models.get("natural fine-tuned") or {}).get("seconds_per_step")
    for r in rows:
        if r["table"] == "clean and noisy":
            sps = models[r["model"]].get("seconds_per_step")
            r["seconds_per_step"] = sps
            r["cost_ratio"] = round(sps / base, 2) if sps and base else None


if __name__ == "__main__":
    sys.exit(main())
