"""The run folder of a negotiation training run, on the shared run I/O (:mod:`nlprobust.core.runio`).

The supervised and REINFORCE loops run through one :class:`accelerate.Accelerator` (one code path for the CPU
and a GPU), show tqdm progress bars, and write into their output folder::

    train_config.json     the resolved configuration, data sizes, versions (checked again on resume)
    train_log.jsonl       one JSON record per epoch (RL: also every ``log_every`` updates), then a summary
    checkpoint/           the last checkpoint: model (save_pretrained), trainer_state.json (epoch, step,
                          learning rate, best validation, baseline, history), optimizer.pt, rng.pt
    best/                 the weights of the best validation so far (supervised: loss; RL with
                          ``select_every``: self-play reward)
    config.json, model.safetensors, words.json, items.json     the final model (DialogModel.from_pretrained)

Re-running the same call on the same folder resumes from the last checkpoint (saved at the end of every
epoch; RL also every ``save_every`` updates) and, with the same seed, ends with exactly the weights an
uninterrupted run would have: batch order and dialogue sampling are seeded per epoch and update, and the torch
and Python RNG states (dropout) are saved with the checkpoint. A finished run returns at once.

Adversarial training (:mod:`negotiation.training.adversarial`) uses the same checkpoint with one subfolder per
model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from negotiation.model import WEIGHTS_FILE, DialogModel
from nlprobust.core.runio import atomic_dir, complete_dir, rng_state, set_rng_state, start_run

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "train_config.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


def save_checkpoint(out: Path, models: DialogModel | Mapping[str, DialogModel], optimizers: Mapping[str, Any],
                    state: dict[str, Any]) -> None:
    """Write ``out/checkpoint`` atomically (:func:`nlprobust.core.runio.atomic_dir`): the model (or each of
    ``models`` in a subfolder of its name), the optimisers' states, the RNG state and ``state``."""

    def write(tmp: Path) -> None:
        if isinstance(models, DialogModel):
            models.save_pretrained(tmp)
        else:
            for name, m in models.items():
                m.save_pretrained(tmp / name)
        torch.save({k: o.state_dict() for k, o in optimizers.items()}, tmp / OPTIMIZER_FILE)
        torch.save(rng_state(), tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    atomic_dir(out / CHECKPOINT_DIR, write)


def save_model_dir(path: Path, model: DialogModel) -> None:
    """``model.save_pretrained`` into ``path`` atomically (:func:`nlprobust.core.runio.atomic_dir`)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)

    atomic_dir(path, write)


def checkpoint_dir(out: Path) -> Path | None:
    """The last complete checkpoint folder (``checkpoint``, or ``checkpoint.old`` after a crash mid-swap)."""
    return complete_dir(out / CHECKPOINT_DIR, (STATE_FILE, RNG_FILE, OPTIMIZER_FILE))


def load_checkpoint(ckpt: Path, optimizers: Mapping[str, Any]) -> dict[str, Any]:
    """Restore the optimisers' and the RNG state of checkpoint folder ``ckpt``; return its state."""
    opt_states = torch.load(ckpt / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    for k, o in optimizers.items():
        o.load_state_dict(opt_states[k])
    set_rng_state(torch.load(ckpt / RNG_FILE, map_location="cpu", weights_only=True))
    state: dict[str, Any] = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    return state


def rewrite_log(out: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """The log of a resumed run: the records of its checkpoint (later ones were lost with the interruption)."""
    (out / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")


def append_log(out: Path, record: Mapping[str, Any]) -> None:
    """Add ``record`` to ``out``'s training log."""
    with open(out / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def is_complete(out_dir: str | os.PathLike[str]) -> bool:
    """Whether ``out_dir`` holds a finished run of :func:`~negotiation.training.supervised.train_supervised` or
    :func:`~negotiation.training.reinforce.train_rl`."""
    out = Path(out_dir)
    state = out / CHECKPOINT_DIR / STATE_FILE
    if not state.is_file() or not (out / WEIGHTS_FILE).is_file():
        return False
    return bool(json.loads(state.read_text(encoding="utf-8")).get("done"))


def read_log(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``out_dir/train_log.jsonl`` (empty when there is none)."""
    path = Path(out_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def make_accelerator(device: str | torch.device | None) -> Any:
    """One :class:`accelerate.Accelerator` on ``device`` (one process: negotiation training is not sharded)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device is not None and torch.device(device).type == "cpu")
    if accelerator.num_processes > 1:
        raise RuntimeError(f"negotiation training runs on one device; got {accelerator.num_processes} processes "
                           f"(run it without `accelerate launch`, or with one process)")
    return accelerator


def set_lr(optimizer: Any, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(params: Any, kind: str, lr: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    """Adam (``kind="adam"``) or SGD with momentum (Nesterov when asked and momentum > 0)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def begin_run(out: Path, run_config: dict[str, Any], seed: int, device: Any) -> tuple[Path | None, Any] | None:
    """Create ``out``, check ``run_config`` against a run being resumed there, seed everything.

    Returns ``None`` when ``out`` already holds a finished run, else (the checkpoint to resume from or
    ``None``, the accelerator)."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_dir(out)
    start_run(out, run_config, resuming=ckpt is not None, name=RUN_CONFIG_FILE)
    if is_complete(out):
        logger.info("%s holds a finished run", out)
        return None
    accelerator = make_accelerator(device)
    from accelerate.utils import set_seed

    set_seed(seed)
    return ckpt, accelerator


__all__ = ["BEST_DIR", "CHECKPOINT_DIR", "LOG_FILE", "OPTIMIZER_FILE", "RNG_FILE", "RUN_CONFIG_FILE", "STATE_FILE",
           "append_log", "begin_run", "checkpoint_dir", "is_complete", "load_checkpoint", "make_accelerator",
           "make_optimizer", "read_log", "rewrite_log", "save_checkpoint", "save_model_dir", "set_lr"]
