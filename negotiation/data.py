"""The Deal-or-No-Deal files of ``<data>/negotiate/``: dialogues and the scenarios games are played on.

One loader for each kind:

* :func:`load_examples` -- the dialogues of ``train.txt``, ``val.txt`` or ``test.txt`` (one line per side).
* :func:`load_scenarios` -- games to play: ``selfplay`` (the 4,086 pairs of ``selfplay.txt``, on which the RL
  agent and the RL attacker train, as in Lewis et al.), ``val`` or ``test`` (the distinct context pairs of the
  dialogues of ``val.txt`` / ``test.txt``: 200 each; the 200 of ``test.txt`` appear neither in
  ``selfplay.txt`` nor in ``val.txt``, so they are the held-out games), or a path to a ``selfplay.txt``-style
  file. With ``both_orders`` every pair is given in both orders (each side plays each context).

The data folder is the argument, else ``NLPROBUST_DATA``, else ``../shared/data``
(:func:`nlprobust.core.data.data_root`).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from negotiation.corpus import Example, parse_lines
from negotiation.domain import Scenario, parse_scenario_lines

SCENARIO_SPLITS = ("selfplay", "val", "test")
#: which scenarios are in-sample for agents and attackers trained on ``selfplay.txt``
HELD_OUT = {"selfplay": False, "val": False, "test": True}

__all__ = ["HELD_OUT", "SCENARIO_SPLITS", "load_examples", "load_scenarios"]


def _negotiate_file(name: str, data_dir: str | os.PathLike[str] | None) -> Path:
    from nlprobust.core.data import DataNotFoundError, data_root

    root = data_root(data_dir)
    assert root is not None
    path = root / "negotiate" / name
    if not path.is_file():
        raise DataNotFoundError(f"negotiation data file not found: {path} (expected the Deal-or-No-Deal folder "
                                f"negotiate/ under the data folder; pass --data-dir or set NLPROBUST_DATA)")
    return path


def load_examples(split: str, data_dir: str | os.PathLike[str] | None = None, *,
                  limit: int | None = None) -> list[Example]:
    """The first ``limit`` (None: all) lines of ``<data>/negotiate/{train,val,test}.txt``, parsed.

    Raises:
        nlprobust.core.data.DataNotFoundError: no data folder, or no such file in it.
        ValueError: unknown split or a malformed line.
    """
    name = "val" if split == "validation" else split
    if name not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; expected train, val or test")
    path = _negotiate_file(f"{name}.txt", data_dir)
    with path.open(encoding="utf-8") as fh:
        lines = [ln.rstrip("\n") for ln in itertools.islice(fh, limit)]
    return parse_lines(lines, source=str(path)).examples


def dialogue_scenarios(examples: list[Example]) -> list[Scenario]:
    """The distinct games of ``examples`` in order of first appearance, each once (a dialogue's two lines, and
    the same pair of contexts met again in either order, count once), as ``(first line's side, partner)``."""
    seen: set[Scenario] = set()
    out = []
    for ex in examples:
        sc = Scenario(ex.context, ex.partner_context)
        if sc not in seen and sc.swapped() not in seen:
            seen.add(sc)
            out.append(sc)
    return out


def load_scenarios(split: str | os.PathLike[str] = "selfplay", data_dir: str | os.PathLike[str] | None = None, *,
                   limit: int | None = None, both_orders: bool = False) -> list[Scenario]:
    """Games to play: the first ``limit`` (None: all) pairs of ``split`` (see the module docstring).

    Args:
        split: ``selfplay``, ``val``, ``test``, or the path of a ``selfplay.txt``-style file (two context
            lines per game).
        data_dir: the data folder.
        limit: keep the first this many pairs (before ``both_orders``).
        both_orders: give each pair as ``(x, y)`` then ``(y, x)``.

    Raises:
        nlprobust.core.data.DataNotFoundError: no data folder, or no such file in it.
        FileNotFoundError: ``split`` is a path that does not exist.
        ValueError: an unknown split name or a malformed line (named with its file and line).
    """
    name = str(split)
    if name in ("val", "validation", "test"):
        scenarios = dialogue_scenarios(load_examples(name, data_dir))[:limit]
    else:
        if name == "selfplay":
            path = _negotiate_file("selfplay.txt", data_dir)
        elif os.sep in name or name.endswith(".txt") or Path(name).is_file():
            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(f"scenario file not found: {path}")
        else:
            raise ValueError(f"unknown scenario split {name!r}; expected one of {list(SCENARIO_SPLITS)} or the "
                             f"path of a selfplay.txt-style file")
        with path.open(encoding="utf-8") as fh:
            lines = [ln.rstrip("\n") for ln in itertools.islice(fh, None if limit is None else 2 * limit)]
        scenarios = parse_scenario_lines(lines, source=str(path))
    if both_orders:
        scenarios = [s for sc in scenarios for s in (sc, sc.swapped())]
    return scenarios
