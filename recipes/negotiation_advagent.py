"""Thesis Tables 3.10, 3.14 and 3.15: AdvAgent attacks on negotiation agents, and adversarial training.

    python recipes/negotiation_advagent.py --scale small
    python recipes/negotiation_advagent.py --scale tiny --out /tmp/advagent_tiny.json --runs /tmp/runs

Needs the SV and RL agents of ``recipes/negotiation_selfplay.py`` for ``--seed`` (trained here when missing).
Then, in ``<runs>``:

1. the RL attacker: REINFORCE from the RL agent against the frozen RL agent, reward ``S_adv - S_target``
   (eq. 3.7), forced agreement (thesis: lr 0.1, 4 epochs, one dialogue per update; ``small``: 16 dialogues per
   update, lr 0.5, 2 epochs, see ``ATTACKER``);
2. adversarial training of the RL agent against that attacker (eq. 3.13; negotiation.training.adversarial);
3. a fresh RL attacker trained the same way against the frozen adversarially trained agent (adaptive);
4. every attack against the SV agent, the RL agent and the adversarially trained agent (``--targets``):
   ``none`` (the RL agent without attack and without forced agreement), ``rl``, ``transfer`` (sentences of
   the RL attacker's high-reward dialogues on other games), ``reactive`` and ``preemptive`` at turn n = 2,
   ``ra-pa-da``, ``ra-pa-ta`` (from the attacker's first message); reactive and RA+PA+DA under both
   protocols (``--protocols``: strict, and the thesis author's released code's); the RL agent and the
   adversarially trained one against the SV agent under the normal rules;
5. the start-turn study of the reactive attack against the RL agent (n = 1..4, Table 3.15).

Games are the held-out ones of ``test.txt`` by default (``--split``; ``negotiation.experiments.evaluation_games``)
and go to ``<runs>/advagent_<scale>_seed<S>_<split>/*.jsonl`` chunk by chunk, so a stopped run resumes. The
black-box rows use ``--n`` games, the reactive and RA+PA+DA rows against the RL and the adversarially trained
agent the first ``--n-whitebox``, the other white-box rows the first ``--n-short`` (CPU time). Writes
``recipes/results/negotiation_advagent.json`` (rows beside the thesis, 95% confidence intervals, timing, three
example dialogues) and renders ``docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from negotiation.attacks.agent import PROTOCOLS
from negotiation.attacks.run import run_attack, summarize_games
from negotiation.attacks.transfer import collect_transfer_sentences
from negotiation.corpus import load_examples, load_scenarios
from negotiation.dialog import GameRecord, format_game
from negotiation.domain import MAX_TURNS
from negotiation.experiments import agent_dirs, evaluation_games, selection_games, train_agents
from negotiation.model import DialogModel
from negotiation.training import adversarial as AT
from negotiation.training.checkpoint import is_complete, read_log
from negotiation.training.config import rl_preset
from negotiation.training.evaluate import evaluate_selfplay
from negotiation.training.reinforce import train_rl
from nlprobust.core.cli import SCALES, display_path, echo, parse_choices
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
N = {"tiny": 8, "small": 2000, "paper": 2000}  # selfplay games (test: all 800; tiny: 8)
N_WHITEBOX = {"tiny": 6, "small": 400, "paper": 800}
N_SHORT = {"tiny": 4, "small": 100, "paper": 800}  # preemptive, RA+PA+TA and each start turn
N_TRANSFER_GAMES = {"tiny": 16, "small": 1000, "paper": 2000}


def _train_attacker(scale: str, start_dir: Path, target_dir: Path, out_dir: Path, data_dir: str | None, seed: int,
                    device: str | None, progress: bool) -> dict[str, Any]:
    """An RL attacker: REINFORCE from ``start_dir`` against the frozen ``target_dir``, reward S_adv - S_target,
    forced agreement, the weights of its best validation games kept."""
    cfg = rl_preset(scale, seed=seed, reward="advantage", complement=True, **ATTACKER[scale])
    if not is_complete(out_dir):
        print(f"training an RL attacker against {display_path(target_dir, ROOT)} into {out_dir}", flush=True)
    scen = load_scenarios("selfplay", data_dir, limit=cfg.max_scenarios)
    train = load_examples("train", data_dir, limit=cfg.max_train) if cfg.sv_every else []
    valid = load_examples("val", data_dir, limit=cfg.max_valid)
    train_rl(start_dir, out_dir, cfg, scenarios=scen, train=train, valid=valid, partner_dir=target_dir,
             select_scenarios=selection_games(cfg, data_dir), device=device, progress=progress)
    return {"path": display_path(out_dir, ROOT), "target": display_path(target_dir, ROOT), "config": cfg.to_dict(),
            "log": [r for r in read_log(out_dir) if r.get("kind") != "update"]}


def train_models(scale: str, runs: Path, data_dir: str | None, seed: int, device: str | None,
                 progress: bool) -> dict[str, Any]:
    """The SV/RL agents (as ``negotiation_selfplay.py``), the RL attacker, the adversarially trained agent and a
    fresh RL attacker trained against it (the adaptive attack)."""
    info = train_agents(scale, runs, data_dir, seed, device, progress, root=ROOT, echo=echo)
    sv_dir, rl_dir = agent_dirs(runs, scale, seed)
    att_dir, adv_dir = runs / f"advagent_rl_attacker_{scale}_seed{seed}", runs / f"advtrain_{scale}_seed{seed}"
    info["RL attacker"] = _train_attacker(scale, rl_dir, rl_dir, att_dir, data_dir, seed, device, progress)
    adv_cfg = AT.ADV_PRESETS[scale]
    sv_train = load_examples("train", data_dir, limit=300 if scale == "tiny" else None) if adv_cfg.sv_every else []
    if not AT.is_complete(adv_dir):
        print(f"adversarial training into {adv_dir}", flush=True)
    AT.adversarial_training(rl_dir, att_dir, adv_dir, adv_cfg, scenarios=load_scenarios("selfplay", data_dir),
                            eval_scenarios=load_scenarios("val", data_dir, both_orders=True), train=sv_train,
                            partner_dir=sv_dir, device=device, progress=progress)
    info["adv-trained"] = {"path": display_path(adv_dir / "target", ROOT), "config": adv_cfg.to_dict(),
                           "log": AT.read_log(adv_dir)}
    info["adaptive RL attacker"] = _train_attacker(scale, rl_dir, adv_dir / "target",
                                                   runs / f"advagent_rl_attacker_adaptive_{scale}_seed{seed}",
                                                   data_dir, seed, device, progress)
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
    ap.add_argument("--split", choices=("test", "selfplay"), default="test",
                    help="games: test (held out: test.txt's 200 pairs, both orders, either side first) or selfplay "
                         "(a seeded sample of the RL agents' training games, in-sample)")
    ap.add_argument("--n", type=int, default=None, help="games of the black-box rows (default: all 800 test games; "
                    "selfplay: 2000)")
    ap.add_argument("--n-whitebox", type=int, default=None, help="games of the reactive and RA+PA+DA rows")
    ap.add_argument("--n-short", type=int, default=None, help="games of the preemptive, RA+PA+TA and "
                    "start-turn rows")
    ap.add_argument("--targets", default="RL,adv-trained,SV", help="comma-separated of RL, adv-trained, SV")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--protocols", default="strict,released-code",
                    help="protocols of the reactive and RA+PA+DA rows (released-code: the target made to select "
                         "after a successful reactive edit, advantage objective, 3 greedy passes)")
    ap.add_argument("--start-turns", default="1,2,3,4")
    ap.add_argument("--validate", type=int, default=8, help="fresh target replies a preemptive edit must win "
                    "half of to count as a success (0: the thesis' single reply)")
    ap.add_argument("--seed", type=int, default=0, help="training seed of the agents and attackers, and the games'")
    ap.add_argument("--batch-size", type=int, default=50, help="games played in parallel")
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(RESULTS / "negotiation_advagent.json"))
    ap.add_argument("--no-train", action="store_true", help="use the models in --runs as they are (no training)")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args(argv)
    t0 = time.time()
    progress = not args.quiet
    runs = Path(args.runs)
    targets = parse_choices(ap, args.targets, ("RL", "adv-trained", "SV"), "target")
    methods = parse_choices(ap, args.methods, METHODS, "method")
    protocols = parse_choices(ap, args.protocols, PROTOCOLS, "protocol")
    info = {} if args.no_train else train_models(args.scale, runs, args.data_dir, args.seed, args.device, progress)
    dev = args.device
    sv_dir, rl_dir = agent_dirs(runs, args.scale, args.seed)
    paths = {"SV": sv_dir, "RL": rl_dir, "adv-trained": runs / f"advtrain_{args.scale}_seed{args.seed}" / "target"}
    models = {k: DialogModel.from_pretrained(p, device=dev) for k, p in paths.items()
              if k in targets or k in ("RL", "SV")}
    attackers = {"RL": DialogModel.from_pretrained(runs / f"advagent_rl_attacker_{args.scale}_seed{args.seed}",
                                                   device=dev)}
    if "adv-trained" in targets:
        attackers["adv-trained"] = DialogModel.from_pretrained(
            runs / f"advagent_rl_attacker_adaptive_{args.scale}_seed{args.seed}", device=dev)
    n_default = N[args.scale] if args.split == "selfplay" or args.scale == "tiny" else None
    games, firsts, source = evaluation_games(args.split, args.data_dir, n=args.n or n_default, seed=args.seed)
    if args.split == "test" and args.scale == "tiny":
        games, firsts = games[: N[args.scale]], firsts[: N[args.scale]]
    n = len(games)
    n_wb = min(n, args.n_whitebox or N_WHITEBOX[args.scale])
    n_short = min(n, args.n_short or N_SHORT[args.scale])
    transfer_pool = load_scenarios("selfplay", args.data_dir)[: N_TRANSFER_GAMES[args.scale]]
    out_dir = runs / f"advagent_{args.scale}_seed{args.seed}_{args.split}"
    rows: list[dict[str, Any]] = []
    played: dict[tuple[str, str], list[dict[str, Any]]] = {}
    threads = torch.get_num_threads()
    rules = {"split": args.split, "in_sample": args.split == "selfplay", "max_turns": MAX_TURNS}

    def attack(target: str, method: str, k: int, *, start_turn: int | None = None, suffix: str = "",
               pool: list[list[str]] | None = None, protocol: str = "strict",
               attacker_of: str | None = None) -> dict[str, Any]:
        t = time.time()
        attacker = attackers[attacker_of or (target if target in attackers else "RL")]
        speaker = models["RL"] if method == "none" else attacker
        released = protocol == "released-code"
        res = run_attack(method, target=models[target], speaker=speaker, scenarios=games[:k],
                         out_jsonl=out_dir / f"{target}_{method}{suffix}.jsonl", batch_size=args.batch_size,
                         seed=args.seed, start_turn=start_turn, transfer_sentences=pool, validate=args.validate,
                         protocol=protocol,  # type: ignore[arg-type]
                         objective="advantage" if released else "hinge", passes=3 if released else None,
                         progress=progress)
        played[(target, method + suffix)] = res
        s = summarize_games(res)
        print(f"{LABELS[method]}{suffix} vs {target}: PAR {100 * s['par']:.1f}%, {s['score_attacker']:.2f} vs "
              f"{s['score_target']:.2f} (advantage {s['advantage']:.2f} +- {s['ci95']['advantage'] or 0:.2f}), "
              f"agreement {100 * s['agreement']:.1f}% on {s['games']} games ({time.time() - t:.0f}s)", flush=True)
        return s

    def row(table: str, target: str, label: str, s: dict[str, Any], **extra: Any) -> dict[str, Any]:
        keys = ("par", "score_attacker", "score_target", "advantage", "agreement", "turns")
        return {"table": table, "target": target, "attack": label, **extra, **rules, "n": s["games"],
                **{k: s[k] for k in keys}, "attack_success": s.get("games_with_success"),
                "seconds_per_dialogue": s.get("seconds_per_dialogue"),
                "ci95": {k: s["ci95"].get(k) for k in keys}}

    for target in targets:
        pool = None
        if {"transfer", "ra-pa-ta"} & set(methods):
            pool = collect_transfer_sentences(attackers["RL"], models[target], transfer_pool, seed=args.seed,
                                              min_advantage=4 if args.scale != "tiny" else -10)
        table = "3.10" if target != "adv-trained" else "3.14"
        for method in methods:
            long = method in ("reactive", "ra-pa-da") and target != "SV"
            k = n if method not in WHITEBOX else (n_wb if long else n_short)
            for protocol in (protocols if method in ("reactive", "ra-pa-da") else ["strict"]):
                suffix = "" if protocol == "strict" else "_released"
                s = attack(target, method, k, pool=pool, protocol=protocol, suffix=suffix)
                r = row(table, target, LABELS[method], s, protocol=protocol,
                        cap_rule="no-deal" if method == "none" else "force-selection")
                r["paper"] = PAPER[target].get(method) if protocol == "released-code" or method not in (
                    "reactive", "ra-pa-da") else None
                rows.append(r)
            if target == "adv-trained" and method == "rl":  # the attacker trained against the plain RL agent
                s = attack(target, "rl", n, suffix="_transferred", attacker_of="RL")
                rows.append(row(table, target, "RL attack (attacker of the RL agent, not adapted)", s,
                                protocol="strict", cap_rule="force-selection"))
    # the agents against the SV agent under the normal rules: does the hardened agent still negotiate?
    for name in [t for t in ("RL", "adv-trained") if t in models]:
        s = _normal_play(models[name], models["SV"], games[:n], args.seed, args.batch_size)
        rows.append(row("3.14 (normal rules)", name, f"{name} vs SV (no attack)", s, protocol="self-play",
                        cap_rule="no-deal"))
    for st in [int(x) for x in args.start_turns.split(",") if x]:
        if "RL" not in targets:
            break
        s = attack("RL", "reactive", n_short, start_turn=st, suffix=f"_n{st}")
        rows.append({**row("3.15", "RL", "Reactive attack", s, protocol="strict", cap_rule="force-selection"),
                     "start_turn": st, "paper": PAPER_START.get(st)})
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
        "models": info, "scenarios": {**source, "n": n, "n_whitebox": n_wb, "n_short": n_short},
        "rows": rows, "transcripts": examples,
        "notes": [
            "Side A is the attacker. Every attack but 'RL model (w/o attack)' takes the complement of the "
            "target's choice (forced agreement); a game that reaches the 10-turn cap closes on the target's "
            "choice. Scores average all games; PAR is the share of games the attacker wins outright; ± is the "
            "half-width of the 95% confidence interval over games.",
            f"split {args.split}: " + ("test.txt's 200 context pairs (in neither selfplay.txt, on which the agents "
                                      "and attackers train, nor val.txt, on which their weights are selected), "
                                      "both orders, either side first." if args.split == "test" else
                                      "a seeded sample of selfplay.txt, the games the RL agent and the attackers "
                                      "train on (in-sample)."),
            "Protocols: strict -- a successful reactive edit is said and the dialogue goes on by the target's own "
            "words, the greedy loss is the decision hinge. released-code -- the protocol of the thesis author's "
            "released attack code, whose numbers the thesis reports: after a successful reactive edit the target "
            "is made to say <selection> and the game ends on its decision; the greedy loss is the hinge minus 0.2 x "
            "the attacker's advantage (its 5 x hinge - advantage); 3 greedy passes for at most 2 changed words. "
            "The paper's values stand beside the released-code rows. RA+PA+DA and RA+PA+TA attack from the "
            "attacker's first message (Table 3.15: the earliest start is the strongest).",
            "Every attacker speaks through its RL attacker's speaking module; against the adversarially trained "
            "agent that is a fresh RL attacker trained against it (frozen) with the same recipe (an adaptive "
            "attack); the row 'attacker of the RL agent, not adapted' shows the transferred one. The white-box "
            "attacks edit the drafts (at most 2 words, greedy, every non-special word tried, all trials of a "
            "step in batched passes) and a failed edit is not said (the draft stands).",
            f"Preemptive edits are searched on one sampled target reply (the thesis) and count as a success only "
            f"if the target's decision favours the attacker after at least half of {args.validate} fresh replies "
            f"(--validate).",
            "Adversarial training (negotiation/training/adversarial.py): the target learns from its words only "
            "against the attacker (forced agreement; its choice is not reinforced), interleaved with normal-rules "
            "updates against the SV agent; rounds are evaluated on val.txt's games and the kept round is the "
            "lowest attacker advantage among those agreeing with the SV agent in >= 80% of the games. Table 3.14 "
            "(normal rules) plays it and the RL agent against the SV agent without attack.",
            f"Scale '{args.scale}': black-box rows on {n} games, reactive and RA+PA+DA against the RL and the "
            f"adversarially trained agent on the first {n_wb}, preemptive, RA+PA+TA, each start turn and every "
            f"white-box row against the SV agent on the first {n_short} (CPU time), {threads} torch thread(s).",
            *args.note,
        ],
    }
    publish(ROOT, args.out, payload, render_docs=not args.no_render)
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


def _normal_play(model: DialogModel, sv: DialogModel, games: list[Any], seed: int, batch_size: int) -> dict[str, Any]:
    """``model`` (side A) against the SV agent under the normal rules, as the attack summaries."""
    records, _ = evaluate_selfplay(model, sv, games, seed=seed, batch_size=batch_size)
    return summarize_games([r.to_dict() for r in records])


if __name__ == "__main__":
    sys.exit(main())
