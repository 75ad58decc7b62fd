"""Configurations and named presets of the supervised ("SV") and REINFORCE ("RL") training of Lewis et al.'s
negotiation agents (:mod:`negotiation.training.supervised`, :mod:`negotiation.training.reinforce`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from negotiation.agents import DEFAULT_MAX_WORDS, DEFAULT_TEMPERATURE
from negotiation.corpus import FAIR_MIN_FREQ
from negotiation.domain import MAX_TURNS
from negotiation.model import DialogModelConfig


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


__all__ = ["RL_PRESETS", "SV_PRESETS", "TINY_MODEL", "ReinforceConfig", "SupervisedConfig", "rl_preset", "sv_preset"]
