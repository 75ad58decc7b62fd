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

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from negotiation.agents import RnnAgent
from negotiation.attacks.agent import AttackAgent
from negotiation.dialog import play
from negotiation.domain import Scenario
from negotiation.model import DialogModel
from negotiation.train import _seed_for

ATTACKS: tuple[str, ...] = ("none", "rl", "transfer", "reactive", "preemptive", "ra-pa-da", "ra-pa-ta")


def summarize_games(games: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """PAR, each side's average score, advantage, agreement, turns and attack statistics of game dicts
    (side A = attacker). Rates are fractions in [0, 1]."""
    n = len(games)
    if n == 0:
        raise ValueError("no games to summarise")
    adv = [g["scores"][0] - g["scores"][1] for g in games]
    events = [e for g in games for e in g.get("events", [])]
    out: dict[str, Any] = {
        "games": n,
        "par": sum(a > 0 for a in adv) / n,
        "score_attacker": sum(g["scores"][0] for g in games) / n,
        "score_target": sum(g["scores"][1] for g in games) / n,
        "advantage": sum(adv) / n,
        "agreement": sum(bool(g["agreed"]) for g in games) / n,
        "turns": sum(g["turns"] for g in games) / n,
        "selected": sum(bool(g["selected"]) for g in games) / n,
    }
    if events:
        kinds = sorted({e["kind"] for e in events})
        out["attack_turns"] = {k: sum(e["kind"] == k for e in events) for k in kinds}
        out["attack_successes"] = {k: sum(e["kind"] == k and bool(e["success"]) for e in events) for k in kinds}
        out["games_with_success"] = sum(any(e["success"] for e in g.get("events", [])) for g in games) / n
    secs = [g["seconds"] for g in games if "seconds" in g]
    if secs:
        out["seconds_per_dialogue"] = sum(secs) / len(secs)
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e}); delete the file to start over") from e
    return rows


def run_attack(method: str, *, target: DialogModel, speaker: DialogModel, scenarios: Sequence[Scenario],
               out_jsonl: str | os.PathLike[str] | None = None, batch_size: int = 64, seed: int = 0,
               start_turn: int = 2, kappa: float = 0.5, sel_margin: float = 0.0, replies: int = 1, validate: int = 0,
               max_changes: int = 2, transfer_sentences: Sequence[Sequence[str]] | None = None,
               temperature: float = 0.5, max_rows: int = 2048, progress: bool = True) -> list[dict[str, Any]]:
    """Play ``method`` (:data:`ATTACKS`) with ``speaker`` as the attacker's speaking module (for ``rl``: the
    RL attacker itself) against ``target`` on every scenario; return one dict per game (side A = attacker;
    ``events``: the attack turns; ``seconds``: wall time of its chunk divided by the chunk's games).

    With ``out_jsonl`` every finished chunk is appended there and games already in the file are not replayed.
    """
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r}; expected one of {ATTACKS}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scen = list(scenarios)
    path = Path(out_jsonl) if out_jsonl is not None else None
    done = _read_jsonl(path) if path is not None else []
    if len(done) > len(scen):
        raise ValueError(f"{path} holds {len(done)} games but only {len(scen)} scenarios were given; wrong file?")
    for d in done:
        sc = scen[d["index"]] if 0 <= d.get("index", -1) < len(scen) else None
        if sc is None or d["contexts"] != [sc.first.to_ints(), sc.second.to_ints()]:
            raise ValueError(f"{path}: game {d.get('index')} was played on another scenario than the one given; "
                             f"it belongs to another run (delete it, or pass the same scenarios)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    first_chunk = len(done) // batch_size
    if first_chunk * batch_size != len(done):  # a partial chunk (should not happen: chunks are written whole)
        done = done[: first_chunk * batch_size]
        if path is not None:
            path.write_text("".join(json.dumps(g) + "\n" for g in done), encoding="utf-8")
    chunks = range(first_chunk * batch_size, len(scen), batch_size)
    bar = tqdm(chunks, desc=f"attack {method}", unit="chunk", disable=not progress, dynamic_ncols=True)
    for k in bar:
        part = scen[k : k + batch_size]
        c = k // batch_size
        tgt = RnnAgent(target, name="target", temperature=temperature, seed=_seed_for(seed, c, 1))
        own = RnnAgent(speaker, name="attacker", temperature=temperature, seed=_seed_for(seed, c, 0))
        attacker: Any
        if method in ("none", "rl"):
            attacker = own
        else:
            attacker = AttackAgent(own, tgt, method=method, start_turn=start_turn, kappa=kappa,
                                   sel_margin=sel_margin, replies=replies, validate=validate,
                                   max_changes=max_changes,
                                   transfer_sentences=transfer_sentences, max_rows=max_rows, seed=_seed_for(seed, c, 2))
        firsts = ["a" if (k + i) % 2 == 0 else "b" for i in range(len(part))]
        t0 = time.perf_counter()
        with torch.no_grad():
            records = play(attacker, tgt, part, first=firsts, complement=None if method == "none" else "a")
        secs = (time.perf_counter() - t0) / len(part)
        rows = []
        for i, r in enumerate(records):
            d = r.to_dict()
            d["index"] = k + i
            d["seconds"] = secs
            if isinstance(attacker, AttackAgent):
                d["events"] = [e.to_dict() for e in attacker.events[i]]
            rows.append(d)
        done += rows
        if path is not None:
            with open(path, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(d) + "\n" for d in rows)
        s = summarize_games(done)
        bar.set_postfix(adv=f"{s['advantage']:.2f}", par=f"{100 * s['par']:.0f}%")
    return done


__all__ = ["ATTACKS", "run_attack", "summarize_games"]
