"""Results: incremental JSONL with resume, summaries, and the recipe results files (ARCHITECTURE.md format)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class JsonlLog:
    """Append-only JSON-lines file, one record per finished item, flushed and synced as written.

    Opening an existing file keeps its complete records (a line cut short by a crash is dropped), so an
    interrupted run resumes where it stopped: :attr:`done` holds the ``key`` of every finished record.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: str = "index", resume: bool = True) -> None:
        self.path = Path(path)
        self.key = key
        self.records: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and resume:
            good_lines = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a partial last line from a crash
                if isinstance(rec, dict):
                    self.records.append(rec)
                    good_lines.append(line)
            self.path.write_text("".join(x + "\n" for x in good_lines), encoding="utf-8")
        else:
            self.path.write_text("", encoding="utf-8")
        self.done = {r.get(key) for r in self.records}

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records.append(record)
        self.done.add(record.get(self.key))


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


def run_metadata(command: list[str] | None = None) -> dict[str, Any]:
    """Hardware, versions, git SHA and command of the current run."""
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "onmt", "sacrebleu"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        sha = ""
    if torch.cuda.is_available():
        hardware = torch.cuda.get_device_name(0)
    else:
        hardware = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    argv = list(command if command is not None else sys.argv)
    if argv and argv[0].endswith(".py"):
        argv = ["python", os.path.relpath(argv[0]) if os.path.isabs(argv[0]) else argv[0], *argv[1:]]
    return {"hardware": hardware, "versions": versions, "git_sha": sha, "command": " ".join(argv)}


def write_recipe_results(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a recipe's results JSON (numbers as numbers) atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(p)
