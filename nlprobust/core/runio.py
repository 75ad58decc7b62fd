"""Run I/O shared by every trainer and runner: JSON-lines logs, atomic writes and checkpoints, RNG state and
seeds, and run folders (config + versions + git SHA).

Policies, the same everywhere:

* **Torn lines.** A JSON-lines file is appended one complete line at a time (flushed and synced). When a run
  is killed mid-write, only the *last* line can be cut short: readers drop it (and a log opened for appending
  truncates it away). An unreadable line anywhere else is corruption, not a crash, and is an error naming the
  file and line.
* **Atomic writes.** Files are written to a temporary name in the same folder and renamed over the target;
  checkpoint folders are written beside the old one and swapped in (``old`` is renamed aside first, never
  deleted first), so a crash at any point leaves one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["JsonlLog", "read_jsonl", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "atomic_dir", "complete_dir", "rng_state", "set_rng_state", "seed_for",
           "versions", "git_sha", "run_metadata", "start_run"]


# --- JSON lines ---------------------------------------------------------------------------------------------


def _parse_lines(path: Path, data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Records of the file's bytes and the length of their complete part: every line but a last one without
    its newline (a write cut short by a crash), which is dropped. A newline-terminated line that does not
    parse is an error."""
    complete = data[: data.rfind(b"\n") + 1]
    records: list[dict[str, Any]] = []
    for i, line in enumerate(complete.decode("utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({exc}); the file is corrupt "
                             f"(only a last line without its newline is dropped as a torn write)") from exc
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: line {i + 1} is not a JSON object")
        records.append(rec)
    return records, len(complete)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete records of a JSON-lines file (empty when it does not exist); a torn last line is dropped
    and the file is left as it is (another process may be writing it)."""
    p = Path(path)
    if not p.is_file():
        return []
    return _parse_lines(p, p.read_bytes())[0]


class JsonlLog:
    """Append-only JSON-lines file, one record per finished item, flushed and synced as written.

    Opening an existing file keeps its complete records (a torn last line is cut away), so an interrupted run
    resumes where it stopped: :attr:`done` holds the ``key`` of every finished record. ``resume=False`` starts
    the file afresh.
    """

    def __init__(self, path: str | os.PathLike[str], *, key: str = "index", resume: bool = True) -> None:
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        if self.path.exists() and resume:
            data = self.path.read_bytes()
            self.records, complete = _parse_lines(self.path, data)
            if complete != len(data):  # cut the torn last line away before appending
                with open(self.path, "r+b") as fh:
                    fh.truncate(complete)
        else:
            self.path.write_text("", encoding="utf-8")
        self.done = {r.get(key) for r in self.records}

    def append(self, record: dict[str, Any]) -> None:
        self.extend([record])

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        recs = list(records)
        if not recs:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
            fh.flush()
            os.fsync(fh.fileno())
        self.records.extend(recs)
        self.done.update(r.get(self.key) for r in recs)

    def drop(self, keys: Iterable[Any]) -> int:
        """Remove the records of ``keys`` (atomically rewriting the file), so that a run does them again.
        Returns how many were removed."""
        gone = set(keys)
        kept = [r for r in self.records if r.get(self.key) not in gone]
        removed = len(self.records) - len(kept)
        if removed:
            atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
            self.records = kept
            self.done = {r.get(self.key) for r in kept}
        return removed


# --- record archives ------------------------------------------------------------------------------------------


class ArchiveMismatch(ValueError):
    """A record archive was written for another model than the one a run uses."""


def write_archive(path: str | os.PathLike[str], records: Iterable[dict[str, Any]], fingerprint: str) -> None:
    """Keep ``records`` in the gzipped JSON-lines file ``path`` (written atomically; the first line names the
    ``fingerprint`` of the model they were made on; gzip's timestamp is zero so equal records give equal bytes)."""
    import gzip

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"fingerprint": fingerprint}) + "\n"
    body += "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                    for r in sorted(records, key=lambda r: str(r.get("index"))))
    tmp = _tmp_name(p)
    with open(tmp, "wb") as fh:
        fh.write(gzip.compress(body.encode("utf-8"), mtime=0))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)


def read_archive(path: str | os.PathLike[str], fingerprint: str) -> list[dict[str, Any]]:
    """The records of the archive ``path`` (empty when it does not exist); :class:`ArchiveMismatch` when it was
    written for another ``fingerprint``."""
    import gzip

    p = Path(path)
    if not p.is_file():
        return []
    lines = gzip.decompress(p.read_bytes()).decode("utf-8").splitlines()
    head = json.loads(lines[0]) if lines else {}
    if head.get("fingerprint") != fingerprint:
        raise ArchiveMismatch(f"{p} holds records made on another model or other inputs (fingerprint "
                              f"{head.get('fingerprint')!r}, this run {fingerprint!r}): remove it to attack afresh")
    return [json.loads(x) for x in lines[1:] if x.strip()]


# --- atomic files and checkpoints ---------------------------------------------------------------------------


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(p)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """:func:`atomic_write_text` of ``payload`` as indented JSON (numbers as numbers)."""
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through a temporary file renamed over ``path``: a crash mid-save leaves the old file."""
    import torch

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(p)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_dir(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a checkpoint folder: ``write(tmp)`` fills a fresh temporary folder, which then replaces ``path``.

    The old folder is renamed to ``<path>.old`` before the new one takes its name and removed only after, so
    a crash at any point leaves a complete checkpoint at ``path`` or ``<path>.old`` (:func:`complete_dir`).
    """
    final = Path(path)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def complete_dir(path: str | os.PathLike[str], required: Iterable[str]) -> Path | None:
    """The last complete checkpoint folder written by :func:`atomic_dir`: ``path``, or ``<path>.old`` after a
    crash between the two renames; complete means every name in ``required`` exists in it."""
    final = Path(path)
    need = list(required)
    for d in (final, final.with_name(final.name + ".old")):
        if d.is_dir() and all((d / name).exists() for name in need):
            return d
    return None


# --- randomness ---------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python's and torch's (CPU and every CUDA device's) random states, for a checkpoint."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a :func:`rng_state`."""
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_for(*parts: int) -> int:
    """A deterministic seed from integers, e.g. ``seed_for(seed, chunk, side)`` (the same on every process and
    Python version, unlike ``hash`` of strings)."""
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**61 - 1)
    return s


# --- run metadata and folders -------------------------------------------------------------------------------


def versions(*modules: str) -> dict[str, str]:
    """Python's and torch's versions and those of ``modules`` that are installed (read from the installed
    distributions' metadata: nothing is imported, so no package's import-time notices are printed)."""
    from importlib import metadata

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    owners = metadata.packages_distributions()  # top-level module -> the distributions that provide it
    for mod in modules:
        for dist in [*owners.get(mod, []), mod]:
            try:
                out[mod] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def git_sha() -> str:
    """The checked-out commit of the working directory's repository ("" outside one)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return ""


def run_metadata(command: list[str] | None = None, modules: Iterable[str] = ("transformers", "onmt", "sacrebleu",
                                                                            "accelerate")) -> dict[str, Any]:
    """Hardware, versions, git SHA and command of the current run."""
    import torch

    if torch.cuda.is_available():
        hardware = torch.cuda.get_device_name(0)
    else:
        hardware = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    return {"hardware": hardware, "versions": versions(*modules), "git_sha": git_sha(),
            "command": " ".join(portable_command(list(command if command is not None else sys.argv)))}


def portable_command(argv: list[str]) -> list[str]:
    """The command as a reader reruns it: ``python <script>`` relative to the working directory, other absolute
    paths under it made relative, and ``--data-dir`` dropped (the corpus location is each machine's own; the
    recipes also read ``NLPROBUST_DATA``)."""
    out: list[str] = []
    skip = False
    for k, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--data-dir":
            skip = True
            continue
        if a.startswith("--data-dir="):
            continue
        if os.path.isabs(a) and (k == 0 or not os.path.relpath(a).startswith("..")):
            a = os.path.relpath(a)
        out.append(a)
    if out and out[0].endswith(".py"):
        out = ["python", *out]
    return out


def start_run(out: str | os.PathLike[str], config: Mapping[str, Any], *, resuming: bool,
              name: str = "run_config.json", modules: Iterable[str] = ("accelerate",)) -> Path:
    """Create the run folder ``out`` and write ``name`` (the config, versions and git SHA); when ``resuming``
    a run whose folder already holds that file, check the config is the same instead (an error naming the
    differing keys otherwise)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    new = json.loads(json.dumps(dict(config)))
    if resuming and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8")).get("run", {})
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(f"{folder} holds a run started with other settings (differences in {diff}); "
                             f"resume it with the same ones, or write to a new folder")
        return path
    atomic_write_json(path, {"run": new, "versions": versions(*modules), "git_sha": git_sha()})
    return path
