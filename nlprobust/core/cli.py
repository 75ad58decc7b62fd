"""Command-line helpers shared by the scripts of every domain: scales, list and count options, display paths.

Every recipe takes ``--scale tiny|small|paper`` (:data:`SCALES`): ``tiny`` runs in the test suite in seconds,
``small`` on a few CPU cores within about an hour, ``paper`` at the thesis's sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["SCALES", "display_path", "echo", "parse_choices", "parse_counts"]

SCALES = ("tiny", "small", "paper")


def echo(message: str) -> None:
    """A progress line on standard output, flushed at once (a script's ``echo`` for the library's progress)."""
    print(message, flush=True)


def parse_choices(ap: argparse.ArgumentParser, text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """A comma-separated list of ``allowed`` names; anything else is an argparse error naming it."""
    items = [x for x in text.split(",") if x]
    for x in items:
        if x not in allowed:
            ap.error(f"unknown {what} {x!r}; expected some of {', '.join(allowed)}")
    return items


def key_int(item: str) -> tuple[str, int] | None:
    """``"KEY=N"`` (``N`` an integer) as ``(KEY, N)``; ``None`` when ``item`` has another form."""
    k, eq, n = item.partition("=")
    return (k, int(n)) if eq and n.lstrip("-").isdigit() else None


def parse_counts(ap: argparse.ArgumentParser, items: list[str], keys: tuple[str, ...], flag: str) -> dict[str, int]:
    """``KEY=N`` options (``N`` a positive integer, ``KEY`` among ``keys``) as a dict; errors name ``flag``."""
    out = {}
    for item in items:
        kv = key_int(item)
        if kv is None or kv[0] not in keys or kv[1] < 1:
            ap.error(f"{flag} expects KEY=N with KEY among {', '.join(keys)}, got {item!r}")
        out[kv[0]] = kv[1]
    return out


def display_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when it lies below it (as results files record folders), else as given."""
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
