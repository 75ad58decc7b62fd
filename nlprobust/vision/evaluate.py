"""Robustness evaluation shared by every defense recipe: PGD, C&W, transfer, AutoAttack and a hard-label check.

Label-smoothing defenses (CAT, SPROUT) can mask gradients, so a PGD number alone can overstate them
(Athalye et al., ICML 2018; Croce and Hein, ICML 2020). :func:`evaluate` therefore reports, for each epsilon of an
L-inf threat model, the robust accuracy under

- our white-box attacks: PGD-20 and PGD-100 with restarts (Madry et al.'s step ``2.5 * eps / steps``) and
  C&W-L-inf (PGD on the margin loss), see :mod:`nlprobust.vision.attacks`;
- a transfer attack: PGD examples crafted on a naturally trained source model, evaluated on the model;
- each AutoAttack component alone, from the maintained implementation in ``torchattacks`` (APGD-CE, APGD-T,
  FAB-T, Square by default: AutoAttack's "standard" set);
- the worst case over all of them, per image: an image counts as robust only if no attack found an adversarial
  example for it within epsilon (the number to quote);
- a hard-label sanity check: Sign-OPT (L-inf) on a few images, the share whose adversarial lies within epsilon;

and flags ``gradient_masking_suspected`` when PGD's robust accuracy exceeds the worst case by more than
``masking_threshold`` or when a black-box attack (Square, Sign-OPT, transfer) beats white-box PGD.

    config = eval_preset("mnist")                        # eps 0.3, full budgets
    report = evaluate(model, x_test, y_test, config)     # JSON-ready dict
    report["by_epsilon"][0]["robust_accuracy"]["worst_case"]

Only correctly classified images are attacked (as AutoAttack does); every accuracy is a fraction of all
evaluated images, in [0, 1]. Each attack's output is checked here, by the model, within the epsilon ball (to
``1e-5``): an attack that returns a point outside the ball does not count for that image.

Deviations from AutoAttack (Croce and Hein 2020, standard version):
    - Every component runs on every correctly classified image (AutoAttack runs them in cascade, each on the
      images the previous ones left): slower, but each component's robust accuracy is reported alone. The
      ``autoattack`` number (per image, over the components) equals the cascade's up to randomness.
    - The components are torchattacks 3.5.1's re-implementations, not fra31/auto-attack. We pass AutoAttack's
      budgets explicitly: torchattacks' own ``AutoAttack`` wrapper leaves APGD and FAB at 10 steps (standard:
      100).

torchattacks quirks handled here: its attacks reseed the global torch generator (``torch.random.manual_seed``;
we fork the random state), FAB calls ``backward()`` (parameters are frozen during evaluation so the caller's
``.grad`` is untouched), ``_recover_model_mode`` calls ``model.train()`` on the whole model (we restore each
module's own flag), APGD returns tensors that require grad (detached), FAB casts images to float32, APGD-T and
FAB-T read ``n_classes`` as "target classes + 1", and the classes print instead of logging (silenced).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from nlprobust.core.runner import Shard, run_items
from nlprobust.vision.attacks import get_attack

__all__ = ["EvalConfig", "AUTOATTACK_COMPONENTS", "eval_preset", "evaluate", "frozen_for_eval", "masking_reasons",
           "refresh_masking_flags"]

log = logging.getLogger(__name__)

#: AutoAttack components this module can run (torchattacks classes); the default is the "standard" set.
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
STANDARD_AUTOATTACK = ("apgd-ce", "apgd-t", "fab-t", "square")
BLACK_BOX = ("square", "transfer", "sign-opt")
_TOL = 1e-5  # slack on the epsilon ball (torchattacks returns e.g. 0.10000002 for eps 0.1)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What :func:`evaluate` runs. Lists given as lists (YAML) are stored as tuples.

    Attributes:
        epsilons: L-inf radii in pixel units of [0, 1] images (MNIST 0.3, CIFAR-10 8/255), sorted ascending.
        norm: ``"linf"`` only (the threat model of the defenses we evaluate).
        pgd_steps: one PGD run per entry, named ``pgd-<steps>``; default ``(20, 100)``.
        pgd_restarts: random restarts of each PGD run; default ``(1, 5)``: PGD-100 with 5 restarts costs 500
            gradient steps per image, about half of APGD-T's 900, a budget at which further restarts rarely
            change Madry-style numbers by more than a point.
        pgd_loss: ``"ce"`` (default, Madry et al.) or ``"cw"``.
        cw_steps, cw_restarts: C&W-L-inf (PGD on the margin loss); default 100 steps, 1 restart. 0 steps: skip.
        autoattack: AutoAttack components to run, from :data:`AUTOATTACK_COMPONENTS`; default the standard set
            ``apgd-ce, apgd-t, fab-t, square``.
        apgd_steps, apgd_restarts: per APGD run (AutoAttack standard: 100 steps, 1 restart).
        fab_steps, fab_restarts: per FAB run (standard: 100 steps, 1 restart).
        n_target_classes: target classes of APGD-T and FAB-T (the highest-scoring wrong classes); None: all
            (``classes - 1``, i.e. 9, as in AutoAttack standard).
        square_queries: Square's iterations per image (one query each, plus one initial query); standard 5000.
        square_restarts: Square restarts (standard 1).
        transfer_checkpoint: a naturally trained source model (:func:`~nlprobust.vision.models.save_checkpoint`
            file) for the transfer attack, used when :func:`evaluate` gets no ``transfer_from``; None: no transfer
            attack unless one is passed.
        transfer_steps, transfer_restarts: PGD on the source model (default 100 steps, 1 restart).
        signopt_images: images (the first correctly classified ones) for the Sign-OPT check; 0 skips it.
        signopt_budget: Sign-OPT queries per image (exact).
        signopt_init: random initial directions Sign-OPT tries (the thesis's 100; each costs a few queries).
        batch_size: images per attack batch (and rows per forward pass).
        n_images: evaluate the first ``n_images`` images; None: all given.
        seed: seed of every attack (batch ``b`` of an attack uses ``seed + b``).
        masking_threshold: PGD robust accuracy above the worst case by more than this suggests masking (0.05).
        blackbox_margin: a black-box attack "beats" PGD when its robust accuracy (Sign-OPT: its success rate on
            its images) is better than PGD's by more than this (default 0.02, two points: tolerates the few images
            that a random search finds and PGD misses on a sound model; on 200 images, 4 of them).
    """

    epsilons: tuple[float, ...] = (0.3,)
    norm: str = "linf"
    pgd_steps: tuple[int, ...] = (20, 100)
    pgd_restarts: tuple[int, ...] = (1, 5)
    pgd_loss: str = "ce"
    cw_steps: int = 100
    cw_restarts: int = 1
    autoattack: tuple[str, ...] = STANDARD_AUTOATTACK
    apgd_steps: int = 100
    apgd_restarts: int = 1
    fab_steps: int = 100
    fab_restarts: int = 1
    n_target_classes: int | None = None
    square_queries: int = 5000
    square_restarts: int = 1
    transfer_checkpoint: str | None = None
    transfer_steps: int = 100
    transfer_restarts: int = 1
    signopt_images: int = 20
    signopt_budget: int = 4000
    signopt_init: int = 100
    batch_size: int = 256
    n_images: int | None = 1000
    seed: int = 0
    masking_threshold: float = 0.05
    blackbox_margin: float = 0.02

    def __post_init__(self) -> None:
        for name in ("epsilons", "pgd_steps", "pgd_restarts", "autoattack"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        eps = tuple(sorted(float(e) for e in self.epsilons))
        if not eps or any(not (0 < e < 1) for e in eps) or len(set(eps)) != len(eps):
            raise ValueError(f"epsilons must be distinct numbers in (0, 1) (pixel units), got {self.epsilons}")
        object.__setattr__(self, "epsilons", eps)
        if self.norm != "linf":
            raise ValueError(f"norm {self.norm!r} is not supported; expected 'linf'")
        if len(self.pgd_steps) != len(self.pgd_restarts):
            raise ValueError(f"pgd_steps {self.pgd_steps} and pgd_restarts {self.pgd_restarts} must have the "
                             "same length (one restart count per PGD run)")
        if len(set(self.pgd_steps)) != len(self.pgd_steps):
            raise ValueError(f"pgd_steps must be distinct (they name the runs), got {self.pgd_steps}")
        if any(s < 1 for s in self.pgd_steps) or any(r < 1 for r in self.pgd_restarts):
            raise ValueError(f"PGD steps and restarts must be positive, got {self.pgd_steps}, {self.pgd_restarts}")
        if self.pgd_loss not in ("ce", "cw"):
            raise ValueError(f"pgd_loss must be 'ce' or 'cw', got {self.pgd_loss!r}")
        unknown = [a for a in self.autoattack if a not in AUTOATTACK_COMPONENTS]
        if unknown or len(set(self.autoattack)) != len(self.autoattack):
            raise ValueError(f"autoattack components {list(self.autoattack)}: expected distinct names from "
                             f"{AUTOATTACK_COMPONENTS}")
        positive = ("cw_restarts", "apgd_steps", "apgd_restarts", "fab_steps", "fab_restarts", "square_queries",
                    "square_restarts", "transfer_steps", "transfer_restarts", "signopt_budget", "signopt_init",
                    "batch_size")
        bad = {name: getattr(self, name) for name in positive if getattr(self, name) < 1}
        if bad:
            raise ValueError(f"expected positive values, got {bad}")
        if self.cw_steps < 0 or self.signopt_images < 0:
            raise ValueError(f"cw_steps and signopt_images must be >= 0 (0 skips), got {self.cw_steps}, "
                             f"{self.signopt_images}")
        if self.n_target_classes is not None and self.n_target_classes < 1:
            raise ValueError(f"n_target_classes must be positive or None, got {self.n_target_classes}")
        if self.n_images is not None and self.n_images < 1:
            raise ValueError(f"n_images must be positive or None, got {self.n_images}")
        if not (0 <= self.masking_threshold < 1 and 0 <= self.blackbox_margin < 1):
            raise ValueError(f"masking_threshold and blackbox_margin are fractions in [0, 1), got "
                             f"{self.masking_threshold}, {self.blackbox_margin}")


def eval_preset(dataset: str, scale: str = "full", **overrides: Any) -> EvalConfig:
    """Defaults per dataset: MNIST eps 0.3, CIFAR-10 eps 8/255 (the standard L-inf threat models).

    ``scale="full"``: AutoAttack-standard budgets on 1,000 images. ``"small"`` (2 CPU cores, quick checks):
    200 images, PGD-100 with 2 restarts, APGD/FAB 50 steps on the 3 strongest target classes, Square 1,000
    queries, Sign-OPT 10 images x 2,000 queries. ``"tiny"`` (tests): 32 images, PGD-20 and PGD-100 without
    restarts, APGD/FAB 20 steps on 2 target classes, Square 200 queries, Sign-OPT 8 images x 1,000 queries."""
    eps = {"mnist": (0.3,), "cifar10": (8 / 255,)}
    if dataset not in eps:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(eps)}")
    cfg = EvalConfig(epsilons=eps[dataset])
    if scale == "small":
        cfg = replace(cfg, n_images=200, pgd_restarts=(1, 2), apgd_steps=50, fab_steps=50, n_target_classes=3,
                      square_queries=1000, signopt_images=10, signopt_budget=2000)
    elif scale == "tiny":
        cfg = replace(cfg, n_images=32, pgd_restarts=(1, 1), cw_steps=20, apgd_steps=20, fab_steps=20,
                      n_target_classes=2, square_queries=200, transfer_steps=20, signopt_images=8,
                      signopt_budget=1000, signopt_init=20)
    elif scale != "full":
        raise ValueError(f"unknown scale {scale!r}; expected 'full', 'small' or 'tiny'")
    return replace(cfg, **overrides)


# -- model state ------------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def frozen_for_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameters that do not require gradients; restore afterwards.

    Restores every module's own ``training`` flag (a model in training mode with frozen batch norm stays so),
    each parameter's ``requires_grad`` and ``.grad`` (torchattacks' FAB calls ``backward()``, which would
    otherwise accumulate into the caller's gradients), and the global torch random state (torchattacks reseeds
    it with ``torch.random.manual_seed``)."""
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            model.eval()
            for p, _, _ in params:
                p.requires_grad_(False)
            yield model
        finally:
            for m, mode in modes:
                m.training = mode
            for p, req, grad in params:
                p.requires_grad_(req)
                p.grad = grad


class _GradientPath(nn.Module):
    """``model(x) + 0 * x.sum()``: lets gradient attacks run (and see zero gradients) on a model whose output does
    not depend differentiably on its input at all (e.g. one that detaches it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z: torch.Tensor = self.model(x)
        return z + 0.0 * x.sum(dim=tuple(range(1, x.dim()))).unsqueeze(1)


def _with_gradient_path(model: nn.Module, x: torch.Tensor) -> nn.Module:
    probe = x[:1].clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(probe)
    if out.requires_grad:
        return model
    log.warning("the model's output does not depend differentiably on its input: white-box attacks see zero "
                "gradients (a masking defense); black-box attacks and the worst case still apply")
    return _GradientPath(model)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = _model_device(model)
    return torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _survives(model: nn.Module, x_adv: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, eps: float,
              name: str) -> torch.Tensor:
    """Per image (CPU bool): the model still classifies ``x_adv`` correctly, or ``x_adv`` is not a valid
    perturbation (outside the epsilon ball: the attack's claim is rejected and logged)."""
    x_adv = x_adv.detach().to(x0.device, torch.float32).clamp(0, 1)
    dist = (x_adv - x0).flatten(1).abs().amax(1)
    outside = dist > eps + _TOL
    if bool(outside.any()):
        log.warning("%s returned %d points outside the L-inf ball of radius %g (largest %.6f): not counted",
                    name, int(outside.sum()), eps, float(dist.max()))
    pred = model(x_adv.to(_model_device(model))).argmax(1).cpu()
    return (pred == y.cpu()) | outside.cpu()


# -- attacks ----------------------------------------------------------------------------------------------------

#: ``run(x, y, eps, seed) -> x_adv`` on one batch, x and y on the model's device.
AttackFn = Callable[[torch.Tensor, torch.Tensor, float, int], torch.Tensor]


def _ours(model: nn.Module, name: str, **kwargs: Any) -> AttackFn:
    def run(x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        return get_attack(name, epsilon=eps, seed=seed, **kwargs)(model, x, y).x_adv

    return run


def _torchattacks(model: nn.Module, name: str, config: EvalConfig, n_classes: int) -> AttackFn:
    try:
        import torchattacks
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the AutoAttack components need torchattacks (pip install torchattacks>=3.5)") from exc
    # APGD-T and FAB-T attack the classes ranked 2 .. n_classes by the clean logits: their `n_classes` argument
    # is the number of target classes plus one
    n_targets = min(config.n_target_classes or n_classes - 1, n_classes - 1)

    def build(eps: float, seed: int) -> Any:
        common = {"norm": "Linf", "eps": eps, "seed": seed}
        if name in ("apgd-ce", "apgd-dlr"):
            return torchattacks.APGD(model, steps=config.apgd_steps, n_restarts=config.apgd_restarts,
                                     loss=name.split("-")[1], **common)
        if name == "apgd-t":
            return torchattacks.APGDT(model, steps=config.apgd_steps, n_restarts=config.apgd_restarts,
                                      n_classes=n_targets + 1, **common)
        if name in ("fab", "fab-t"):
            return torchattacks.FAB(model, steps=config.fab_steps, n_restarts=config.fab_restarts,
                                    multi_targeted=name == "fab-t", n_classes=n_targets + 1, **common)
        return torchattacks.Square(model, n_queries=config.square_queries, n_restarts=config.square_restarts,
                                   **common)

    def run(x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints instead of logging
            attack = build(eps, seed)
        attack.set_device(x.device)
        with torch.enable_grad():
            return attack(x, y).detach()  # type: ignore[no-any-return]

    return run


def _attacks(model: nn.Module, source: nn.Module | None, config: EvalConfig, n_classes: int) -> dict[str, AttackFn]:
    bs = config.batch_size
    out: dict[str, AttackFn] = {}
    for steps, restarts in zip(config.pgd_steps, config.pgd_restarts):
        out[f"pgd-{steps}"] = _ours(model, "pgd", norm="linf", steps=steps, restarts=restarts,
                                    loss=config.pgd_loss, batch_size=bs)
    if config.cw_steps > 0:
        out["cw-linf"] = _ours(model, "cw-linf", steps=config.cw_steps, restarts=config.cw_restarts, batch_size=bs)
    if source is not None:
        # crafted on the source model, with the source's own gradients; evaluated on `model` by the caller
        out["transfer"] = _ours(source, "pgd", norm="linf", steps=config.transfer_steps,
                                restarts=config.transfer_restarts, loss=config.pgd_loss, batch_size=bs)
    for name in config.autoattack:
        out[name] = _torchattacks(model, name, config, n_classes)
    return out


def _transfer_source(model: nn.Module, config: EvalConfig, transfer_from: nn.Module | None) -> nn.Module | None:
    if transfer_from is not None:
        return transfer_from
    if config.transfer_checkpoint is None:
        return None
    from nlprobust.vision.models import load_checkpoint

    source, _ = load_checkpoint(config.transfer_checkpoint, device=_model_device(model))
    return source


# -- the evaluation ---------------------------------------------------------------------------------------------


def _frac(mask: torch.Tensor, n: int) -> float:
    return float(mask.sum()) / n


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: EvalConfig, *,
             transfer_from: nn.Module | None = None, progress: bool = True,
             records: str | os.PathLike[str] | None = None, shard: Shard | None = None) -> dict[str, Any] | None:
    """Robust accuracy of ``model`` on ``x``, ``y`` under every attack of ``config``, per epsilon.

    Args:
        model: classifier taking images in [0, 1] (N x C x H x W) and returning logits; evaluated in eval mode,
            on its own device. Its modes, parameter flags and gradients and the global random state are
            restored afterwards (:func:`frozen_for_eval`). torchattacks' FAB casts images to float32.
        x: images in [0, 1], N x C x H x W (any device; batches move to the model's).
        y: labels, N.
        config: what to run (:class:`EvalConfig`); only the first ``config.n_images`` images are used.
        transfer_from: naturally trained source model for the transfer attack; default: the model of
            ``config.transfer_checkpoint``, or no transfer attack. Its modes are restored as the model's.
        progress: show a tqdm progress bar.
        records: a JSON-lines file of per-image results (one line per correctly classified image: whether it
            survived each attack at each epsilon), written chunk by chunk by the project's runner
            (:func:`nlprobust.core.runner.run_items`) so an interrupted evaluation resumes; each chunk of
            ``config.batch_size`` images is attacked with seed ``config.seed + chunk``, whatever the order.
        shard: this process's part of a sharded evaluation (needs ``records``): each process attacks its
            chunks, and the one that completes last merges them and returns the report; the others return
            ``None``. Default: one process.

    Returns:
        A JSON-ready dict: ``n_images``, ``clean_accuracy``, ``attacks`` (names run), ``config``,
        ``sign_opt`` (images, budget, median L-inf distance, seconds), ``gradient_masking_suspected`` (any
        epsilon), ``seconds``, and ``by_epsilon``: one dict per epsilon (ascending) with ``epsilon``,
        ``robust_accuracy`` (each attack alone, ``pgd`` = all PGD runs together, ``autoattack`` = the
        AutoAttack components together, ``worst_case`` = every attack, per image), ``sign_opt`` (success at
        epsilon on its images, and PGD's success on the same images), ``pgd_minus_autoattack``,
        ``pgd_minus_worst_case``, ``gradient_masking_suspected``, ``masking_reasons`` and ``seconds`` per attack.

        An adversarial example found at a smaller epsilon also lies in every larger ball, so ``worst_case`` is
        taken over the smaller epsilons too (monotone by construction); the per-attack numbers are not.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module returning logits, got {type(model).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected images of shape N x C x H x W, got {tuple(x.shape)}")
    y = torch.as_tensor(y, dtype=torch.long)
    if y.shape != (x.shape[0],):
        raise ValueError(f"expected {x.shape[0]} labels, got shape {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no images to evaluate")
    if not torch.is_floating_point(x) or float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("images must be floats in [0, 1] (the models normalise them themselves)")
    t_start = time.time()
    n = x.shape[0] if config.n_images is None else min(config.n_images, x.shape[0])
    x, y = x[:n].detach().float().cpu(), y[:n].cpu()
    source = _transfer_source(model, config, transfer_from)
    stack = contextlib.ExitStack()
    with stack:
        stack.enter_context(frozen_for_eval(model))
        if source is not None and source is not model:
            stack.enter_context(frozen_for_eval(source))
        net = _with_gradient_path(model, x.to(_model_device(model)))
        logits = _logits(net, x, config.batch_size)
        n_classes = logits.shape[1]
        correct = logits.argmax(1) == y
        idx = torch.nonzero(correct).flatten()
        log.info("clean accuracy %.4f on %d images", _frac(correct, n), n)
        attacks = _attacks(net, source, config, n_classes)
        so_idx = idx[:config.signopt_images]
        positions = idx.tolist()

        def process(c: int, part: list[int]) -> list[dict[str, Any]]:
            chunk = torch.tensor(part, dtype=torch.long)
            recs: list[dict[str, Any]] = [{"index": p, "robust": {}, "seconds": {}} for p in part]
            for eps in config.epsilons:
                for name, run in attacks.items():
                    t0 = time.time()
                    dev = _model_device(source if name == "transfer" and source is not None else net)
                    x_adv = run(x[chunk].to(dev), y[chunk].to(dev), eps, config.seed + c)
                    ok = _survives(net, x_adv, x[chunk], y[chunk], eps, name).tolist()
                    per_image = (time.time() - t0) / len(part)
                    for rec, o in zip(recs, ok):
                        rec["robust"].setdefault(repr(float(eps)), {})[name] = bool(o)
                        rec["seconds"].setdefault(repr(float(eps)), {})[name] = per_image
            return recs

        so_report, so_dist = _sign_opt(net, x, y, so_idx, config)
        if records is None:
            if shard is not None and shard.world > 1:
                raise ValueError("a sharded evaluation needs a records file")
            chunks = [positions[i:i + config.batch_size] for i in range(0, len(positions), config.batch_size)]
            bar = tqdm(chunks, desc="robustness", unit="batch", disable=not progress)
            image_recs = [r for c, part in enumerate(bar) for r in process(c, part)]
        else:
            outcome = run_items(positions, process, records, keys=positions, chunk_size=config.batch_size,
                                shard=shard or Shard(), desc="robustness", unit="img", progress=progress)
            if not outcome.merged:
                return None
            image_recs = outcome.records
        found_before = torch.zeros(n, dtype=torch.bool)  # adversarial found at a smaller epsilon
        per_eps = []
        for eps in config.epsilons:
            robust: dict[str, torch.Tensor] = {}
            seconds: dict[str, float] = {}
            for name in attacks:
                ok = correct.clone()
                for rec in image_recs:
                    ok[rec["index"]] = rec["robust"][repr(float(eps))][name]
                robust[name] = ok
                seconds[name] = round(sum(rec["seconds"][repr(float(eps))][name] for rec in image_recs), 3)
                log.info("eps %g %s: robust accuracy %.4f", eps, name, _frac(ok, n))
            per_eps.append(_summarise(eps, robust, seconds, correct, so_idx, so_dist, config, found_before))
    report: dict[str, Any] = {
        "n_images": n,
        "clean_accuracy": _frac(correct, n),
        "norm": config.norm,
        "attacks": list(attacks) + (["sign-opt"] if len(so_idx) else []),
        "transfer_source": None if source is None else (
            "given" if transfer_from is not None else str(config.transfer_checkpoint)),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "sign_opt": so_report,
        "by_epsilon": per_eps,
        "gradient_masking_suspected": any(r["gradient_masking_suspected"] for r in per_eps),
        "seconds": round(time.time() - t_start, 3),
    }
    return report


def _sign_opt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, so_idx: torch.Tensor,
              config: EvalConfig) -> tuple[dict[str, Any] | None, torch.Tensor]:
    """Run Sign-OPT (untargeted, L-inf, minimum distortion) once on ``so_idx``; its distances serve every epsilon
    (inf where it found no adversarial)."""
    if len(so_idx) == 0:
        return None, torch.zeros(0)
    t0 = time.time()
    attack = get_attack("sign-opt", norm="linf", budget=config.signopt_budget, n_init=config.signopt_init,
                        seed=config.seed, batch_size=config.batch_size)
    res = attack(model, x[so_idx], y[so_idx])
    # re-check the returned points with the model: a success is a verified label change at that distance
    still = _survives(model, res.x_adv, x[so_idx], y[so_idx], 1.0, "sign-opt")
    dist = torch.where(~still, (res.x_adv.float().clamp(0, 1) - x[so_idx]).flatten(1).abs().amax(1),
                       torch.full((len(so_idx),), math.inf))
    found = int(torch.isfinite(dist).sum())
    median = float(dist.median())  # inf when Sign-OPT found no adversarial for half of the images or more
    seconds = round(time.time() - t0, 3)
    log.info("sign-opt on %d images: %d adversarial, median L-inf %.4f (%.1f s)", len(so_idx), found, median,
             seconds)
    return {"n_images": len(so_idx), "budget": config.signopt_budget, "found": found / len(so_idx),
            "median_distance": median if math.isfinite(median) else None,
            "mean_queries": float(res.queries.float().mean()), "seconds": seconds}, dist


def _summarise(eps: float, robust: dict[str, torch.Tensor], seconds: dict[str, float], correct: torch.Tensor,
               so_idx: torch.Tensor, so_dist: torch.Tensor, config: EvalConfig,
               found_before: torch.Tensor) -> dict[str, Any]:
    """Per-epsilon numbers and flags; updates ``found_before`` (images broken at this or a smaller epsilon)."""
    n = len(correct)
    pgd_names = [f"pgd-{s}" for s in config.pgd_steps]
    aa_names = [a for a in config.autoattack if a in robust]
    worst = correct.clone()
    for ok in robust.values():
        worst &= ok
    so: dict[str, Any] | None = None
    pgd = torch.stack([robust[p] for p in pgd_names]).all(0)
    if len(so_idx):
        so_broken = so_dist <= eps + _TOL
        worst[so_idx[so_broken]] = False
        so = {"n_images": len(so_idx), "success_rate": _frac(so_broken, len(so_idx)),
              "pgd_success_rate": _frac(~pgd[so_idx], len(so_idx))}
    worst &= ~found_before
    found_before |= ~worst & correct
    acc = {name: _frac(ok, n) for name, ok in robust.items()}
    acc["pgd"] = _frac(pgd, n)
    if aa_names:
        acc["autoattack"] = _frac(torch.stack([robust[a] for a in aa_names]).all(0), n)
    acc["worst_case"] = _frac(worst, n)

    block = {
        "epsilon": eps,
        "robust_accuracy": acc,
        "sign_opt": so,
        "pgd_minus_autoattack": acc["pgd"] - acc["autoattack"] if aa_names else None,
        "pgd_minus_worst_case": acc["pgd"] - acc["worst_case"],
        "seconds": seconds,
    }
    reasons = masking_reasons(block, config)
    for r in reasons:
        log.warning("eps %g: gradient masking suspected: %s", eps, r)
    return {**block, "gradient_masking_suspected": bool(reasons), "masking_reasons": reasons}


def masking_reasons(block: dict[str, Any], config: EvalConfig) -> list[str]:
    """Why one epsilon's results (a ``by_epsilon`` entry of :func:`evaluate`) suggest gradient masking under
    ``config``'s thresholds: PGD above the worst case by more than ``masking_threshold``, or a black-box attack
    (Square, transfer, Sign-OPT) beating PGD by more than ``blackbox_margin``. Empty: no sign of it."""
    acc, so = block["robust_accuracy"], block.get("sign_opt")
    reasons = []
    gap = acc["pgd"] - acc["worst_case"]
    if gap > config.masking_threshold:
        reasons.append(f"PGD robust accuracy {acc['pgd']:.3f} exceeds the worst case {acc['worst_case']:.3f} by "
                       f"more than {config.masking_threshold:.2f}")
    for name in ("square", "transfer"):
        if name in acc and acc[name] < acc["pgd"] - config.blackbox_margin:
            reasons.append(f"black-box {name} ({acc[name]:.3f}) beats white-box PGD ({acc['pgd']:.3f})")
    if so is not None and so["success_rate"] > so["pgd_success_rate"] + config.blackbox_margin:
        reasons.append(f"hard-label Sign-OPT succeeds on {so['success_rate']:.3f} of its images, PGD on "
                       f"{so['pgd_success_rate']:.3f}")
    return reasons


def refresh_masking_flags(report: dict[str, Any], config: EvalConfig) -> dict[str, Any]:
    """``report`` (from :func:`evaluate`) with its masking flags recomputed under ``config``'s thresholds (the
    attacks' results are unchanged): a cached evaluation needs no new attacks to apply other thresholds."""
    blocks = [{**b, "masking_reasons": (r := masking_reasons(b, config)), "gradient_masking_suspected": bool(r)}
              for b in report["by_epsilon"]]
    cfg = {**report.get("config", {}), "masking_threshold": config.masking_threshold,
           "blackbox_margin": config.blackbox_margin}
    return {**report, "by_epsilon": blocks, "config": cfg,
            "gradient_masking_suspected": any(b["gradient_masking_suspected"] for b in blocks)}
