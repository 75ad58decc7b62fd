"""The ``negotiation`` CLI (train-sv, train-rl, selfplay, chat with a fake stdin, clear errors) on a data folder
of templated dialogues, and the tiny recipes on the real corpus (skipped when it is absent)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from test_negotiation_train import synthetic_examples, synthetic_scenarios

from negotiation.cli import main
from negotiation.dialog import format_game
from negotiation.model import DialogModel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose negotiate/ holds templated dialogues and random scenarios (not corpus data)."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "negotiate"
    folder.mkdir()
    for name, n, seed in (("train", 80, 0), ("val", 16, 1), ("test", 8, 2)):
        (folder / f"{name}.txt").write_text("".join(ex.to_line() + "\n" for ex in synthetic_examples(n, seed)))
    lines = [" ".join(map(str, c.to_ints())) for sc in synthetic_scenarios(40, 3) for c in sc.contexts]
    (folder / "selfplay.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def runs(fake_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny SV and RL agent trained through the CLI."""
    out = tmp_path_factory.mktemp("runs")
    sv, rl = out / "sv", out / "rl"
    assert main(["train-sv", "--preset", "tiny", "--out", str(sv), "--data-dir", str(fake_data), "--quiet",
                 "--epochs", "1", "--device", "cpu"]) == 0
    assert main(["train-rl", "--preset", "tiny", "--sv", str(sv), "--out", str(rl), "--data-dir", str(fake_data),
                 "--quiet", "--scenarios", "16", "--device", "cpu"]) == 0
    return {"sv": sv, "rl": rl}


def test_train_commands_write_finished_runs(runs: dict[str, Path], fake_data: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    for run in runs.values():
        assert (run / "train_log.jsonl").is_file() and (run / "train_config.json").is_file()
        DialogModel.from_pretrained(run)
    rl_log = [json.loads(x) for x in (runs["rl"] / "train_log.jsonl").read_text().splitlines()]
    assert rl_log[-1]["kind"] == "summary" and rl_log[-1]["dialogues"] == 16
    # running the same command again finds the finished run
    assert main(["train-sv", "--preset", "tiny", "--out", str(runs["sv"]), "--data-dir", str(fake_data), "--quiet",
                 "--epochs", "1"]) == 0
    assert "SV model in" in capsys.readouterr().out


def test_selfplay_command(runs: dict[str, Path], fake_data: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sp.json"
    assert main(["selfplay", str(runs["rl"]), str(runs["sv"]), "--n", "6", "--data-dir", str(fake_data), "--quiet",
                 "--transcripts", "1", "--name-a", "RL", "--name-b", "SV", "--out", str(out), "--records"]) == 0
    text = capsys.readouterr().out
    assert "| RL (A) vs SV (B) | 6 |" in text and "Input" in text and "Reward" in text
    res = json.loads(out.read_text())
    assert res["n"] == 6 and res["metrics"]["games"] == 6 and len(res["records"]) == 6
    assert 0.0 <= res["metrics"]["agreement"] <= 1.0 and res["transcripts"][0]["text"].startswith("Input")
    assert res["command"] and res["hardware"]


def _games(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in path.read_text().splitlines()]


def test_selfplay_sharded_with_torchrun_equals_one_process(runs: dict[str, Path], fake_data: Path,
                                                           tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # torchrun's parser takes a bare --n for one of its own abbreviated options: --num-games is the long name
    base = ["selfplay", str(runs["rl"]), str(runs["sv"]), "--num-games", "10", "--batch-size", "3", "--data-dir",
            str(fake_data), "--quiet"]
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert main([*base, "--games", str(one)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "negotiation.cli", *base, "--games", str(many)], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _games(many) == _games(one) and [g["index"] for g in _games(one)] == list(range(10))


def test_selfplay_killed_rank_relaunched_alone(runs: dict[str, Path], fake_data: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import negotiation.attacks.run as run_mod

    base = ["selfplay", str(runs["rl"]), str(runs["sv"]), "--n", "10", "--batch-size", "3", "--data-dir",
            str(fake_data), "--quiet"]
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert main([*base, "--games", str(one)]) == 0
    assert main([*base, "--games", str(many), "--shard", "1/2"]) == 0  # chunks 1 and 3
    real, calls = run_mod.play, []

    def killed_in_second_chunk(*a, **k):  # rank 0 owns chunks 0 and 2
        calls.append(len(a[2]))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "play", killed_in_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        main([*base, "--games", str(many), "--shard", "0/2"])
    monkeypatch.undo()
    assert not many.exists()
    assert main([*base, "--games", str(many), "--shard", "0/2"]) == 0
    assert _games(many) == _games(one)
    with pytest.raises(SystemExit, match="needs --games"):
        main([*base, "--shard", "0/2"])


def test_chat_with_a_fake_terminal(runs: dict[str, Path], fake_data: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    # the person writes first, then ends the negotiation; a stray line is refused as a selection
    monkeypatch.setattr(sys, "stdin", io.StringIO("I want the books, you get the rest.\n<selection>\n"
                                                  "lots\n9 9 9\n0 0 0\n"))
    assert main(["chat", str(runs["sv"]), "--data-dir", str(fake_data), "--scenario", "2", "--first", "you",
                 "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "Your values: book" in text and "you> " in text and "What do you take?" in text
    assert "Please type 3 numbers" in text
    assert "Dialogue\n  you    i want the books , you get the rest" in text
    assert "Output" in text and ("Deal: you score" in text or "No agreement: both score 0." in text)
    # end of input ends the negotiation and means no deal
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", str(runs["rl"]), "--random-scenario", "--first", "you", "--seed", "2"]) == 0
    assert "No agreement: both score 0." in capsys.readouterr().out


def test_clear_errors(runs: dict[str, Path], fake_data: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main(["selfplay", str(tmp_path / "nothing"), str(runs["sv"]), "--data-dir", str(fake_data)])
    with pytest.raises(SystemExit, match="negotiation data file not found"):
        main(["train-sv", "--preset", "tiny", "--out", str(tmp_path / "x"), "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="data folder not found"):
        main(["train-sv", "--preset", "tiny", "--out", str(tmp_path / "x"), "--data-dir", str(tmp_path / "no")])
    with pytest.raises(SystemExit, match="--random-scenario"):
        main(["chat", str(runs["sv"]), "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--n must be 1\.\.40 \(the games of --split selfplay\), got 41"):
        main(["selfplay", str(runs["sv"]), str(runs["sv"]), "--n", "41", "--data-dir", str(fake_data)])
    with pytest.raises(SystemExit, match="unknown scenario split 'dev'"):
        main(["selfplay", str(runs["sv"]), str(runs["sv"]), "--split", "dev", "--data-dir", str(fake_data)])
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoint").mkdir(parents=True)
    with pytest.raises(SystemExit, match="has not finished"):
        main(["train-rl", "--sv", str(unfinished), "--out", str(tmp_path / "rl"), "--data-dir", str(fake_data)])
    with pytest.raises(SystemExit, match="other settings"):
        main(["train-sv", "--preset", "tiny", "--out", str(runs["sv"]), "--data-dir", str(fake_data), "--quiet",
              "--epochs", "3"])
    assert main(["--version"]) == 0


# --- recipes at --scale tiny on the real corpus ----------------------------------------------------------------


@pytest.fixture(scope="module")
def negotiate_data(negotiate_dir: Path) -> Path:
    return negotiate_dir.parent


def test_selfplay_recipe_tiny(negotiate_data: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "recipes"))
    import negotiation_selfplay

    out = tmp_path / "res.json"
    args = ["--scale", "tiny", "--data-dir", str(negotiate_data), "--runs", str(tmp_path / "runs"), "--out", str(out),
            "--quiet", "--seeds", "0,1"]
    assert negotiation_selfplay.main(args) == 0
    res = json.loads(out.read_text())
    assert res["recipe"] == "negotiation_selfplay" and res["scale"] == "tiny" and res["train_seeds"] == [0, 1]
    assert res["wall_time_s"] > 0 and res["hardware"] and res["command"]
    assert res["scenarios"]["test"] == {"source": "negotiate/test.txt", "in_sample": False, "pairs": 5, "games": 20}
    assert res["scenarios"]["selfplay"]["in_sample"] and res["scenarios"]["selfplay"]["games"] == 20
    per_seed = [r for r in res["rows"] if r["table"] == "3.10 per seed"]
    pooled = [r for r in res["rows"] if r["table"] == "3.10"]
    # pairings x splits x rules (x seeds); RL+rollouts plays the test games only
    assert len(per_seed) == (3 * 2 + 1) * 2 * 2 and len(pooled) == (3 * 2 + 1) * 2
    assert [(r["pairing"], r["split"], r["max_turns"], r["cap_rule"]) for r in pooled[:4]] == [
        ("RL vs SV", "test", 10, "no-deal"), ("RL vs SV", "test", 20, "force-selection"),
        ("RL vs SV", "selfplay", 10, "no-deal"), ("RL vs SV", "selfplay", 20, "force-selection")]
    assert [r["pairing"] for r in pooled[::4]] == ["RL vs SV", "SV vs SV", "RL vs RL", "RL+rollouts vs SV"]
    assert {r["split"] for r in pooled if r["pairing"] == "RL+rollouts vs SV"} == {"test"}
    for r in pooled:
        assert r["n"] == 40 and r["protocol"] == "self-play" and r["in_sample"] == (r["split"] == "selfplay")
        assert 0.0 <= r["agreement"] <= 1.0 and r["advantage"] == pytest.approx(r["score_a"] - r["score_b"])
        assert r["advantage_min"] <= r["advantage"] + 1e-9 and r["advantage"] <= r["advantage_max"] + 1e-9
        assert r["ci95"]["advantage"] is not None and r["ci95"]["agreement"] is not None
    assert pooled[0]["paper"] == {"score_a": 7.23, "score_b": 4.55, "advantage": 2.68, "agreement": 0.8957,
                                  "par": 0.7579}
    ppl = [r for r in res["rows"] if r["table"] == "3.2.5 (text)"]
    assert [(r["model"], r["train_seed"], r["split"]) for r in ppl[:4]] == [
        ("SV", 0, "val"), ("SV", 0, "test"), ("RL", 0, "val"), ("RL", 0, "test")]
    assert ppl[0]["paper"] == {"ppl_fair": 5.47} and ppl[1]["paper"] is None
    assert ppl[0]["ppl"] == pytest.approx(res["models"]["0"]["sv"]["summary"]["best_val_ppl"], rel=1e-5)
    assert res["models"]["0"]["rl"]["summary"]["selected"]["kind"] == "select"
    assert res["transcripts"] and res["transcripts"][0]["text"].startswith("Input")
    assert res["transcripts"][0]["text"] == format_game(_record(res["transcripts"][0]["record"]), ("RL", "SV"))
    # a second run reuses the finished agents
    assert negotiation_selfplay.main(args) == 0
    again = json.loads(out.read_text())
    assert not again["models"]["0"]["sv"]["trained_in_this_run"]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again["rows"]] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in res["rows"]]


def _record(d: dict):  # type: ignore[no-untyped-def]
    """A GameRecord back from its to_dict() (for the transcript check)."""
    from negotiation.dialog import GameRecord, Message
    from negotiation.domain import Context, Scenario

    sc = Scenario(Context.from_ints(d["contexts"][0]), Context.from_ints(d["contexts"][1]))
    msgs = tuple(Message(s, tuple(t.split())) for s, t in d["messages"])
    choices = tuple(None if c is None else tuple(c) for c in d["choices"])
    return GameRecord(sc, d["first"], msgs, choices, d["agreed"], tuple(d["scores"]), d["selected"], d["pareto"])


def test_bench_recipe_tiny(negotiate_data: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "recipes"))
    import bench_selfplay

    out = tmp_path / "bench.json"
    assert bench_selfplay.main(["--scale", "tiny", "--data-dir", str(negotiate_data), "--runs", str(tmp_path),
                                "--n", "4", "--batch-size", "4", "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["games"] == 4 and row["batch_size"] == 4 and row["model"].startswith("untrained")
    assert row["one_at_a_time_per_s"] > 0 and row["batched_per_s"] > 0


def test_attack_and_adv_train_commands(runs: dict[str, Path], fake_data: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "att.jsonl"
    common = ["--target", str(runs["rl"]), "--speaker", str(runs["rl"]), "--n", "6", "--data-dir", str(fake_data),
              "--quiet", "--batch-size", "3"]
    assert main(["attack", "--method", "reactive", "--out", str(out), *common]) == 0
    assert "reactive against" in capsys.readouterr().out
    games = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(games) == 6 and all("events" in g for g in games)
    with pytest.raises(SystemExit, match="--rl-attacker"):
        main(["attack", "--method", "transfer", *common])
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main(["attack", "--method", "rl", "--target", str(tmp_path / "nope"), "--speaker", str(runs["rl"]),
              "--data-dir", str(fake_data)])
    adv = tmp_path / "adv"
    base = ["adv-train", "--target", str(runs["rl"]), "--attacker", str(runs["rl"]), "--out", str(adv),
            "--preset", "tiny", "--data-dir", str(fake_data), "--quiet", "--device", "cpu"]
    with pytest.raises(SystemExit, match="pass --partner"):
        main(base)
    assert main([*base, "--partner", str(runs["sv"])]) == 0
    out = capsys.readouterr().out
    assert "adversarially trained target" in out and "with the partner" in out
    DialogModel.from_pretrained(adv / "target")


def test_advagent_recipe_tiny(negotiate_data: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "recipes"))
    import negotiation_advagent

    out = tmp_path / "adv.json"
    args = ["--scale", "tiny", "--data-dir", str(negotiate_data), "--runs", str(tmp_path / "runs"), "--out",
            str(out), "--quiet"]
    assert negotiation_advagent.main(args) == 0
    res = json.loads(out.read_text())
    rows = [r for r in res["rows"] if r["table"] in ("3.10", "3.14")]
    assert {r["target"] for r in rows} == {"RL", "SV", "adv-trained"}
    assert {r["attack"] for r in rows} == {*negotiation_advagent.LABELS.values(),
                                           "RL attack (attacker of the RL agent, not adapted)"}
    assert res["scenarios"]["source"] == "negotiate/test.txt" and not res["scenarios"]["in_sample"]
    for r in rows:
        assert 0.0 <= r["par"] <= 1.0 and r["advantage"] == pytest.approx(r["score_attacker"] - r["score_target"])
        assert r["split"] == "test" and r["max_turns"] == 10 and r["ci95"]["advantage"] is not None
        if r["attack"] != "RL model (w/o attack)":
            assert r["agreement"] <= 1.0
    both = [(r["target"], r["protocol"]) for r in rows if r["attack"] == "Reactive attack"]
    assert set(both) == {(t, p) for t in ("RL", "SV", "adv-trained") for p in ("strict", "released-code")}
    released = [r for r in rows if r["protocol"] == "released-code"]
    assert all(r["paper"] is not None for r in released)
    normal = {r["target"]: r for r in res["rows"] if r["table"] == "3.14 (normal rules)"}
    assert set(normal) == {"RL", "adv-trained"} and normal["RL"]["cap_rule"] == "no-deal"
    assert res["models"]["adaptive RL attacker"]["target"].endswith("target")
    assert [r["start_turn"] for r in res["rows"] if r["table"] == "3.15"] == [1, 2, 3, 4]
    assert any(r["table"] == "benchmark" for r in res["rows"])
    assert res["models"]["adv-trained"]["log"][0]["round"] == 0
