"""The attack CLI: JSON lines written as sentences finish, resume after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlprobust.cli import main
from nlprobust.synthetic import synthetic_corpus


def _run(ckpt: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["attack", "seq2sick", "--victim", f"onmt:{ckpt}", "--trust-checkpoint", "--input", str(inp),
                 "--out", str(out), "--iterations", "10", "--batch-size", "2", "--quiet", *extra])


def test_attack_cli_writes_and_resumes(tiny_onmt_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(synthetic_corpus(4, 21).src + [""]) + "\n")
    out = tmp_path / "res.jsonl"
    assert _run(tiny_onmt_ckpt, inp, out) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["index"] for r in recs) == [0, 1, 2, 3, 4]
    assert "empty" in recs[-1]["error"]
    assert "success %" in capsys.readouterr().out
    # simulate a crash: two complete records and half a line remain
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    assert _run(tiny_onmt_ckpt, inp, out) == 0
    err = capsys.readouterr().err
    assert "resuming: 2 of 5" in err
    recs2 = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["index"] for r in recs2) == [0, 1, 2, 3, 4]
    assert recs2[:2] == recs[:2]


def test_attack_cli_clear_errors(tiny_onmt_ckpt: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("A dog runs.\n")
    with pytest.raises(SystemExit, match="trust"):
        main(["attack", "seq2sick", "--victim", f"onmt:{tiny_onmt_ckpt}", "--input", str(inp),
              "--out", str(tmp_path / "o.jsonl")])
    with pytest.raises(SystemExit, match="not found"):
        main(["attack", "seq2sick", "--victim", "onmt:missing.pt", "--trust-checkpoint", "--input", str(inp),
              "--out", str(tmp_path / "o.jsonl")])
    with pytest.raises(SystemExit, match="input file not found"):
        _run(tiny_onmt_ckpt, tmp_path / "none.txt", tmp_path / "o.jsonl")
    with pytest.raises(SystemExit, match="needs --keywords"):
        _run(tiny_onmt_ckpt, inp, tmp_path / "o.jsonl", "--mode", "keywords")
    with pytest.raises(SystemExit, match="victim must look like"):
        main(["attack", "seq2sick", "--victim", "model.pt", "--input", str(inp), "--out", str(tmp_path / "o.jsonl")])
