"""**REINFORCE** (:func:`train_rl`, thesis eq. 3.8): the RL agent (initialised from the SV model) negotiates
with a frozen partner (the SV model) on scenarios from ``selfplay.txt``, words sampled at temperature 0.5.
After each batch of dialogues, every token the agent wrote (and its final choice) is reinforced with the
discounted, baseline-subtracted reward ``gamma^(T - t) (r - mu)``, where ``T`` is the agent's last action
(its choice), ``r`` its score (0 without agreement) and ``mu`` the running mean of all rewards so far
(divided by their running standard deviation, as FAIR does). One supervised batch of ``train.txt`` follows
every 4 RL dialogues so that the agent keeps writing English.

Deviations from the paper / FAIR code:

* REINFORCE is batched: one update per ``batch_size`` dialogues, the loss averaged over them (FAIR: one update
  per dialogue). The choice's log-probability is reinforced too (``train_choice``), the choice then being
  sampled during RL (``sample_choice``); FAIR's default (``--eps 0``) takes the argmax choice and reinforces
  only the words. Games that hit the turn cap do not reinforce the choice (it did not affect the outcome).
* The supervised batches that fall due during one update (4 for 16 dialogues) make one optimiser step on
  their accumulated gradients (FAIR: a step per batch, between single-dialogue RL steps). Separate steps
  would move the weights about ten times more by supervision than by RL once RL is batched.
* The agent plays without dropout during RL dialogues (FAIR keeps its model in training mode).
* Multi-process (``accelerate launch`` with several processes) is not supported: one CPU or one GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from negotiation.agents import RnnAgent
from negotiation.corpus import Batch, Example, iter_batches
from negotiation.dialog import GameRecord, play
from negotiation.domain import Scenario
from negotiation.model import WEIGHTS_FILE, DialogModel
from negotiation.training.checkpoint import (
    BEST_DIR,
    append_log,
    begin_run,
    load_checkpoint,
    make_optimizer,
    rewrite_log,
    save_checkpoint,
    save_model_dir,
)
from negotiation.training.config import ReinforceConfig
from negotiation.training.evaluate import evaluate_selfplay, evaluate_supervised
from negotiation.training.supervised import supervised_step
from nlprobust.core.runio import complete_dir, seed_for

logger = logging.getLogger(__name__)


def reinforce_loss(token_logprobs: torch.Tensor, token_counts: torch.Tensor, advantages: torch.Tensor, *,
                   gamma: float, choice_logprobs: torch.Tensor | None = None,
                   choice_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The REINFORCE loss of eq. 3.8, averaged over ``B`` dialogues.

    The agent's actions in a dialogue are its ``n`` written tokens, then (when ``choice_logprobs`` is given)
    its choice. The last action is reinforced with the dialogue's advantage ``A = r - mu``, each earlier one
    with ``A`` times one more factor ``gamma``: token ``k`` (0-based) gets ``gamma^(n - 1 - k + c) A`` with
    ``c = 1`` when the choice counts, else 0.

    Args:
        token_logprobs: ``(B, N)`` log-probabilities of the written tokens, 0-padded
            (:meth:`~negotiation.agents.RnnAgent.written_logprobs`).
        token_counts: ``(B,)`` written tokens per dialogue.
        advantages: ``(B,)`` baseline-subtracted rewards (constants).
        gamma: discount factor.
        choice_logprobs: ``(B,)`` log-probability of each final choice, or None to reinforce words only.
        choice_mask: ``(B,)`` bool, the dialogues whose choice is reinforced (default all).

    Returns:
        ``-(sum of log-prob x return) / B``, a scalar.
    """
    B, N = token_logprobs.shape
    dev = token_logprobs.device
    adv = advantages.detach().to(dev, token_logprobs.dtype)
    counts = token_counts.to(dev)
    pos = torch.arange(N, device=dev).unsqueeze(0)
    valid = pos < counts.unsqueeze(1)
    shift = 0 if choice_logprobs is None else 1
    exponent = (counts.unsqueeze(1) - 1 - pos + shift).clamp(min=0).to(token_logprobs.dtype)
    returns = adv.unsqueeze(1) * torch.pow(torch.full_like(exponent, gamma), exponent) * valid
    total = (token_logprobs * returns).sum()
    if choice_logprobs is not None:
        weight = adv if choice_mask is None else adv * choice_mask.to(dev, adv.dtype)
        total = total + (choice_logprobs * weight).sum()
    return -total / max(1, B)


@dataclass
class RewardBaseline:
    """Running mean (and standard deviation) of every reward seen so far: FAIR's baseline ``mu``."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    normalize: bool = True

    def advantages(self, rewards: Sequence[float]) -> list[float]:
        """Add ``rewards`` to the history, then return ``(r - mean) / max(1e-4, std)`` (or ``r - mean``)."""
        for r in rewards:
            self.n += 1
            self.total += float(r)
            self.total_sq += float(r) ** 2
        mean = self.total / max(1, self.n)
        std = math.sqrt(max(0.0, self.total_sq / max(1, self.n) - mean**2))
        scale = max(1e-4, std) if self.normalize else 1.0
        return [(float(r) - mean) / scale for r in rewards]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class UpdateStats:
    """What one REINFORCE update saw: rewards and outcomes of its dialogues, its loss, gradient norm."""

    dialogues: int
    reward: float
    score: float
    partner_score: float
    agreement: float
    turns: float
    loss: float
    grad_norm: float
    sv_batches: int = 0
    sv_loss: float = 0.0
    records: list[GameRecord] = field(default_factory=list, repr=False)


def reinforce_update(model: DialogModel, partner: DialogModel, scenarios: Sequence[Scenario], *,
                     cfg: ReinforceConfig, optimizer: Any, baseline: RewardBaseline, seed: int,
                     backward: Callable[[torch.Tensor], None] | None = None,
                     clip: Callable[[Any, float], Any] | None = None, partner_complement: bool = False) -> UpdateStats:
    """Play ``scenarios`` (the agent is side A, first in even games) and take one REINFORCE step.

    Args:
        model: the RL agent's model (updated in place).
        partner: the frozen partner's model.
        scenarios: one batch of games.
        cfg: temperature, gamma, reward kind, choice handling, clip.
        optimizer: the RL optimiser over ``model``'s parameters.
        baseline: the running reward baseline (updated).
        seed: seeds both agents' sampling.
        backward: how to back-propagate (default ``loss.backward()``; ``accelerator.backward`` in training).
        clip: how to clip (default ``torch.nn.utils.clip_grad_norm_``).
        partner_complement: the partner takes the complement of the agent's choice (training a target against
            a forced-agreement attacker, :mod:`negotiation.training.adversarial`); excludes ``cfg.complement``.
            The agent then learns from its words only: its choice decides the split by itself, and reinforcing
            it teaches the agent to claim everything (which an ordinary partner refuses).
    """
    if partner_complement and cfg.complement:
        raise ValueError("only one side can take the complement of the other's choice")
    agent = RnnAgent(model, name="rl", temperature=cfg.temperature, max_words=cfg.max_words,
                     sample_choice=cfg.sample_choice, track_grad=True, seed=seed_for(seed, 0))
    other = RnnAgent(partner, name="partner", temperature=cfg.temperature, max_words=cfg.max_words,
                     seed=seed_for(seed, 1))
    side: Literal["a", "b"] | None = "a" if cfg.complement else ("b" if partner_complement else None)
    records = play(agent, other, scenarios, max_turns=cfg.max_turns, complement=side)
    rewards = [float(r.scores[0] - (r.scores[1] if cfg.reward == "advantage" else 0)) for r in records]
    adv = torch.tensor(baseline.advantages(rewards), device=model.device)
    lps, counts = agent.written_logprobs()
    # the choice decides the outcome where the game reached <selection>, and everywhere under forced agreement
    selected = torch.tensor([r.selected or side is not None for r in records], device=model.device)
    loss = reinforce_loss(lps, counts, adv, gamma=cfg.gamma,
                          choice_logprobs=agent.choice_logprobs
                          if cfg.train_choice and not cfg.complement and not partner_complement else None,
                          choice_mask=selected)
    optimizer.zero_grad(set_to_none=True)
    if loss.requires_grad:
        (backward or torch.Tensor.backward)(loss)
        norm = (clip or torch.nn.utils.clip_grad_norm_)(model.parameters(), cfg.clip)
        optimizer.step()
        grad_norm = float(norm)
    else:  # nothing written and nothing chosen with a gradient (cannot happen with RnnAgent, kept for safety)
        grad_norm = 0.0
    n = len(records)
    return UpdateStats(dialogues=n, reward=sum(rewards) / n, score=sum(r.scores[0] for r in records) / n,
                       partner_score=sum(r.scores[1] for r in records) / n,
                       agreement=sum(r.agreed for r in records) / n, turns=sum(r.turns for r in records) / n,
                       loss=float(loss.detach()), grad_norm=grad_norm, records=records)


def train_rl(sv_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: ReinforceConfig, *,
             scenarios: Sequence[Scenario], train: Sequence[Example], valid: Sequence[Example],
             partner_dir: str | os.PathLike[str] | None = None,
             select_scenarios: Sequence[Scenario] | None = None, device: str | torch.device | None = None,
             progress: bool = True, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """REINFORCE self-play: the RL agent (initialised from ``sv_dir``) against a frozen partner; resume if started.

    Args:
        sv_dir: the SV model the agent starts from (a :func:`train_supervised` folder).
        out_dir: the run folder (see the module docstring); a finished run there is returned as is.
        cfg: the configuration (:data:`RL_PRESETS`, :func:`rl_preset`).
        scenarios: the games (``selfplay.txt``); the first ``cfg.max_scenarios`` are used, reshuffled per epoch.
        train: dialogues for the interleaved supervised batches.
        valid: dialogues for the perplexity of the agent before training and after each epoch.
        partner_dir: the frozen partner (default: ``sv_dir``).
        select_scenarios: the validation games of ``cfg.select_every`` (e.g. ``load_scenarios("val",
            both_orders=True)``); needed when it is > 0.
        device: as for :func:`train_supervised`.
        progress: show progress bars.
        on_epoch_end: called with each epoch's log record after its checkpoint is written.

    Returns:
        ``out_dir`` as a Path, loadable with ``DialogModel.from_pretrained``.
    """
    scen = list(scenarios)[: cfg.max_scenarios]
    train, valid = list(train)[: cfg.max_train], list(valid)[: cfg.max_valid]
    if not scen:
        raise ValueError("no self-play scenarios")
    sel_scen = list(select_scenarios or [])
    if cfg.select_every and not sel_scen:
        raise ValueError("select_every > 0 needs select_scenarios (validation games, not the training ones)")
    if not valid or (cfg.sv_every and not train):
        raise ValueError(f"need validation dialogues (got {len(valid)}) and, with sv_every > 0, training dialogues "
                         f"(got {len(train)})")
    out = Path(out_dir)
    partner_path = Path(partner_dir) if partner_dir is not None else Path(sv_dir)
    run_config = {"kind": "reinforce", "config": cfg.to_dict(), "sv_model": str(Path(sv_dir).resolve()),
                  "partner": str(partner_path.resolve()), "scenarios": len(scen), "train_dialogues": len(train),
                  "valid_dialogues": len(valid), "select_scenarios": len(sel_scen) if cfg.select_every else 0}
    started = begin_run(out, run_config, cfg.seed, device)
    if started is None:
        return out
    ckpt, accelerator = started
    dev = accelerator.device
    model = DialogModel.from_pretrained(ckpt if ckpt is not None else sv_dir)
    partner = DialogModel.from_pretrained(partner_path, device=dev).requires_grad_(False)
    rl_opt = make_optimizer(model.parameters(), "sgd", cfg.lr, cfg.momentum, cfg.nesterov)
    sv_opt = make_optimizer(model.parameters(), "sgd", cfg.sv_lr, cfg.momentum, cfg.nesterov)
    model, rl_opt, sv_opt = accelerator.prepare(model, rl_opt, sv_opt)
    raw: DialogModel = accelerator.unwrap_model(model)
    optimizers = {"rl": rl_opt, "sv": sv_opt}
    if ckpt is None:
        st: dict[str, Any] = {"kind": "reinforce", "epoch": 0, "update": 0, "updates": 0, "dialogues": 0,
                              "baseline": RewardBaseline(normalize=cfg.normalize_rewards).to_dict(),
                              "epoch_stats": {}, "done": False, "elapsed_s": 0.0, "history": [], "best_select": None}
        val = evaluate_supervised(raw, valid, batch_size=cfg.eval_batch_size)
        start = {"kind": "epoch", "epoch": 0, "val_ppl": val["ppl"], "val_ppl_fair": val["ppl_fair"],
                 "val_sel": val["sel"]}
        st["history"].append(start)
        rewrite_log(out, st["history"])
        logger.info("RL training into %s from %s (val ppl %.3f), %d scenarios, partner %s", out, sv_dir,
                    val["ppl"], len(scen), partner_path)
    else:
        st = load_checkpoint(ckpt, optimizers)
        rewrite_log(out, st["history"])
        logger.info("resuming %s at epoch %d, update %d", out, st["epoch"] + 1, st["update"])
    baseline = RewardBaseline(**st["baseline"])
    sv_batches: list[Batch] = (list(iter_batches(train, cfg.sv_batch_size, raw.words, raw.items, seed=cfg.seed))
                               if cfg.sv_every else [])
    n_updates = math.ceil(len(scen) / cfg.batch_size)

    keys = ("dialogues", "reward", "score", "partner_score", "agreement", "turns", "loss", "grad_norm", "sv_loss")

    def select(epoch: int) -> None:
        """Play the validation games; keep the weights in ``out/best`` when the agent scores more than ever."""
        _, m = evaluate_selfplay(raw, partner, sel_scen, temperature=cfg.temperature, seed=cfg.seed,
                                 batch_size=2 * cfg.eval_batch_size, max_turns=cfg.max_turns, max_words=cfg.max_words,
                                 complement="a" if cfg.complement else None)
        reward = m.score_a if cfg.reward == "score" else m.advantage
        best = st["best_select"] is None or reward > st["best_select"]["reward"]
        record = {"kind": "select", "epoch": epoch, "updates": st["updates"], "dialogues": st["dialogues"],
                  "reward": reward, "score": m.score_a, "partner_score": m.score_b, "advantage": m.advantage,
                  "agreement": m.agreement, "turns": m.turns, "best": best}
        if best:
            st["best_select"] = record
            save_model_dir(out / BEST_DIR, raw)
        st["history"].append(record)
        append_log(out, record)

    while not st["done"]:
        epoch = st["epoch"] + 1
        order = list(range(len(scen)))
        random.Random(seed_for(cfg.seed, epoch)).shuffle(order)
        sums: dict[str, float] = {k: float(st["epoch_stats"].get(k, 0.0)) for k in (*keys, "updates", "sv_batches")}
        t_part = time.perf_counter()
        bar = tqdm(range(st["update"], n_updates), total=n_updates, initial=st["update"], desc=f"rl epoch {epoch}",
                   unit="update", disable=not progress, dynamic_ncols=True)
        for k in bar:
            games = [scen[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]
            stats = reinforce_update(raw, partner, games, cfg=cfg, optimizer=rl_opt, baseline=baseline,
                                     seed=seed_for(cfg.seed, epoch, k), backward=accelerator.backward,
                                     clip=accelerator.clip_grad_norm_)
            before = st["dialogues"]
            st["dialogues"] += stats.dialogues
            n_sv = st["dialogues"] // cfg.sv_every - before // cfg.sv_every if cfg.sv_every else 0
            if n_sv:
                rng = random.Random(seed_for(cfg.seed, epoch, k, 2))
                stats.sv_batches = n_sv
                stats.sv_loss = supervised_step(raw, [sv_batches[rng.randrange(len(sv_batches))] for _ in range(n_sv)],
                                                sv_opt, accelerator, cfg.sv_clip, forward=model)
            st["update"], st["updates"] = k + 1, st["updates"] + 1
            n = stats.dialogues
            for key in keys:
                sums[key] += n * getattr(stats, key) if key != "dialogues" else n
            sums["updates"] += 1
            sums["sv_batches"] += stats.sv_batches
            st["baseline"] = baseline.to_dict()
            if cfg.log_every and st["updates"] % cfg.log_every == 0:
                record = {"kind": "update", "epoch": epoch, "update": k + 1, "updates": st["updates"],
                          "dialogues": st["dialogues"], "reward": stats.reward, "score": stats.score,
                          "partner_score": stats.partner_score, "agreement": stats.agreement, "turns": stats.turns,
                          "loss": stats.loss, "grad_norm": stats.grad_norm, "sv_loss": stats.sv_loss,
                          "baseline": baseline.total / max(1, baseline.n)}
                st["history"].append(record)
                append_log(out, record)
            if cfg.select_every and st["updates"] % cfg.select_every == 0:
                select(epoch)
            if progress:
                d = max(1.0, sums["dialogues"])
                bar.set_postfix(score=f"{sums['score'] / d:.2f}", partner=f"{sums['partner_score'] / d:.2f}",
                                agree=f"{sums['agreement'] / d:.2f}")
            if cfg.save_every and (k + 1) % cfg.save_every == 0 and k + 1 < n_updates:
                st["epoch_stats"] = dict(sums)
                st["elapsed_s"] += time.perf_counter() - t_part
                t_part = time.perf_counter()
                save_checkpoint(out, raw, optimizers, st)
        bar.close()
        if cfg.select_every and st["updates"] % cfg.select_every:
            select(epoch)
        val = evaluate_supervised(raw, valid, batch_size=cfg.eval_batch_size)
        st["elapsed_s"] += time.perf_counter() - t_part
        d = max(1.0, sums["dialogues"])
        record = {"kind": "epoch", "epoch": epoch, "updates": st["updates"], "dialogues": st["dialogues"],
                  **{k: sums[k] / d for k in keys if k not in ("dialogues", "sv_loss")},
                  "sv_batches": int(sums["sv_batches"]),
                  "sv_loss": sums["sv_loss"] / d if sums["sv_batches"] else None,
                  "val_ppl": val["ppl"], "val_ppl_fair": val["ppl_fair"], "val_sel": val["sel"],
                  "elapsed_s": round(st["elapsed_s"], 2)}
        logger.info("rl epoch %d: score %.2f vs %.2f, agreement %.1f%%, val ppl %.3f", epoch, record["score"],
                    record["partner_score"], 100 * record["agreement"], val["ppl"])
        st.update(epoch=epoch, update=0, epoch_stats={}, done=epoch >= cfg.epochs)
        st["history"].append(record)
        append_log(out, record)
        save_checkpoint(out, raw, optimizers, st)
        if on_epoch_end is not None:
            on_epoch_end(record)

    chosen = st.get("best_select")
    if chosen is not None:  # the result: the weights of the best validation games
        best_dir = complete_dir(out / BEST_DIR, (WEIGHTS_FILE,))
        assert best_dir is not None, "the best validation weights are saved before the state that names them"
        raw.load_state_dict(DialogModel.from_pretrained(best_dir).state_dict())
    raw.save_pretrained(out)
    last: dict[str, Any] = next((r for r in reversed(st["history"]) if r["kind"] == "epoch"), {})
    summary = {"kind": "summary", "done": True, "epochs": st["epoch"], "updates": st["updates"],
               "dialogues": st["dialogues"], "val_ppl": last.get("val_ppl"), "val_ppl_fair": last.get("val_ppl_fair"),
               "selected": chosen, "elapsed_s": round(st["elapsed_s"], 2)}
    if chosen is not None:
        val = evaluate_supervised(raw, valid, batch_size=cfg.eval_batch_size)
        summary.update(val_ppl=val["ppl"], val_ppl_fair=val["ppl_fair"])
    rewrite_log(out, [*st["history"], summary])
    logger.info("saved the RL model to %s (%d dialogues, val ppl %s)", out, st["dialogues"], summary["val_ppl"])
    return out


__all__ = ["RewardBaseline", "UpdateStats", "reinforce_loss", "reinforce_update", "train_rl"]
