"""Running attacks over a test set: seeded image selection, chunks, resumable JSON-lines logs, summaries.

Shared by ``nlprobust vision attack`` and the vision recipes.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nlprobust.core.runio import atomic_write_json, read_jsonl
from nlprobust.core.runner import Shard, run_items
from nlprobust.vision.attacks.base import AttackResult, Starts, predict_labels

__all__ = ["Selection", "select_images", "attack_logged", "record_distance", "distance_summary", "curve_summary",
           "attack_checkpoint"]


@dataclass(frozen=True)
class Selection:
    """Test images chosen for an attack: their index in the test set, pixels, labels and (targeted) targets."""

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.index.numel())


def select_images(model: Any, x: torch.Tensor, y: torch.Tensor, n: int, *, seed: int = 0, targeted: bool = False,
                  num_classes: int = 10) -> Selection:
    """``n`` test images drawn in a seeded order among those the model classifies correctly (thesis 2.5), with
    a seeded random target class different from the label when ``targeted``."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    chosen: list[torch.Tensor] = []
    found = 0
    for i in range(0, len(order), 1000):
        idx = order[i:i + 1000]
        ok = idx[predict_labels(model, x[idx]).cpu() == y[idx]]
        chosen.append(ok)
        found += ok.numel()
        if found >= n:
            break
    index = torch.cat(chosen)[:n]
    if index.numel() < n:
        raise ValueError(f"only {index.numel()} correctly classified images, {n} asked for")
    target = None
    if targeted:
        shift = torch.randint(1, num_classes, (n,), generator=gen)
        target = (y[index] + shift) % num_classes
    return Selection(index, x[index], y[index], target)


def attack_logged(run: Callable[[Selection], AttackResult], sel: Selection, log_path: str | os.PathLike[str], *,
                  chunk: int = 10, desc: str = "", quiet: bool = False, shard: Shard | None = None
                  ) -> list[dict[str, Any]]:
    """Attack ``sel`` in chunks with ``run`` (a chunk -> :class:`AttackResult`), appending one JSON line per
    image to ``log_path`` as each chunk finishes; images already in the log are skipped (resume). Under
    ``torchrun`` / ``accelerate launch`` (or with ``shard``) each process attacks its share of the chunks and
    the last to finish merges them (:func:`nlprobust.core.runner.run_items`); a process that did not merge
    returns only its own records."""
    targets = {int(sel.index[i]): (int(sel.target[i]) if sel.target is not None else None) for i in range(len(sel))}
    for rec in read_jsonl(log_path):
        if rec.get("index") in targets and rec.get("target") != targets[rec["index"]]:
            raise ValueError(f"{log_path}: image {rec['index']} was attacked with another target "
                             f"({rec.get('target')}, not {targets[rec['index']]}); the file belongs to another run")

    def process(_c: int, positions: list[int]) -> list[dict[str, Any]]:
        part = torch.tensor(positions)
        sub = Selection(sel.index[part], sel.x[part], sel.y[part],
                        sel.target[part] if sel.target is not None else None)
        res = run(sub)
        recs = []
        for j, rec in enumerate(res.records()):
            rec.update({"index": int(sub.index[j]), "label": int(sub.y[j]),
                        "target": int(sub.target[j]) if sub.target is not None else None,
                        "seconds": res.seconds / len(sub)})
            recs.append(rec)
        return recs

    outcome = run_items(list(range(len(sel))), process, log_path, keys=list(targets), chunk_size=chunk,
                        shard=shard, desc=desc, unit="img", progress=not quiet)
    return outcome.records


def _finite_mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def record_distance(record: dict[str, Any], queries: int | None) -> float:
    """One record's distortion: at ``queries`` from its curve (the best adversarial distortion within that many
    queries; inf while there is none), or its final ``distance`` for a record without a query budget
    (white-box; inf if it failed)."""
    if queries is None:
        return float(record["distance"]) if record["success"] else math.inf
    return float(record["curve"][str(queries)])


def distance_summary(d: Sequence[float], epsilon: float) -> dict[str, Any]:
    """Median and mean distortion and success rate at ``epsilon`` over per-image distortions ``d`` (inf: none
    found, which counts in the median and the success rate, not in the mean)."""
    n = len(d)
    return {"n": n, "median_l2": statistics.median(d) if d else None, "mean_l2": _finite_mean(d),
            "sr": sum(v <= epsilon for v in d) / n if n else None,
            "found": sum(math.isfinite(v) for v in d) / n if n else None}


def curve_summary(records: Sequence[dict[str, Any]], queries: int | None, epsilon: float) -> dict[str, Any]:
    """:func:`distance_summary` of ``records`` at ``queries`` (see :func:`record_distance`)."""
    return distance_summary([record_distance(r, queries) for r in records], epsilon)


def attack_checkpoint(checkpoint: str, *, method: str, n: int, budget: int, targeted: bool = False,
                      norm: str = "l2", epsilon: float | None = None, seed: int = 0, data_dir: str | None = None,
                      out: str | None = None, device: str | None = None, quiet: bool = False, chunk: int = 50,
                      shard: Shard | None = None) -> dict[str, Any] | None:
    """Attack ``n`` correctly classified test images of a trained checkpoint (the ``nlprobust vision attack``
    command) ``chunk`` images at a time and return a summary; per-image records go to ``out`` (JSON lines,
    resumed). Sharded (``shard`` or torchrun / accelerate launch), a process that did not merge the shards
    returns ``None``."""
    from nlprobust.vision.attacks import attack_class
    from nlprobust.vision.datasets import load_images
    from nlprobust.vision.models import load_checkpoint

    model, cfg = load_checkpoint(checkpoint, device=device)
    test = load_images(cfg.dataset, "test", data_dir)
    sel = select_images(model, test.x, test.y, n, seed=seed, targeted=targeted)
    cls = attack_class(method)
    kwargs: dict[str, Any] = {"norm": norm, "targeted": targeted, "seed": seed, "epsilon": epsilon}
    if cls.threat != "whitebox":
        kwargs["budget"] = budget
    attack = cls(**kwargs)
    starts = None
    if targeted:
        train = load_images(cfg.dataset, "train", data_dir)
        starts = Starts(train.x[:5000], train.y[:5000])
    checkpoints = sorted({c for c in (budget // 4, budget // 2, budget) if c > 0}) if cls.threat != "whitebox" else []

    def run(sub: Selection) -> AttackResult:
        return attack(model, sub.x, sub.y, target=sub.target, starts=starts, checkpoints=checkpoints)

    chunk = max(1, min(chunk, n))
    kind = f"{'targeted' if targeted else 'untargeted'}_{norm}_b{budget}_e{epsilon}_s{seed}_c{chunk}"
    path = out or str(Path("runs") / "vision" / "attacks" / f"{Path(checkpoint).parent.name}_{method}_{kind}.jsonl")
    recs = attack_logged(run, sel, path, chunk=chunk, desc=method, quiet=quiet, shard=shard)
    if len(recs) < n:
        return None
    summary = {"checkpoint": checkpoint, "method": method, "norm": norm, "targeted": targeted, "n": len(recs),
               "success": sum(r["success"] for r in recs) / len(recs),
               "median_distance": statistics.median(r["distance"] for r in recs),
               "mean_queries": sum(r["queries"] for r in recs) / len(recs), "log": path}
    atomic_write_json(Path(path).with_suffix(".config.json"),
                      {"checkpoint": checkpoint, "method": method, "n": n, "budget": budget, "norm": norm,
                       "targeted": targeted, "epsilon": epsilon, "seed": seed, "chunk": chunk})
    return summary
