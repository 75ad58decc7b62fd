"""``negotiation`` console entry point.

    negotiation train-sv --preset small --out runs/negotiation_sv_small
    negotiation train-rl --preset small --sv runs/negotiation_sv_small --out runs/negotiation_rl_small
    negotiation selfplay runs/negotiation_rl_small runs/negotiation_sv_small --n 2000 --out selfplay.json
    negotiation chat runs/negotiation_rl_small
    negotiation attack --method ra-pa-da --target runs/negotiation_rl_small --speaker runs/advagent_rl_attacker_small \
        --n 200 --out runs/attack_ra_pa_da.jsonl
    negotiation adv-train --target runs/negotiation_rl_small --attacker runs/advagent_rl_attacker_small \
        --out runs/advtrain_small

Data come from ``--data-dir`` or ``NLPROBUST_DATA`` (the folder that holds ``negotiate/``), else
``../shared/data``. Training commands resume an interrupted run when given the same ``--out`` and settings.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

PRESETS = ("tiny", "small", "paper")


class CliError(Exception):
    """A problem with the command's arguments or inputs, reported without a traceback."""


def _load_model(path: str, device: str | None = None) -> Any:
    """A finished checkpoint folder, with an error that says what is wrong with it."""
    from negotiation.model import DialogModel
    from negotiation.training.checkpoint import CHECKPOINT_DIR, is_complete

    p = Path(path)
    if not p.is_dir():
        raise CliError(f"checkpoint not found: {p} (expected a folder written by `negotiation train-sv` or "
                       f"`negotiation train-rl`)")
    if (p / CHECKPOINT_DIR).is_dir() and not is_complete(p):
        raise CliError(f"{p} holds a training run that has not finished; run the same training command again "
                       f"to resume it")
    try:
        return DialogModel.from_pretrained(p, device=device)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(f"cannot load the checkpoint {p}: {exc}") from None


def _overrides(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    """Config fields from the options in ``names`` (option dest -> field) that were given."""
    return {field: getattr(args, dest) for dest, field in names.items() if getattr(args, dest, None) is not None}


def _num(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def cmd_train_sv(args: argparse.Namespace) -> int:
    from negotiation.corpus import load_examples
    from negotiation.training.config import sv_preset
    from negotiation.training.supervised import train_supervised

    cfg = sv_preset(args.preset, **_overrides(args, {"seed": "seed", "epochs": "epochs", "batch_size": "batch_size",
                                                   "lr": "lr", "max_train": "max_train", "max_valid": "max_valid",
                                                   "patience": "patience"}))
    train = load_examples("train", args.data_dir, limit=cfg.max_train)
    valid = load_examples("val", args.data_dir, limit=cfg.max_valid)
    t = time.time()
    out = train_supervised(train, valid, args.out, cfg, device=args.device, progress=not args.quiet)
    from negotiation.training.checkpoint import read_log

    summary: dict[str, Any] = next((r for r in reversed(read_log(out)) if r.get("kind") == "summary"), {})
    print(f"SV model in {out} ({time.time() - t:.0f}s this run): best epoch {summary.get('best_epoch')}, "
          f"validation perplexity {_num(summary.get('best_val_ppl'))} "
          f"(FAIR's convention: {_num(summary.get('best_val_ppl_fair'))})")
    return 0


def cmd_train_rl(args: argparse.Namespace) -> int:
    from negotiation.corpus import load_examples, load_scenarios
    from negotiation.training.checkpoint import read_log
    from negotiation.training.config import rl_preset
    from negotiation.training.reinforce import train_rl

    _load_model(args.sv)  # a clear error for a missing or unfinished SV model
    if args.partner:
        _load_model(args.partner)
    cfg = rl_preset(args.preset, **_overrides(args, {"seed": "seed", "epochs": "epochs", "batch_size": "batch_size",
                                                   "lr": "lr", "scenarios": "max_scenarios", "reward": "reward",
                                                   "max_train": "max_train", "max_valid": "max_valid",
                                                   "complement": "complement"}))
    scenarios = load_scenarios("selfplay", args.data_dir, limit=cfg.max_scenarios)
    train = load_examples("train", args.data_dir, limit=cfg.max_train) if cfg.sv_every else []
    valid = load_examples("val", args.data_dir, limit=cfg.max_valid)
    t = time.time()
    select = load_scenarios("val", args.data_dir, both_orders=True) if cfg.select_every else None
    out = train_rl(args.sv, args.out, cfg, scenarios=scenarios, train=train, valid=valid, partner_dir=args.partner,
                   select_scenarios=select, device=args.device, progress=not args.quiet)
    last: dict[str, Any] = next((r for r in reversed(read_log(out)) if r.get("kind") == "epoch"), {})
    agreement = last.get("agreement")
    print(f"RL model in {out} ({time.time() - t:.0f}s this run): last epoch score {_num(last.get('score'), '.2f')}"
          f" vs {_num(last.get('partner_score'), '.2f')}, agreement "
          f"{_num(None if agreement is None else 100 * agreement, '.1f')}%, "
          f"validation perplexity {_num(last.get('val_ppl'))}")
    return 0


def metrics_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table of self-play metrics, one row per (label, ``SelfPlayMetrics.to_dict()``)."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    out = ["| pairing | games | score A | score B | advantage | agreement % | PAR % | Pareto % | turns |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, m in rows:
        out.append(f"| {label} | {m['games']} | {m['score_a']:.2f} | {m['score_b']:.2f} | {m['advantage']:.2f} | "
                   f"{pct(m['agreement'])} | {pct(m['par'])} | {pct(m['pareto'])} | {m['turns']:.2f} |")
    return "\n".join(out)


def _shard(text: str | None, games_file: str | None, option: str) -> Any:
    """This process's :class:`~nlprobust.core.runner.Shard` (``--shard``, else torchrun / accelerate's
    environment); a sharded run needs a games file to write its share to."""
    from nlprobust.core.runner import parse_shard

    try:
        shard = parse_shard(text)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if shard.world > 1 and not games_file:
        raise CliError(f"a sharded run (torchrun / accelerate launch / --shard) needs {option} FILE.jsonl")
    return shard


def _add_game_rules(p: argparse.ArgumentParser, default_cap: str) -> None:
    """--split, --max-turns and --cap-rule (recorded with the results)."""
    from negotiation.corpus import SCENARIO_SPLITS
    from negotiation.dialog import CAP_RULES
    from negotiation.domain import MAX_TURNS

    p.add_argument("--split", default="selfplay",
                   help=f"scenarios: one of {', '.join(SCENARIO_SPLITS)} (test: the 200 held-out games of "
                        f"test.txt, each in both orders), or a selfplay.txt-style file (default: selfplay)")
    p.add_argument("--max-turns", type=int, default=MAX_TURNS, help=f"messages per game at most (default "
                   f"{MAX_TURNS}, the thesis's; 20 with --cap-rule force-selection is FAIR's rule)")
    p.add_argument("--cap-rule", choices=CAP_RULES, default=default_cap,
                   help=f"a game at the cap: no deal, or its writer is made to select (default {default_cap})")


def cmd_selfplay(args: argparse.Namespace) -> int:
    from negotiation.attacks.run import run_attack
    from negotiation.dialog import GameRecord, format_game, selfplay_metrics

    if args.n is not None and args.n < 1:
        raise CliError(f"--n must be >= 1, got {args.n}")
    model_a = _load_model(args.a, args.device)
    model_b = model_a if Path(args.b).resolve() == Path(args.a).resolve() else _load_model(args.b, args.device)
    scenarios = _pick_scenarios(args)
    names = (args.name_a, args.name_b)
    shard = _shard(args.shard, args.games, "--games")
    t = time.time()
    games = run_attack("none", target=model_b, speaker=model_a, scenarios=scenarios, out_jsonl=args.games,
                       batch_size=args.batch_size, seed=args.seed, temperature=args.temperature, names=names,
                       max_turns=args.max_turns, cap_rule=args.cap_rule, shard=shard, progress=not args.quiet)
    elapsed = time.time() - t
    if len(games) < len(scenarios):
        print(f"rank {shard}: its games are played; the last rank to finish merges them into {args.games}")
        return 0
    records = [GameRecord.from_dict(g) for g in games]
    metrics = selfplay_metrics(records)
    label = f"{names[0]} (A) vs {names[1]} (B)"
    print(f"A = {args.a}, B = {args.b}: {len(records)} games ({args.split} scenarios, at most {args.max_turns} "
          f"messages, {args.cap_rule} at the cap), {elapsed:.0f}s")
    print(metrics_table([(label, metrics.to_dict())]))
    shown = [format_game(r, names) for r in records[: args.transcripts]]
    for text in shown:
        print()
        print(text)
    if args.out:
        from nlprobust.core.results import write_recipe_results
        from nlprobust.core.runio import run_metadata

        payload: dict[str, Any] = {"a": args.a, "b": args.b, "names": list(names), "n": len(records),
                                   "split": args.split, "max_turns": args.max_turns, "cap_rule": args.cap_rule,
                                   "seed": args.seed, "temperature": args.temperature, "wall_time_s": round(elapsed, 1),
                                   **run_metadata(), "metrics": metrics.to_dict(),
                                   "transcripts": [{"text": s, "record": r.to_dict()}
                                                   for s, r in zip(shown, records)]}
        if args.records:
            payload["records"] = [r.to_dict() for r in records]
        write_recipe_results(args.out, payload)
        print(f"wrote {args.out}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from negotiation.agents import HumanAgent, RnnAgent
    from negotiation.corpus import load_scenarios
    from negotiation.dialog import format_game, play
    from negotiation.domain import random_scenario

    model = _load_model(args.model, args.device)
    rng = random.Random(args.seed)
    if args.random_scenario:
        scenario = random_scenario(rng)
    else:
        try:
            scenarios = load_scenarios("selfplay", args.data_dir)
        except FileNotFoundError as exc:
            raise CliError(f"{exc}; or pass --random-scenario to play a randomly drawn game") from None
        if args.scenario is not None and not 0 <= args.scenario < len(scenarios):
            raise CliError(f"--scenario must be 0..{len(scenarios) - 1}, got {args.scenario}")
        scenario = scenarios[args.scenario if args.scenario is not None else rng.randrange(len(scenarios))]
    if args.as_second:
        scenario = scenario.swapped()
    first = {"you": "a", "agent": "b"}.get(args.first) or rng.choice(["a", "b"])
    human = HumanAgent(name="you", partner="agent")
    agent = RnnAgent(model, name="agent", temperature=args.temperature, seed=args.seed)
    print(f"You negotiate with the agent of {args.model}; {'you start' if first == 'a' else 'the agent starts'}.")
    (record,) = play(human, agent, [scenario], first=[first])
    print()
    print(format_game(record, ("you", "agent")))
    if record.agreed:
        print(f"Deal: you score {record.scores[0]}, the agent {record.scores[1]}.")
    else:
        print("No agreement: both score 0.")
    return 0


def _pick_scenarios(args: argparse.Namespace) -> list[Any]:
    from negotiation.corpus import load_scenarios

    try:
        scenarios = load_scenarios(args.split, args.data_dir, both_orders=args.split in ("val", "test"))
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    if args.n is not None:
        if not 1 <= args.n <= len(scenarios):
            raise CliError(f"--n must be 1..{len(scenarios)} (the games of --split {args.split}), got {args.n}")
        scenarios = [scenarios[i] for i in sorted(random.Random(args.seed).sample(range(len(scenarios)), args.n))]
    return scenarios


def cmd_attack(args: argparse.Namespace) -> int:
    from negotiation.attacks.run import run_attack, summarize_games
    from negotiation.attacks.transfer import collect_transfer_sentences

    target = _load_model(args.target, args.device)
    speaker = _load_model(args.speaker, args.device)
    scenarios = _pick_scenarios(args)
    pool = None
    if args.method in ("transfer", "ra-pa-ta"):
        if not args.rl_attacker:
            raise CliError(f"--method {args.method} needs --rl-attacker (the RL attacker whose high-reward "
                           f"dialogues give the transfer sentences)")
        from negotiation.corpus import load_scenarios

        chosen = {s for s in scenarios}
        others = [s for s in load_scenarios("selfplay", args.data_dir) if s not in chosen][: args.transfer_games]
        pool = collect_transfer_sentences(_load_model(args.rl_attacker, args.device), target, others,
                                          seed=args.seed)
        print(f"{len(pool)} transfer sentences from {len(others)} dialogues of the RL attacker")
    shard = _shard(args.shard, args.out, "--out")
    t = time.time()
    games = run_attack(args.method, target=target, speaker=speaker, scenarios=scenarios, out_jsonl=args.out,
                       batch_size=args.batch_size, seed=args.seed, start_turn=args.start_turn, kappa=args.kappa,
                       sel_margin=args.sel_margin, replies=args.replies, validate=args.validate,
                       max_changes=args.max_changes, max_turns=args.max_turns, cap_rule=args.cap_rule,
                       protocol=args.protocol, objective=args.objective, adv_weight=args.adv_weight,
                       passes=args.passes,
                       transfer_sentences=pool, temperature=args.temperature, shard=shard, progress=not args.quiet)
    if len(games) < len(scenarios):
        print(f"rank {shard}: its games are played; the last rank to finish merges them into {args.out}")
        return 0
    s = summarize_games(games)
    print(f"{args.method} against {args.target} ({len(games)} games, {time.time() - t:.0f}s this run): "
          f"PAR {100 * s['par']:.1f}%, score {s['score_attacker']:.2f} vs {s['score_target']:.2f} "
          f"(advantage {s['advantage']:.2f} +- {s['ci95']['advantage'] or 0:.2f}), agreement "
          f"{100 * s['agreement']:.1f}%; {args.split} scenarios, at most {args.max_turns} messages, "
          f"{args.cap_rule} at the cap, {args.protocol} protocol")
    return 0


def cmd_adv_train(args: argparse.Namespace) -> int:
    import dataclasses

    from negotiation.corpus import load_examples, load_scenarios
    from negotiation.training.adversarial import ADV_PRESETS, adversarial_training, read_log

    _load_model(args.target)
    _load_model(args.attacker)
    cfg = dataclasses.replace(ADV_PRESETS[args.preset], **_overrides(args, {"rounds": "rounds", "seed": "seed"}))
    if args.partner:
        _load_model(args.partner)
    elif cfg.normal_updates:
        raise CliError(f"the {args.preset} preset also trains the target under normal rules against an ordinary "
                       f"partner: pass --partner (e.g. the SV agent)")
    scenarios = load_scenarios("selfplay", args.data_dir)
    held = scenarios[-cfg.eval_scenarios :]
    train = load_examples("train", args.data_dir) if cfg.sv_every else []
    t = time.time()
    out = adversarial_training(args.target, args.attacker, args.out, cfg, scenarios=scenarios[: -cfg.eval_scenarios],
                               eval_scenarios=held, train=train, partner_dir=args.partner, device=args.device,
                               progress=not args.quiet)
    log = read_log(out)
    for r in log:
        normal = r.get("eval_normal")
        print(f"round {r['round']}: attacker advantage {r['eval']['advantage']:.2f} "
              f"({r['eval']['score_a']:.2f} vs {r['eval']['score_b']:.2f})"
              + ("" if normal is None else f"; with the partner {normal['score_a']:.2f} vs {normal['score_b']:.2f}, "
                                           f"agreement {100 * normal['agreement']:.1f}%"))
    print(f"adversarially trained target in {out}/target ({time.time() - t:.0f}s this run)")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder holding negotiate/ (default: $NLPROBUST_DATA or "
                   "../shared/data)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: a GPU when there is one)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="negotiation", description="Deal-or-No-Deal negotiation agents (Lewis et al. "
                                "2017) and AdvAgent.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = p.add_subparsers(dest="cmd")

    sv = sub.add_parser("train-sv", help="supervised training of the SV agent on train.txt (resumes --out)")
    sv.add_argument("--out", required=True, help="run folder (checkpoints, log, final model)")
    sv.add_argument("--preset", choices=PRESETS, default="small")
    _add_common(sv)
    sv.add_argument("--seed", type=int, default=None)
    sv.add_argument("--epochs", type=int, default=None, help="epochs at the initial learning rate at most")
    sv.add_argument("--patience", type=int, default=None)
    sv.add_argument("--batch-size", type=int, default=None)
    sv.add_argument("--lr", type=float, default=None)
    sv.add_argument("--max-train", type=int, default=None, help="use only the first N lines of train.txt")
    sv.add_argument("--max-valid", type=int, default=None, help="use only the first N lines of val.txt")
    sv.add_argument("--quiet", action="store_true", help="no progress bars")
    sv.set_defaults(func=cmd_train_sv)

    rl = sub.add_parser("train-rl", help="REINFORCE self-play against a frozen SV partner (resumes --out)")
    rl.add_argument("--sv", required=True, help="the SV model to start from (train-sv's --out)")
    rl.add_argument("--out", required=True, help="run folder (checkpoints, log, final model)")
    rl.add_argument("--partner", default=None, help="the frozen partner (default: --sv)")
    rl.add_argument("--preset", choices=PRESETS, default="small")
    _add_common(rl)
    rl.add_argument("--seed", type=int, default=None)
    rl.add_argument("--epochs", type=int, default=None, help="passes over the scenarios")
    rl.add_argument("--scenarios", type=int, default=None, help="use the first N scenarios of selfplay.txt")
    rl.add_argument("--batch-size", type=int, default=None, help="dialogues per update")
    rl.add_argument("--lr", type=float, default=None)
    rl.add_argument("--reward", choices=["score", "advantage"], default=None)
    rl.add_argument("--complement", action="store_const", const=True, default=None,
                    help="the agent takes the complement of the partner's choice (forced agreement)")
    rl.add_argument("--max-train", type=int, default=None, help="train.txt lines for the supervised batches")
    rl.add_argument("--max-valid", type=int, default=None, help="val.txt lines for the perplexity")
    rl.add_argument("--quiet", action="store_true", help="no progress bars")
    rl.set_defaults(func=cmd_train_rl)

    sp = sub.add_parser("selfplay", help="two checkpoints negotiate (selfplay.txt or held-out test.txt games)")
    sp.add_argument("a", help="checkpoint of side A (the first context of each scenario)")
    sp.add_argument("b", help="checkpoint of side B (may equal A)")
    sp.add_argument("--n", "--num-games", dest="n", type=int, default=None,
                    help="a seeded sample of N scenarios (default: all; under torchrun write --num-games, "
                         "which torchrun's own options cannot swallow)")
    _add_common(sp)
    _add_game_rules(sp, "no-deal")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--temperature", type=float, default=0.5)
    sp.add_argument("--batch-size", type=int, default=128, help="games played in parallel")
    sp.add_argument("--name-a", default="A")
    sp.add_argument("--name-b", default="B")
    sp.add_argument("--transcripts", type=int, default=0, help="print (and save) the first K games")
    sp.add_argument("--out", default=None, help="write the metrics (and transcripts) as JSON")
    sp.add_argument("--records", action="store_true", help="save every game's record in --out")
    sp.add_argument("--games", default=None, help="JSONL of the games, appended chunk by chunk (resumes; needed "
                    "to shard the games across processes with torchrun / accelerate launch)")
    sp.add_argument("--shard", default=None, metavar="RANK/WORLD",
                    help="this process's part (default: from torchrun / accelerate launch)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_selfplay)

    at = sub.add_parser("attack", help="an AdvAgent attack against a target (selfplay.txt or held-out test.txt games)")
    at.add_argument("--method", required=True, choices=["none", "rl", "transfer", "reactive", "preemptive",
                                                        "ra-pa-da", "ra-pa-ta"])
    at.add_argument("--target", required=True, help="the target agent's checkpoint (white-box for the greedy "
                    "methods)")
    at.add_argument("--speaker", required=True, help="the attacker's speaking module (for --method rl: the RL "
                    "attacker)")
    at.add_argument("--rl-attacker", default=None, help="RL attacker for the transfer sentences")
    at.add_argument("--transfer-games", type=int, default=1000, help="dialogues played to collect them")
    at.add_argument("--n", "--num-games", dest="n", type=int, default=None,
                    help="a seeded sample of N scenarios (default: all; under torchrun write --num-games)")
    _add_common(at)
    _add_game_rules(at, "force-selection")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--temperature", type=float, default=0.5)
    at.add_argument("--batch-size", type=int, default=64, help="games played in parallel")
    at.add_argument("--start-turn", type=int, default=None, help="messages before the first attack turn (n; "
                    "default 0 for ra-pa-da / ra-pa-ta, the attacker's first message, else 2)")
    at.add_argument("--protocol", choices=["strict", "released-code"], default="strict",
                    help="released-code: after a successful reactive edit the target is made to select and the "
                         "game ends on its decision (the thesis author's released code); strict: the dialogue "
                         "goes on by the target's own words")
    at.add_argument("--objective", choices=["hinge", "advantage"], default="hinge",
                    help="greedy loss: the decision hinge, or hinge minus --adv-weight x the attacker's advantage")
    at.add_argument("--adv-weight", type=float, default=0.2, help="lambda of --objective advantage")
    at.add_argument("--passes", type=int, default=None, help="greedy iterations (default --max-changes; a pass "
                    "beyond it may re-choose a changed word)")
    at.add_argument("--kappa", type=float, default=0.5, help="hinge margin of the greedy loss")
    at.add_argument("--sel-margin", type=float, default=0.0, help="lead of <selection> the reactive attack demands")
    at.add_argument("--replies", type=int, default=1, help="target replies per preemptive trial")
    at.add_argument("--validate", type=int, default=8, help="fresh target replies a preemptive edit must win half "
                    "of (0: the thesis' single reply)")
    at.add_argument("--max-changes", type=int, default=2, help="words the greedy search may change")
    at.add_argument("--out", default=None, help="JSONL of the games, appended chunk by chunk (resumes; needed to "
                    "shard the games across processes with torchrun / accelerate launch)")
    at.add_argument("--shard", default=None, metavar="RANK/WORLD",
                    help="this process's part (default: from torchrun / accelerate launch)")
    at.add_argument("--quiet", action="store_true", help="no progress bar")
    at.set_defaults(func=cmd_attack)

    av = sub.add_parser("adv-train", help="adversarial self-play training against the RL attacker (resumes --out)")
    av.add_argument("--target", required=True, help="the agent to make robust (e.g. the RL agent)")
    av.add_argument("--attacker", required=True, help="the RL attacker (train-rl --reward advantage --complement)")
    av.add_argument("--out", required=True, help="run folder; the robust agent ends in OUT/target")
    av.add_argument("--partner", default=None, help="the ordinary partner of the normal-rules updates (e.g. the SV "
                    "agent; needed by the small and paper presets)")
    av.add_argument("--preset", choices=PRESETS, default="small")
    av.add_argument("--rounds", type=int, default=None)
    _add_common(av)
    av.add_argument("--seed", type=int, default=None)
    av.add_argument("--quiet", action="store_true", help="no progress bars")
    av.set_defaults(func=cmd_adv_train)

    ch = sub.add_parser("chat", help="negotiate with an agent in the terminal")
    ch.add_argument("model", help="the agent's checkpoint")
    _add_common(ch)
    ch.add_argument("--scenario", type=int, default=None, help="index of the game in selfplay.txt (default: random)")
    ch.add_argument("--random-scenario", action="store_true", help="draw a game from the rules (no data needed)")
    ch.add_argument("--as-second", action="store_true", help="take the second context of the scenario")
    ch.add_argument("--first", choices=["you", "agent", "random"], default="random", help="who writes first")
    ch.add_argument("--temperature", type=float, default=0.5)
    ch.add_argument("--seed", type=int, default=None, help="seeds the scenario and the agent (default: random)")
    ch.set_defaults(func=cmd_chat)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from negotiation import __version__

        print(__version__)
        return 0
    if args.cmd is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if getattr(args, "seed", 0) is None and args.cmd == "chat":
        args.seed = random.randrange(2**31)
    try:
        return int(args.func(args))
    except (CliError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"negotiation {args.cmd}: error: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
