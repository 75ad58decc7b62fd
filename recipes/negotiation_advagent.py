"""Thesis Tables 3.10, 3.14 and 3.15: AdvAgent attacks on negotiation agents, and adversarial training.

    python recipes/negotiation_advagent.py --scale small
    python recipes/negotiation_advagent.py --scale tiny --out /tmp/advagent_tiny.json --runs /tmp/runs

Needs the SV and RL agents of ``recipes/negotiation_selfplay.py`` (trained here when missing). Then:

1. the RL attacker: REINFORCE from the RL agent against the frozen RL agent, reward ``S_adv - S_target``
   (eq. 3.7), forced agreement (``<runs>/advagent_rl_attacker_<scale>``; thesis: lr 0.1, 4 epochs, one
   dialogue per update; ``small``: 16 dialogues per update, lr 0.5, 2 epochs, see ``ATTACKER``);
2. adversarial training of the RL agent against that attacker (eq. 3.13, ``<runs>/advtrain_<scale>``);
3. every attack against the SV agent, the RL agent and the adversarially trained agent (``--targets``):
   ``none`` (the RL agent without attack and without forced agreement), ``rl``, ``transfer`` (sentences of
   the RL attacker's high-reward dialogues on other scenarios), ``reactive`` and ``preemptive`` at turn
   n = 2, ``ra-pa-da``, ``ra-pa-ta``; the white-box attacks speak through the RL agent;
4. the start-turn study of the reactive attack against the RL agent (n = 1..4, Table 3.15).

Games go to ``<runs>/advagent_<scale>/*.jsonl`` chunk by chunk, so a stopped run resumes where it was.
Scenarios are a seeded sample of ``selfplay.txt``; the black-box rows use ``--n`` of them (2,000), the
reactive and RA+PA+DA rows against the RL and the adversarially trained agent the first ``--n-whitebox``
(2,000), the other white-box rows the first ``--n-short`` (100 at ``small``: CPU time, see the notes). Writes
``recipes/results/negotiation_advagent.json`` (rows beside the thesis, timing, three example dialogues) and
renders ``docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from negotiation import adversarial_training as AT
from negotiation.attacks.run import run_attack, summarize_games
from negotiation.attacks.transfer import collect_transfer_sentences
from negotiation.data import load_examples, load_scenarios
from negotiation.dialog import GameRecord, format_game
from negotiation.experiments import agent_dirs, selection_games, train_agents
from negotiation.model import DialogModel
from negotiation.train import is_complete, read_log, rl_preset, train_rl
from nlprobust.core.cli import SCALES, display_path, echo
from nlprobust.core.runio import run_metadata
from nlprobust.experiments.report import publish

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "recipes" / "results"

METHODS = ("none", "rl", "transfer", "reactive", "preemptive", "ra-pa-da", "ra-pa-ta")
WHITEBOX = {"reactive", "preemptive", "ra-pa-da", "ra-pa-ta"}
LABELS = {"none": "RL model (w/o attack)", "rl": "RL attack", "transfer": "Transfer attack",
          "reactive": "Reactive attack", "preemptive": "Preemptive attack", "ra-pa-da": "RA+PA+DA",
          "ra-pa-ta": "RA+PA+TA"}


def _p(par: float, a: float, b: float, agree: float) -> dict[str, float]:
    return {"par": par / 100, "score_attacker": a, "score_target": b, "advantage": round(a - b, 2),
            "agreement": agree / 100}


PAPER = {  # thesis Tables 3.10 (vs SV, vs RL) and 3.14 (vs the adversarially trained agent)
    "SV": {"none": _p(75.79, 7.23, 4.55, 89.57), "transfer": _p(44.43, 6.41, 6.54, 100),
           "rl": _p(84.45, 8.28, 4.03, 100), "reactive": _p(87.00, 8.83, 3.43, 100),
           "preemptive": _p(71.86, 7.76, 4.95, 100), "ra-pa-da": _p(84.33, 8.79, 2.96, 100),
           "ra-pa-ta": _p(83.12, 8.67, 3.05, 100)},
    "RL": {"none": _p(44.70, 5.05, 5.00, 76.36), "transfer": _p(36.10, 5.65, 6.84, 100),
           "rl": _p(69.35, 7.11, 4.79, 100), "reactive": _p(90.23, 8.72, 3.77, 100),
           "preemptive": _p(69.23, 6.78, 6.01, 100), "ra-pa-da": _p(86.93, 8.73, 2.95, 100),
           "ra-pa-ta": _p(89.74, 8.62, 2.92, 100)},
    "adv-trained": {"none": _p(48.67, 6.51, 6.64, 91.75), "transfer": _p(23.05, 4.93, 7.59, 100),
                    "rl": _p(62.61, 5.71, 7.51, 100), "reactive": _p(80.76, 8.83, 4.31, 100),
                    "preemptive": _p(34.39, 5.64, 7.41, 100), "ra-pa-da": _p(73.96, 8.05, 4.07, 100),
                    "ra-pa-ta": _p(73.45, 8.06, 4.13, 100)},
}
PAPER_START = {1: _p(94.02, 8.84, 3.32, 100), 2: _p(90.23, 8.72, 3.77, 100), 3: _p(92.02, 8.81, 3.62, 100)}
# the RL attacker's REINFORCE settings beyond the RL preset: the thesis' lr 0.1 and 4 epochs for one dialogue
# per update; the small scale updates on 16 dialogues at a time, so (as for the RL agent) lr 0.5, and 2 epochs
ATTACKER = {"tiny": {"lr": 0.1}, "small": {"lr": 0.5, "epochs": 2}, "paper": {"lr": 0.1, "batch_size": 1}}
N = {"tiny": 8, "small": 2000, "paper": 2000}
N_WHITEBOX = {"tiny": 6, "small": 2000, "paper": 2000}
N_SHORT = {"tiny": 4, "small": 100, "paper": 2000}  # preemptive, RA+PA+TA and each start turn
N_TRANSFER_GAMES = {"tiny": 16, "small": 1000, "paper": 2000}


def train_models(scale: str, runs: Path, data_dir: str | None, seed: int, device: str | None,
                 progress: bool) -> dict[str, Any]:
    """The SV/RL agents (as ``negotiation_selfplay.py``), the RL attacker and the adversarially trained agent."""
    info = train_agents(scale, runs, data_dir, seed, device, progress, root=ROOT, echo=echo)
    rl_dir = agent_dirs(runs, scale, seed)[1]
    att_dir = runs / f"advagent_rl_attacker_{scale}"
    cfg = rl_preset(scale, seed=seed, reward="advantage", complement=True, **ATTACKER[scale])
    if not is_complete(att_dir):
        print(f"training the RL attacker into {att_dir}", flush=True)
    scen = load_scenarios("selfplay", data_dir, limit=cfg.max_scenarios)
    train = load_examples("train", data_dir, limit=cfg.max_train) if cfg.sv_every else []
    valid = load_examples("val", data_dir, limit=cfg.max_valid)
    train_rl(rl_dir, att_dir, cfg, scenarios=scen, train=train, valid=valid, partner_dir=rl_dir,
             select_scenarios=selection_games(cfg, data_dir), device=device, progress=progress)
    info["RL attacker"] = {"path": display_path(att_dir, ROOT), "config": cfg.to_dict(),
                           "log": [r for r in read_log(att_dir) if r.get("kind") != "update"]}
    adv_cfg = AT.ADV_PRESETS[scale]
    adv_dir = runs / f"advtrain_{scale}"
    all_scen = load_scenarios("selfplay", data_dir)
    held = all_scen[-adv_cfg.eval_scenarios :]
    sv_train = load_examples("train", data_dir, limit=300 if scale == "tiny" else None) if adv_cfg.sv_every else []
    if not AT.is_complete(adv_dir):
        print(f"adversarial training into {adv_dir}", flush=True)
    AT.adversarial_training(rl_dir, att_dir, adv_dir, adv_cfg, scenarios=all_scen[: -adv_cfg.eval_scenarios],
                            eval_scenarios=held, train=sv_train, partner_dir=agent_dirs(runs, scale, seed)[0],
                            device=device, progress=progress)
    info["adv-trained"] = {"path": display_path(adv_dir / "target", ROOT), "config": adv_cfg.to_dict(),
                           "log": AT.read_log(adv_dir)}
    return info


def _example(games: list[dict[str, Any]], label: str, want_event: str | None) -> dict[str, Any] | None:
    for g in games:
        if g["scores"][0] <= g["scores"][1]:
            continue
        ev = [e for e in g.get("events", []) if e["success"]]
        if want_event is not None and not any(e["kind"] == want_event for e in ev):
            continue
        text = format_game(GameRecord.from_dict(g), ("Adv agent", "Target"))
        edits = [f"turn {e['turn']} ({e['kind']}): draft '{e['draft']}' -> '{e['message']}'" for e in ev]
        return {"attack": label, "text": text, "edits": edits, "index": g["index"]}
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=None, help="scenarios of the black-box rows (default 2000)")
    ap.add_argument("--n-whitebox", type=int, default=None, help="scenarios of the reactive and RA+PA+DA rows")
    ap.add_argument("--n-short", type=int, default=None, help="scenarios of the preemptive, RA+PA+TA and "
                    "start-turn rows")
    ap.add_argument("--targets", default="RL,adv-trained,SV", help="comma-separated of RL, adv-trained, SV")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--start-turns", default="1,2,3,4")
    ap.add_argument("--validate", type=int, default=8, help="fresh target replies a preemptive edit must win "
                    "half of to count as a success (0: the thesis' single reply)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=50, help="games played in parallel")
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(RESULTS / "negotiation_advagent.json"))
    ap.add_argument("--no-train", action="store_true", help="use the models in --runs as they are (no training; "
                    "the attacker is loaded only for the methods that need it)")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args(argv)
    t0 = time.time()
    progress = not args.quiet
    runs = Path(args.runs)
    info = {} if args.no_train else train_models(args.scale, runs, args.data_dir, args.seed, args.device, progress)
    dev = args.device
    sv_dir, rl_dir = agent_dirs(runs, args.scale, args.seed)
    paths = {"SV": sv_dir, "RL": rl_dir,
             "adv-trained": runs / f"advtrain_{args.scale}" / "target"}
    models = {k: DialogModel.from_pretrained(p, device=dev) for k, p in paths.items()
              if k in args.targets.split(",") or k == "RL"}
    attacker = DialogModel.from_pretrained(runs / f"advagent_rl_attacker_{args.scale}", device=dev)
    scenarios = load_scenarios("selfplay", args.data_dir)
    n = args.n or N[args.scale]
    n_wb = min(n, args.n_whitebox or N_WHITEBOX[args.scale])
    n_short = min(n, args.n_short or N_SHORT[args.scale])
    adv_held = set(range(len(scenarios) - AT.ADV_PRESETS[args.scale].eval_scenarios, len(scenarios)))
    chosen = sorted(random.Random(args.seed).sample(range(len(scenarios)), n))
    games = [scenarios[i] for i in chosen]
    rest = [scenarios[i] for i in range(len(scenarios)) if i not in set(chosen) and i not in adv_held]
    transfer_pool = rest[: N_TRANSFER_GAMES[args.scale]]
    out_dir = runs / f"advagent_{args.scale}"
    rows: list[dict[str, Any]] = []
    played: dict[tuple[str, str], list[dict[str, Any]]] = {}
    threads = torch.get_num_threads()

    def attack(target: str, method: str, k: int, start_turn: int = 2, suffix: str = "",
               pool: list[list[str]] | None = None) -> dict[str, Any]:
        t = time.time()
        speaker = models["RL"] if method == "none" else attacker
        res = run_attack(method, target=models[target], speaker=speaker, scenarios=games[:k],
                         out_jsonl=out_dir / f"{target}_{method}{suffix}.jsonl", batch_size=args.batch_size,
                         seed=args.seed, start_turn=start_turn, transfer_sentences=pool, validate=args.validate,
                         progress=progress)
        played[(target, method + suffix)] = res
        s = summarize_games(res)
        print(f"{LABELS[method]}{suffix} vs {target}: PAR {100 * s['par']:.1f}%, {s['score_attacker']:.2f} vs "
              f"{s['score_target']:.2f} (advantage {s['advantage']:.2f}), agreement {100 * s['agreement']:.1f}% "
              f"on {s['games']} games ({time.time() - t:.0f}s)", flush=True)
        return s

    methods = args.methods.split(",")
    for target in args.targets.split(","):
        if target not in models:
            ap.error(f"unknown target {target!r}")
        pool = None
        if {"transfer", "ra-pa-ta"} & set(methods):
            pool = collect_transfer_sentences(attacker, models[target], transfer_pool, seed=args.seed,
                                              min_advantage=4 if args.scale != "tiny" else -10)
        for method in methods:
            long = method in ("reactive", "ra-pa-da") and target != "SV"
            k = n if method not in WHITEBOX else (n_wb if long else n_short)
            s = attack(target, method, k, pool=pool)
            row = {"table": "3.10" if target != "adv-trained" else "3.14", "target": target,
                   "attack": LABELS[method], "n": s["games"], "par": s["par"],
                   "score_attacker": s["score_attacker"], "score_target": s["score_target"],
                   "advantage": s["advantage"], "agreement": s["agreement"], "turns": s["turns"],
                   "attack_success": s.get("games_with_success"),
                   "seconds_per_dialogue": s.get("seconds_per_dialogue"),
                   "paper": PAPER[target].get(method)}
            rows.append(row)
    for st in [int(x) for x in args.start_turns.split(",") if x]:
        if "RL" not in args.targets.split(","):
            break
        s = attack("RL", "reactive", n_short, start_turn=st, suffix=f"_n{st}")
        rows.append({"table": "3.15", "target": "RL", "attack": "Reactive attack", "start_turn": st,
                     "n": s["games"], "par": s["par"], "score_attacker": s["score_attacker"],
                     "score_target": s["score_target"], "advantage": s["advantage"], "agreement": s["agreement"],
                     "attack_success": s.get("games_with_success"), "paper": PAPER_START.get(st)})
    for key in (("RL", "reactive"), ("RL", "ra-pa-da"), ("RL", "preemptive")):
        if key in played:
            s = summarize_games(played[key])
            rows.append({"table": "benchmark", "target": key[0], "attack": LABELS[key[1]], "n": s["games"],
                         "seconds_per_dialogue": s.get("seconds_per_dialogue"), "threads": threads,
                         "batch_size": args.batch_size, "paper": {"seconds_per_dialogue": 60.0}})
    examples = [e for e in (_example(played.get(("RL", "rl"), []), "RL attack vs RL agent", None),
                            _example(played.get(("RL", "reactive"), []), "Reactive attack vs RL agent", "reactive"),
                            _example(played.get(("RL", "ra-pa-da"), []), "RA+PA+DA vs RL agent", None))
                if e is not None]
    payload = {
        "recipe": "negotiation_advagent",
        "title": "AdvAgent: attacks on negotiation agents and adversarial training (thesis Tables 3.10, 3.14, "
                 "3.15)",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **run_metadata(),
        "models": info,
        "scenarios": {"source": "negotiate/selfplay.txt", "n": n, "n_whitebox": n_wb, "n_short": n_short,
                      "indices": chosen},
        "rows": rows, "transcripts": examples,
        "notes": [
            "Side A is the attacker. Every attack but 'RL model (w/o attack)' takes the complement of the "
            "target's choice (forced agreement); a game that reaches the 10-turn cap closes on the target's "
            "choice. Scores average all games; PAR is the share of games the attacker wins outright.",
            "Every attacker speaks through the RL attacker's speaking module (the RL attack's model); the "
            "white-box attacks edit its drafts (at most 2 words, greedy, every non-special word tried, all "
            "trials of a step in batched passes) and a failed edit is not said (the draft stands). 'RL model "
            "(w/o attack)' is the RL agent itself, without forced agreement.",
            "The reactive constraint is the thesis' margin >= 0 on the target's next-token logits; the target "
            "then samples at temperature 0.5, so after a successful edit it says <selection> at once only in "
            "about 40% of the games (measured on the RL agent); the other games go on, and RA+PA+DA tries again "
            "at the attacker's next turn.",
            f"Preemptive edits are searched on one sampled target reply (the thesis) and count as a success only "
            f"if the target's decision favours the attacker after at least half of {args.validate} fresh replies "
            f"(--validate; without it the search overfits its one reply and 'succeeds' at nearly every turn "
            f"while the real replies undo it).",
            f"Scale '{args.scale}': black-box rows on {n} scenarios, reactive and RA+PA+DA on the first {n_wb}, "
            f"preemptive, RA+PA+TA, each start turn and every white-box row against the SV agent on the first "
            f"{n_short} (CPU time), "
            f"{threads} torch thread(s).",
            "The RL attacker starts from the RL agent; the adversarially trained agent is the RL agent after "
            "alternating REINFORCE rounds against it (models.adv-trained.log: the attacker's advantage per round; "
            "the round with the lowest is kept). The target learns by its own score with the attacker taking the "
            "complement, so it learns to claim more from an opponent that accepts anything: we keep its learning "
            "rate low (0.1) and stop after one round (a second took the attacker's advantage from -1.45 to -6.67 with "
            "2.5-turn dialogues: the target then claims nearly everything); 'RL model (w/o attack)' against it "
            "shows how it negotiates "
            "with an ordinary agent. Other settings were tried and documented in negotiation/"
            "adversarial_training.py (advantage reward: it refuses deals; no forced agreement: no reward signal).",
            *args.note,
        ],
    }
    publish(ROOT, args.out, payload, render_docs=not args.no_render)
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
