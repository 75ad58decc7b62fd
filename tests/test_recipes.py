"""Recipes at ``--scale tiny`` on the real corpora (skipped when the data folder is absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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
    attacks = ["seq2sick", "seq2sick + reduction", "word-swap", "portfolio"]
    assert [(r["victim"], r["method"], r["attack"]) for r in res["rows"]] == [
        (v, m, a) for v in ("lstm", "marian") for m in ("nonoverlap", "1-keyword") for a in attacks]
    for r in res["rows"]:
        assert r["n"] + r["errors"] == 6 and 0.0 <= r["success"] <= 1.0 and r["paper"]
        assert r["success_at_1"] <= r["success_at_2"] <= r["success_at_3"] <= r["success"]
        assert r["forward_passes"] >= 1 and r["beam_decodes"] >= 1
        if r["attack"].startswith("seq2sick"):
            assert r["preset"] == f"multi30k-{r['victim']}"
        if r["method"] == "nonoverlap":
            assert r["criterion"] == "at-least-as-long" and r["success"] == r["success_at_least_as_long"]
            assert r["success_positional"] >= r["success_at_least_as_long"]
    by = {(r["victim"], r["method"], r["attack"]): r for r in res["rows"]}
    for v in ("lstm", "marian"):  # one search, two rows: the reduction keeps success and never adds words
        plain, reduced = by[(v, "nonoverlap", "seq2sick")], by[(v, "nonoverlap", "seq2sick + reduction")]
        assert plain["success"] == reduced["success"]
        if reduced["success"]:
            assert reduced["changed"] <= plain["changed"]
        for m in ("nonoverlap", "1-keyword"):  # the portfolio: at least each member's success, summed costs
            swap, port = by[(v, m, "word-swap")], by[(v, m, "portfolio")]
            assert port["success"] >= max(swap["success"], by[(v, m, "seq2sick + reduction")]["success"])
            assert port["forward_passes"] >= swap["forward_passes"]
    for victim in ("lstm", "marian"):
        kw = res["keywords"][victim]["1-keyword"]
        assert len(kw) == 6 and all(len(v) == 1 for v in kw.values())
        assert res["victim"][victim]["test_bleu"]["n"] == 100
    assert (tmp_path / "runs" / "multi30k_marian_tiny" / "config.json").exists()  # saved like a Hub model
    # a victim kept from the results file is neither loaded nor attacked: its rows stay as they were
    (tmp_path / "runs" / "multi30k_marian_tiny" / "config.json").unlink()
    common = ["--scale", "tiny", "--data-dir", str(data_dir), "--runs", str(tmp_path / "runs"), "--out", str(out),
              "--no-render", "--iterations", "20", "--methods", "nonoverlap,1-keyword", "--report-only"]
    assert multi30k_seq2sick.main([*common, "--victims", "lstm", "--keep", "marian"]) == 0
    again = json.loads(out.read_text())
    assert again["rows"] == res["rows"] and again["keywords"] == res["keywords"]
    assert again["victim"]["marian"] == res["victim"]["marian"]
    with pytest.raises(SystemExit):
        multi30k_seq2sick.main([*common, "--victims", "lstm", "--keep", "marian", "--scale", "small"])


def test_reuse_search_accepts_reduction_options_only() -> None:
    from nlprobust.attacks import preset
    from nlprobust.experiments.tables import parse_overrides, reused_settings

    cfg = preset("multi30k-lstm", "keywords")
    assert parse_overrides("trade=0, swap_lexicon=0") == {"trade": 0, "swap_lexicon": 0}
    assert reused_settings(cfg, {"trade": 0, "exchange": 0}).exchange == 0
    for bad in ({"lr": 9.0}, {"nope": 1}, {"trade": -1}):
        with pytest.raises(SystemExit, match="--reuse-search"):
            reused_settings(cfg, bad)
    with pytest.raises(SystemExit, match="OPTION=VALUE"):
        parse_overrides("trade")


def test_robust_recipe_tiny(data_dir: Path, tmp_path: Path) -> None:
    import robust_seq2seq

    out = tmp_path / "res.json"
    args = ["--scale", "tiny", "--data-dir", str(data_dir), "--runs", str(tmp_path / "runs"), "--out", str(out),
            "--no-render", "--quiet", "--adversaries", "hotflip,none", "--methods", "nonoverlap,1-keyword"]
    with pytest.raises(SystemExit):
        robust_seq2seq.main([*args, "--models", "robust-nope"])
    assert robust_seq2seq.main([*args, "--models", "natural"]) == 0 and not out.exists()  # a partial run: caches
    assert robust_seq2seq.main(args) == 0
    res = json.loads(out.read_text())
    quality = {r["model"]: r for r in res["rows"] if r["table"] == "clean and noisy"}
    assert set(quality) == {"natural", "robust-hotflip", "natural fine-tuned"}
    assert quality["natural fine-tuned"]["cost_ratio"] == 1.0 and quality["robust-hotflip"]["cost_ratio"] > 0
    for r in quality.values():
        assert all(0 <= r[f"bleu_{k}"] <= 100 for k in ("test_2016_flickr", "test_2017_flickr", "typo", "drop", "swap"))
    attacks = [(r["model"], r["method"]) for r in res["rows"] if r["table"] == "adaptive attacks"]
    assert attacks == [(m, g) for m in ("natural", "robust-hotflip", "natural fine-tuned")
                       for g in ("nonoverlap", "1-keyword")]
    for r in res["rows"]:
        if r["table"] == "adaptive attacks":
            assert r["max_changes"] == 2 and r["success_at_1"] <= r["success_at_2"] <= r["success"] <= 1
            assert r["changed"] is None or r["changed"] <= 2
            assert r["opening_changed"] is None or 0 <= r["opening_changed"] <= 100
    assert res["victims"]["robust-hotflip"]["steps"] == 12
    # a second run finds every model, score and attack record
    assert robust_seq2seq.main([*args, "--report-only"]) == 0
    again = json.loads(out.read_text())
    def kept(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["table"] != "transfer"]

    assert kept(again["rows"]) == kept(res["rows"])


class _CountingVictim:
    """Translates by upper-casing and counts its calls; every word is a usable keyword."""

    def __init__(self) -> None:
        self.calls = 0

    def translate(self, texts: list[str], *, beam_size: int = 5) -> list[str]:
        self.calls += 1
        return [t.upper() for t in texts]

    def keyword_id(self, word: str) -> int:
        return len(word)


def test_attack_setup_keeps_its_translations_beside_the_victim(data_dir: Path, tmp_path: Path) -> None:
    from nlprobust.experiments.multi30k import attack_setup

    cache = tmp_path / "attack_outputs.json"
    victim = _CountingVictim()
    first = attack_setup(victim, "val", 8, (1, 2), str(data_dir), 0, subset=5, cache=cache)
    assert victim.calls == 1 and cache.exists()
    again = attack_setup(victim, "val", 8, (1, 2), str(data_dir), 0, subset=5, cache=cache)
    assert victim.calls == 1 and again == first  # resumed: same draws, nothing decoded
    attack_setup(victim, "val", 8, (1,), str(data_dir), 0, cache=cache)  # another draw is decoded and kept too
    assert victim.calls == 2 and len(json.loads(cache.read_text())) == 2
    uncached = attack_setup(_CountingVictim(), "val", 8, (1, 2), str(data_dir), 0, subset=5)
    assert uncached == first
