"""One resumable runner for every domain, sharded across processes, GPUs and machines.

:func:`run_items` takes a list of items (sentences, images, negotiation scenarios), cuts it into fixed
chunks in input order, and calls ``process(chunk_index, items)`` on each chunk this process owns; the records
it returns (one per item, each carrying the item's ``key``) are appended to a JSON-lines file as each chunk
finishes, so a killed run resumes where it stopped and finished work is never redone.

Sharding uses the launcher's environment: under ``torchrun`` or ``accelerate launch`` every process reads
``RANK`` and ``WORLD_SIZE`` and owns the chunks ``c`` with ``c % WORLD_SIZE == RANK``. Each rank writes and
resumes its own shard file beside the output (``out.rank1-of-4.jsonl``); the rank that completes last merges
every shard, in input order, into the output the single-process run writes, then removes the shards. Because
chunks (and any per-chunk seeds, see :func:`nlprobust.core.runio.seed_for`) do not depend on the number of
processes, the merged output equals the single-process one. A killed rank can be relaunched alone with the
same command and ``RANK`` / ``WORLD_SIZE`` set by hand (or the CLIs' ``--shard RANK/WORLD``); no process
group is needed, only a folder every rank can write (a shared file system across machines).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nlprobust.core.runio import JsonlLog, atomic_write_text, read_jsonl

__all__ = ["read_items", "Shard", "shard_from_env", "parse_shard", "shard_path", "run_items", "RunOutcome",
           "merge_shards", "local_device"]

T = TypeVar("T")


def _decoded_lines(path: Path, encoding: str) -> list[tuple[str, str | None]]:
    """Each line of ``path`` decoded with ``encoding``: ``(text, None)``, or for a line that is not valid
    ``(text with the bad bytes replaced, an error naming the line and byte offset)``."""
    import codecs

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    out: list[tuple[str, str | None]] = []
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    offset = 0
    for n, orig in enumerate(lines, 1):
        raw = orig.removesuffix(b"\r")
        try:
            out.append((raw.decode(encoding), None))
        except UnicodeDecodeError as exc:
            out.append((raw.decode(encoding, errors="replace"),
                        f"{path}:{n}: not valid {encoding} at byte {offset + exc.start} of the file ({exc.reason}); "
                        f"pass the file's encoding with --encoding"))
        offset += len(orig) + 1
    return out


def read_items(source: Any, *, text_column: str = "text", split: str = "train",
               encoding: str = "utf-8") -> list[dict[str, Any]]:
    """The items of a run as dicts, in input order, with a clear error for bad input.

    ``source`` is a ``datasets.Dataset``; a plain-text file (one item per line, as ``{text_column: line}``);
    a JSON-lines file (one object per line); a ``.csv`` / ``.parquet`` / ``.json`` file or a folder written by
    ``Dataset.save_to_disk`` (read with ``datasets``); or ``hf:NAME`` / ``hf:NAME:SPLIT`` for a dataset on
    the Hub or in the local ``datasets`` cache. Every item must have ``text_column``. Text and JSON-lines files
    are read with ``encoding``; a line that does not decode becomes an item with an ``error`` (naming the line
    and the byte offset) instead of stopping the run, so the run writes it as a per-line error record.
    """
    if hasattr(source, "column_names") and hasattr(source, "__getitem__"):
        rows, where = [dict(r) for r in source], "the dataset"
    else:
        text = str(source)
        p = Path(text)
        if text.startswith("hf:"):
            from datasets import load_dataset

            name, _, sp = text[3:].partition(":")
            rows, where = [dict(r) for r in load_dataset(name, split=sp or split)], text
        elif p.is_dir():
            from datasets import load_from_disk

            ds = load_from_disk(str(p))
            if hasattr(ds, "keys"):  # a DatasetDict
                if split not in ds:
                    raise ValueError(f"{p}: no split {split!r} (has {sorted(ds.keys())})")
                ds = ds[split]
            rows, where = [dict(r) for r in ds], str(p)
        elif not p.is_file():
            raise FileNotFoundError(f"input file not found: {p}")
        elif p.suffix in (".csv", ".parquet", ".json"):
            from datasets import load_dataset

            kind = p.suffix[1:]
            rows, where = [dict(r) for r in load_dataset(kind, data_files=str(p), split="train")], str(p)
        elif p.suffix == ".jsonl":
            rows, where = [], str(p)
            for i, (line, bad) in enumerate(_decoded_lines(p, encoding)):
                if bad is not None:
                    rows.append({text_column: line, "error": bad})
                    continue
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{p}:{i + 1}: not valid JSON ({exc})") from exc
                if not isinstance(rec, dict):
                    raise ValueError(f"{p}:{i + 1}: expected a JSON object with a {text_column!r} field")
                rows.append(rec)
        else:
            rows, where = [], str(p)
            for line, bad in _decoded_lines(p, encoding):
                rows.append({text_column: line} if bad is None else {text_column: line, "error": bad})
    for i, r in enumerate(rows):
        if not isinstance(r.get(text_column), str):
            raise ValueError(f"{where}: item {i} has no text column {text_column!r} (columns: {sorted(r)})")
    return rows


@dataclass(frozen=True)
class Shard:
    """This process's part of a run: ``rank`` of ``world`` processes (``local_rank`` picks its GPU)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be in [0, world) and world >= 1, got rank {self.rank} of {self.world}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, chunk: int) -> bool:
        return chunk % self.world == self.rank

    def __str__(self) -> str:
        return f"{self.rank}/{self.world}"


def shard_from_env(environ: dict[str, str] | None = None) -> Shard:
    """The shard of this process from the variables ``torchrun`` and ``accelerate launch`` set (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``); one process (rank 0 of 1) when they are absent."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({exc})") from exc
    return Shard(rank, world, local)


def parse_shard(text: str | None) -> Shard:
    """``"RANK/WORLD"`` (a command-line ``--shard``) as a :class:`Shard`; ``None`` reads the environment."""
    if not text:
        return shard_from_env()
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"--shard must look like RANK/WORLD, e.g. 1/4, not {text!r}") from exc
    return Shard(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def local_device(shard: Shard, device: str | None) -> str | None:
    """The device of this rank: ``device`` as given, or ``cuda:<local rank>`` for several processes on a
    machine with CUDA (``None``: the library's default)."""
    if device is not None:
        return device
    import torch

    if shard.world > 1 and torch.cuda.is_available():
        return f"cuda:{shard.local_rank % torch.cuda.device_count()}"
    return None


def shard_path(out: str | os.PathLike[str], shard: Shard) -> Path:
    """Where ``shard`` writes its records: ``out`` itself for one process, else ``out.rankR-of-W<suffix>``."""
    p = Path(out)
    if shard.world == 1:
        return p
    return p.with_name(f"{p.stem}.rank{shard.rank}-of-{shard.world}{p.suffix}")


@dataclass
class RunOutcome:
    """What :func:`run_items` did: the records (all of them once merged, else this rank's), whether this
    process wrote the merged output, and the paths."""

    records: list[dict[str, Any]]
    merged: bool
    out: Path
    shard_file: Path
    complete: bool


def _chunks(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def merge_shards(out: str | os.PathLike[str], keys: Sequence[Hashable], world: int, *, key: str = "index",
                 remove: bool = True, include_out: bool = True) -> list[dict[str, Any]] | None:
    """Merge the shard files of a ``world``-process run into ``out`` in the order of ``keys`` (the items'
    keys in input order), written atomically; ``None`` while some item has no record yet. Records already in
    ``out`` (an earlier merge) count too unless ``include_out`` is false, so merging is idempotent; with
    ``remove`` the shards are deleted after the merge."""
    found: dict[Hashable, dict[str, Any]] = {}
    paths = [shard_path(out, Shard(r, world)) for r in range(world)]
    for p in ([Path(out)] if include_out else []) + paths:
        for rec in read_jsonl(p):
            found.setdefault(_hashable(rec.get(key)), rec)
    if any(_hashable(k) not in found for k in keys):
        return None
    merged = [found[_hashable(k)] for k in keys]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged))
    if remove:
        for p in paths:
            p.unlink(missing_ok=True)
    return merged


def _hashable(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, list) else value


def run_items(items: Sequence[T], process: Callable[[int, list[T]], Sequence[dict[str, Any]]],
              out: str | os.PathLike[str], *, keys: Sequence[Hashable] | None = None, key: str = "index",
              chunk_size: int = 32, shard: Shard | None = None, resume: bool = True, desc: str = "",
              unit: str = "item", progress: bool = True, partial: bool = False) -> RunOutcome:
    """Run ``process`` over ``items`` in chunks of ``chunk_size``, resumably and sharded (module docstring).

    Args:
        items: everything the run covers, in input order (every rank gets the same list).
        process: ``(chunk_index, chunk_items) -> records``, one record per item with ``record[key]`` equal to
            the item's key. It must depend only on its arguments (seed per chunk, not per process) for the
            sharded output to equal the single-process one.
        out: the JSON-lines output (resumed when ``resume``).
        keys: the items' keys in input order (default: their positions 0..n-1).
        shard: this process's part (default: from the launcher's environment).
        partial: a chunk with finished items (records restored from elsewhere, or removed to be done again)
            passes ``process`` only its unfinished items, for a ``process`` whose record of an item does not
            depend on the chunk's other items; by default the whole chunk runs again (per-chunk seeds stay
            aligned) and only the unfinished items' records are kept.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    shard = shard if shard is not None else shard_from_env()
    item_keys = list(range(len(items))) if keys is None else list(keys)
    if len(item_keys) != len(items):
        raise ValueError(f"{len(items)} items but {len(item_keys)} keys")
    hkeys = [_hashable(k) for k in item_keys]
    if len(set(hkeys)) != len(hkeys):
        raise ValueError("item keys must be unique")
    out_path = Path(out)
    own = shard_path(out_path, shard)
    chunks = _chunks(len(items), chunk_size)
    mine = [(c, rng) for c, rng in enumerate(chunks) if shard.owns(c)]
    log = JsonlLog(own, key=key, resume=resume)
    done = {_hashable(k) for k in log.done}
    if shard.world > 1 and resume:  # an earlier merge of this run holds finished records too
        owned = {hkeys[i] for _, rng in mine for i in rng}
        log.extend([r for r in read_jsonl(out_path) if _hashable(r.get(key)) in owned - done])
        done = {_hashable(k) for k in log.done}
    todo = [(c, rng) for c, rng in mine if any(hkeys[i] not in done for i in rng)]
    total = sum(len(rng) for _, rng in mine)
    finished = sum(1 for _, rng in mine for i in rng if hkeys[i] in done)
    if finished:
        where = f"rank {shard}: " if shard.world > 1 else ""
        print(f"{where}resuming: {finished} of {total} {unit}s already in {own}", file=sys.stderr)
    from tqdm.auto import tqdm

    label = f"{desc} [rank {shard}]" if shard.world > 1 else desc
    bar = tqdm(total=total, initial=finished, desc=label, unit=unit,
               disable=not progress, dynamic_ncols=True, position=shard.local_rank if shard.world > 1 else None)
    for c, rng in todo:
        pending = [i for i in rng if hkeys[i] not in done]
        given = pending if partial else rng
        records = list(process(c, [items[i] for i in given]))
        wanted = {hkeys[i] for i in given}
        got = {_hashable(r.get(key)) for r in records}
        if got != wanted:
            raise RuntimeError(f"chunk {c}: process returned records for keys {sorted(map(str, got))[:5]}..., "
                               f"expected one per item it was given")
        log.extend([r for r in records if _hashable(r.get(key)) not in done])
        done |= got
        bar.update(len(pending))
    bar.close()
    if shard.world == 1:
        order = {k: i for i, k in enumerate(hkeys)}
        recs = sorted((r for r in log.records if _hashable(r.get(key)) in order),
                      key=lambda r: order[_hashable(r.get(key))])
        return RunOutcome(recs, merged=True, out=out_path, shard_file=own, complete=len(recs) == len(items))
    merged = merge_shards(out_path, item_keys, shard.world, key=key, include_out=resume)
    if merged is not None:
        return RunOutcome(merged, merged=True, out=out_path, shard_file=own, complete=True)
    return RunOutcome(list(log.records), merged=False, out=out_path, shard_file=own, complete=False)
