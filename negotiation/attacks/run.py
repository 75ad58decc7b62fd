"""Running an AdvAgent attack over many scenarios: seeded chunks, incremental JSONL, resume, metrics.

:func:`run_attack` plays ``method`` against a target on every scenario, ``batch_size`` games at a time.
Each chunk has its own seeds (derived from ``seed`` and the chunk index), so a run stopped after some
chunks resumes from its JSONL file and gives exactly the games it would have given uninterrupted.

Methods (:data:`ATTACKS`): ``none`` (the speaker as an ordinary agent, no forced agreement: the "RL model
(w/o attack)" row of Table 3.10), ``rl`` (the RL attacker, forced agreement), ``transfer``, ``reactive``,
``preemptive``, ``ra-pa-da``, ``ra-pa-ta`` (:class:`~negotiation.attacks.agent.AttackAgent`, forced
agreement).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from negotiation.agents import RnnAgent
from negotiation.attacks.agent import AttackAgent, Protocol, default_start_turn
from negotiation.attacks.greedy import Objective
from negotiation.dialog import CapRule, GameRecord, play, selfplay_metrics
from negotiation.domain import MAX_TURNS, Scenario
from negotiation.model import DialogModel
from nlprobust.core.runio import read_jsonl, seed_for
from nlprobust.core.runner import Shard, run_items, shard_from_env, shard_path

ATTACKS: tuple[str, ...] = ("none", "rl", "transfer", "reactive", "preemptive", "ra-pa-da", "ra-pa-ta")


def summarize_games(games: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~negotiation.dialog.selfplay_metrics` of game dicts seen from the attack (side A = attacker:
    ``score_attacker``, ``score_target``; Pareto optimality and 95% confidence intervals included), plus the
    attack statistics. Rates are fractions in [0, 1]."""
    n = len(games)
    if n == 0:
        raise ValueError("no games to summarise")
    m = selfplay_metrics([GameRecord.from_dict(g) for g in games]).to_dict()
    names = {"score_a": "score_attacker", "score_b": "score_target", "score_a_agreed": "score_attacker_agreed",
             "score_b_agreed": "score_target_agreed"}
    out: dict[str, Any] = {names.get(k, k): v for k, v in m.items()}
    out["ci95"] = {names.get(k, k): v for k, v in m["ci95"].items()}
    events = [e for g in games for e in g.get("events", [])]
    if events:
        kinds = sorted({e["kind"] for e in events})
        out["attack_turns"] = {k: sum(e["kind"] == k for e in events) for k in kinds}
        out["attack_successes"] = {k: sum(e["kind"] == k and bool(e["success"]) for e in events) for k in kinds}
        out["games_with_success"] = sum(any(e["success"] for e in g.get("events", [])) for g in games) / n
    secs = [g["seconds"] for g in games if "seconds" in g]
    if secs:
        out["seconds_per_dialogue"] = sum(secs) / len(secs)
    return out


def _check_games(path: Path, scen: Sequence[Scenario]) -> None:
    """Games already in ``path`` must have been played on the scenarios given (same index, same contexts)."""
    for d in read_jsonl(path):
        sc = scen[d["index"]] if 0 <= d.get("index", -1) < len(scen) else None
        if sc is None or d["contexts"] != [sc.first.to_ints(), sc.second.to_ints()]:
            raise ValueError(f"{path}: game {d.get('index')} was played on another scenario than the one given; "
                             f"it belongs to another run (delete it, or pass the same scenarios)")


def run_attack(method: str, *, target: DialogModel, speaker: DialogModel, scenarios: Sequence[Scenario],
               out_jsonl: str | os.PathLike[str] | None = None, batch_size: int = 64, seed: int = 0,
               start_turn: int | None = None, kappa: float = 0.5, sel_margin: float = 0.0, replies: int = 1,
               validate: int = 0,
               max_changes: int = 2, transfer_sentences: Sequence[Sequence[str]] | None = None,
               temperature: float = 0.5, max_rows: int = 2048, names: tuple[str, str] = ("attacker", "target"),
               max_turns: int = MAX_TURNS, cap_rule: CapRule | None = None, protocol: Protocol = "strict",
               objective: Objective = "hinge", adv_weight: float = 0.2, passes: int | None = None,
               shard: Shard | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Play ``method`` (:data:`ATTACKS`) with ``speaker`` as the attacker's speaking module (for ``rl``: the
    RL attacker itself) against ``target`` on every scenario; return one dict per game (side A = attacker;
    ``events``: the attack turns; ``seconds``: wall time of its chunk divided by the chunk's games).
    ``method="none"`` is plain self-play of ``speaker`` (side A) and ``target`` (side B). ``max_turns`` and
    ``cap_rule`` are the turn rules of :func:`~negotiation.dialog.play` (default cap rule: ``no-deal`` for
    self-play, ``force-selection`` under an attack's forced agreement). ``start_turn`` (default
    :func:`~negotiation.attacks.agent.default_start_turn`), ``protocol``, ``objective``, ``adv_weight`` and
    ``passes`` are :class:`~negotiation.attacks.agent.AttackAgent`'s.

    Games are played ``batch_size`` at a time, each chunk with its own seeds (from ``seed`` and the chunk
    index), so the games do not depend on how the run is split. With ``out_jsonl`` every finished chunk is
    appended there and games already in the file are not replayed; under ``torchrun`` / ``accelerate launch``
    (or with ``shard``) each process plays its share of the chunks and the last one to finish merges them
    (:func:`nlprobust.core.runner.run_items`); a process that did not merge returns only its own games.
    """
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r}; expected one of {ATTACKS}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scen = list(scenarios)
    shard = shard if shard is not None else shard_from_env()
    first_attack = default_start_turn(method) if start_turn is None else start_turn

    def process(c: int, part: list[Scenario]) -> list[dict[str, Any]]:
        k = c * batch_size
        tgt = RnnAgent(target, name=names[1], temperature=temperature, seed=seed_for(seed, c, 1))
        own = RnnAgent(speaker, name=names[0], temperature=temperature, seed=seed_for(seed, c, 0))
        attacker: Any
        if method in ("none", "rl"):
            attacker = own
        else:
            attacker = AttackAgent(own, tgt, method=method, start_turn=first_attack, kappa=kappa,
                                   sel_margin=sel_margin, replies=replies, validate=validate,
                                   max_changes=max_changes, transfer_sentences=transfer_sentences,
                                   max_rows=max_rows, seed=seed_for(seed, c, 2), protocol=protocol,
                                   objective=objective, adv_weight=adv_weight, passes=passes)
        firsts = ["a" if (k + i) % 2 == 0 else "b" for i in range(len(part))]
        t0 = time.perf_counter()
        with torch.no_grad():
            records = play(attacker, tgt, part, first=firsts, complement=None if method == "none" else "a",
                           max_turns=max_turns, cap_rule=cap_rule)
        secs = (time.perf_counter() - t0) / len(part)
        rows = []
        for i, r in enumerate(records):
            d = r.to_dict()
            d["index"] = k + i
            d["seconds"] = secs
            if isinstance(attacker, AttackAgent):
                d["events"] = [e.to_dict() for e in attacker.events[i]]
            rows.append(d)
        return rows

    if out_jsonl is None:
        if shard.world > 1:
            raise ValueError("a sharded run needs out_jsonl (each process writes its games there)")
        chunks = [scen[k : k + batch_size] for k in range(0, len(scen), batch_size)]
        bar = tqdm(chunks, desc=f"attack {method}", unit="chunk", disable=not progress, dynamic_ncols=True)
        return [g for c, part in enumerate(bar) for g in process(c, part)]
    path = Path(out_jsonl)
    for p in (path, shard_path(path, shard)):
        _check_games(p, scen)
    outcome = run_items(scen, process, path, chunk_size=batch_size, shard=shard, desc=f"attack {method}",
                        unit="game", progress=progress)
    return outcome.records


__all__ = ["ATTACKS", "run_attack", "summarize_games"]
