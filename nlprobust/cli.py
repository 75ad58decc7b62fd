"""``nlprobust`` console entry point.

    nlprobust attack seq2sick --victim onmt:runs/m/best.pt --trust-checkpoint --input src.txt \\
        --mode keywords --keywords "Hund sitzt" --out results.jsonl
    nlprobust train onmt --corpus multi30k --scale small --out runs/multi30k_lstm_small
    nlprobust evaluate --victim onmt:runs/multi30k_lstm_small/best.pt --trust-checkpoint
    nlprobust demo
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

log = logging.getLogger("nlprobust")


def _add_victim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--victim", required=True, help="hf:PATH_OR_HUB_ID or onmt:CHECKPOINT.pt")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow unpickling an OpenNMT-py checkpoint (only for files you trust)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="the model's floating-point type (attack state stays float32; default: as saved)")
    p.add_argument("--lowercase", action="store_true", help="lowercase inputs (models trained on lowercased text)")
    p.add_argument("--task-prefix", default="", help='fixed source prefix, e.g. "translate English to German: " for T5')


def _read_inputs(args: argparse.Namespace, keywords: list[str]) -> list:
    """The attack items of ``--input`` (text, JSON lines, a ``datasets`` file or folder, ``hf:NAME``)."""
    from nlprobust.attacks import AttackItem
    from nlprobust.core.runner import read_items

    try:
        rows = read_items(args.input, text_column=args.text_column, split=args.split, encoding=args.encoding)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if not rows:
        raise SystemExit(f"error: {args.input} holds no input (an empty file or dataset): nothing to attack")
    items = []
    for i, row in enumerate(rows):
        kws = row.get(args.keywords_column, keywords)
        if isinstance(kws, str):
            kws = kws.split()
        items.append(AttackItem(i, row[args.text_column], tuple(kws or ()), error=row.get("error")))
    return items


def _attack_config(args: argparse.Namespace):  # noqa: ANN202 - an AttackConfig subclass
    """The attack's config from the command line: a preset (Seq2Sick) or the defaults, then single overrides."""
    from nlprobust.attacks import ATTACKS, preset

    common = {"criterion": args.criterion, "reduce": not args.no_reduce, "quality_metric": args.quality_metric,
              "quality_fraction": args.quality_fraction}
    if args.attack == "seq2sick":
        overrides = {f.name: getattr(args, f.name) for f in fields(preset(args.preset, args.mode))
                     if f.name not in ("mode", "preset") and getattr(args, f.name, None) is not None}
        return preset(args.preset, args.mode, **{**common, **overrides})
    if args.attack == "portfolio":
        from nlprobust.attacks import portfolio_preset

        given = [f"--{o.replace('_', '-')}" for o in ("repair", "exchange", "trade", "swap_lexicon", "reduce_lexicon")
                 if getattr(args, o, None) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: a portfolio's members take their reduction settings from their "
                             f"presets (run word-swap or seq2sick to set them)")
        beam = {"beam_size": args.beam_size} if args.beam_size is not None else {}
        return portfolio_preset(args.preset, args.mode, **common, **beam)
    cls = ATTACKS[args.attack][0].config_class
    skip = {*common, "mode", "preset"}
    settings = {f.name: getattr(args, f.name) for f in fields(cls)
                if f.name not in skip and getattr(args, f.name, None) is not None}
    if getattr(args, "protect", None):
        settings["protected"] = tuple(args.protect.split())
    if getattr(args, "no_skip_stopwords", False):
        settings["skip_stopwords"] = False
    if args.attack == "word-swap":
        from nlprobust.attacks import word_swap_preset

        return word_swap_preset(args.preset, args.mode, **common, **settings)
    return cls(mode=args.mode, **common, **settings)


def cmd_attack(args: argparse.Namespace) -> int:
    from nlprobust.attacks import ATTACKS, build_attack
    from nlprobust.core.runio import atomic_write_json
    from nlprobust.core.runner import local_device, parse_shard, run_items
    from nlprobust.metrics import mark_changes
    from nlprobust.results import summarize, summary_table
    from nlprobust.victims import VictimError, load_victim

    if args.list or args.attack is None:
        from nlprobust.attacks import CRITERIA, MODES

        print("attacks:")
        for name, (_, desc) in ATTACKS.items():
            print(f"  {name:10s} {desc}")
        print("goals (--mode): " + ", ".join(MODES))
        print("non-overlap criteria (--criterion): " + ", ".join(CRITERIA) + " (the first is the default)")
        return 0 if args.list else 2
    keywords = args.keywords.split() if args.keywords else []
    try:
        config = _attack_config(args)
        shard = parse_shard(args.shard)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    items = _read_inputs(args, keywords)
    if args.mode == "keywords" and any(not it.keywords for it in items):
        raise SystemExit("error: --mode keywords needs --keywords (or a 'keywords' field on every input)")
    try:
        victim = load_victim(args.victim, trust_checkpoint=args.trust_checkpoint,
                             device=local_device(shard, args.device), lowercase=args.lowercase,
                             task_prefix=args.task_prefix, dtype=args.dtype)
    except VictimError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if shard.is_main:
        atomic_write_json(Path(args.out).with_suffix(".config.json"),
                          {"victim": args.victim, "input": args.input, "attack": args.attack,
                           "batch_size": args.batch_size, "config": asdict(config)})
    attack = build_attack(args.attack, victim, config)
    outcome = run_items(items, lambda _c, chunk: [r.to_dict() for r in attack.attack_batch(chunk)], args.out,
                        keys=[it.index for it in items], chunk_size=args.batch_size, shard=shard,
                        resume=not args.overwrite, desc=f"{args.attack} {args.mode}", unit="sent",
                        progress=not args.quiet)
    if not outcome.merged:
        print(f"rank {shard}: shard done ({len(outcome.records)} sentences in {outcome.shard_file}); the last rank "
              f"to finish merges all shards into {args.out}", file=sys.stderr)
        return 0
    recs = outcome.records
    if not args.quiet:
        for rec in recs[: args.show]:
            if rec.get("error"):
                print(f"[{rec['index']}] error: {rec['error']}")
                continue
            print(f"[{rec['index']}] {'SUCCESS' if rec['success'] else 'failure'}  changed={rec['changed']}")
            print(f"  input : {rec['source']}")
            print(f"  adv   : {mark_changes(rec['adversarial_words'], rec['changed_positions'])}")
            print(f"  output: {rec['original_output']}")
            print(f"  adv out: {rec['adversarial_output']}")
    print(summary_table([(f"{args.attack} {args.mode} ({config.preset})", summarize(recs))]))
    return 0


def _train_corpora(args: argparse.Namespace) -> tuple:
    """(train, valid) for ``nlprobust train ...``: Multi30k en-de, or the synthetic fixture corpus."""
    from nlprobust.corpora import load_multi30k
    from nlprobust.synthetic import synthetic_corpus

    if args.corpus == "multi30k":
        return load_multi30k("train", args.data_dir), load_multi30k("val", args.data_dir)
    return synthetic_corpus(3000, seed=args.seed), synthetic_corpus(200, seed=args.seed + 1)


def cmd_train(args: argparse.Namespace) -> int:
    from nlprobust.training.opennmt import preset, train_onmt

    train, valid = _train_corpora(args)
    overrides = {"seed": args.seed}
    if args.train_steps:
        overrides["train_steps"] = args.train_steps
    t = time.time()
    path = train_onmt(train, valid, args.out, preset(args.scale, **overrides), lowercase=args.lowercase,
                      progress=not args.quiet)
    print(f"trained {path} in {time.time() - t:.0f}s")
    return 0


def cmd_train_marian(args: argparse.Namespace) -> int:
    from nlprobust.training.marian import preset, train_marian

    train, valid = _train_corpora(args)
    overrides: dict = {"seed": args.seed}
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    t = time.time()
    path = train_marian(train, valid, args.out, preset(args.scale, **overrides), progress=not args.quiet)
    print(f"trained {path} in {time.time() - t:.0f}s")
    return 0


def cmd_train_robust(args: argparse.Namespace) -> int:
    from nlprobust.training.robust import preset, train_robust

    if not Path(args.model).is_dir():
        raise SystemExit(f"error: model directory not found: {args.model} (a Hugging Face seq2seq model folder, "
                         f"e.g. from `nlprobust train marian`)")
    train, valid = _train_corpora(args)
    overrides: dict[str, object] = {"seed": args.seed, "adversary": args.adversary}
    for key in ("max_steps", "adv_fraction", "max_changes", "lr", "batch_size"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    try:
        cfg = preset(args.scale, **overrides)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    t = time.time()
    path = train_robust(args.model, train, valid, args.out, cfg, progress=not args.quiet)
    meta = json.loads((path / "train_config.json").read_text(encoding="utf-8"))
    print(f"robust model in {path} ({time.time() - t:.0f}s this run; {meta['steps']} steps, "
          f"{meta['seconds_per_step']:.3f} s per step, validation loss {meta['val_loss']})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nlprobust.report import write_report

    try:
        out = write_report(args.runs, args.output, title=args.title)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"wrote {out} ({len(args.runs)} run(s)); open it in a browser")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import sacrebleu

    from nlprobust.corpora import load_multi30k
    from nlprobust.victims import VictimError, load_victim

    try:
        victim = load_victim(args.victim, trust_checkpoint=args.trust_checkpoint, device=args.device,
                             lowercase=args.lowercase, task_prefix=args.task_prefix, dtype=args.dtype)
    except VictimError as exc:
        raise SystemExit(f"error: {exc}") from exc
    data = load_multi30k(args.split, args.data_dir)
    src, ref = data.src[: args.limit], data.tgt[: args.limit]
    t = time.time()
    hyp = victim.translate(src, beam_size=args.beam, batch_size=args.batch_size)
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(hyp, [ref])
    print(json.dumps({"split": args.split, "n": len(src), "beam": args.beam, "bleu": round(bleu.score, 2),
                      "signature": str(metric.get_signature()), "seconds": round(time.time() - t, 1)}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from nlprobust.demo import run_demo

    return run_demo(data_dir=args.data_dir, work=args.work, n=args.n, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    from nlprobust.attacks.seq2sick import PRESETS

    p = argparse.ArgumentParser(prog="nlprobust", description="Adversarial robustness of NLP models.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    from nlprobust.attacks import ATTACKS, CRITERIA, MODES, PORTFOLIO_PRESETS, WORD_SWAP_PRESETS

    atk = sub.add_parser("attack", help="run an attack (--list names them)")
    atk.add_argument("--list", action="store_true", help="name every attack and goal, then exit")
    atk.set_defaults(func=cmd_attack, attack=None)
    at = atk.add_subparsers(dest="attack")
    for name, (_cls, desc) in ATTACKS.items():
        a = at.add_parser(name, help=desc)
        _add_victim_args(a)
        a.add_argument("--input", required=True,
                       help="one sentence per line (.txt), JSON lines, a .csv/.parquet/.json file or a "
                            "Dataset.save_to_disk folder (read with datasets), or hf:NAME[:SPLIT]")
        a.add_argument("--text-column", default="text", help="the input column holding the sentence")
        a.add_argument("--keywords-column", default="keywords",
                       help="the input column holding an item's keywords (a list or a space-separated string)")
        a.add_argument("--split", default="train", help="split of a dataset folder or hf: input")
        a.add_argument("--encoding", default="utf-8", help="encoding of a text / JSON-lines input (default utf-8); "
                       "a line that does not decode becomes an error record naming its line and byte offset")
        a.add_argument("--mode", choices=list(MODES), default="nonoverlap", help="the goal")
        a.add_argument("--keywords", default="", help='space-separated target keywords, e.g. "Hund sitzt"')
        a.add_argument("--criterion", choices=list(CRITERIA), default="at-least-as-long",
                       help="non-overlap success: also require an output no shorter than the original "
                            "(default), or the thesis's positional rule")
        a.add_argument("--no-reduce", action="store_true",
                       help="skip the reduction pass (paper-faithful Seq2Sick: changes are never undone)")
        a.add_argument("--repair", type=int, default=None, metavar="N",
                       help="reduction also drops a word and re-chooses another's substitute where no revert "
                            "holds, testing N substitutions per dropped word (default 0: reverts only)")
        a.add_argument("--exchange", type=int, default=None, metavar="N",
                       help="reduction also exchanges two changed words for one new swap anywhere where reverts and "
                            "repairs fail, testing N swaps per dropped pair (default: the preset's)")
        a.add_argument("--trade", type=int, default=None, metavar="N",
                       help="reduction also trades three changed words for two new swaps where reverts, repairs and "
                            "exchanges fail, testing N swaps per input and step (default: the preset's)")
        a.add_argument("--swap-lexicon", dest="swap_lexicon", type=int, default=None, metavar="N",
                       help="keyword goals: the reduction's repair, exchange and trade also test N swaps among the "
                            "words the victim translates alone as a keyword (default: the preset's)")
        a.add_argument("--reduce-lexicon", dest="reduce_lexicon", type=int, default=None, metavar="N",
                       help="keyword goals: the reduction first tries N inputs that change one word per keyword, "
                            "each a word the victim translates alone as that keyword (default: the preset's)")
        a.add_argument("--quality-metric", choices=["chrf", "bleu"], default="chrf", help="quality-drop goal's metric")
        a.add_argument("--quality-fraction", type=float, default=0.5,
                       help="quality-drop success: output score at most this fraction of the clean output's")
        a.add_argument("--beam-size", dest="beam_size", type=int, default=None, help="beam of the judging decode")
        a.add_argument("--out", required=True, help="results, one JSON line per sentence (resumed if present)")
        a.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming --out")
        a.add_argument("--batch-size", type=int, default=32,
                       help="sentences attacked together (also the unit of sharding and resuming)")
        a.add_argument("--shard", default=None, metavar="RANK/WORLD",
                       help="this process's part of a sharded run (default: RANK and WORLD_SIZE as set by "
                            "torchrun / accelerate launch; relaunch one killed rank with --shard R/W)")
        a.add_argument("--show", type=int, default=5, help="examples to print at the end")
        a.add_argument("--quiet", action="store_true")
        a.set_defaults(func=cmd_attack, list=False)
        if name == "seq2sick":
            a.add_argument("--preset", choices=sorted(PRESETS), default="multi30k-lstm")
            for opt, typ in (("iterations", int), ("lr", float), ("lr_late", float), ("lambda1", float),
                             ("lambda2", float), ("epsilon", float), ("check_every", int)):
                a.add_argument(f"--{opt.replace('_', '-')}", dest=opt, type=typ, default=None,
                               help=f"override the preset's {opt}")
        elif name == "portfolio":
            a.add_argument("--preset", choices=sorted(PORTFOLIO_PRESETS), default="default",
                           help="the members' presets (multi30k-lstm / multi30k-marian: both attacks' presets of that "
                                "name; gigaword-lstm: Seq2Sick's gigaword-lstm, word swap's multi30k-lstm; default: "
                                "word-swap defaults, Seq2Sick's multi30k-lstm)")
        elif name == "word-swap":
            a.add_argument("--preset", choices=sorted(WORD_SWAP_PRESETS), default="default",
                           help="named settings (multi30k-lstm: tuned on Multi30k validation for the LSTM victim)")
            a.add_argument("--max-changes", dest="max_changes", type=int, default=None,
                           help="most words changed per sentence (default 5)")
            a.add_argument("--candidates", type=int, default=None, help="swaps decoded per sentence and step (32)")
            a.add_argument("--verify", type=int, default=None, help="swaps beam-verified per sentence and step (4)")
            a.add_argument("--verify-by", dest="verify_by", choices=("greedy", "loss"), default=None,
                           help="which swaps are beam-verified: those whose greedy output meets the goal (greedy, the "
                                "default) or the lowest-loss ones, greedy successes first (loss)")
            a.add_argument("--per-position", dest="per_position", type=int, default=None,
                           help="test the best --candidates among the N best words of every position (0: rank all)")
            a.add_argument("--lexicon", type=int, default=None,
                           help="keyword goals: also test the N best swaps to the keywords' one-word translations by "
                                "the victim, per step (0: none; multi30k-lstm: 64)")
            a.add_argument("--epsilon", type=float, default=None, help="surrogate margin (0)")
            a.add_argument("--protect", default="", help='space-separated words never changed, e.g. "dog Paris"')
            a.add_argument("--no-skip-stopwords", action="store_true", help="allow changing stop words")

    tr = sub.add_parser("train", help="train a victim").add_subparsers(dest="what", required=True)
    onmt = tr.add_parser("onmt", help="OpenNMT-py word-level attention LSTM")
    onmt.add_argument("--corpus", choices=["multi30k", "synthetic"], default="multi30k")
    onmt.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    onmt.add_argument("--out", required=True)
    onmt.add_argument("--data-dir", default=None)
    onmt.add_argument("--train-steps", type=int, default=None)
    onmt.add_argument("--lowercase", action="store_true")
    onmt.add_argument("--seed", type=int, default=1, help="OpenNMT-py seed, >= 1 (default 1)")
    onmt.add_argument("--quiet", action="store_true", help="no progress bar")
    onmt.set_defaults(func=cmd_train)

    mar = tr.add_parser("marian", help="HuggingFace Marian transformer built from config (SentencePiece)")
    mar.add_argument("--corpus", choices=["multi30k", "synthetic"], default="multi30k")
    mar.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    mar.add_argument("--out", required=True)
    mar.add_argument("--data-dir", default=None)
    mar.add_argument("--max-steps", type=int, default=None)
    mar.add_argument("--seed", type=int, default=0)
    mar.add_argument("--quiet", action="store_true", help="no progress bar")
    mar.set_defaults(func=cmd_train_marian)

    rob = tr.add_parser("robust", help="adversarial fine-tuning of a HF seq2seq model (resumes --out)")
    rob.add_argument("model", help="the model directory to start from (e.g. a `train marian` --out)")
    rob.add_argument("--out", required=True, help="run folder; the robust model is saved there")
    rob.add_argument("--adversary", choices=["hotflip", "word-swap", "seq2sick", "embedding", "none"],
                     default="hotflip", help="how adversarial sources are made on the fly (none: natural "
                     "fine-tuning, the cost baseline)")
    rob.add_argument("--corpus", choices=["multi30k", "synthetic"], default="multi30k")
    rob.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    rob.add_argument("--data-dir", default=None)
    rob.add_argument("--max-steps", type=int, default=None)
    rob.add_argument("--adv-fraction", type=float, default=None, help="share of each batch made adversarial")
    rob.add_argument("--max-changes", type=int, default=None, help="words a discrete adversary changes")
    rob.add_argument("--lr", type=float, default=None)
    rob.add_argument("--batch-size", type=int, default=None)
    rob.add_argument("--seed", type=int, default=0)
    rob.add_argument("--quiet", action="store_true", help="no progress bar")
    rob.set_defaults(func=cmd_train_robust)

    rep = sub.add_parser("report", help="one self-contained HTML page of attack runs (tables, plots, examples)")
    rep.add_argument("runs", nargs="+", help="attack output files (JSON lines); several on the same sentences are "
                     "also shown side by side")
    rep.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default report.html)")
    rep.add_argument("--title", default="nlprobust report")
    rep.set_defaults(func=cmd_report)

    ev = sub.add_parser("evaluate", help="BLEU (sacrebleu) of a victim on a Multi30k split")
    _add_victim_args(ev)
    ev.add_argument("--split", default="test_2016_flickr")
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--beam", type=int, default=5)
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--batch-size", type=int, default=64)
    ev.set_defaults(func=cmd_evaluate)

    de = sub.add_parser("demo", help="train a small victim and attack 20 sentences (both modes)")
    de.add_argument("--data-dir", default=None, help="corpora folder (default: $NLPROBUST_DATA or ../shared/data)")
    de.add_argument("--work", default="runs/demo")
    de.add_argument("--n", type=int, default=20)
    de.add_argument("--seed", type=int, default=0)
    de.set_defaults(func=cmd_demo)

    from nlprobust.vision.cli import add_parser as add_vision_parser

    add_vision_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
