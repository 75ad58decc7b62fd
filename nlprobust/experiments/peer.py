"""Our attacks beside a peer library's on the same sentences of our Multi30k table, in the same process."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nlprobust.core.cli import key_int
from nlprobust.peers.textattack import PeerSetupError
from nlprobust.results import summarize
from nlprobust.victims import Seq2SeqVictim

__all__ = ["OURS_PRESET", "WORD_SWAP_PRESET", "parse_attack_spec", "read_sentence_indices", "run_ours",
           "split_attack_specs", "victim_name"]

logger = logging.getLogger(__name__)

OURS_PRESET = {True: "multi30k-lstm", False: "multi30k-marian"}  # Seq2Sick preset by victim kind (word level?)
WORD_SWAP_PRESET = {True: "multi30k-lstm", False: "multi30k-marian"}  # word-swap settings by victim kind


def parse_attack_spec(spec: str) -> tuple[str, dict[str, int]]:
    """``word-swap`` or ``word-swap:max_changes=2`` -> ``("word-swap", {"max_changes": 2})``: an attack of the
    registry with integer overrides of its victim's preset (a word budget, say)."""
    from nlprobust.attacks import ATTACKS

    name, _, rest = spec.partition(":")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r} in {spec!r}; expected one of {sorted(ATTACKS)}")
    known = {f.name for f in dataclasses.fields(ATTACKS[name][0].config_class)}
    over: dict[str, int] = {}
    for part in filter(None, rest.split(",")):
        kv = key_int(part)
        if kv is None:
            raise ValueError(f"bad override {part!r} in {spec!r}; expected NAME=INTEGER, e.g. max_changes=2")
        if kv[0] not in known:
            raise ValueError(f"{name} has no setting {kv[0]!r} (in {spec!r})")
        over[kv[0]] = kv[1]
    return name, over


def split_attack_specs(text: str) -> list[str]:
    """``"word-swap,word-swap:max_changes=2,verify=8,seq2sick"`` -> the three specs (a comma followed by
    ``NAME=`` continues the spec before it); each is checked with :func:`parse_attack_spec`."""
    specs = [a for a in re.split(r",(?![a-z_]+=)", text) if a]
    for spec in specs:
        parse_attack_spec(spec)
    return specs


def run_ours(victim: Seq2SeqVictim, items: Sequence[tuple[int, str]], attacks: Sequence[str], name: str,
             runs: Path, batch_size: int = 25, *, echo: Callable[[str], None] = logger.info) -> list[dict[str, Any]]:
    """Our attacks (non-overlap, ``at-least-as-long``) on the same sentences in the same process: one row per
    attack spec (:func:`parse_attack_spec`; Seq2Sick twice: without and with the reduction pass, one search).
    Per-sentence records go to ``<runs>/recipes/peer_textattack/ours_<name>_<attack>_<tag>.jsonl`` (resumable);
    progress lines to ``echo``."""
    from nlprobust.attacks import AttackItem, build_attack, portfolio_preset, preset, word_swap_preset
    from nlprobust.experiments.tables import attack_views, run_attacks

    rows = []
    for spec in attacks:
        attack_name, over = parse_attack_spec(spec)
        if attack_name == "seq2sick":
            cfg: Any = preset(OURS_PRESET[victim.word_level], "nonoverlap", **over)
        elif attack_name == "portfolio":  # the word swap, then Seq2Sick + reduction: both of the victim's presets
            settings: dict[str, Any] = dict(over)  # e.g. enough=2
            cfg = portfolio_preset(OURS_PRESET[victim.word_level], "nonoverlap", **settings)
        else:
            cfg = word_swap_preset(WORD_SWAP_PRESET[victim.word_level], "nonoverlap", **over)
        recs = run_attacks(runs / "recipes" / "peer_textattack" / f"ours_{name}_{attack_name}_{cfg.tag()}.jsonl",
                           [AttackItem(i, s) for i, s in items], build_attack(attack_name, victim, cfg), batch_size,
                           f"ours {spec}", False, echo=echo)
        m = over.get("max_changes")
        budget = "" if m is None else f", at most {m} word{'' if m == 1 else 's'}"
        for label, _, view in attack_views(attack_name, cfg, recs):
            s = summarize(view)
            label = f"nlprobust {label}{budget} (white-box)"
            rows.append({"table": "peer", "dataset": "multi30k", "victim": name, "method": label, "n": s["n"],
                         "success": s["success"], "bleu": s["bleu"], "changed": s["changed"],
                         "success_nlprobust": s["success"], "bleu_nlprobust": s["bleu"],
                         "changed_nlprobust": s["changed"], "success_at_1": s["success_at_1"],
                         "success_positional": (s.get("success_by_criterion") or {}).get("positional"),
                         "queries": s["forward_passes"], "model_calls": s["beam_decodes"],
                         "seconds_per_sentence": s["time_s"], "errors": s["errors"],
                         "config": {"attack": attack_name, "preset": cfg.preset, "criterion": cfg.criterion,
                                    "overrides": over}})
    return rows


def victim_name(spec: str) -> str:
    """A file-name-safe name for a victim spec: the run folder of a checkpoint (``multi30k_lstm_small`` for
    ``onmt:runs/multi30k_lstm_small/best.pt``) or the model folder (``hf:runs/multi30k_marian_small``)."""
    kind, _, where = spec.partition(":")
    p = Path(where.rstrip("/"))
    name = p.parent.name if kind == "onmt" and p.parent.name else p.name
    return re.sub(r"[^\w.-]+", "_", name) or kind


def read_sentence_indices(path: str | os.PathLike[str], victim: str | None = None) -> list[int]:
    """Test-sentence indices of our results file: those attacked on ``victim`` (key ``victim.<name>.sentences``)
    when given, else the top-level ``sentences``."""
    p = Path(path)
    if not p.is_file():
        raise PeerSetupError(f"results file not found: {p} (run recipes/multi30k_seq2sick.py first, or pass --results)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PeerSetupError(f"{p} is not valid JSON ({exc})") from exc
    if victim is not None:
        entry = (data.get("victim") or {}).get(victim) if isinstance(data, dict) else None
        if not isinstance(entry, dict) or "sentences" not in entry:
            raise PeerSetupError(f"{p} has no sentence list for victim {victim!r} (key victim.{victim}.sentences)")
        idx = entry["sentences"]
    else:
        idx = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(idx, list) or not all(isinstance(i, int) for i in idx):
        raise PeerSetupError(f"{p} has no list of sentence indices under key 'sentences'")
    return idx

