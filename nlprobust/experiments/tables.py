"""Attack tables: resumable attack runs, one row per attack (success, size, quality, cost), the configuration of
each row, and the selection of tuned settings."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CHANGE_COST", "attack_views", "run_attacks", "select_best", "table_attack_config", "table_row"]

logger = logging.getLogger(__name__)

CHANGE_COST = 0.02  # tuned settings are ranked by success - CHANGE_COST * changed words (1 word = 2 points)


def run_attacks(victim: Any, log: Any, items: list[Any], attack: Any, batch: int, what: str,
                report_only: bool, *, echo: Callable[[str], None] = logger.info) -> list[dict[str, Any]]:
    """Attack the ``items`` not yet in ``log`` (a :class:`~nlprobust.core.runio.JsonlLog` keyed by index;
    in batches of ``batch``; none with ``report_only``) and return the records of all ``items``. Progress lines
    name ``what`` and go to ``echo``."""
    todo = [it for it in items if it.index not in log.done]
    if report_only and todo:
        echo(f"  {what}: {len(todo)} of {len(items)} inputs not attacked yet (--report-only)")
        todo = []
    t = time.time()
    for s in range(0, len(todo), batch):
        for r in attack.attack_batch(todo[s : s + batch]):
            log.append(r.to_dict())
        done = sum(1 for it in items if it.index in log.done)
        echo(f"  {what}: {done}/{len(items)} done ({time.time() - t:.0f}s)")
    wanted = {it.index for it in items}
    return [r for r in log.records if r["index"] in wanted]


def table_row(recs: list[dict[str, Any]], lm: Any, *,
              words: Callable[[dict[str, Any]], list[str]] | None = None,
              source: Callable[[dict[str, Any]], list[str]] | None = None) -> dict[str, Any]:
    """One attack-table row from per-sentence records: success, size, quality and cost. Perplexity under ``lm``
    (a :class:`~nlprobust.metrics.KneserNeyLM`) of the successful adversarial inputs, split by ``words``
    (default: tokenised text), beside that of the same inputs before the attack (``source``)."""
    from nlprobust.results import summarize
    from nlprobust.text import tokenize

    words = words or (lambda r: tokenize(r["adversarial"]))
    source = source or (lambda r: tokenize(r["source"]))
    summ = summarize(recs)
    ok = [r for r in recs if r.get("success") and not r.get("error")]
    row: dict[str, Any] = {
        "n": summ["n"], "criterion": summ["criterion"], "success": summ["success"],
        "changed": summ["changed"], "bleu": summ["bleu"], "chrf": summ["chrf"], "ter": summ["ter"],
        "perplexity": round(lm.perplexity([words(r) for r in ok]), 1) if ok else None,
        "perplexity_original": round(lm.perplexity([source(r) for r in ok]), 1) if ok else None,
        "success_at_1": summ["success_at_1"], "success_at_2": summ["success_at_2"],
        "success_at_3": summ["success_at_3"], "seconds_per_sentence": summ["time_s"],
        "forward_passes": summ["forward_passes"], "backward_passes": summ["backward_passes"],
        "beam_decodes": summ["beam_decodes"], "errors": summ["errors"],
    }
    for crit, rate in (summ.get("success_by_criterion") or {}).items():
        row[f"success_{crit.replace('-', '_')}"] = rate
    return row


def attack_views(attack_name: str, cfg: Any, recs: list[dict[str, Any]]
                 ) -> list[tuple[str, bool, list[dict[str, Any]]]]:
    """``(row label, reduction, records)`` per table row one attack's run gives: a reduced Seq2Sick run gives the
    paper-faithful row (the search's own result, kept in every record) and the reduced row."""
    from nlprobust.results import without_reduction

    if attack_name == "seq2sick" and cfg.reduce:
        return [("seq2sick", False, [without_reduction(r) for r in recs]), ("seq2sick + reduction", True, recs)]
    return [(attack_name, cfg.reduce, recs)]


def table_attack_config(attack: str, mode: str, k: int, *, seq2sick_preset: str, word_swap_preset: str,
                        iterations: int | None = None, **common: Any) -> Any:
    """The configuration of ``attack`` for one table row (``k`` keywords): Seq2Sick with the reduction pass (one
    run gives the paper's row and the reduced one; ``iterations`` overrides the preset's), or the word swap
    with a word budget that grows with the keywords (each needs at least one word of its own)."""
    from nlprobust.attacks import preset
    from nlprobust.attacks import word_swap_preset as ws_preset

    if attack == "seq2sick":
        its = {"iterations": iterations} if iterations else {}
        return preset(seq2sick_preset, mode, reduce=True, **common, **its)
    return ws_preset(word_swap_preset, mode, **common, **({"max_changes": 3 * k + 2} if k > 1 else {}))


def select_best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The tuning row with the best trade-off between success rate and changed words
    (``success - CHANGE_COST * changed``; a row without successes counts 99 words)."""
    return max(rows, key=lambda r: (r["success"] or 0.0) - CHANGE_COST * (r["changed"] or 99.0))
