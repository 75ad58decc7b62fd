"""Evaluation of negotiation agents: teacher-forced perplexity and selection accuracy on dialogues, and
self-play between two models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from negotiation.agents import DEFAULT_MAX_WORDS, DEFAULT_TEMPERATURE, RnnAgent
from negotiation.corpus import Example, iter_batches
from negotiation.dialog import CapRule, GameRecord, SelfPlayMetrics, play, selfplay_metrics
from negotiation.domain import MAX_TURNS, Scenario
from negotiation.model import DialogModel


@torch.no_grad()
def evaluate_supervised(model: DialogModel, examples: Sequence[Example], *, batch_size: int = 64,
                        progress: bool = False) -> dict[str, float]:
    """Teacher-forced validation of ``model`` on ``examples`` (eval mode, restored afterwards).

    Returns:
        ``lm`` (mean NLL per LM target token, summed over the whole set and divided once), ``ppl``
        (``exp(lm)``), ``ppl_fair`` (FAIR's convention: the speaker prefixes counted as targets too; ours
        are never predicted, the turn-taking decides them, so they count with probability 1), ``sel``
        (selection cross-entropy per slot), ``sel_acc`` (share of dialogues whose six
        slots are all predicted right); both over the ``sel_dialogues`` dialogues with a selection target
        (all of them unless ``config.sel_skip_unknown``), ``loss`` (``lm + sel_weight * sel``), ``tokens``
        and ``dialogues``.
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    was_training = model.training
    model.eval()
    nll = sel = 0.0
    tokens = tokens_fair = correct = sel_slots = sel_dialogues = 0
    try:
        for batch in tqdm(iter_batches(examples, batch_size, model.words, model.items, shuffle=False,
                                       device=model.device), desc="validation", unit="batch",
                          total=math.ceil(len(examples) / batch_size), disable=not progress, leave=False):
            out = model(batch)
            tgt = batch.tokens[:, 1:]
            mask = model.lm_target_mask(batch)
            prefix = batch.mask[:, 1:] & ((tgt == model.you_id) | (tgt == model.them_id))
            nll += float(F.cross_entropy(out.word_logits[mask], tgt[mask], reduction="sum"))
            tokens += int(mask.sum())
            tokens_fair += int((mask | prefix).sum())  # the prefixes count, as certain targets unless predicted
            sel += float(model.selection_loss(out.slot_logits, batch.choices, reduction="sum"))
            ok = model.sel_target_ok[batch.choices]
            counted = ok.all(-1)  # dialogues with a selection target
            sel_slots += int(ok.sum())
            sel_dialogues += int(counted.sum())
            correct += int(((out.slot_logits.argmax(-1) == batch.choices).all(-1) & counted).sum())
    finally:
        model.train(was_training)
    lm = nll / max(1, tokens)
    sel /= max(1, sel_slots)
    return {"loss": lm + model.config.sel_weight * sel, "lm": lm, "ppl": math.exp(min(lm, 50.0)),
            "ppl_fair": math.exp(min(nll / max(1, tokens_fair), 50.0)), "sel": sel,
            "sel_acc": correct / max(1, sel_dialogues), "tokens": tokens, "dialogues": len(examples),
            "sel_dialogues": sel_dialogues}


@torch.no_grad()
def evaluate_selfplay(model_a: DialogModel, model_b: DialogModel, scenarios: Sequence[Scenario], *,
                      temperature: float = DEFAULT_TEMPERATURE, batch_size: int | None = 128, seed: int = 0,
                      max_turns: int = MAX_TURNS, cap_rule: CapRule | None = None,
                      max_words: int = DEFAULT_MAX_WORDS, complement: Literal["a", "b"] | None = None,
                      names: tuple[str, str] = ("a", "b"),
                      progress: bool = False) -> tuple[list[GameRecord], SelfPlayMetrics]:
    """Self-play of two models (they may be the same object) on ``scenarios``: A writes first in even games.

    Both sample their words at ``temperature`` (seeded generators ``seed`` and ``seed + 1``) and take their
    highest-scoring choice, without dropout. ``max_turns``, ``cap_rule`` and ``complement`` are the rules of
    :func:`~negotiation.dialog.play`. Returns the game records and their metrics (A's view).
    """
    a = RnnAgent(model_a, name=names[0], temperature=temperature, max_words=max_words, seed=seed)
    b = RnnAgent(model_b, name=names[1], temperature=temperature, max_words=max_words, seed=seed + 1)
    records = play(a, b, scenarios, max_turns=max_turns, cap_rule=cap_rule, complement=complement,
                   batch_size=batch_size, progress=progress)
    return records, selfplay_metrics(records)


__all__ = ["evaluate_selfplay", "evaluate_supervised"]
