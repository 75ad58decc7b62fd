"""**Supervised** (:func:`train_supervised`): the :class:`~negotiation.model.DialogModel` loss (LM + 0.5 x
selection) on ``train.txt``, validated after every epoch on ``val.txt``. Lewis et al.'s schedule: SGD (lr 1,
momentum 0.1, Nesterov), gradients clipped at 0.5, 30 epochs at the initial learning rate, keeping the weights
of the best validation; then, starting from those weights, the learning rate is divided by 5 before each of
two more epochs. The weights with the lowest validation loss are the result.

Deviations from the paper / FAIR code:

* Perplexity is measured on the LM target tokens (words and terminators; see ``DialogModelConfig.lm_targets``)
  and is exact over the whole validation set (summed NLL / number of targets). FAIR also counts the speaker
  prefixes ``YOU:``/``THEM:`` (about 9% of the tokens, nearly free to predict), which lowers its numbers;
  :func:`evaluate_supervised` reports that convention too, as ``ppl_fair``, for comparison with the thesis:
  the same summed NLL divided by the targets plus the prefixes (our model never predicts the prefixes, as
  turn-taking decides them, so they count as certain; FAIR's model pays a little for them, so ``ppl_fair``
  is a slight lower bound of what FAIR's script would report for the same model).
* The supervised validation criterion is the total loss (LM + 0.5 x selection); FAIR keeps the weights of
  the best selection loss. Optional early stopping (``patience``) ends the constant-rate phase sooner.
* The decay phase keeps the configured optimiser (its momentum buffers reset) instead of FAIR's new plain SGD.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from negotiation.corpus import Batch, Example, build_word_vocab, iter_batches
from negotiation.model import WEIGHTS_FILE, DialogModel
from negotiation.training.checkpoint import (
    BEST_DIR,
    LOG_FILE,
    append_log,
    begin_run,
    load_checkpoint,
    make_optimizer,
    rewrite_log,
    save_checkpoint,
    save_model_dir,
    set_lr,
)
from negotiation.training.config import SupervisedConfig
from negotiation.training.evaluate import evaluate_supervised
from nlprobust.core.runio import complete_dir, seed_for

logger = logging.getLogger(__name__)


def supervised_step(model: DialogModel, batches: Sequence[Batch], optimizer: Any, accelerator: Any, clip: float,
                    *, forward: Callable[[Batch], Any] | None = None) -> float:
    """One optimiser step on the accumulated gradients of ``batches`` (each loss weighted ``1 / len(batches)``),
    with dropout on; the model is back in eval mode afterwards. Returns their mean loss. Used by the supervised
    batches interleaved with REINFORCE and adversarial training, to keep an agent's language. ``forward``: the
    model as ``accelerator.prepare`` returned it (its forward may add mixed precision), default ``model``."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=model.device)
    for cpu_batch in batches:
        batch = cpu_batch.to(model.device)
        loss = model.loss_from_output((forward or model)(batch), batch).loss / len(batches)
        accelerator.backward(loss)
        total += loss.detach()
    accelerator.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    model.eval()
    return float(total)


def train_supervised(train: Sequence[Example], valid: Sequence[Example], out_dir: str | os.PathLike[str],
                     cfg: SupervisedConfig, *, device: str | torch.device | None = None, progress: bool = True,
                     on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train the SV agent and save the weights of its best validation into ``out_dir``; resume if started.

    Args:
        train: training dialogues (each line from its own YOU's view); the vocabulary is built from them.
        valid: validation dialogues (perplexity, selection loss and accuracy after every epoch).
        out_dir: the run folder (see the module docstring); a finished run there is returned as is.
        cfg: the configuration (:data:`SV_PRESETS`, :func:`sv_preset`).
        device: ``"cpu"``, ``"cuda"``... (None: the accelerator's default, a GPU when there is one).
        progress: show progress bars.
        on_epoch_end: called with each epoch's log record after its checkpoint is written.

    Returns:
        ``out_dir`` as a Path, loadable with ``DialogModel.from_pretrained``.

    Raises:
        ValueError: no training or validation dialogues, or ``out_dir`` holds a run with other settings.
    """
    train, valid = list(train)[: cfg.max_train], list(valid)[: cfg.max_valid]
    if not train or not valid:
        raise ValueError(f"need training and validation dialogues, got {len(train)} and {len(valid)}")
    out = Path(out_dir)
    run_config = {"kind": "supervised", "config": cfg.to_dict(), "train_dialogues": len(train),
                  "valid_dialogues": len(valid)}
    started = begin_run(out, run_config, cfg.seed, device)
    if started is None:
        return out
    ckpt, accelerator = started
    dev = accelerator.device
    if ckpt is None:
        model = DialogModel(build_word_vocab(train, min_freq=cfg.min_freq), config=cfg.model)
    else:
        model = DialogModel.from_pretrained(ckpt)
    optimizer = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.nesterov)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw: DialogModel = accelerator.unwrap_model(model)
    if ckpt is None:
        st: dict[str, Any] = {"kind": "supervised", "epoch": 0, "step": 0, "phase": "constant", "lr": cfg.lr,
                              "best_loss": None, "best_epoch": 0, "bad_epochs": 0, "decay_epoch": 0,
                              "done": False, "elapsed_s": 0.0, "history": []}
        (out / LOG_FILE).write_text("", encoding="utf-8")
        logger.info("supervised training into %s: %d train / %d valid dialogues, vocabulary %d, %d parameters",
                    out, len(train), len(valid), len(raw.words), sum(p.numel() for p in raw.parameters()))
    else:
        st = load_checkpoint(ckpt, {"optimizer": optimizer})
        rewrite_log(out, st["history"])
        logger.info("resuming %s after epoch %d", out, st["epoch"])
    best_state = None
    best_dir = complete_dir(out / BEST_DIR, (WEIGHTS_FILE,))
    if best_dir is not None and st["best_epoch"]:
        from safetensors.torch import load_file

        best_state = load_file(str(best_dir / WEIGHTS_FILE))
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)

    while not st["done"]:
        t_epoch = time.perf_counter()
        epoch, lr = st["epoch"] + 1, st["lr"]
        set_lr(optimizer, lr)
        model.train()
        run_loss = torch.zeros((), device=dev)
        run_lm = torch.zeros((), device=dev)
        batches = iter_batches(train, cfg.batch_size, raw.words, raw.items, seed=seed_for(cfg.seed, epoch),
                               device=dev)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"sv epoch {epoch}", unit="batch", disable=not progress,
                   dynamic_ncols=True)
        for i, batch in enumerate(bar):
            loss = raw.loss_from_output(model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss.loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            run_loss += loss.loss.detach()
            run_lm += loss.lm.detach()
            st["step"] += 1
            if progress and (i + 1) % 20 == 0:
                bar.set_postfix(loss=f"{float(run_loss) / (i + 1):.3f}", ppl=f"{math.exp(float(run_lm) / (i + 1)):.2f}")
        bar.close()
        val = evaluate_supervised(raw, valid, batch_size=cfg.eval_batch_size)
        improved = st["best_loss"] is None or val["loss"] < st["best_loss"]
        if improved:
            st.update(best_loss=val["loss"], best_epoch=epoch, bad_epochs=0)
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in raw.state_dict().items()}
            save_model_dir(out / BEST_DIR, raw)
        else:
            st["bad_epochs"] += 1
        epoch_s = time.perf_counter() - t_epoch
        st["elapsed_s"] += epoch_s
        record = {"kind": "epoch", "epoch": epoch, "phase": st["phase"], "lr": lr, "step": st["step"],
                  "train_loss": float(run_loss) / steps_per_epoch,
                  "train_ppl": math.exp(float(run_lm) / steps_per_epoch), "val_loss": val["loss"],
                  "val_lm": val["lm"], "val_ppl": val["ppl"], "val_ppl_fair": val["ppl_fair"], "val_sel": val["sel"],
                  "val_sel_acc": val["sel_acc"], "best": improved, "epoch_s": round(epoch_s, 2),
                  "elapsed_s": round(st["elapsed_s"], 2)}
        logger.info("sv epoch %d: lr %.4g, train loss %.3f, val ppl %.3f (FAIR convention %.3f), val sel %.3f%s",
                    epoch, lr, record["train_loss"], val["ppl"], val["ppl_fair"], val["sel"],
                    " (best)" if improved else "")
        # the schedule: constant rate (with early stopping), then decay epochs from the best weights
        st["epoch"] = epoch
        if st["phase"] == "constant" and (epoch >= cfg.epochs or (cfg.patience and st["bad_epochs"] >= cfg.patience)):
            st["phase"] = "decay"
            if cfg.decay_epochs and best_state is not None:
                raw.load_state_dict(best_state)
                optimizer.state.clear()  # momentum of weights that are no longer there
        if st["phase"] == "decay":
            if st["decay_epoch"] >= cfg.decay_epochs:
                st["done"] = True
            else:
                st["decay_epoch"] += 1
                st["lr"] = st["lr"] / cfg.decay_rate
        st["history"].append(record)
        append_log(out, record)
        save_checkpoint(out, raw, {"optimizer": optimizer}, st)
        if on_epoch_end is not None:
            on_epoch_end(record)

    # the result: the best validation's weights
    if best_state is not None:
        raw.load_state_dict(best_state)
    raw.save_pretrained(out)
    best: dict[str, Any] = next((r for r in st["history"] if r["epoch"] == st["best_epoch"]), {})
    summary = {"kind": "summary", "done": True, "epochs": st["epoch"], "steps": st["step"],
               "best_epoch": st["best_epoch"], "best_val_loss": st["best_loss"], "best_val_ppl": best.get("val_ppl"),
               "best_val_ppl_fair": best.get("val_ppl_fair"), "elapsed_s": round(st["elapsed_s"], 2)}
    rewrite_log(out, [*st["history"], summary])
    logger.info("saved the SV model to %s (best epoch %d, val ppl %s)", out, st["best_epoch"], summary["best_val_ppl"])
    return out


__all__ = ["supervised_step", "train_supervised"]
