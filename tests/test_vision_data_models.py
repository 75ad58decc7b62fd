"""Vision data readers, models, checkpoints, the training loop and the CLI."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from vision_fixtures import require_data

from nlprobust.vision.datasets import load_cifar10, load_mnist
from nlprobust.vision.models import (
    CheckpointError,
    VisionModelConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from nlprobust.vision.train import VisionTrainConfig, augment_batch, train_classifier


def test_mnist_and_cifar_have_their_published_sizes():
    require_data()
    tr, te = load_mnist("train"), load_mnist("test")
    assert tr.x.shape == (60000, 1, 28, 28) and te.x.shape == (10000, 1, 28, 28)
    assert te.y[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert float(tr.x.min()) == 0.0 and float(tr.x.max()) == 1.0
    c = load_cifar10("test")
    assert c.x.shape == (10000, 3, 32, 32) and torch.bincount(c.y).tolist() == [1000] * 10
    exact = load_cifar10("test", exact=True)
    assert len(exact) == 761 and torch.equal(exact.y, c.y[:761])
    # the JPEG copies are close to, not equal to, the original pixels (about 30 dB PSNR)
    mse = float(((exact.x - c.x[:761]) ** 2).mean())
    assert 20 < 10 * np.log10(1 / mse) < 40


def test_readers_name_bad_files(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        load_mnist("test", tmp_path)
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 12))
    with pytest.raises(ValueError, match="magic number 2049"):
        load_mnist("test", tmp_path)
    header = (2051).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + b"\x00" * 100))
    with pytest.raises(ValueError, match="header says"):
        load_mnist("test", tmp_path)
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "test.npz", x=np.zeros((2, 32, 32), np.uint8), y=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="N x 32 x 32 x 3"):
        load_cifar10("test", tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_cifar10("valid", tmp_path)


@pytest.mark.parametrize("arch,dataset", [("cnn", "mnist"), ("cnn", "cifar10"), ("resnet18", "cifar10"),
                                          ("vgg16", "cifar10")])
def test_models_take_images_in_unit_range_and_round_trip(arch, dataset, tmp_path):
    torch.manual_seed(0)
    cfg = VisionModelConfig(arch=arch, dataset=dataset)
    model = build_model(cfg).eval()
    x = torch.rand(2, *cfg.input_shape)
    path = save_checkpoint(model, cfg, tmp_path / "m.pt", test_acc=0.5)
    again, cfg2 = load_checkpoint(path)
    assert cfg2 == cfg
    assert torch.allclose(model(x), again(x), atol=1e-6)
    assert model(x).shape == (2, 10)


def test_corrupt_or_foreign_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"config": {"arch": "cnn", "dataset": "mnist"}, "state_dict": {}}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="unknown architecture"):
        VisionModelConfig(arch="alexnet")


def test_augmentation_shifts_and_keeps_shape():
    x = torch.rand(8, 3, 32, 32)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_training_learns_and_resumes(tmp_path):
    require_data()
    train, test = load_mnist("train").subset(slice(0, 1500)), load_mnist("test").subset(slice(0, 500))
    cfg = VisionModelConfig(arch="cnn", dataset="mnist")
    tc = VisionTrainConfig(epochs=2, optimizer="adam", lr=2e-3, weight_decay=0.0, batch_size=100)
    out = tmp_path / "run"
    summary = train_classifier(cfg, train, test, out, tc, quiet=True)
    assert summary["test_acc"] > 0.7
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    model, _ = load_checkpoint(out / "model.pt")
    # a longer run in the same folder with the same config is refused; the finished one is returned as is
    assert train_classifier(cfg, train, test, out, tc, quiet=True)["test_acc"] == summary["test_acc"]
    # a finished run is not reused for other configs or another ``extra`` (a defense's hyperparameters)
    with pytest.raises(ValueError, match="another configuration"):
        train_classifier(cfg, train, test, out, replace(tc, lr=1e-3), quiet=True)
    tagged = tmp_path / "tagged"
    train_classifier(cfg, train, test, tagged, replace(tc, epochs=1), quiet=True, extra={"hyper": {"sigma": 0.5}})
    with pytest.raises(ValueError, match="another configuration"):
        train_classifier(cfg, train, test, tagged, replace(tc, epochs=1), quiet=True, extra={"hyper": {"sigma": 1}})
    (out / "model.pt").unlink()
    (out / "summary.json").unlink()
    with pytest.raises(ValueError, match="another configuration"):
        train_classifier(cfg, train, test, out, VisionTrainConfig(epochs=3, optimizer="adam", lr=2e-3,
                                                                  weight_decay=0.0, batch_size=100), quiet=True)
    # resuming after the last finished epoch trains nothing more and gives the same weights
    again = train_classifier(cfg, train, test, out, tc, quiet=True)
    assert again["test_acc"] == summary["test_acc"]


def test_cli_trains_and_attacks(tmp_path, capsys):
    require_data()
    from nlprobust.cli import main

    out = tmp_path / "m"
    assert main(["vision", "train", "--dataset", "mnist", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    assert (out / "model.pt").exists()
    capsys.readouterr()
    log = tmp_path / "a.jsonl"
    assert main(["vision", "attack", "--checkpoint", str(out / "model.pt"), "--method", "sign-opt", "--n", "2",
                 "--budget", "300", "--out", str(log), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 2 and summary["mean_queries"] <= 300
    assert len(log.read_text().splitlines()) == 2
    # sharded (two ranks, one image per chunk) = one process with the same chunks
    base = ["vision", "attack", "--checkpoint", str(out / "model.pt"), "--method", "sign-opt", "--n", "2",
            "--budget", "300", "--chunk", "1", "--quiet"]
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert main([*base, "--out", str(one)]) == 0
    assert main([*base, "--out", str(many), "--shard", "1/2"]) == 0 and not many.exists()
    assert main([*base, "--out", str(many), "--shard", "0/2"]) == 0

    def stable(p):
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in p.read_text().splitlines()]

    assert stable(many) == stable(one)
    # a defense fine-tunes the trained model (--init) and records its settings beside the run
    sprout = tmp_path / "sprout"
    args = ["vision", "defend", "--method", "sprout", "--scale", "tiny", "--n-train", "256", "--set", "sigma=0.5",
            "--init", str(out / "model.pt"), "--out", str(sprout), "--quiet"]
    capsys.readouterr()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["method"] == "sprout"
    saved = json.loads((sprout / "train_config.json").read_text())["extra"]
    assert saved == {"hyper": {"sigma": 0.5}, "init": str(out / "model.pt")}
    with pytest.raises(SystemExit, match="--init"):
        main(args[:-5] + ["--init", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")])


def test_cli_defend_eval_bn_is_checked_before_training(tmp_path):
    """--eval-bn only makes sense for a model with switchable batch norm that is evaluated; the CLI refuses the
    rest before it loads or trains anything, and a RobMask strength outside [0, eps_max] names the encoding's
    range."""
    from nlprobust.cli import main
    from nlprobust.vision.cli import _set_eval_bn
    from nlprobust.vision.defenses import convert_batchnorm
    from nlprobust.vision.models import VisionModelConfig, build_model

    base = ["vision", "defend", "--scale", "tiny", "--n-train", "64", "--quiet"]
    for extra in (["--method", "madry", "--evaluate", "tiny"], ["--method", "robmask"]):
        out = tmp_path / extra[1]
        with pytest.raises(SystemExit, match="--eval-bn needs --evaluate"):
            main(base + extra + ["--eval-bn", "0.3", "--out", str(out)])
        assert not out.exists()
    net = convert_batchnorm(build_model(VisionModelConfig(arch="cnn", dataset="mnist", batchnorm=True)),
                            "robmask", eps_max=0.3)
    _set_eval_bn(net, "0.2")
    with pytest.raises(SystemExit, match="outside"):
        _set_eval_bn(net, "0.5")
    with pytest.raises(SystemExit, match="expected clean, adv"):
        _set_eval_bn(net, "strong")
    with pytest.raises(SystemExit, match="no AdvProp"):
        _set_eval_bn(net, "adv")
