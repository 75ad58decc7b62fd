"""Render every ``recipes/results/*.json`` into ``docs/RESULTS.md`` (ours beside the paper's) and into a
``.md`` beside each JSON.

    python recipes/render_results.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "recipes" / "results"
OUT = ROOT / "docs" / "RESULTS.md"
SKIP = {"config", "paper", "table"}
RATE_KEYS = {"success", "agreement", "accuracy", "robust_accuracy", "rate", "par", "pareto", "selected", "sr",
             "clean_accuracy"}

HEADER = """# Results

Every table here is rendered from `recipes/results/*.json` by `python recipes/render_results.py`; the JSON
files hold the numbers, the exact command, scale, hardware, versions and git SHA of the run. Rates are
shown in %. "paper" columns quote the thesis.
"""


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if key in RATE_KEYS or key.endswith(("_rate", "_acc")) or key.startswith("success_"):
            return f"{100 * v:.1f}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _table(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in SKIP and k not in cols:
                cols.append(k)
    paper_cols: list[str] = []
    for r in rows:
        for k in (r.get("paper") or {}):
            if k not in paper_cols:
                paper_cols.append(k)
    head = cols + [f"paper {k}" for k in paper_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_fmt(k, r.get(k)) for k in cols] + [_fmt(k, (r.get("paper") or {}).get(k)) for k in paper_cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_one(data: dict[str, Any], *, figure_prefix: str = "") -> str:
    """Markdown of one results file; figures (file names beside the JSON) are linked with ``figure_prefix``."""
    out = [f"## {data.get('title', data['recipe'])}", ""]
    meta = [f"scale `{data.get('scale')}`", f"hardware: {data.get('hardware')}"]
    if isinstance(data.get("attack_seconds_sum"), (int, float)):  # a report assembled from logs of several runs
        meta.append(f"attack time {data['attack_seconds_sum'] / 60:.1f} min (sum over images and processes)")
    elif "wall_time_s" in data:
        meta.append(f"wall time {data['wall_time_s'] / 60:.1f} min")
    meta.append(f"seed {data.get('seed')}")
    out.append("; ".join(meta) + ".  ")
    command = str(data.get("command"))
    if " --note " in command:  # the notes are printed below the tables
        command = command.split(" --note ")[0] + " --note ..."
    out.append(f"Command: `{command}` (git `{str(data.get('git_sha', ''))[:10]}`)")
    out.append("")
    for name, v in (data.get("victim") or {}).items():
        if isinstance(v, dict) and "test_bleu" in v:
            tb = v["test_bleu"]
            out.append(f"Victim `{name}`: test BLEU {tb.get('bleu')} on {tb.get('n')} sentences (beam 5, sacrebleu).")
        if isinstance(v, dict) and "rouge" in v:
            rg = v["rouge"]
            out.append(f"Victim `{name}`: Gigaword test ROUGE-1/2/L F1 {rg.get('rouge1')} / {rg.get('rouge2')} / "
                       f"{rg.get('rougeL')} on {rg.get('n')} pairs (beam 5; models trained on the full corpus: "
                       "about 30-35 / 12-17 / 28-32).  ")
    for name, v in (data.get("victims") or {}).items():
        if isinstance(v, dict) and "test_accuracy" in v:
            paper = f" (thesis: {100 * v['paper_accuracy']:.1f}%)" if v.get("paper_accuracy") else ""
            out.append(f"Victim `{name}`: test accuracy {100 * v['test_accuracy']:.2f}%{paper}, trained on "
                       f"{v.get('n_train')} images for {v.get('epochs')} epochs ({v.get('seconds_per_epoch')} s per "
                       "epoch).  ")
            if "accuracy_exact_pixels" in v:
                out.append("On the 761 test images whose original pixels are known: "
                           f"{100 * v['accuracy_exact_pixels']:.1f}% with the original pixels, "
                           f"{100 * v['accuracy_jpeg_same_images']:.1f}% with their JPEG copies.  ")
    if data.get("victim") or data.get("victims"):
        out.append("")
    by_table: dict[str, list[dict[str, Any]]] = {}
    for r in data.get("rows", []):
        by_table.setdefault(str(r.get("table", "")), []).append(r)
    for t, rows in by_table.items():
        if t:
            out.append(f"Table {t}:")
            out.append("")
        out.append(_table(rows))
        out.append("")
    for note in data.get("notes", []):
        out.append(f"- {note}")
    if data.get("notes"):
        out.append("")
    for fig in data.get("figures", []):
        out.append(f"![{fig}]({figure_prefix}{fig})")
        out.append("")
    ex = data.get("examples") or {}
    if isinstance(ex, list):
        ex = {"": ex}
    if ex:
        out.append("Examples (changed words in **bold**):")
        out.append("")
        for method, items in ex.items():
            for e in items:
                kw = f" — keywords: {' '.join(e['keywords'])}" if e.get("keywords") else ""
                out.append(f"- *{method}*{kw}  " if method else f"- {kw.removeprefix(' — ')}  ")
                out.append(f"  input: {e['source']}  ")
                out.append(f"  adversarial: {e['adversarial']}  ")
                out.append(f"  output: {e['original_output']}  ")
                out.append(f"  adversarial output: {e['adversarial_output']}")
        out.append("")
    dialogues = [t for t in data.get("transcripts") or [] if isinstance(t, dict) and "attack" in t]
    if dialogues:
        out.append("Example dialogues:")
        out.append("")
        for t in dialogues:
            out.append(f"*{t['attack']}*" + (f" (scenario {t['index']})" if "index" in t else ""))
            out.append("")
            out.append("```")
            out.append(t["text"])
            out.append("```")
            for edit in t.get("edits", []):
                out.append(f"- {edit}")
            out.append("")
    return "\n".join(out)


# the thesis tables first, in the order of the thesis; then tuning runs and benchmarks
ORDER = ("multi30k_seq2sick", "multi30k_ablation", "peer_textattack", "summarization", "negotiation_selfplay",
         "negotiation", "vision", "tune_", "bench_")


def _rank(path: Path) -> tuple[int, str]:
    stem = path.stem
    return next((i for i, p in enumerate(ORDER) if stem.startswith(p)), len(ORDER)), stem


def publish(path: str | Path, payload: dict[str, Any], *, render_docs: bool = True) -> None:
    """Write a recipe's results JSON; re-render ``docs/RESULTS.md`` when it lands in ``recipes/results``."""
    from nlprobust.core.results import write_recipe_results

    write_recipe_results(path, payload)
    if render_docs and Path(path).resolve().parent == RESULTS.resolve():
        render()


def render(results_dir: Path = RESULTS, out: Path = OUT) -> str:
    parts = [HEADER]
    for p in sorted(results_dir.glob("*.json"), key=_rank):
        data = json.loads(p.read_text())
        if "recipe" not in data:
            continue
        p.with_suffix(".md").write_text(render_one(data) + "\n")  # the recipe's own table, beside its JSON
        rel = Path("..") / results_dir.resolve().relative_to(ROOT) if results_dir.resolve().is_relative_to(ROOT) \
            else results_dir.resolve()
        parts.append(render_one(data, figure_prefix=f"{rel.as_posix()}/"))
    text = "\n".join(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


if __name__ == "__main__":
    render()
    print(f"wrote {OUT}", file=sys.stderr)
