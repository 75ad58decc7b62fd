"""Where the corpora live: ``--data-dir``, else ``NLPROBUST_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "data_root"]


class DataNotFoundError(FileNotFoundError):
    """A corpus folder or file is missing; the message says where it was looked for."""


def data_root(data_dir: str | os.PathLike[str] | None = None, *, required: bool = True) -> Path | None:
    """Resolve the folder holding the corpora (``multi30k/``, ``gigaword/``, ...)."""
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    elif os.environ.get("NLPROBUST_DATA"):
        candidates.append(Path(os.environ["NLPROBUST_DATA"]))
    else:
        candidates.append(Path("..") / "shared" / "data")
        candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    if required:
        where = ", ".join(str(c) for c in candidates)
        raise DataNotFoundError(
            f"data folder not found (looked in: {where}); pass --data-dir or set NLPROBUST_DATA"
        )
    return None
