"""The project's results document: every ``recipes/results/*.json`` rendered into ``docs/RESULTS.md`` (ours
beside the paper's) and into a ``.md`` beside each JSON, with the sections of every domain.

    python recipes/render_results.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nlprobust import results as text_results
from nlprobust.core.results import ResultsDocument, transcript_lines
from nlprobust.vision import results as vision_results

__all__ = ["HEADER", "ORDER", "publish", "render", "results_document"]

HEADER = """# Results

Every table here is rendered from `recipes/results/*.json` by `python recipes/render_results.py`; the JSON
files hold the numbers, the exact command, scale, hardware, versions and git SHA of the run. Rates are
shown in %. "paper" columns quote the thesis.
"""

# the thesis tables first, in the order of the thesis; then tuning runs and benchmarks
ORDER = ("multi30k_seq2sick", "multi30k_ablation", "peer_textattack", "one_word_bound", "summarization",
         "negotiation_selfplay", "negotiation", "vision", "tune_", "bench_")


def results_document(root: str | os.PathLike[str]) -> ResultsDocument:
    """The results document of the repository at ``root``: ``recipes/results`` into ``docs/RESULTS.md``."""
    root = Path(root)
    return ResultsDocument(results_dir=root / "recipes" / "results", out=root / "docs" / "RESULTS.md", root=root,
                           header=HEADER, order=ORDER,
                           describe=(text_results.victim_lines, vision_results.victim_lines),
                           extras=(text_results.example_lines, transcript_lines))


def render(root: str | os.PathLike[str]) -> str:
    """Re-render ``docs/RESULTS.md`` (and the ``.md`` beside each results file) of the repository at ``root``."""
    return results_document(root).render()


def publish(root: str | os.PathLike[str], path: str | os.PathLike[str], payload: dict[str, Any], *,
            render_docs: bool = True) -> None:
    """Write a recipe's results JSON to ``path``; re-render the document of ``root`` when it lands in its
    ``recipes/results``."""
    results_document(root).publish(path, payload, render_docs=render_docs)
