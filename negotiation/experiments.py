"""What the negotiation recipes share: the SV and RL agents of a scale and seed, trained (or resumed, or reused)
in ``<runs>/negotiation_{sv,rl}_<scale>_seed<S>``; the evaluation games of a split; self-play tables over training
seeds, splits and turn rules."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from negotiation.agents import DEFAULT_TEMPERATURE, Agent, RnnAgent, RolloutAgent
from negotiation.corpus import load_examples, load_scenarios
from negotiation.dialog import FAIR_CAP_RULE, FAIR_TURNS, CapRule, GameRecord, SelfPlayMetrics, play, selfplay_metrics
from negotiation.domain import MAX_TURNS, Scenario
from negotiation.model import DialogModel
from negotiation.training.checkpoint import is_complete, read_log
from negotiation.training.config import ReinforceConfig, rl_preset, sv_preset
from negotiation.training.reinforce import train_rl
from negotiation.training.supervised import train_supervised
from nlprobust.core.cli import display_path

__all__ = ["ROLLOUTS_SUFFIX", "TURN_RULES", "agent_dirs", "evaluation_games", "make_agent", "metrics_row",
           "selection_games", "selfplay_table", "train_agents"]

logger = logging.getLogger(__name__)


def agent_dirs(runs: Path, scale: str, seed: int) -> tuple[Path, Path]:
    """The run folders of the SV and RL agents of ``scale`` trained with ``seed``."""
    return runs / f"negotiation_sv_{scale}_seed{seed}", runs / f"negotiation_rl_{scale}_seed{seed}"


def selection_games(cfg: ReinforceConfig, data_dir: str | None) -> list[Scenario]:
    """The validation games of an RL run's checkpoint selection (``cfg.select_every``): the 200 game pairs of
    ``val.txt`` in both orders (none at all without selection)."""
    return load_scenarios("val", data_dir, both_orders=True) if cfg.select_every else []


def train_agents(scale: str, runs: Path, data_dir: str | None, seed: int, device: str | None, progress: bool, *,
                 root: Path | None = None, echo: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Train (or resume, or reuse) the SV agent and then the RL agent (REINFORCE against the frozen SV agent) of
    ``scale`` and ``seed`` (in :func:`agent_dirs`); returns, per agent (``sv``, ``rl``), its folder (relative to
    ``root`` when below it), config, whether this call trained it, and its training log. One line per agent goes
    to ``echo``."""
    info: dict[str, Any] = {}
    sv_dir, rl_dir = agent_dirs(runs, scale, seed)
    sv_cfg = sv_preset(scale, seed=seed)
    rl_cfg = rl_preset(scale, seed=seed)
    for name, folder, cfg in (("sv", sv_dir, sv_cfg), ("rl", rl_dir, rl_cfg)):
        t = time.time()
        trained = not is_complete(folder)
        if trained and name == "sv":
            train_supervised(load_examples("train", data_dir, limit=sv_cfg.max_train),
                             load_examples("val", data_dir, limit=sv_cfg.max_valid), sv_dir, sv_cfg, device=device,
                             progress=progress)
        elif trained:
            train_rl(sv_dir, rl_dir, rl_cfg, scenarios=load_scenarios("selfplay", data_dir, limit=rl_cfg.max_scenarios),
                     train=load_examples("train", data_dir, limit=rl_cfg.max_train) if rl_cfg.sv_every else [],
                     valid=load_examples("val", data_dir, limit=rl_cfg.max_valid),
                     select_scenarios=selection_games(rl_cfg, data_dir), device=device, progress=progress)
        log = read_log(folder)
        summary: dict[str, Any] = next((r for r in reversed(log) if r.get("kind") == "summary"), {})
        where = display_path(folder, root)
        info[name] = {"checkpoint": where, "config": cfg.to_dict(), "trained_in_this_run": trained,
                      "wall_time_this_run_s": round(time.time() - t, 1) if trained else 0.0,
                      "train_time_s": summary.get("elapsed_s"),
                      "epochs": [r for r in log if r.get("kind") == "epoch"], "summary": summary}
        echo(f"{name.upper()} agent: {where} ({'trained' if trained else 'found'}; "
             f"training took {summary.get('elapsed_s')}s)")
    return info


#: turn rules of the self-play tables: the thesis's (10 messages, no deal at the cap) and Lewis et al.'s as the
#: thesis author's released code plays it (20 messages, the writer at the cap made to select)
TURN_RULES: dict[str, tuple[int, CapRule]] = {"thesis": (MAX_TURNS, "no-deal"), "fair": (FAIR_TURNS, FAIR_CAP_RULE)}


def evaluation_games(split: str, data_dir: str | None, *, n: int | None = None,
                     seed: int = 0) -> tuple[list[Scenario], list[str], dict[str, Any]]:
    """The games of an evaluation on ``split`` and who writes first in each, with a description for results.

    ``test`` (and ``val``): every context pair of the file in both orders, each order played twice, once with
    each side writing first (800 games for the 200 pairs of ``test.txt``; ``n`` keeps the first ``n`` pairs).
    ``selfplay``: a seeded sample of ``n`` (default all) ``selfplay.txt`` games, sides alternating first.
    """
    if split == "selfplay":
        pool = load_scenarios("selfplay", data_dir)
        k = len(pool) if n is None else n
        if not 1 <= k <= len(pool):
            raise ValueError(f"{k} self-play games asked for; selfplay.txt has {len(pool)}")
        chosen = sorted(random.Random(seed).sample(range(len(pool)), k))
        games = [pool[i] for i in chosen]
        firsts = ["a" if i % 2 == 0 else "b" for i in range(len(games))]
        return games, firsts, {"source": "negotiate/selfplay.txt", "in_sample": True, "games": len(games),
                               "indices": chosen}
    ordered = load_scenarios(split, data_dir, limit=n, both_orders=True)
    games = [g for g in ordered for _ in range(2)]
    firsts = ["a", "b"] * len(ordered)
    return games, firsts, {"source": f"negotiate/{split}.txt", "in_sample": False, "pairs": len(ordered) // 2,
                           "games": len(games)}


ROLLOUTS_SUFFIX = "+rollouts"


def make_agent(models: dict[str, DialogModel], name: str, *, temperature: float, seed: int,
               rollouts: tuple[int, int] = (5, 3)) -> Agent:
    """The agent called ``name``: ``models[name]`` sampling at ``temperature``, or for ``X+rollouts`` model ``X``
    planning its messages by rollouts (``rollouts`` = candidates, rollouts per candidate)."""
    base = name.removesuffix(ROLLOUTS_SUFFIX)
    agent = RnnAgent(models[base], name=name, temperature=temperature, seed=seed)
    if name.endswith(ROLLOUTS_SUFFIX):
        return RolloutAgent(agent, candidates=rollouts[0], rollouts=rollouts[1])
    return agent


def metrics_row(m: SelfPlayMetrics) -> dict[str, Any]:
    """The columns of a self-play row (rates in [0, 1]) with their 95% confidence intervals."""
    keys = ("score_a", "score_b", "advantage", "agreement", "par", "pareto", "turns", "selected")
    return {"n": m.games, **{k: getattr(m, k) for k in keys},
            "ci95": {k: v for k, v in m.ci95.items() if k in keys}}


def selfplay_table(models: dict[int, dict[str, DialogModel]], pairings: dict[str, tuple[str, str]],
                   splits: dict[str, tuple[list[Scenario], list[str], dict[str, Any]]], rules: Sequence[str], *,
                   temperature: float = DEFAULT_TEMPERATURE, batch_size: int = 128, seed: int = 0,
                   rollouts: tuple[int, int] = (5, 3), rollout_splits: Sequence[str] = ("test",),
                   echo: Callable[[str], None] = logger.info,
                   ) -> tuple[list[dict[str, Any]], dict[str, list[GameRecord]]]:
    """Self-play of every pairing (``label -> (agent A, agent B)`` names of ``models[training seed]``; a name
    ``X+rollouts`` is model ``X`` deciding by :class:`~negotiation.agents.RolloutAgent`, ``rollouts`` =
    (candidates, rollouts per candidate); rollout pairings play only the splits of ``rollout_splits``, as they
    cost some hundred times more) on every split and turn rule (:data:`TURN_RULES`): one row per
    training seed, then (with several seeds) one row over them (the games pooled; ``*_min`` / ``*_max``: the
    seeds' extremes). Returns the rows and, per ``label/split/rule``, the games of the first seed (for
    transcripts)."""
    rows: list[dict[str, Any]] = []
    firsts_seen: dict[str, list[GameRecord]] = {}
    for label, (a, b) in pairings.items():
        for split, (games, firsts, _) in splits.items():
            if (a.endswith(ROLLOUTS_SUFFIX) or b.endswith(ROLLOUTS_SUFFIX)) and split not in rollout_splits:
                continue
            for rule in rules:
                max_turns, cap_rule = TURN_RULES[rule]
                common = {"pairing": label, "agent_a": a, "agent_b": b, "split": split,
                          "in_sample": split == "selfplay", "protocol": "self-play", "max_turns": max_turns,
                          "cap_rule": cap_rule}
                pooled: list[GameRecord] = []
                per_seed: list[dict[str, Any]] = []
                for train_seed, agents in models.items():
                    t = time.time()
                    pa = make_agent(agents, a, temperature=temperature, seed=seed, rollouts=rollouts)
                    pb = make_agent(agents, b, temperature=temperature, seed=seed + 1, rollouts=rollouts)
                    records = play(pa, pb, games, first=firsts, max_turns=max_turns, cap_rule=cap_rule,
                                   batch_size=batch_size)
                    m = selfplay_metrics(records)
                    row = {"table": "3.10 per seed", **common, "train_seed": train_seed, **metrics_row(m),
                           "seconds": round(time.time() - t, 1)}
                    per_seed.append(row)
                    pooled += records
                    firsts_seen.setdefault(f"{label}/{split}/{rule}", records)
                    echo(f"{label} ({split}, {rule} rule, seed {train_seed}): {m.score_a:.2f} vs {m.score_b:.2f}, "
                         f"advantage {m.advantage:.2f} +- {m.ci95['advantage'] or 0:.2f}, agreement "
                         f"{100 * m.agreement:.1f}%, {m.turns:.1f} turns")
                rows += per_seed
                if len(per_seed) > 1:
                    spread = {f"{k}_{f.__name__}": f(r[k] for r in per_seed)
                              for k in ("advantage", "agreement") for f in (min, max)}
                    rows.append({"table": "3.10", **common, "train_seeds": len(per_seed),
                                 **metrics_row(selfplay_metrics(pooled)), **spread})
    return rows, firsts_seen
