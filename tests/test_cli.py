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
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SystemExit, match="holds no input"):
        _run(tiny_onmt_ckpt, empty, tmp_path / "o.jsonl")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            _run(tiny_onmt_ckpt, inp, tmp_path / "o.jsonl", "--device", "cuda")


def test_attack_cli_undecodable_line_is_an_error_record(tiny_onmt_ckpt: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    good = synthetic_corpus(2, 5).src
    inp.write_bytes(good[0].encode() + b"\n" + b"a caf\xe9\n" + good[1].encode() + b"\n")
    out = tmp_path / "res.jsonl"
    assert _run(tiny_onmt_ckpt, inp, out) == 0
    recs = sorted((json.loads(x) for x in out.read_text().splitlines()), key=lambda r: r["index"])
    assert recs[0]["error"] is None and recs[2]["error"] is None
    assert recs[1]["error"].startswith(f"{inp}:2: not valid utf-8 at byte {len(good[0]) + 6}")
    assert _run(tiny_onmt_ckpt, inp, tmp_path / "latin.jsonl", "--encoding", "latin-1") == 0
    latin = sorted((json.loads(x) for x in (tmp_path / "latin.jsonl").read_text().splitlines()),
                   key=lambda r: r["index"])
    assert latin[1]["source"] == "a café" and latin[1]["error"] is None


def _cli(ckpt: Path, inp: Path, out: Path) -> list[str]:
    return ["attack", "seq2sick", "--victim", f"onmt:{ckpt}", "--trust-checkpoint", "--input", str(inp),
            "--out", str(out), "--iterations", "10", "--batch-size", "2", "--quiet", "--device", "cpu"]


def _stable(path: Path) -> list[dict]:
    """Records without their wall times (everything else must be identical)."""

    def strip(d: dict) -> dict:
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k != "time_s"}

    return [strip(json.loads(x)) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_attack_cli_sharded_run_equals_single_process(launcher: str, tiny_onmt_ckpt: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(synthetic_corpus(7, 21).src) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    subprocess.run([sys.executable, "-m", "nlprobust.cli", *_cli(tiny_onmt_ckpt, inp, one)], env=env, check=True,
                   capture_output=True)
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = subprocess.run([*cmd, "-m", "nlprobust.cli", *_cli(tiny_onmt_ckpt, inp, many)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _stable(many) == _stable(one) and len(_stable(one)) == 7
    assert not list(tmp_path.glob("many.rank*"))  # shards merged and removed


def test_attack_cli_killed_rank_relaunched_alone(tiny_onmt_ckpt: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from nlprobust.attacks import Seq2Sick

    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(synthetic_corpus(7, 21).src) + "\n")
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert main(_cli(tiny_onmt_ckpt, inp, one)) == 0
    assert main([*_cli(tiny_onmt_ckpt, inp, many), "--shard", "0/2"]) == 0
    assert not many.exists()  # rank 1 has not run: nothing merged yet
    real, calls = Seq2Sick.attack_batch, []

    def dies_in_second_chunk(self, items):  # rank 1 owns chunks 1 and 3 (sentences 2-3 and 6)
        calls.append([it.index for it in items])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, items)

    monkeypatch.setattr(Seq2Sick, "attack_batch", dies_in_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        main([*_cli(tiny_onmt_ckpt, inp, many), "--shard", "1/2"])
    monkeypatch.undo()
    assert calls == [[2, 3], [6]] and not many.exists()
    assert main([*_cli(tiny_onmt_ckpt, inp, many), "--shard", "1/2"]) == 0  # relaunched alone
    assert _stable(many) == _stable(one)


def test_word_swap_cli_settings_reach_the_config() -> None:
    from nlprobust.cli import _attack_config, build_parser

    args = build_parser().parse_args(["attack", "word-swap", "--victim", "hf:x", "--input", "in.txt", "--out", "o",
                                      "--preset", "multi30k-lstm", "--verify-by", "loss", "--verify", "8",
                                      "--per-position", "4", "--candidates", "64", "--lexicon", "16"])
    cfg = _attack_config(args)
    assert (cfg.verify_by, cfg.verify, cfg.per_position, cfg.candidates, cfg.lexicon) == ("loss", 8, 4, 64, 16)
    assert cfg.skip_stopwords is False  # the rest of the preset is kept
    for attack in ("seq2sick", "word-swap"):  # reduction options are common to every attack
        args = build_parser().parse_args(["attack", attack, "--victim", "hf:x", "--input", "in.txt", "--out", "o",
                                          "--mode", "keywords", "--reduce-lexicon", "32", "--repair", "4",
                                          "--exchange", "8", "--trade", "6", "--swap-lexicon", "2"])
        cfg = _attack_config(args)
        assert (cfg.reduce_lexicon, cfg.repair, cfg.exchange, cfg.trade, cfg.swap_lexicon) == (32, 4, 8, 6, 2)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attack", "word-swap", "--victim", "hf:x", "--input", "i", "--out", "o",
                                   "--verify-by", "beam"])


def test_portfolio_cli_builds_its_members_from_the_preset() -> None:
    from nlprobust.cli import _attack_config, build_parser

    def parse(*extra: str):  # noqa: ANN202
        return build_parser().parse_args(["attack", "portfolio", "--victim", "hf:x", "--input", "in.txt", "--out",
                                          "o", "--preset", "multi30k-lstm", *extra])

    cfg = _attack_config(parse("--mode", "keywords", "--criterion", "positional", "--beam-size", "3"))
    assert [(n, c.preset, c.mode, c.criterion, c.beam_size) for n, c in cfg.members] == \
        [("word-swap", "multi30k-lstm", "keywords", "positional", 3), ("seq2sick", "multi30k-lstm", "keywords",
                                                                        "positional", 3)]
    assert _attack_config(parse("--no-reduce")).members[1][1].reduce is False
    with pytest.raises(ValueError, match="--repair: a portfolio's members"):
        _attack_config(parse("--repair", "4"))
    with pytest.raises(ValueError, match="--exchange: a portfolio's members"):
        _attack_config(parse("--exchange", "4"))
    with pytest.raises(ValueError, match="--trade: a portfolio's members"):
        _attack_config(parse("--trade", "4"))
