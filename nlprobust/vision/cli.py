"""``nlprobust vision ...`` sub-commands: train a classifier, attack it.

    nlprobust vision train --dataset mnist --out runs/vision/mnist_cnn
    nlprobust vision attack --checkpoint runs/vision/mnist_cnn/model.pt --method sign-opt --n 10 --budget 4000
    nlprobust vision defend --method cat --set eps_max=0.3 --set eta=0.15 --set c=3 --out runs/vision/mnist_cat
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_train(args: argparse.Namespace) -> int:
    from nlprobust.vision.datasets import load_images
    from nlprobust.vision.models import VisionModelConfig
    from nlprobust.vision.train import train_classifier, train_preset

    overrides: dict[str, Any] = {k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "max_train", "seed")
                                 if getattr(args, k) is not None}
    cfg = train_preset(args.dataset, args.arch, args.scale, **overrides)
    model_cfg = VisionModelConfig(arch=args.arch, dataset=args.dataset)
    summary = train_classifier(model_cfg, load_images(args.dataset, "train", args.data_dir),
                               load_images(args.dataset, "test", args.data_dir), args.out, cfg,
                               device=args.device, quiet=args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from nlprobust.core.runner import local_device, parse_shard
    from nlprobust.vision.run import attack_checkpoint

    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    rows = attack_checkpoint(args.checkpoint, method=args.method, n=args.n, budget=args.budget,
                             targeted=args.targeted, norm=args.norm, epsilon=args.epsilon, seed=args.seed,
                             data_dir=args.data_dir, out=args.out, device=local_device(shard, args.device),
                             quiet=args.quiet, chunk=args.chunk, shard=shard)
    if rows is None:
        print(f"rank {shard}: its images are attacked; the last rank to finish merges the shards",
              file=sys.stderr)
        return 0
    print(json.dumps(rows))
    return 0


def _parse_hyper(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _set_eval_bn(model: Any, setting: str) -> None:
    """Switch a trained model's batch norm to ``setting`` before it is evaluated: ``clean`` / ``adv`` (AdvProp's
    two branches) or a perturbation strength (RobMask: the BN parameters of that strength's code)."""
    from nlprobust.vision.defenses import set_bn_branch, set_bn_epsilon

    try:
        if setting in ("clean", "adv"):
            set_bn_branch(model, setting)
        else:
            try:
                epsilon = float(setting)
            except ValueError:
                raise ValueError(f"expected clean, adv (AdvProp) or a perturbation strength (RobMask), "
                                 f"got {setting!r}") from None
            set_bn_epsilon(model, epsilon)
    except ValueError as exc:
        raise SystemExit(f"error: --eval-bn: {exc}") from exc


def cmd_defend(args: argparse.Namespace) -> int:
    from nlprobust.vision.datasets import load_images
    from nlprobust.vision.defenses import build_defense
    from nlprobust.vision.models import VisionModelConfig, load_checkpoint
    from nlprobust.vision.train import train_classifier, train_preset

    if args.eval_bn is not None and (not args.evaluate or args.method not in ("robmask", "advprop")):
        raise SystemExit("error: --eval-bn needs --evaluate and a model with switchable batch norm "
                         f"(--method robmask or advprop), got --method {args.method}")
    train = load_images(args.dataset, "train", args.data_dir)
    test = load_images(args.dataset, "test", args.data_dir)
    if args.n_train:
        train = train.subset(slice(0, args.n_train))
    hyper = _parse_hyper(args.set)
    if args.method == "cat":
        hyper["n_train"] = len(train)
    try:
        defense = build_defense(args.method, **hyper)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    model_cfg = defense.model_config(VisionModelConfig(arch=args.arch, dataset=args.dataset, batchnorm=True))
    start: Any = None
    if args.init:
        try:
            start, start_cfg = load_checkpoint(args.init)
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"error: --init: {exc}") from exc
        start = defense.prepare(start)
        model_cfg = defense.model_config(start_cfg)
    overrides = {k: getattr(args, k) for k in ("epochs", "lr", "seed") if getattr(args, k) is not None}
    cfg = train_preset(args.dataset, args.arch, args.scale, **overrides)
    extra = {"hyper": {k: v for k, v in hyper.items() if k != "n_train"}, "init": args.init}
    summary = train_classifier(model_cfg, train, test, args.out, cfg, loss_fn=defense.loss_fn, method=args.method,
                               device=args.device, quiet=args.quiet, model=start, extra=extra)
    out = {k: v for k, v in summary.items() if k != "history"}
    if args.evaluate:
        from nlprobust.vision.evaluate import eval_preset, evaluate

        model, _ = load_checkpoint(f"{args.out}/model.pt", device=args.device)
        name = "eval.json"
        if args.eval_bn is not None:
            _set_eval_bn(model, args.eval_bn)
            name = f"eval_bn-{args.eval_bn}.json"
        report = evaluate(model, test.x, test.y, eval_preset(args.dataset, args.evaluate), progress=not args.quiet)
        assert report is not None  # one process, no shard
        report["bn_setting"] = args.eval_bn
        (Path(args.out) / name).write_text(json.dumps(report, indent=1))
        out["robust_accuracy"] = {str(b["epsilon"]): b["robust_accuracy"] for b in report["by_epsilon"]}
    print(json.dumps(out))
    return 0


def add_parser(sub: Any) -> None:
    from nlprobust.vision.attacks import ATTACKS

    vision = sub.add_parser("vision", help="image classifiers: train, attack").add_subparsers(dest="what",
                                                                                               required=True)
    tr = vision.add_parser("train", help="train an MNIST / CIFAR-10 classifier (checkpoint = state_dict + config)")
    tr.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    tr.add_argument("--arch", choices=["cnn", "resnet18", "vgg16"], default="cnn")
    tr.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    tr.add_argument("--out", required=True)
    tr.add_argument("--data-dir", default=None)
    tr.add_argument("--epochs", type=int, default=None)
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument("--batch-size", type=int, default=None)
    tr.add_argument("--max-train", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--device", default=None)
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)

    at = vision.add_parser("attack", help="attack correctly classified test images of a trained classifier")
    at.add_argument("--checkpoint", required=True, help="model.pt written by `nlprobust vision train`")
    at.add_argument("--method", choices=sorted(ATTACKS), default="sign-opt")
    at.add_argument("--n", type=int, default=10, help="test images (seeded draw among the correctly classified)")
    at.add_argument("--budget", type=int, default=4000, help="queries per image (black-box attacks)")
    at.add_argument("--norm", choices=["l2", "linf"], default="l2")
    at.add_argument("--epsilon", type=float, default=None, help="perturbation bound (PGD, FGSM, NES)")
    at.add_argument("--targeted", action="store_true", help="random target class per image (seeded)")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--data-dir", default=None)
    at.add_argument("--out", default=None, help="JSON lines, one per image (resumed)")
    at.add_argument("--chunk", type=int, default=50, help="images attacked together (the unit of resuming and "
                    "sharding; each chunk is seeded alike, so results do not depend on how a run is split)")
    at.add_argument("--shard", default=None, metavar="RANK/WORLD",
                    help="this process's part (default: from torchrun / accelerate launch)")
    at.add_argument("--device", default=None)
    at.add_argument("--quiet", action="store_true")
    at.set_defaults(func=cmd_attack)

    from nlprobust.vision.defenses import DEFENSES

    de = vision.add_parser("defend", help="train a model with a robust-training defense (and evaluate it)")
    de.add_argument("--method", choices=sorted(DEFENSES), required=True)
    de.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    de.add_argument("--arch", choices=["cnn", "resnet18", "vgg16"], default="cnn")
    de.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    de.add_argument("--out", required=True)
    de.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="defense hyperparameter, e.g. --set epsilon=0.3 --set steps=10")
    de.add_argument("--init", default=None, metavar="CHECKPOINT",
                    help="start from this trained model (SPROUT's thesis default: the naturally trained one)")
    de.add_argument("--n-train", type=int, default=None, help="first N training images only")
    de.add_argument("--epochs", type=int, default=None)
    de.add_argument("--lr", type=float, default=None)
    de.add_argument("--seed", type=int, default=None)
    de.add_argument("--evaluate", choices=["tiny", "small", "full"], default=None,
                    help="then run the robustness evaluation at this size (eval.json beside the model)")
    de.add_argument("--eval-bn", default=None, metavar="SETTING",
                    help="evaluate with the batch norm in this setting: clean or adv (AdvProp's branches), or a "
                         "perturbation strength (RobMask: its BN at that strength's code, e.g. the test radius); "
                         "written to eval_bn-SETTING.json")
    de.add_argument("--data-dir", default=None)
    de.add_argument("--device", default=None)
    de.add_argument("--quiet", action="store_true")
    de.set_defaults(func=cmd_defend)
