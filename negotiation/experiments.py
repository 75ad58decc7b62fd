"""What the negotiation recipes share: the SV and RL agents of a scale, trained (or resumed, or reused) in
``<runs>/negotiation_sv_<scale>`` and ``<runs>/negotiation_rl_<scale>``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from negotiation.data import load_examples, load_scenarios
from negotiation.train import (
    is_complete,
    read_log,
    rl_preset,
    sv_preset,
    train_rl,
    train_supervised,
)
from nlprobust.core.cli import display_path

__all__ = ["train_agents"]

logger = logging.getLogger(__name__)


def train_agents(scale: str, runs: Path, data_dir: str | None, seed: int, device: str | None, progress: bool, *,
                 root: Path | None = None, echo: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Train (or resume, or reuse) the SV agent and then the RL agent (REINFORCE against the frozen SV agent) of
    ``scale``; returns, per agent (``sv``, ``rl``), its folder (relative to ``root`` when below it), config,
    whether this call trained it, and its training log. One line per agent goes to ``echo``."""
    info: dict[str, Any] = {}
    sv_dir, rl_dir = runs / f"negotiation_sv_{scale}", runs / f"negotiation_rl_{scale}"
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
                     valid=load_examples("val", data_dir, limit=rl_cfg.max_valid), device=device, progress=progress)
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
