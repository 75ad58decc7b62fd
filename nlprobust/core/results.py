"""Recipe results files (``recipes/results/<recipe>.json``): flat rows, numbers as numbers, written atomically,
and their markdown rendering.

Every results file records its ``recipe``, ``title``, scale, hardware, wall time, seed, command, versions and git
SHA (:func:`nlprobust.core.runio.run_metadata`). Its ``rows`` are flat records, each naming its ``table``; rates
are numbers in [0, 1] (shown in %); ``paper`` holds the thesis's values of a row. Optional keys: ``victim`` /
``victims`` (the models attacked), ``notes``, ``figures`` (file names beside the JSON) and ``transcripts``
(example interactions of an attack).

:class:`ResultsDocument` renders a folder of results files into one markdown document and a ``.md`` beside each
JSON; the domains add their own sections (:data:`Section`) to describe victims or show examples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlprobust.core.runio import atomic_write_json

__all__ = ["RATE_KEYS", "ResultsDocument", "Section", "format_value", "markdown_table", "render_one",
           "transcript_lines", "write_recipe_results"]

#: A renderer of part of a results file: the markdown lines it adds (none when the file lacks its keys).
Section = Callable[[dict[str, Any]], list[str]]

SKIP = {"config", "paper", "table", "ci95"}  # row keys that are not table columns
RATE_KEYS = {"success", "agreement", "accuracy", "robust_accuracy", "rate", "par", "pareto", "selected", "sr",
             "clean_accuracy"}  # besides keys ending in _rate / _acc and starting with success_


def write_recipe_results(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a recipe's results JSON (numbers as numbers) atomically."""
    atomic_write_json(path, payload)


def format_value(key: str, v: Any) -> str:
    """A table cell: rates in %, other floats to three decimals (one from 100 on), lists and dicts as JSON."""
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


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One markdown table of ``rows``: every key in order of appearance, then the ``paper`` values beside. A
    row's ``ci95`` (half-widths of 95% confidence intervals, by key) shows as ``mean ± half-width``."""
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
        ci = r.get("ci95") or {}
        cells = [format_value(k, r.get(k)) + (f" ± {format_value(k, ci[k])}" if ci.get(k) is not None
                                              and r.get(k) is not None else "") for k in cols]
        cells += [format_value(k, (r.get("paper") or {}).get(k)) for k in paper_cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def transcript_lines(data: dict[str, Any]) -> list[str]:
    """The ``transcripts`` that name their ``attack``: each as a code block, followed by its ``edits``."""
    dialogues = [t for t in data.get("transcripts") or [] if isinstance(t, dict) and "attack" in t]
    out: list[str] = []
    if dialogues:
        out += ["Example dialogues:", ""]
        for t in dialogues:
            out.append(f"*{t['attack']}*" + (f" (scenario {t['index']})" if "index" in t else ""))
            out += ["", "```", t["text"], "```"]
            out += [f"- {edit}" for edit in t.get("edits", [])]
            out.append("")
    return out


def render_one(data: dict[str, Any], *, describe: Sequence[Section] = (), extras: Sequence[Section] = (),
               figure_prefix: str = "") -> str:
    """Markdown of one results file: title, run facts, the ``describe`` sections (victims), the rows by table,
    notes, figures (linked with ``figure_prefix``), then the ``extras`` sections (examples)."""
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
    for section in describe:
        out += section(data)
    if data.get("victim") or data.get("victims"):
        out.append("")
    by_table: dict[str, list[dict[str, Any]]] = {}
    for r in data.get("rows", []):
        by_table.setdefault(str(r.get("table", "")), []).append(r)
    for t, rows in by_table.items():
        if t:
            out.append(f"Table {t}:")
            out.append("")
        out.append(markdown_table(rows))
        out.append("")
    for note in data.get("notes", []):
        out.append(f"- {note}")
    if data.get("notes"):
        out.append("")
    for fig in data.get("figures", []):
        out.append(f"![{fig}]({figure_prefix}{fig})")
        out.append("")
    for section in extras:
        out += section(data)
    return "\n".join(out)


@dataclass(frozen=True, kw_only=True)
class ResultsDocument:
    """Every results file of ``results_dir`` rendered into ``out`` (and into a ``.md`` beside each JSON).

    Attributes:
        results_dir: the folder of results files.
        out: the markdown document written.
        root: the repository root; figures below it are linked relative to ``out``'s folder (``../<path>``).
        header: the document's opening text.
        order: file-name prefixes in the order their files appear (others follow, by name).
        describe: sections rendered after a file's run facts (its victims).
        extras: sections rendered after its notes and figures (examples, transcripts).
    """

    results_dir: Path
    out: Path
    root: Path
    header: str
    order: tuple[str, ...] = ()
    describe: tuple[Section, ...] = ()
    extras: tuple[Section, ...] = ()

    def _rank(self, path: Path) -> tuple[int, str]:
        stem = path.stem
        return next((i for i, p in enumerate(self.order) if stem.startswith(p)), len(self.order)), stem

    def render_one(self, data: dict[str, Any], *, figure_prefix: str = "") -> str:
        """Markdown of one results file with this document's sections."""
        return render_one(data, describe=self.describe, extras=self.extras, figure_prefix=figure_prefix)

    def render(self) -> str:
        """Write a ``.md`` beside each results file and the whole document to ``out``; returns its text."""
        root = self.root.resolve()
        folder = self.results_dir.resolve()
        rel = Path("..") / folder.relative_to(root) if folder.is_relative_to(root) else folder
        parts = [self.header]
        for p in sorted(self.results_dir.glob("*.json"), key=self._rank):
            data = json.loads(p.read_text())
            if "recipe" not in data:
                continue
            p.with_suffix(".md").write_text(self.render_one(data) + "\n")  # the recipe's own table, beside its JSON
            parts.append(self.render_one(data, figure_prefix=f"{rel.as_posix()}/"))
        text = "\n".join(parts)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(text)
        return text

    def publish(self, path: str | os.PathLike[str], payload: dict[str, Any], *, render_docs: bool = True) -> None:
        """Write a recipe's results JSON; re-render the document when it lands in ``results_dir``."""
        write_recipe_results(path, payload)
        if render_docs and Path(path).resolve().parent == self.results_dir.resolve():
            self.render()
