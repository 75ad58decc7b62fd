"""Text-attack results: summaries of per-sentence records, their markdown table, and the sections a results
document adds for text victims and adversarial examples (the JSON-lines logs, run metadata, results files and
their renderer are :mod:`nlprobust.core`'s)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def without_reduction(record: dict[str, Any]) -> dict[str, Any]:
    """An attack record as the attack without its reduction pass returned it: the search's own result and cost
    (``before_reduction``), marked ``reduction: False``; records without that field are returned as they are."""
    before = record.get("before_reduction") or {}
    if not before:
        return record
    # the reduced input's word lists do not describe the search's input: leave them out rather than mislead
    out = {k: v for k, v in record.items() if k not in ("adversarial_words", "changed_positions")}
    return {**out, **before, "reduction": False}


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Success rate over attacked sentences; sizes (BLEU, chrF, token error rate, words changed) averaged over
    successful ones; ``success_at_k``: the share of sentences attacked successfully with at most ``k`` changed
    words (ranks attacks by strength and size at once); costs per sentence; the criterion of the records and,
    for non-overlap records, the success rate under each criterion."""
    recs = list(records)
    ok = [r for r in recs if not r.get("error")]
    succ = [r for r in ok if r.get("success")]
    n = len(ok)

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    out: dict[str, Any] = {
        "n": n,
        "errors": len(recs) - n,
        "success": len(succ) / n if n else None,
        "bleu": mean([r["bleu"] for r in succ]),
        "changed": mean([r["changed"] for r in succ]),
        "bleu_all": mean([r["bleu"] for r in ok]),
        "changed_all": mean([r["changed"] for r in ok]),
        "time_s": mean([r.get("time_s", 0.0) for r in ok]),
    }
    for k in (1, 2, 3):
        out[f"success_at_{k}"] = sum(1 for r in succ if r["changed"] <= k) / n if n else None
    for key in ("chrf", "ter", "changed_before_reduction"):
        vals = [r[key] for r in succ if key in r]
        out[key] = mean(vals) if len(vals) == len(succ) else None
    for key in ("forward_passes", "backward_passes", "beam_decodes"):
        vals = [r[key] for r in ok if key in r]
        out[key] = mean(vals) if ok and len(vals) == len(ok) else None
    crits = {r.get("criterion") for r in ok if r.get("criterion")}
    out["criterion"] = crits.pop() if len(crits) == 1 else (sorted(c for c in crits if c) or None)
    by = [r["success_by_criterion"] for r in ok if r.get("success_by_criterion")]
    if n and len(by) == n:
        out["success_by_criterion"] = {c: sum(1 for b in by if b.get(c)) / n for c in sorted(by[0])}
    return out


def fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def summary_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown table of summaries: one row per (label, summary)."""
    out = ["| run | criterion | n | success % | success <=1 / <=2 / <=3 words % | BLEU | chrF | # changed | errors "
           "| s/sentence |", "|---|---|---|---|---|---|---|---|---|---|"]

    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    for label, s in rows:
        at = " / ".join(pct(s.get(f"success_at_{k}")) for k in (1, 2, 3))
        out.append(f"| {label} | {s.get('criterion') or '-'} | {s['n']} | {pct(s['success'])} | {at} | "
                   f"{fmt(s['bleu'])} | {fmt(s.get('chrf'))} | {fmt(s['changed'], '.2f')} | {s['errors']} | "
                   f"{fmt(s['time_s'], '.2f')} |")
    return "\n".join(out)


def victim_lines(data: dict[str, Any]) -> list[str]:
    """A results file's text victims (key ``victim``): test BLEU of translators, Gigaword ROUGE of summarizers."""
    out = []
    for name, v in (data.get("victim") or {}).items():
        if isinstance(v, dict) and "test_bleu" in v:
            tb = v["test_bleu"]
            out.append(f"Victim `{name}`: test BLEU {tb.get('bleu')} on {tb.get('n')} sentences (beam 5, sacrebleu).")
        if isinstance(v, dict) and "rouge" in v:
            rg = v["rouge"]
            out.append(f"Victim `{name}`: Gigaword test ROUGE-1/2/L F1 {rg.get('rouge1')} / {rg.get('rouge2')} / "
                       f"{rg.get('rougeL')} on {rg.get('n')} pairs (beam 5; models trained on the full corpus: "
                       "about 30-35 / 12-17 / 28-32).  ")
    return out


def example_lines(data: dict[str, Any]) -> list[str]:
    """A results file's adversarial ``examples`` (a list, or lists by method): input, adversarial input (changed
    words in bold), and both outputs."""
    ex = data.get("examples") or {}
    if isinstance(ex, list):
        ex = {"": ex}
    if not ex:
        return []
    out = ["Examples (changed words in **bold**):", ""]
    for method, items in ex.items():
        for e in items:
            kw = f" — keywords: {' '.join(e['keywords'])}" if e.get("keywords") else ""
            out.append(f"- *{method}*{kw}  " if method else f"- {kw.removeprefix(' — ')}  ")
            out.append(f"  input: {e['source']}  ")
            out.append(f"  adversarial: {e['adversarial']}  ")
            out.append(f"  output: {e['original_output']}  ")
            out.append(f"  adversarial output: {e['adversarial_output']}")
    out.append("")
    return out
