"""The vision recipes at --scale tiny, end to end (models trained from scratch into a temporary folder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from vision_fixtures import require_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))


def test_vision_hardlabel_tiny_runs_resumes_and_respects_budgets(tmp_path):
    require_data()
    import vision_hardlabel

    out = tmp_path / "res" / "vision_hardlabel.json"
    args = ["--scale", "tiny", "--runs", str(tmp_path / "runs"), "--out", str(out), "--no-render", "--quiet",
            "--methods", "opt,sign-opt,svm-opt,cw-l2"]
    assert vision_hardlabel.main(args) == 0
    data = json.loads(out.read_text())
    assert {r["dataset"] for r in data["rows"]} == {"mnist", "cifar10"}
    assert (out.parent / "vision_hardlabel_mnist.png").stat().st_size > 1000
    logs = tmp_path / "runs" / "recipes" / "vision_hardlabel" / "tiny"
    for f in logs.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if "cw-l2" not in f.name:
                assert rec["queries"] <= 600, f.name
                assert list(rec["curve"]) == [str(c) for c in range(100, 601, 100)]
    sign = [r for r in data["rows"] if r["method"] == "sign-opt" and r["table"] == "2.2" and r["dataset"] == "mnist"]
    assert [r["queries"] for r in sign] == [200, 400, 600]
    assert sign[-1]["median_l2"] <= sign[0]["median_l2"]
    # the per-image best over all attacks is never worse than any attack's own result at the full budget
    for ds in ("mnist", "cifar10"):
        un = [r for r in data["rows"] if r["dataset"] == ds and r["table"] == "2.2"]
        best = [r for r in un if r["method"] == "best-of-all"]
        assert len(best) == 1 and best[0]["methods"] == ["cw-l2", "opt", "sign-opt", "svm-opt"]
        for r in un:
            if r["queries"] in (None, 600) and r["n"] == best[0]["n"]:
                assert best[0]["median_l2"] <= r["median_l2"] + 1e-9 and best[0]["sr"] >= r["sr"], r["method"]
    # a second run finds every image in the logs and attacks nothing again
    before = {f.name: f.read_text() for f in logs.glob("*.jsonl")}
    assert vision_hardlabel.main(args) == 0
    assert {f.name: f.read_text() for f in logs.glob("*.jsonl")} == before
    assert json.loads(out.read_text())["rows"] == data["rows"]


def test_vision_gbdt_tiny(tmp_path):
    require_data()
    pytest.importorskip("lightgbm")
    import vision_gbdt

    out = tmp_path / "gbdt.json"
    assert vision_gbdt.main(["--scale", "tiny", "--runs", str(tmp_path / "runs"), "--out", str(out),
                             "--no-render", "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["gbdt"]["test_accuracy"] > 0.7
    rows = [r for r in data["rows"] if r["method"] == "opt"]
    assert [r["queries"] for r in rows] == [300, 600, 1200] and rows[-1]["found"] == 1.0


def test_vision_defenses_tiny(tmp_path):
    require_data()
    pytest.importorskip("torchattacks")
    import vision_defenses

    out = tmp_path / "def.json"
    args = ["--scale", "tiny", "--methods", "natural,madry", "--runs", str(tmp_path / "runs"), "--out", str(out),
            "--no-render", "--quiet"]
    assert vision_defenses.main(args) == 0
    data = json.loads(out.read_text())
    rob = [r for r in data["rows"] if r["table"] == "robustness"]
    assert {r["method"] for r in rob} == {"natural", "madry"} and {r["epsilon"] for r in rob} == {0.1, 0.3}
    for r in rob:  # the per-image worst case is never above any single attack
        singles = [v for k, v in r.items() if k.endswith("_acc") and k not in ("clean_acc", "worst_case_acc")]
        assert r["worst_case_acc"] <= min(singles) + 1e-9
        assert r["worst_case_acc"] <= r["clean_acc"]
    times = {r["method"]: r for r in data["rows"] if r["table"] == "5.5"}
    assert times["natural"]["time_ratio"] == 1.0 and times["madry"]["time_ratio"] > 2
    masking = [r for r in data["rows"] if r["table"] == "6.1-6.2"]
    assert len(masking) == 12 and {r["p"] for r in masking} == {0.0, 0.5, 1.0}
    assert {r["epsilon"] for r in masking} == {0.1, 0.3}
    # evaluations are cached beside the models: a second run recomputes nothing and gives the same rows
    assert vision_defenses.main(args) == 0
    assert json.loads(out.read_text())["rows"] == data["rows"]
