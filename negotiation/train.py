"""Supervised training (the "SV agent") and REINFORCE self-play (the "RL agent") of Lewis et al. (2017).

**Supervised** (:func:`train_supervised`): the :class:`~negotiation.model.DialogModel` loss (LM + 0.5 x
selection) on ``train.txt``, validated after every epoch on ``val.txt``. Lewis et al.'s schedule: SGD (lr 1,
momentum 0.1, Nesterov), gradients clipped at 0.5, 30 epochs at the initial learning rate, keeping the weights
of the best validation; then, starting from those weights, the learning rate is divided by 5 before each of
two more epochs. The weights with the lowest validation loss are the result.

**REINFORCE** (:func:`train_rl`, thesis eq. 3.8): the RL agent (initialised from the SV model) negotiates
with a frozen partner (the SV model) on scenarios from ``selfplay.txt``, words sampled at temperature 0.5.
After each batch of dialogues, every token the agent wrote (and its final choice) is reinforced with the
discounted, baseline-subtracted reward ``gamma^(T - t) (r - mu)``, where ``T`` is the agent's last action
(its choice), ``r`` its score (0 without agreement) and ``mu`` the running mean of all rewards so far
(divided by their running standard deviation, as FAIR does). One supervised batch of ``train.txt`` follows
every 4 RL dialogues so that the agent keeps writing English.

Both loops run through one :class:`accelerate.Accelerator` (one code path for the CPU and a GPU), show tqdm
progress bars, and write into their output folder::

    train_config.json     the resolved configuration, data sizes, versions (checked again on resume)
    train_log.jsonl       one JSON record per epoch (RL: also every ``log_every`` updates), then a summary
    checkpoint/           the last checkpoint: model (save_pretrained), trainer_state.json (epoch, step,
                          learning rate, best validation, baseline, history), optimizer.pt, rng.pt
    best/                 (supervised) the weights of the best validation so far
    config.json, model.safetensors, words.json, items.json     the final model (DialogModel.from_pretrained)

Re-running the same call on the same folder resumes from the last checkpoint (saved at the end of every
epoch; RL also every ``save_every`` updates) and, with the same seed, ends with exactly the weights an
uninterrupted run would have: batch order and dialogue sampling are seeded per epoch and update, and the torch
and Python RNG states (dropout) are saved with the checkpoint. A finished run returns at once.

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
* REINFORCE is batched: one update per ``batch_size`` dialogues, the loss averaged over them (FAIR: one update
  per dialogue). The choice's log-probability is reinforced too (``train_choice``), the choice then being
  sampled during RL (``sample_choice``); FAIR's default (``--eps 0``) takes the argmax choice and reinforces
  only the words. Games that hit the turn cap do not reinforce the choice (it did not affect the outcome).
* The supervised batches that fall due during one update (4 for 16 dialogues) make one optimiser step on
  their accumulated gradients (FAIR: a step per batch, between single-dialogue RL steps). Separate steps
  would move the weights about ten times more by supervision than by RL once RL is batched.
* The agent plays without dropout during RL dialogues (FAIR keeps its model in training mode).
* Multi-process (``accelerate launch`` with several processes) is not supported: one CPU or one GPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from negotiation.agents import DEFAULT_MAX_WORDS, DEFAULT_TEMPERATURE, RnnAgent
from negotiation.corpus import FAIR_MIN_FREQ, Batch, Example, build_word_vocab, iter_batches
from negotiation.dialog import CapRule, GameRecord, SelfPlayMetrics, play, selfplay_metrics
from negotiation.domain import MAX_TURNS, Scenario
from negotiation.model import WEIGHTS_FILE, DialogModel, DialogModelConfig
from nlprobust.core.runio import atomic_dir, complete_dir, rng_state, seed_for, set_rng_state, start_run

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "train_config.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


# --- configurations ------------------------------------------------------------------------------------


def _positive(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be positive, got {v!r}")


def _optional_positive(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive integer or None, got {v!r}")


@dataclass(frozen=True, kw_only=True)
class SupervisedConfig:
    """Supervised training of the SV agent (defaults: Lewis et al.'s command line).

    Args:
        model: the network's sizes and loss weights.
        min_freq: words seen fewer times in the training dialogues become ``<unk>`` (FAIR: 21).
        max_train: use only the first this many training lines (None: all).
        max_valid: use only the first this many validation lines (None: all).
        batch_size: dialogues per step (``--bsz 16``).
        optimizer: ``"sgd"`` (momentum, Nesterov) or ``"adam"``.
        lr: initial learning rate (``--lr 1``).
        momentum: SGD momentum (``--momentum 0.1``).
        nesterov: Nesterov momentum (``--nesterov``).
        clip: gradient-norm clip (``--clip 0.5``).
        epochs: epochs at the initial learning rate at most (``--max_epoch 30``).
        patience: end that phase after this many epochs in a row without a lower validation loss (0: never).
        decay_rate: then divide the learning rate by this before each decay epoch (``--decay_rate 5``).
        decay_epochs: epochs of the decay phase (FAIR: until lr < ``--min_lr 0.01``, i.e. 2 from lr 1).
        eval_batch_size: dialogues per validation batch.
        seed: seeds initialisation, batch order and dropout.
    """

    model: DialogModelConfig = DialogModelConfig()
    min_freq: int = FAIR_MIN_FREQ
    max_train: int | None = None
    max_valid: int | None = None
    batch_size: int = 16
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1.0
    momentum: float = 0.1
    nesterov: bool = True
    clip: float = 0.5
    epochs: int = 30
    patience: int = 0
    decay_rate: float = 5.0
    decay_epochs: int = 2
    eval_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.model, DialogModelConfig):
            raise ValueError(f"SupervisedConfig.model must be a DialogModelConfig, got {type(self.model).__name__}")
        _positive(self, "min_freq", "batch_size", "lr", "clip", "epochs", "eval_batch_size")
        _optional_positive(self, "max_train", "max_valid")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"SupervisedConfig.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.momentum < 0 or self.patience < 0 or self.decay_epochs < 0:
            raise ValueError("SupervisedConfig.momentum, patience and decay_epochs must be >= 0, got "
                             f"{self.momentum}, {self.patience}, {self.decay_epochs}")
        if self.decay_rate < 1:
            raise ValueError(f"SupervisedConfig.decay_rate must be >= 1, got {self.decay_rate}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SupervisedConfig:
        d = dict(d)
        if isinstance(d.get("model"), Mapping):
            d["model"] = DialogModelConfig.from_dict(d["model"])
        return cls(**d)


@dataclass(frozen=True, kw_only=True)
class ReinforceConfig:
    """REINFORCE self-play of the RL agent against a frozen partner (defaults: Lewis et al. / the thesis).

    Args:
        lr: RL learning rate (``--rl_lr 0.2``; the thesis' RL attack uses 0.1).
        momentum: SGD momentum of both optimisers (``--momentum 0.1``).
        nesterov: Nesterov momentum (``--nesterov``).
        clip: gradient-norm clip of the RL step (``--rl_clip 1``).
        gamma: discount of eq. 3.8 (``--gamma 0.95``).
        temperature: word sampling temperature of both agents (``--temperature 0.5``).
        batch_size: dialogues per REINFORCE update.
        epochs: passes over the scenarios (``--nepoch 4``).
        max_scenarios: use only the first this many scenarios (None: all of ``selfplay.txt``).
        reward: ``"score"`` (the agent's own score, Lewis et al.) or ``"advantage"`` (its score minus the
            partner's, the thesis' adversarial reward).
        normalize_rewards: divide ``r - mu`` by the running standard deviation of the rewards (FAIR).
        train_choice: reinforce the log-probability of the agent's final choice as well as its words.
        sample_choice: sample the agent's choice during RL (otherwise the highest-scoring one).
        complement: the agent does not choose but takes the complement of the partner's choice, so every
            dialogue that reaches ``<selection>`` closes a deal (the AdvAgent code's forced agreement; its
            choice is then not reinforced).
        sv_every: one supervised batch per this many RL dialogues (``--sv_train_freq 4``; 0: none). The
            batches that fall due during an update are accumulated into one supervised step after it.
        sv_batch_size: dialogues per supervised batch (``--bsz 16``).
        sv_lr: learning rate of the supervised batches (``--lr 0.5`` of FAIR's ``reinforce.py`` command).
        sv_clip: gradient-norm clip of the supervised batches (``--clip 1``).
        max_train: training lines for the supervised batches (None: all).
        max_valid: validation lines for the perplexity after each epoch (None: all).
        max_turns: turn cap of each dialogue.
        max_words: longest message, terminator included.
        log_every: log a record every this many updates (0: epoch records only).
        save_every: also checkpoint every this many updates inside an epoch (0: at epoch ends only).
        select_every: every this many updates (and at each epoch end) play the validation games against the
            partner (``select_scenarios`` of :func:`train_rl`: not the training games) and keep the weights of
            the highest mean reward (``reward``: score or advantage) as the result (0: the last weights). One RL run
            wanders: its self-play score rises and falls by a point or more between epochs, so the last
            weights are a matter of luck.
        eval_batch_size: dialogues per validation batch.
        seed: seeds dialogue sampling, scenario order and the supervised batches.
    """

    lr: float = 0.2
    momentum: float = 0.1
    nesterov: bool = True
    clip: float = 1.0
    gamma: float = 0.95
    temperature: float = DEFAULT_TEMPERATURE
    batch_size: int = 16
    epochs: int = 4
    max_scenarios: int | None = None
    reward: Literal["score", "advantage"] = "score"
    normalize_rewards: bool = True
    train_choice: bool = True
    sample_choice: bool = True
    complement: bool = False
    sv_every: int = 4
    sv_batch_size: int = 16
    sv_lr: float = 0.5
    sv_clip: float = 1.0
    max_train: int | None = None
    max_valid: int | None = None
    max_turns: int = MAX_TURNS
    max_words: int = DEFAULT_MAX_WORDS
    log_every: int = 10
    save_every: int = 0
    select_every: int = 0
    eval_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        _positive(self, "lr", "clip", "batch_size", "epochs", "sv_batch_size", "sv_lr", "sv_clip", "max_turns",
                  "max_words", "eval_batch_size")
        _optional_positive(self, "max_scenarios", "max_train", "max_valid")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"ReinforceConfig.gamma must be in (0, 1], got {self.gamma}")
        if self.temperature < 0:
            raise ValueError(f"ReinforceConfig.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.reward not in ("score", "advantage"):
            raise ValueError(f"ReinforceConfig.reward must be 'score' or 'advantage', got {self.reward!r}")
        for name in ("momentum", "sv_every", "log_every", "save_every", "select_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"ReinforceConfig.{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReinforceConfig:
        return cls(**dict(d))


TINY_MODEL = DialogModelConfig(ctx_embed=8, ctx_hidden=16, word_embed=32, lang_hidden=32, attn_hidden=16,
                               sel_hidden=16, dropout=0.0)

SV_PRESETS: dict[str, SupervisedConfig] = {
    # seconds on one CPU thread (tests, the tiny recipe scale): 600 training lines, a tiny network (val ppl ~40)
    "tiny": SupervisedConfig(model=TINY_MODEL, min_freq=2, max_train=600, max_valid=100, batch_size=16,
                             optimizer="adam", lr=2e-2, clip=1.0, epochs=2, decay_rate=2.0, decay_epochs=1),
    # the paper's network (1.6M parameters) on 2 CPU cores in well under an hour. Measured on one thread:
    # 0.18-0.20 s per batch of 16, so an epoch of 631 batches takes about 2 min (+3 s validation) and the 12
    # epochs at most about 25 min. Adam instead of SGD lr 1: after 300 batches, validation perplexity 12.2
    # against SGD's 30 after 150 (Adam 17.6 then); dropout 0.4 between the paper's 0.5 and a faster 0.3.
    "small": SupervisedConfig(model=DialogModelConfig(dropout=0.4), batch_size=16, optimizer="adam", lr=2e-3,
                              clip=1.0, epochs=10, patience=2, decay_rate=4.0, decay_epochs=2),
    # Lewis et al.'s command line (GPU, or a few hours of CPU)
    "paper": SupervisedConfig(),
}

RL_PRESETS: dict[str, ReinforceConfig] = {
    "tiny": ReinforceConfig(batch_size=8, epochs=1, max_scenarios=32, max_train=300, max_valid=100, max_words=20,
                            log_every=1, select_every=4),
    # Lewis et al.'s 4 epochs over the 4,086 scenarios, in updates of 16 dialogues (FAIR updates after every
    # dialogue: 16 times as many steps of at most lr x clip). With 16 dialogues per step, lr 0.5 instead of
    # FAIR's 0.2: RL vs SV self-play 6.68 vs 4.16 at 86% agreement mid-epoch 3, against 4.83 vs 4.31 at 74% for
    # lr 0.2 (1,000 scenarios each), and 2 epochs at lr 0.2 reached 5.42 vs 4.56 at 79% (2,000). Measured on
    # one thread: about 5 min per epoch alone, about 8 min with a second job on the other core.
    # select_every: the weights of the best validation self-play (400 val.txt games, every 32 updates) are the
    # result, not the last ones (see ReinforceConfig.select_every)
    "small": ReinforceConfig(batch_size=16, epochs=4, lr=0.5, log_every=8, save_every=32, select_every=32),
    "paper": ReinforceConfig(save_every=64, select_every=64),
}

def sv_preset(name: str, **overrides: Any) -> SupervisedConfig:
    """A copy of ``SV_PRESETS[name]`` (``tiny``, ``small``, ``paper``) with some fields replaced."""
    if name not in SV_PRESETS:
        raise ValueError(f"unknown supervised preset {name!r}; expected one of {sorted(SV_PRESETS)}")
    return dataclasses.replace(SV_PRESETS[name], **overrides)


def rl_preset(name: str, **overrides: Any) -> ReinforceConfig:
    """A copy of ``RL_PRESETS[name]`` (``tiny``, ``small``, ``paper``) with some fields replaced."""
    if name not in RL_PRESETS:
        raise ValueError(f"unknown RL preset {name!r}; expected one of {sorted(RL_PRESETS)}")
    return dataclasses.replace(RL_PRESETS[name], **overrides)


# --- evaluation -------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_supervised(model: DialogModel, examples: Sequence[Example], *, batch_size: int = 64,
                        progress: bool = False) -> dict[str, float]:
    """Teacher-forced validation of ``model`` on ``examples`` (eval mode, restored afterwards).

    Returns:
        ``lm`` (mean NLL per LM target token, summed over the whole set and divided once), ``ppl``
        (``exp(lm)``), ``ppl_fair`` (FAIR's convention: the speaker prefixes counted as targets too; ours
        are never predicted, the turn-taking decides them, so they count with probability 1), ``sel``
        (selection cross-entropy per slot), ``sel_acc`` (share of dialogues whose six
        slots are all predicted right); both over the ``sel_dialogues`` dialogues with a selection target
        (all of them unless ``config.sel_skip_unknown``), ``loss`` (``lm + sel_weight * sel``), ``tokens``
        and ``dialogues``.
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    was_training = model.training
    model.eval()
    nll = sel = 0.0
    tokens = tokens_fair = correct = sel_slots = sel_dialogues = 0
    try:
        for batch in tqdm(iter_batches(examples, batch_size, model.words, model.items, shuffle=False,
                                       device=model.device), desc="validation", unit="batch",
                          total=math.ceil(len(examples) / batch_size), disable=not progress, leave=False):
            out = model(batch)
            tgt = batch.tokens[:, 1:]
            mask = model.lm_target_mask(batch)
            prefix = batch.mask[:, 1:] & ((tgt == model.you_id) | (tgt == model.them_id))
            nll += float(F.cross_entropy(out.word_logits[mask], tgt[mask], reduction="sum"))
            tokens += int(mask.sum())
            tokens_fair += int((mask | prefix).sum())  # the prefixes count, as certain targets unless predicted
            sel += float(model.selection_loss(out.slot_logits, batch.choices, reduction="sum"))
            ok = model.sel_target_ok[batch.choices]
            counted = ok.all(-1)  # dialogues with a selection target
            sel_slots += int(ok.sum())
            sel_dialogues += int(counted.sum())
            correct += int(((out.slot_logits.argmax(-1) == batch.choices).all(-1) & counted).sum())
    finally:
        model.train(was_training)
    lm = nll / max(1, tokens)
    sel /= max(1, sel_slots)
    return {"loss": lm + model.config.sel_weight * sel, "lm": lm, "ppl": math.exp(min(lm, 50.0)),
            "ppl_fair": math.exp(min(nll / max(1, tokens_fair), 50.0)), "sel": sel,
            "sel_acc": correct / max(1, sel_dialogues), "tokens": tokens, "dialogues": len(examples),
            "sel_dialogues": sel_dialogues}


@torch.no_grad()
def evaluate_selfplay(model_a: DialogModel, model_b: DialogModel, scenarios: Sequence[Scenario], *,
                      temperature: float = DEFAULT_TEMPERATURE, batch_size: int | None = 128, seed: int = 0,
                      max_turns: int = MAX_TURNS, cap_rule: CapRule | None = None,
                      max_words: int = DEFAULT_MAX_WORDS, complement: Literal["a", "b"] | None = None,
                      names: tuple[str, str] = ("a", "b"),
                      progress: bool = False) -> tuple[list[GameRecord], SelfPlayMetrics]:
    """Self-play of two models (they may be the same object) on ``scenarios``: A writes first in even games.

    Both sample their words at ``temperature`` (seeded generators ``seed`` and ``seed + 1``) and take their
    highest-scoring choice, without dropout. ``max_turns``, ``cap_rule`` and ``complement`` are the rules of
    :func:`~negotiation.dialog.play`. Returns the game records and their metrics (A's view).
    """
    a = RnnAgent(model_a, name=names[0], temperature=temperature, max_words=max_words, seed=seed)
    b = RnnAgent(model_b, name=names[1], temperature=temperature, max_words=max_words, seed=seed + 1)
    records = play(a, b, scenarios, max_turns=max_turns, cap_rule=cap_rule, complement=complement,
                   batch_size=batch_size, progress=progress)
    return records, selfplay_metrics(records)


# --- checkpoints ----------------------------------------------------------------------------------------


def _save_checkpoint(out: Path, model: DialogModel, optimizers: Mapping[str, Any], state: dict[str, Any]) -> None:
    """Write ``out/checkpoint`` atomically (:func:`nlprobust.core.runio.atomic_dir`)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        torch.save({k: o.state_dict() for k, o in optimizers.items()}, tmp / OPTIMIZER_FILE)
        torch.save(rng_state(), tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    atomic_dir(out / CHECKPOINT_DIR, write)


def _save_model_dir(path: Path, model: DialogModel) -> None:
    """``model.save_pretrained`` into ``path`` atomically (:func:`nlprobust.core.runio.atomic_dir`)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)

    atomic_dir(path, write)


def _checkpoint_dir(out: Path) -> Path | None:
    """The last complete checkpoint folder (``checkpoint``, or ``checkpoint.old`` after a crash mid-swap)."""
    return complete_dir(out / CHECKPOINT_DIR, (STATE_FILE, RNG_FILE, OPTIMIZER_FILE))


def _load_checkpoint(ckpt: Path, optimizers: Mapping[str, Any]) -> dict[str, Any]:
    opt_states = torch.load(ckpt / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    for k, o in optimizers.items():
        o.load_state_dict(opt_states[k])
    set_rng_state(torch.load(ckpt / RNG_FILE, map_location="cpu", weights_only=True))
    state: dict[str, Any] = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    return state


def _rewrite_log(out: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """The log of a resumed run: the records of its checkpoint (later ones were lost with the interruption)."""
    (out / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")


def _append_log(out: Path, record: Mapping[str, Any]) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def is_complete(out_dir: str | os.PathLike[str]) -> bool:
    """Whether ``out_dir`` holds a finished run of :func:`train_supervised` or :func:`train_rl`."""
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


def _accelerator(device: str | torch.device | None) -> Any:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device is not None and torch.device(device).type == "cpu")
    if accelerator.num_processes > 1:
        raise RuntimeError(f"negotiation training runs on one device; got {accelerator.num_processes} processes "
                           f"(run it without `accelerate launch`, or with one process)")
    return accelerator


def _set_lr(optimizer: Any, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _make_optimizer(params: Any, kind: str, lr: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


# --- supervised training --------------------------------------------------------------------------------


def _begin_run(out: Path, run_config: dict[str, Any], seed: int, device: Any) -> tuple[Path | None, Any] | None:
    """Create ``out``, check ``run_config`` against a run being resumed there, seed everything.

    Returns ``None`` when ``out`` already holds a finished run, else (the checkpoint to resume from or
    ``None``, the accelerator)."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _checkpoint_dir(out)
    start_run(out, run_config, resuming=ckpt is not None, name=RUN_CONFIG_FILE)
    if is_complete(out):
        logger.info("%s holds a finished run", out)
        return None
    accelerator = _accelerator(device)
    from accelerate.utils import set_seed

    set_seed(seed)
    return ckpt, accelerator


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
    started = _begin_run(out, run_config, cfg.seed, device)
    if started is None:
        return out
    ckpt, accelerator = started
    dev = accelerator.device
    if ckpt is None:
        model = DialogModel(build_word_vocab(train, min_freq=cfg.min_freq), config=cfg.model)
    else:
        model = DialogModel.from_pretrained(ckpt)
    optimizer = _make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.nesterov)
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
        st = _load_checkpoint(ckpt, {"optimizer": optimizer})
        _rewrite_log(out, st["history"])
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
        _set_lr(optimizer, lr)
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
            _save_model_dir(out / BEST_DIR, raw)
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
        _append_log(out, record)
        _save_checkpoint(out, raw, {"optimizer": optimizer}, st)
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
    _rewrite_log(out, [*st["history"], summary])
    logger.info("saved the SV model to %s (best epoch %d, val ppl %s)", out, st["best_epoch"], summary["best_val_ppl"])
    return out


# --- REINFORCE -------------------------------------------------------------------------------------------


def reinforce_loss(token_logprobs: torch.Tensor, token_counts: torch.Tensor, advantages: torch.Tensor, *,
                   gamma: float, choice_logprobs: torch.Tensor | None = None,
                   choice_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The REINFORCE loss of eq. 3.8, averaged over ``B`` dialogues.

    The agent's actions in a dialogue are its ``n`` written tokens, then (when ``choice_logprobs`` is given)
    its choice. The last action is reinforced with the dialogue's advantage ``A = r - mu``, each earlier one
    with ``A`` times one more factor ``gamma``: token ``k`` (0-based) gets ``gamma^(n - 1 - k + c) A`` with
    ``c = 1`` when the choice counts, else 0.

    Args:
        token_logprobs: ``(B, N)`` log-probabilities of the written tokens, 0-padded
            (:meth:`~negotiation.agents.RnnAgent.written_logprobs`).
        token_counts: ``(B,)`` written tokens per dialogue.
        advantages: ``(B,)`` baseline-subtracted rewards (constants).
        gamma: discount factor.
        choice_logprobs: ``(B,)`` log-probability of each final choice, or None to reinforce words only.
        choice_mask: ``(B,)`` bool, the dialogues whose choice is reinforced (default all).

    Returns:
        ``-(sum of log-prob x return) / B``, a scalar.
    """
    B, N = token_logprobs.shape
    dev = token_logprobs.device
    adv = advantages.detach().to(dev, token_logprobs.dtype)
    counts = token_counts.to(dev)
    pos = torch.arange(N, device=dev).unsqueeze(0)
    valid = pos < counts.unsqueeze(1)
    shift = 0 if choice_logprobs is None else 1
    exponent = (counts.unsqueeze(1) - 1 - pos + shift).clamp(min=0).to(token_logprobs.dtype)
    returns = adv.unsqueeze(1) * torch.pow(torch.full_like(exponent, gamma), exponent) * valid
    total = (token_logprobs * returns).sum()
    if choice_logprobs is not None:
        weight = adv if choice_mask is None else adv * choice_mask.to(dev, adv.dtype)
        total = total + (choice_logprobs * weight).sum()
    return -total / max(1, B)


@dataclass
class RewardBaseline:
    """Running mean (and standard deviation) of every reward seen so far: FAIR's baseline ``mu``."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    normalize: bool = True

    def advantages(self, rewards: Sequence[float]) -> list[float]:
        """Add ``rewards`` to the history, then return ``(r - mean) / max(1e-4, std)`` (or ``r - mean``)."""
        for r in rewards:
            self.n += 1
            self.total += float(r)
            self.total_sq += float(r) ** 2
        mean = self.total / max(1, self.n)
        std = math.sqrt(max(0.0, self.total_sq / max(1, self.n) - mean**2))
        scale = max(1e-4, std) if self.normalize else 1.0
        return [(float(r) - mean) / scale for r in rewards]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class UpdateStats:
    """What one REINFORCE update saw: rewards and outcomes of its dialogues, its loss, gradient norm."""

    dialogues: int
    reward: float
    score: float
    partner_score: float
    agreement: float
    turns: float
    loss: float
    grad_norm: float
    sv_batches: int = 0
    sv_loss: float = 0.0
    records: list[GameRecord] = field(default_factory=list, repr=False)


def reinforce_update(model: DialogModel, partner: DialogModel, scenarios: Sequence[Scenario], *,
                     cfg: ReinforceConfig, optimizer: Any, baseline: RewardBaseline, seed: int,
                     backward: Callable[[torch.Tensor], None] | None = None,
                     clip: Callable[[Any, float], Any] | None = None, partner_complement: bool = False) -> UpdateStats:
    """Play ``scenarios`` (the agent is side A, first in even games) and take one REINFORCE step.

    Args:
        model: the RL agent's model (updated in place).
        partner: the frozen partner's model.
        scenarios: one batch of games.
        cfg: temperature, gamma, reward kind, choice handling, clip.
        optimizer: the RL optimiser over ``model``'s parameters.
        baseline: the running reward baseline (updated).
        seed: seeds both agents' sampling.
        backward: how to back-propagate (default ``loss.backward()``; ``accelerator.backward`` in training).
        clip: how to clip (default ``torch.nn.utils.clip_grad_norm_``).
        partner_complement: the partner takes the complement of the agent's choice (training a target against
            a forced-agreement attacker, :mod:`negotiation.adversarial_training`); excludes ``cfg.complement``.
            The agent then learns from its words only: its choice decides the split by itself, and reinforcing
            it teaches the agent to claim everything (which an ordinary partner refuses).
    """
    if partner_complement and cfg.complement:
        raise ValueError("only one side can take the complement of the other's choice")
    agent = RnnAgent(model, name="rl", temperature=cfg.temperature, max_words=cfg.max_words,
                     sample_choice=cfg.sample_choice, track_grad=True, seed=seed_for(seed, 0))
    other = RnnAgent(partner, name="partner", temperature=cfg.temperature, max_words=cfg.max_words,
                     seed=seed_for(seed, 1))
    side: Literal["a", "b"] | None = "a" if cfg.complement else ("b" if partner_complement else None)
    records = play(agent, other, scenarios, max_turns=cfg.max_turns, complement=side)
    rewards = [float(r.scores[0] - (r.scores[1] if cfg.reward == "advantage" else 0)) for r in records]
    adv = torch.tensor(baseline.advantages(rewards), device=model.device)
    lps, counts = agent.written_logprobs()
    # the choice decides the outcome where the game reached <selection>, and everywhere under forced agreement
    selected = torch.tensor([r.selected or side is not None for r in records], device=model.device)
    loss = reinforce_loss(lps, counts, adv, gamma=cfg.gamma,
                          choice_logprobs=agent.choice_logprobs
                          if cfg.train_choice and not cfg.complement and not partner_complement else None,
                          choice_mask=selected)
    optimizer.zero_grad(set_to_none=True)
    if loss.requires_grad:
        (backward or torch.Tensor.backward)(loss)
        norm = (clip or torch.nn.utils.clip_grad_norm_)(model.parameters(), cfg.clip)
        optimizer.step()
        grad_norm = float(norm)
    else:  # nothing written and nothing chosen with a gradient (cannot happen with RnnAgent, kept for safety)
        grad_norm = 0.0
    n = len(records)
    return UpdateStats(dialogues=n, reward=sum(rewards) / n, score=sum(r.scores[0] for r in records) / n,
                       partner_score=sum(r.scores[1] for r in records) / n,
                       agreement=sum(r.agreed for r in records) / n, turns=sum(r.turns for r in records) / n,
                       loss=float(loss.detach()), grad_norm=grad_norm, records=records)


def train_rl(sv_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: ReinforceConfig, *,
             scenarios: Sequence[Scenario], train: Sequence[Example], valid: Sequence[Example],
             partner_dir: str | os.PathLike[str] | None = None,
             select_scenarios: Sequence[Scenario] | None = None, device: str | torch.device | None = None,
             progress: bool = True, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """REINFORCE self-play: the RL agent (initialised from ``sv_dir``) against a frozen partner; resume if started.

    Args:
        sv_dir: the SV model the agent starts from (a :func:`train_supervised` folder).
        out_dir: the run folder (see the module docstring); a finished run there is returned as is.
        cfg: the configuration (:data:`RL_PRESETS`, :func:`rl_preset`).
        scenarios: the games (``selfplay.txt``); the first ``cfg.max_scenarios`` are used, reshuffled per epoch.
        train: dialogues for the interleaved supervised batches.
        valid: dialogues for the perplexity of the agent before training and after each epoch.
        partner_dir: the frozen partner (default: ``sv_dir``).
        select_scenarios: the validation games of ``cfg.select_every`` (e.g. ``load_scenarios("val",
            both_orders=True)``); needed when it is > 0.
        device: as for :func:`train_supervised`.
        progress: show progress bars.
        on_epoch_end: called with each epoch's log record after its checkpoint is written.

    Returns:
        ``out_dir`` as a Path, loadable with ``DialogModel.from_pretrained``.
    """
    scen = list(scenarios)[: cfg.max_scenarios]
    train, valid = list(train)[: cfg.max_train], list(valid)[: cfg.max_valid]
    if not scen:
        raise ValueError("no self-play scenarios")
    sel_scen = list(select_scenarios or [])
    if cfg.select_every and not sel_scen:
        raise ValueError("select_every > 0 needs select_scenarios (validation games, not the training ones)")
    if not valid or (cfg.sv_every and not train):
        raise ValueError(f"need validation dialogues (got {len(valid)}) and, with sv_every > 0, training dialogues "
                         f"(got {len(train)})")
    out = Path(out_dir)
    partner_path = Path(partner_dir) if partner_dir is not None else Path(sv_dir)
    run_config = {"kind": "reinforce", "config": cfg.to_dict(), "sv_model": str(Path(sv_dir).resolve()),
                  "partner": str(partner_path.resolve()), "scenarios": len(scen), "train_dialogues": len(train),
                  "valid_dialogues": len(valid), "select_scenarios": len(sel_scen) if cfg.select_every else 0}
    started = _begin_run(out, run_config, cfg.seed, device)
    if started is None:
        return out
    ckpt, accelerator = started
    dev = accelerator.device
    model = DialogModel.from_pretrained(ckpt if ckpt is not None else sv_dir)
    partner = DialogModel.from_pretrained(partner_path, device=dev).requires_grad_(False)
    rl_opt = _make_optimizer(model.parameters(), "sgd", cfg.lr, cfg.momentum, cfg.nesterov)
    sv_opt = _make_optimizer(model.parameters(), "sgd", cfg.sv_lr, cfg.momentum, cfg.nesterov)
    model, rl_opt, sv_opt = accelerator.prepare(model, rl_opt, sv_opt)
    raw: DialogModel = accelerator.unwrap_model(model)
    optimizers = {"rl": rl_opt, "sv": sv_opt}
    if ckpt is None:
        st: dict[str, Any] = {"kind": "reinforce", "epoch": 0, "update": 0, "updates": 0, "dialogues": 0,
                              "baseline": RewardBaseline(normalize=cfg.normalize_rewards).to_dict(),
                              "epoch_stats": {}, "done": False, "elapsed_s": 0.0, "history": [], "best_select": None}
        val = evaluate_supervised(raw, valid, batch_size=cfg.eval_batch_size)
        start = {"kind": "epoch", "epoch": 0, "val_ppl": val["ppl"], "val_ppl_fair": val["ppl_fair"],
                 "val_sel": val["sel"]}
        st["history"].append(start)
        _rewrite_log(out, st["history"])
        logger.info("RL training into %s from %s (val ppl %.3f), %d scenarios, partner %s", out, sv_dir,
                    val["ppl"], len(scen), partner_path)
    else:
        st = _load_checkpoint(ckpt, optimizers)
        _rewrite_log(out, st["history"])
        logger.info("resuming %s at epoch %d, update %d", out, st["epoch"] + 1, st["update"])
    baseline = RewardBaseline(**st["baseline"])
    sv_batches: list[Batch] = (list(iter_batches(train, cfg.sv_batch_size, raw.words, raw.items, seed=cfg.seed))
                               if cfg.sv_every else [])
    n_updates = math.ceil(len(scen) / cfg.batch_size)

    def sv_step(batches: Sequence[Batch]) -> float:
        """One supervised step on the gradients of ``batches`` accumulated (their mean loss)."""
        model.train()
        sv_opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=dev)
        for cpu_batch in batches:
            batch = cpu_batch.to(dev)
            loss = raw.loss_from_output(model(batch), batch).loss / len(batches)
            accelerator.backward(loss)
            total += loss.detach()
        accelerator.clip_grad_norm_(model.parameters(), cfg.sv_clip)
        sv_opt.step()
        model.eval()
        return float(total)

    keys = ("dialogues", "reward", "score", "partner_score", "agreement", "turns", "loss", "grad_norm", "sv_loss")

    def select(epoch: int) -> None:
        """Play the validation games; keep the weights in ``out/best`` when the agent scores more than ever."""
        _, m = evaluate_selfplay(raw, partner, sel_scen, temperature=cfg.temperature, seed=cfg.seed,
                                 batch_size=2 * cfg.eval_batch_size, max_turns=cfg.max_turns, max_words=cfg.max_words,
                                 complement="a" if cfg.complement else None)
        reward = m.score_a if cfg.reward == "score" else m.advantage
        best = st["best_select"] is None or reward > st["best_select"]["reward"]
        record = {"kind": "select", "epoch": epoch, "updates": st["updates"], "dialogues": st["dialogues"],
                  "reward": reward, "score": m.score_a, "partner_score": m.score_b, "advantage": m.advantage,
                  "agreement": m.agreement, "turns": m.turns, "best": best}
        if best:
            st["best_select"] = record
            _save_model_dir(out / BEST_DIR, raw)
        st["history"].append(record)
        _append_log(out, record)

    while not st["done"]:
        epoch = st["epoch"] + 1
        order = list(range(len(scen)))
        random.Random(seed_for(cfg.seed, epoch)).shuffle(order)
        sums: dict[str, float] = {k: float(st["epoch_stats"].get(k, 0.0)) for k in (*keys, "updates", "sv_batches")}
        t_part = time.perf_counter()
        bar = tqdm(range(st["update"], n_updates), total=n_updates, initial=st["update"], desc=f"rl epoch {epoch}",
                   unit="update", disable=not progress, dynamic_ncols=True)
        for k in bar:
            games = [scen[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]
            stats = reinforce_update(raw, partner, games, cfg=cfg, optimizer=rl_opt, baseline=baseline,
                                     seed=seed_for(cfg.seed, epoch, k), backward=accelerator.backward,
                                     clip=accelerator.clip_grad_norm_)
            before = st["dialogues"]
            st["dialogues"] += stats.dialogues
            n_sv = st["dialogues"] // cfg.sv_every - before // cfg.sv_every if cfg.sv_every else 0
            if n_sv:
                rng = random.Random(seed_for(cfg.seed, epoch, k, 2))
                stats.sv_batches = n_sv
                stats.sv_loss = sv_step([sv_batches[rng.randrange(len(sv_batches))] for _ in range(n_sv)])
            st["update"], st["updates"] = k + 1, st["updates"] + 1
            n = stats.dialogues
            for key in keys:
                sums[key] += n * getattr(stats, key) if key != "dialogues" else n
            sums["updates"] += 1
            sums["sv_batches"] += stats.sv_batches
            st["baseline"] = baseline.to_dict()
            if cfg.log_every and st["updates"] % cfg.log_every == 0:
                record = {"kind": "update", "epoch": epoch, "update": k + 1, "updates": st["updates"],
                          "dialogues": st["dialogues"], "reward": stats.reward, "score": stats.score,
                          "partner_score": stats.partner_score, "agreement": stats.agreement, "turns": stats.turns,
                          "loss": stats.loss, "grad_norm": stats.grad_norm, "sv_loss": stats.sv_loss,
                          "baseline": baseline.total / max(1, baseline.n)}
                st["history"].append(record)
                _append_log(out, record)
            if cfg.select_every and st["updates"] % cfg.select_every == 0:
                select(epoch)
            if progress:
                d = max(1.0, sums["dialogues"])
                bar.set_postfix(score=f"{sums['score'] / d:.2f}", partner=f"{sums['partner_score'] / d:.2f}",
                                agree=f"{sums['agreement'] / d:.2f}")
            if cfg.save_every and (k + 1) % cfg.save_every == 0 and k + 1 < n_updates:
                st["epoch_stats"] = dict(sums)
                st["elapsed_s"] += time.perf_counter() - t_part
                t_part = time.perf_counter()
                _save_checkpoint(out, raw, optimizers, st)
        bar.close()
        if cfg.select_every and st["updates"] % cfg.select_every:
            select(epoch)
        val = evaluate_supervised(raw, valid, batch_size=cfg.eval_batch_size)
        st["elapsed_s"] += time.perf_counter() - t_part
        d = max(1.0, sums["dialogues"])
        record = {"kind": "epoch", "epoch": epoch, "updates": st["updates"], "dialogues": st["dialogues"],
                  **{k: sums[k] / d for k in keys if k not in ("dialogues", "sv_loss")},
                  "sv_batches": int(sums["sv_batches"]),
                  "sv_loss": sums["sv_loss"] / d if sums["sv_batches"] else None,
                  "val_ppl": val["ppl"], "val_ppl_fair": val["ppl_fair"], "val_sel": val["sel"],
                  "elapsed_s": round(st["elapsed_s"], 2)}
        logger.info("rl epoch %d: score %.2f vs %.2f, agreement %.1f%%, val ppl %.3f", epoch, record["score"],
                    record["partner_score"], 100 * record["agreement"], val["ppl"])
        st.update(epoch=epoch, update=0, epoch_stats={}, done=epoch >= cfg.epochs)
        st["history"].append(record)
        _append_log(out, record)
        _save_checkpoint(out, raw, optimizers, st)
        if on_epoch_end is not None:
            on_epoch_end(record)

    chosen = st.get("best_select")
    if chosen is not None:  # the result: the weights of the best validation games
        best_dir = complete_dir(out / BEST_DIR, (WEIGHTS_FILE,))
        assert best_dir is not None, "the best validation weights are saved before the state that names them"
        raw.load_state_dict(DialogModel.from_pretrained(best_dir).state_dict())
    raw.save_pretrained(out)
    last: dict[str, Any] = next((r for r in reversed(st["history"]) if r["kind"] == "epoch"), {})
    summary = {"kind": "summary", "done": True, "epochs": st["epoch"], "updates": st["updates"],
               "dialogues": st["dialogues"], "val_ppl": last.get("val_ppl"), "val_ppl_fair": last.get("val_ppl_fair"),
               "selected": chosen, "elapsed_s": round(st["elapsed_s"], 2)}
    if chosen is not None:
        val = evaluate_supervised(raw, valid, batch_size=cfg.eval_batch_size)
        summary.update(val_ppl=val["ppl"], val_ppl_fair=val["ppl_fair"])
    _rewrite_log(out, [*st["history"], summary])
    logger.info("saved the RL model to %s (%d dialogues, val ppl %s)", out, st["dialogues"], summary["val_ppl"])
    return out


__all__ = [
    "RL_PRESETS",
    "SV_PRESETS",
    "ReinforceConfig",
    "RewardBaseline",
    "SupervisedConfig",
    "UpdateStats",
    "evaluate_selfplay",
    "evaluate_supervised",
    "is_complete",
    "read_log",
    "reinforce_loss",
    "reinforce_update",
    "rl_preset",
    "sv_preset",
    "train_rl",
    "train_supervised",
]
