"""Attack tables: resumable attack runs, one row per attack (success, size, quality, cost), the configuration of
each row, and the selection of tuned settings."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

__all__ = ["CHANGE_COST", "attack_views", "judged_on_other_text", "parse_overrides", "reused_settings", "run_attacks",
           "select_best", "table_attack_config", "table_row"]

logger = logging.getLogger(__name__)

CHANGE_COST = 0.02  # tuned settings are ranked by success - CHANGE_COST * changed words (1 word = 2 points)


def run_attacks(path: str | os.PathLike[str], items: list[Any], attack: Any, batch: int, what: str,
                report_only: bool, *, echo: Callable[[str], None] = logger.info,
                archive: tuple[str | os.PathLike[str], str] | None = None,
                searched: Sequence[dict[str, Any]] | None = None,
                redo: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """Attack ``items`` with the project's resumable runner (:func:`nlprobust.core.runner.run_items`; one JSON
    line per sentence in ``path``, keyed by the item's index, chunks of ``batch``; sentences already there are
    not attacked again) and return the records of all ``items``; with ``report_only`` nothing is attacked and
    the records found are returned. One process: a table needs all its records in one place.

    ``archive``: ``(file, victim fingerprint)`` of a gzipped copy of the records kept beside the results (e.g. in
    the repository), so that a fresh checkout with the same victim resumes and reports without attacking again:
    its records missing from ``path`` are restored first, and it is rewritten from ``path`` at the end.
    :class:`~nlprobust.core.runio.ArchiveMismatch` when it was made on another victim.

    ``searched``: records of an earlier run of the same search (other reduction options): instead of searching
    again, the attack's reduction pass runs on them (:meth:`~nlprobust.attacks.base.TextAttack.reduce_records`);
    every item needs one.

    ``redo``: records already in ``path`` (or its archive) for which it holds are removed first and done again
    (e.g. :func:`judged_on_other_text`); with ``searched``, the items whose earlier record it picks are searched
    afresh instead of reduced again."""
    from nlprobust.core.runio import JsonlLog, read_archive, read_jsonl, write_archive
    from nlprobust.core.runner import Shard, run_items

    wanted = {it.index for it in items}
    if archive is not None:
        kept = read_archive(*archive)
        if kept:
            log = JsonlLog(path)
            missing = [r for r in kept if r.get("index") not in log.done]
            log.extend(missing)
            if missing:
                echo(f"  {what}: {len(missing)} records restored from {archive[0]}")
    earlier = {r.get("index"): r for r in searched or ()}
    if searched is not None and not report_only:
        missing = [it.index for it in items if it.index not in earlier]
        if missing:
            raise ValueError(f"{what}: no earlier search for {len(missing)} of {len(items)} inputs (e.g. index "
                             f"{missing[0]}): run the earlier settings on them first, or search afresh")
    if redo is not None and report_only:
        echo(f"  {what}: --report-only: records to do again are reported as they are")
    elif redo is not None:
        log = JsonlLog(path)
        if n := log.drop(r.get("index") for r in log.records if r.get("index") in wanted and redo(r)):
            echo(f"  {what}: {n} records to do again")
            if archive is not None:  # an interrupted run must not restore them from the archive
                write_archive(archive[0], log.records, archive[1])
    every: list[dict[str, Any]] | None = None
    if report_only:
        every = read_jsonl(path)
        recs = [r for r in every if r.get("index") in wanted]
        if len(recs) < len(items):
            echo(f"  {what}: {len(items) - len(recs)} of {len(items)} inputs not attacked yet (--report-only)")
    else:
        t = time.time()
        # without earlier searches, or where redo picks the earlier search: search afresh; else reduce again
        stale = {i for i, r in earlier.items() if redo is not None and redo(r)}

        def process(_c: int, chunk: list[Any]) -> list[dict[str, Any]]:
            fresh = [it for it in chunk if searched is None or it.index in stale]
            again = [it for it in chunk if searched is not None and it.index not in stale]
            done = [r.to_dict() for r in attack.attack_batch(fresh)] if fresh else []
            done += [r.to_dict() for r in attack.reduce_records([earlier[it.index] for it in again], again)
                     ] if again else []
            by_index = {r.get("index"): r for r in done}
            return [by_index[it.index] for it in chunk]
        outcome = run_items(items, process, path,
                            keys=[it.index for it in items], chunk_size=batch, shard=Shard(), desc=what,
                            unit="sent", partial=True)  # an attack judges each sentence on its own
        echo(f"  {what}: {len(outcome.records)}/{len(items)} done ({time.time() - t:.0f}s)")
        recs = outcome.records
    if archive is not None:
        every = read_jsonl(path) if every is None else every  # the run may hold records of other items too
        if every:
            write_archive(archive[0], every, archive[1])
    return recs


def judged_on_other_text(rec: dict[str, Any]) -> bool:
    """Whether a record was written with the literal unknown word ``<unk>`` for a word-level victim's
    out-of-vocabulary source word (in its source words, its adversarial text or its text before the reduction).
    Such texts re-encode to other ids than the attack's (``<``, ``unk``, ``>``), so every trial that kept the word
    was judged on another input: the final success where its text holds ``<unk>``, and the search's and the
    reduction's path (e.g. a revert to the unknown word) where the attack changed it. Texts and source words now
    keep the input's own words (:meth:`~nlprobust.victims.base.Seq2SeqVictim.render_source`), so a record done
    again is not picked again."""
    texts = [rec.get("adversarial"), (rec.get("before_reduction") or {}).get("adversarial")]
    return "<unk>" in (rec.get("source_words") or ()) or any("<unk>" in t for t in texts if t)


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


def portfolio_view(members: dict[str, tuple[Any, list[dict[str, Any]]]]
                   ) -> tuple[str, bool, list[dict[str, Any]], str, dict[str, Any]] | None:
    """The portfolio's table row built from its members' runs (``{attack: (config, records)}``): the word swap,
    then Seq2Sick + reduction where the swap found no one-word success (``nlprobust.attacks.Portfolio``'s
    searches, on the members' own batches), as ``(label, reduction, records, preset, config)``; None unless
    both ran."""
    from nlprobust.attacks.portfolio import portfolio_records

    if not {"word-swap", "seq2sick"} <= set(members):
        return None
    recs = portfolio_records([members["word-swap"][1], members["seq2sick"][1]])
    return ("portfolio", True, recs, members["seq2sick"][0].preset,
            {"members": {a: members[a][0].tag() for a in ("word-swap", "seq2sick")}, "enough": 1})


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


def reused_settings(cfg: Any, overrides: dict[str, Any]) -> Any:
    """``cfg`` with the reduction options ``overrides`` (``--reuse-search``): the earlier settings whose searches
    are reduced again; a clear error when an override is not a reduction-only option of ``cfg``."""
    try:
        earlier = replace(cfg, **overrides)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--reuse-search: {exc}") from None
    if not cfg.same_search(earlier):
        raise SystemExit(f"--reuse-search: {', '.join(sorted(overrides))} change the search itself, not only the "
                         "reduction: search afresh instead")
    return earlier


def parse_overrides(text: str) -> dict[str, Any]:
    """``"trade=0,swap_lexicon=0"`` -> ``{"trade": 0, "swap_lexicon": 0}`` (values read as JSON, else text)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--reuse-search: {part!r} is not OPTION=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
