"""Recipes at ``--scale tiny`` on the real corpora (skipped when the data folder is absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))


def test_multi30k_recipe_tiny(data_dir: Path, tmp_path: Path) -> None:
    import multi30k_seq2sick

    out = tmp_path / "res.json"
    assert multi30k_seq2sick.main(["--scale", "tiny", "--data-dir", str(data_dir), "--runs", str(tmp_path / "runs"),
                                   "--out", str(out), "--no-render", "--iterations", "20",
                                   "--methods", "nonoverlap,1-keyword", "--victims", "lstm,marian"]) == 0
    res = json.loads(out.read_text())
    assert res["scale"] == "tiny" and res["recipe"] == "multi30k_seq2sick"
    assert [(r["victim"], r["method"]) for r in res["rows"]] == [
        ("lstm", "nonoverlap"), ("lstm", "1-keyword"), ("marian", "nonoverlap"), ("marian", "1-keyword")]
    for r in res["rows"]:
        assert r["n"] + r["errors"] == 6 and 0.0 <= r["success"] <= 1.0 and r["paper"]
        assert r["preset"] == f"multi30k-{r['victim']}"
    for victim in ("lstm", "marian"):
        kw = res["keywords"][victim]["1-keyword"]
        assert len(kw) == 6 and all(len(v) == 1 for v in kw.values())
        assert res["victim"][victim]["test_bleu"]["n"] == 100
    assert (tmp_path / "runs" / "multi30k_marian_tiny" / "config.json").exists()  # saved like a Hub model
