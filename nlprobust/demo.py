"""``nlprobust demo`` (``make demo``): train a small translation victim, attack 20 sentences in both modes
with the default attack (the gradient-guided word swap), with the paper-faithful Seq2Sick beside it.

Uses Multi30k English->German from the data folder when there is one (``--data-dir``, ``NLPROBUST_DATA`` or
``../shared/data``), else the project's synthetic corpus, so it runs offline on a fresh clone. The victim
is trained once and reused from ``runs/demo``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from nlprobust.attacks import DEFAULT_ATTACK, AttackItem, build_attack, portfolio_preset, preset
from nlprobust.core.data import data_root
from nlprobust.core.runio import atomic_write_text
from nlprobust.corpora import load_multi30k
from nlprobust.keywords import draw_keyword_sets, frequent_content_words
from nlprobust.metrics import mark_changes
from nlprobust.report import write_report
from nlprobust.results import summarize, summary_table
from nlprobust.synthetic import synthetic_corpus
from nlprobust.text import tokenize
from nlprobust.training.opennmt import preset as train_preset
from nlprobust.training.opennmt import train_onmt
from nlprobust.victims.opennmt import OpenNMTVictim

DEMO_TRAIN = dict(layers=1, hidden_size=256, word_vec_size=128, encoder_type="brnn", dropout=0.2,
                  batch_size=64, learning_rate=0.003, train_steps=1000, valid_steps=1000, early_stopping=0)


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(*, data_dir: str | None = None, work: str = "runs/demo", n: int = 20, seed: int = 0) -> int:
    t0 = time.time()
    root = data_root(data_dir, required=False)
    if root is not None and (root / "multi30k").is_dir():
        corpus_name = "Multi30k en-de"
        train, valid = load_multi30k("train", root), load_multi30k("val", root)
        test = load_multi30k("test_2016_flickr", root)
        cfg = train_preset("small", **DEMO_TRAIN)  # type: ignore[arg-type]
    else:
        corpus_name = "synthetic en-de (no data folder found)"
        train, valid, test = synthetic_corpus(3000, 0), synthetic_corpus(200, 1), synthetic_corpus(200, 2)
        cfg = train_preset("tiny", train_steps=300, valid_steps=300)
    run = Path(work)
    stamp = run / "demo_config.json"
    want = json.dumps({"corpus": corpus_name, "train": cfg.__dict__}, sort_keys=True)
    ckpt = run / "best.pt"
    if ckpt.exists() and stamp.exists() and stamp.read_text() == want:
        _say(f"[1/3] reusing the victim trained earlier: {ckpt}")
    else:
        _say(f"[1/3] training an OpenNMT-py attention LSTM on {corpus_name} "
             f"({cfg.train_steps} steps, {cfg.hidden_size} hidden; a few minutes on 2 CPU cores) ...")
        ckpt = train_onmt(train, valid, run, cfg)
        stamp.write_text(want)
    victim = OpenNMTVictim(ckpt, trust_checkpoint=True)  # our own file, written just now

    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(test)), n))
    sents = [test.src[i] for i in idx]
    import sacrebleu

    hyp = victim.translate(test.src[:200], beam_size=5)
    bleu = sacrebleu.corpus_bleu(hyp, [test.tgt[:200]]).score
    _say(f"[2/3] victim ready: BLEU {bleu:.1f} on the first 200 test sentences (beam 5)")

    pool = frequent_content_words(train.tgt, lang="de", top=2000)
    outs = victim.translate(sents, beam_size=5)

    kws = draw_keyword_sets(victim, [tokenize(o) for o in outs], pool, 1, seed)
    _say(f"[3/3] attacking {n} test sentences: non-overlap, then 1 keyword (beam-5 judged), with the "
         f"{DEFAULT_ATTACK} attack and the paper's Seq2Sick ...")
    summaries = []
    run_files = []
    for mode in ("nonoverlap", "keywords"):
        items = [AttackItem(i, s, tuple(k) if mode == "keywords" else ()) for i, (s, k) in enumerate(zip(sents, kws))]
        runs = [(DEFAULT_ATTACK, portfolio_preset("multi30k-lstm", mode)),
                ("seq2sick", preset("multi30k-lstm", mode, reduce=False))]
        for name, cfg_a in runs:
            t = time.time()
            res = build_attack(name, victim, cfg_a).run(items, batch_size=n)
            label = f"{name} ({cfg_a.preset})" if name == DEFAULT_ATTACK else f"{name} (paper, {cfg_a.preset} preset)"
            _say(f"\n== {mode}: {label} ({time.time() - t:.0f}s) ==")
            for r in [r for r in res if r.success][:3]:
                extra = f"  keywords: {' '.join(r.keywords)}" if r.keywords else ""
                _say(f"  input   : {r.source}{extra}")
                _say(f"  adv     : {mark_changes(r.adversarial_words, r.changed_positions)}")
                _say(f"  output  : {r.original_output}")
                _say(f"  adv out : {r.adversarial_output}\n")
            summaries.append((f"{mode}: {label}", summarize(r.to_dict() for r in res)))
            path = run / f"{mode}_{name}.jsonl"
            atomic_write_text(path, "".join(json.dumps(r.to_dict()) + "\n" for r in res))
            run_files.append(path)
    _say(summary_table(summaries))
    report = write_report(run_files, run / "report.html", title=f"nlprobust demo: {n} {corpus_name} sentences")
    _say(f"\nchanged words are in [brackets]; BLEU, chrF and # changed average the successful attacks; "
         f"'success <=k words' counts the sentences fooled by changing at most k words. "
         f"Total {time.time() - t0:.0f}s.\nThis demo victim is trained for a few minutes only; results on a "
         f"fully trained victim (test BLEU 33) are in docs/RESULTS.md.")
    _say(f"\nReport with every example, side by side, sortable and filterable: {report.resolve()}\n"
         f"(open it in a browser; `nlprobust report RUN.jsonl ... -o report.html` makes one from any attack run)")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
