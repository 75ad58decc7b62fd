"""Render every ``recipes/results/*.json`` into ``docs/RESULTS.md`` (ours beside the paper's) and into a
``.md`` beside each JSON (``nlprobust.experiments.report``; the recipes re-render it when they publish).

    python recipes/render_results.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from nlprobust.experiments.report import results_document

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    doc = results_document(ROOT)
    doc.render()
    print(f"wrote {doc.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
