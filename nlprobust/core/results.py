"""Recipe results files (``recipes/results/<recipe>.json``): flat rows, numbers as numbers, written atomically.

Every results file records its scale, hardware, wall time, seed, command, versions and git SHA
(:func:`nlprobust.core.runio.run_metadata`); ``recipes/render_results.py`` renders them into ``docs/RESULTS.md``.
"""

from __future__ import annotations

import os
from typing import Any

from nlprobust.core.runio import atomic_write_json

__all__ = ["write_recipe_results"]


def write_recipe_results(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a recipe's results JSON (numbers as numbers) atomically."""
    atomic_write_json(path, payload)
