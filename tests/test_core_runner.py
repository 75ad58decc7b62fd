"""The shared run I/O and the sharded resumable runner (no model needed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from nlprobust.core.runio import JsonlLog, atomic_dir, atomic_torch_save, complete_dir, read_jsonl, seed_for, start_run
from nlprobust.core.runner import Shard, merge_shards, parse_shard, run_items, shard_from_env, shard_path


def _process(calls: list[int] | None = None, fail_on: int | None = None):
    """A deterministic per-chunk job: seeded by the chunk index only, as the runner requires."""

    def process(chunk: int, items: list[str]) -> list[dict]:
        if calls is not None:
            calls.append(chunk)
        if chunk == fail_on:
            raise KeyboardInterrupt("killed")
        rng = random.Random(seed_for(7, chunk))
        return [{"index": int(it[1:]), "text": it, "draw": rng.random()} for it in items]

    return process


ITEMS = [f"s{i}" for i in range(23)]


def test_single_process_writes_all_in_order(tmp_path: Path) -> None:
    res = run_items(ITEMS, _process(), tmp_path / "out.jsonl", chunk_size=5, progress=False, shard=Shard())
    assert res.complete and res.merged
    assert [r["index"] for r in read_jsonl(tmp_path / "out.jsonl")] == list(range(23))


def test_shards_merge_to_the_single_process_output(tmp_path: Path) -> None:
    run_items(ITEMS, _process(), tmp_path / "one.jsonl", chunk_size=5, progress=False, shard=Shard())
    out = tmp_path / "many.jsonl"
    outcomes = [run_items(ITEMS, _process(), out, chunk_size=5, progress=False, shard=Shard(r, 3))
                for r in (2, 0, 1)]
    assert [o.merged for o in outcomes] == [False, False, True]  # the last rank to finish merges
    assert out.read_text() == (tmp_path / "one.jsonl").read_text()
    assert not any(shard_path(out, Shard(r, 3)).exists() for r in range(3))  # shards removed after the merge
    # a rerun of a merged run does nothing and keeps the output
    calls: list[int] = []
    again = run_items(ITEMS, _process(calls), out, chunk_size=5, progress=False, shard=Shard(1, 3))
    assert calls == [] and again.merged and out.read_text() == (tmp_path / "one.jsonl").read_text()


def test_killed_rank_relaunched_alone_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    run_items(ITEMS, _process(), tmp_path / "one.jsonl", chunk_size=4, progress=False, shard=Shard())
    out = tmp_path / "out.jsonl"
    run_items(ITEMS, _process(), out, chunk_size=4, progress=False, shard=Shard(0, 2))
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):  # rank 1 owns chunks 1, 3, 5: killed in chunk 3
        run_items(ITEMS, _process(calls, fail_on=3), out, chunk_size=4, progress=False, shard=Shard(1, 2))
    assert calls == [1, 3] and not out.exists()
    # a torn last line from the kill
    with open(shard_path(out, Shard(1, 2)), "a") as fh:
        fh.write('{"index": 12, "te')
    calls.clear()
    res = run_items(ITEMS, _process(calls), out, chunk_size=4, progress=False, shard=Shard(1, 2))
    assert calls == [3, 5] and res.merged
    recs = read_jsonl(out)
    assert [r["index"] for r in recs] == list(range(23))
    assert out.read_text() == (tmp_path / "one.jsonl").read_text()


def test_process_must_return_one_record_per_item(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="chunk 0"):
        run_items(ITEMS, lambda c, its: [{"index": 0}], tmp_path / "o.jsonl", chunk_size=5, progress=False,
                  shard=Shard())


def test_shard_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Shard(1, 4, 1)
    assert shard_from_env({}) == Shard()
    assert parse_shard("2/3").rank == 2 and parse_shard("2/3").world == 3
    with pytest.raises(ValueError, match="RANK/WORLD"):
        parse_shard("two")
    with pytest.raises(ValueError, match="rank must be"):
        Shard(3, 3)


def test_merge_waits_for_every_item(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    JsonlLog(shard_path(out, Shard(0, 2))).append({"index": 0})
    assert merge_shards(out, [0, 1], 2) is None and not out.exists()


def test_jsonl_torn_line_policy(tmp_path: Path) -> None:
    p = tmp_path / "log.jsonl"
    p.write_text('{"index": 0}\n{"index": 1}\n{"index": 2, "x": "ab')
    assert [r["index"] for r in read_jsonl(p)] == [0, 1]
    assert p.read_text().endswith('"ab')  # readers leave the file alone
    log = JsonlLog(p)
    assert log.done == {0, 1} and p.read_text() == '{"index": 0}\n{"index": 1}\n'  # the log cuts it away
    log.append({"index": 2})
    assert [r["index"] for r in read_jsonl(p)] == [0, 1, 2]
    # a complete line that does not parse is corruption, not a torn write
    p.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        JsonlLog(p)
    # a torn write cut inside a multi-byte character
    p.write_bytes(b'{"index": 0}\n{"w": "Gr' + "ü".encode()[:1])
    assert read_jsonl(p) == [{"index": 0}]


def test_atomic_torch_save_survives_a_crash_mid_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1}, path)

    def half_save(obj, f, *a, **k):  # writes some bytes, then the process "dies"
        Path(f).write_bytes(b"\x80partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_dir_keeps_a_complete_checkpoint(tmp_path: Path) -> None:
    ck = tmp_path / "checkpoint"

    def write(step: int):
        def w(d: Path) -> None:
            (d / "state.json").write_text(json.dumps({"step": step}))
        return w

    atomic_dir(ck, write(1))

    def crash(d: Path) -> None:
        (d / "state.json").write_text("{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_dir(ck, crash)
    found = complete_dir(ck, ["state.json"])
    assert found == ck and json.loads((found / "state.json").read_text()) == {"step": 1}
    # a crash between the two renames leaves the old folder complete under .old
    ck.rename(ck.with_name("checkpoint.old"))
    assert complete_dir(ck, ["state.json"]) == ck.with_name("checkpoint.old")
    atomic_dir(ck, write(2))
    assert json.loads((ck / "state.json").read_text()) == {"step": 2}
    assert not ck.with_name("checkpoint.old").exists()


def test_start_run_checks_the_config_on_resume(tmp_path: Path) -> None:
    start_run(tmp_path, {"lr": 1.0}, resuming=False)
    saved = json.loads((tmp_path / "run_config.json").read_text())
    assert saved["run"] == {"lr": 1.0} and "torch" in saved["versions"]
    start_run(tmp_path, {"lr": 1.0}, resuming=True)
    with pytest.raises(ValueError, match="lr"):
        start_run(tmp_path, {"lr": 2.0}, resuming=True)


def test_read_items_turns_undecodable_lines_into_error_items(tmp_path: Path) -> None:
    from nlprobust.core.runner import read_items

    path = tmp_path / "in.txt"
    path.write_bytes(b"a cat\n" + b"caf\xe9 au lait\r\n" + b"ein Hund\n")
    rows = read_items(path)
    assert [r["text"] for r in rows] == ["a cat", "caf\ufffd au lait", "ein Hund"]
    assert "error" not in rows[0] and "error" not in rows[2]
    assert rows[1]["error"].startswith(f"{path}:2: not valid utf-8 at byte 9 of the file")
    latin = read_items(path, encoding="latin-1")
    assert latin[1] == {"text": "café au lait"} and all("error" not in r for r in latin)
    jl = tmp_path / "in.jsonl"
    jl.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    rows = read_items(jl)
    assert rows[0] == {"text": "ok"} and ":2: not valid utf-8 at byte 25" in rows[1]["error"]
    with pytest.raises(ValueError, match="unknown encoding 'klingon'"):
        read_items(path, encoding="klingon")


def test_recorded_commands_drop_the_data_dir_and_machine_paths(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from nlprobust.core.runio import portable_command

    monkeypatch.chdir(tmp_path)
    script = str(tmp_path / "recipes" / "x.py")
    assert portable_command([script, "--scale", "small", "--data-dir", "/data/corpora", "--n", "5"]) == \
        ["python", "recipes/x.py", "--scale", "small", "--n", "5"]
    assert portable_command(["recipes/x.py", "--data-dir=/data", "--runs", str(tmp_path / "runs")]) == \
        ["python", "recipes/x.py", "--runs", "runs"]
    assert portable_command(["nlprobust", "attack", "--out", "/elsewhere/o.json"]) == \
        ["nlprobust", "attack", "--out", "/elsewhere/o.json"]  # outside the working directory: kept


def test_record_archive_restores_a_run_on_the_same_model_only(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from nlprobust.core.runio import ArchiveMismatch
    from nlprobust.experiments.tables import run_attacks

    class Attack:
        calls = 0

        def attack_batch(self, chunk: list) -> list:
            Attack.calls += len(chunk)
            return [SimpleNamespace(to_dict=lambda it=it: {"index": it.index, "changed": it.index % 3}) for it in chunk]

    items = [SimpleNamespace(index=i) for i in range(5)]
    archive = tmp_path / "kept" / "row.jsonl.gz"
    first = run_attacks(tmp_path / "a.jsonl", items, Attack(), 2, "row", False, archive=(archive, "fp1"))
    assert Attack.calls == 5 and archive.exists()
    blob = archive.read_bytes()
    # a fresh checkout (no run folder) with the same model: restored, reported and resumed without attacking
    assert run_attacks(tmp_path / "b.jsonl", items, Attack(), 2, "row", True, archive=(archive, "fp1")) == first
    assert run_attacks(tmp_path / "c.jsonl", items, Attack(), 2, "row", False, archive=(archive, "fp1")) == first
    assert Attack.calls == 5 and archive.read_bytes() == blob  # same records, same bytes
    more = [*items, SimpleNamespace(index=5)]
    assert len(run_attacks(tmp_path / "c.jsonl", more, Attack(), 1, "row", False, archive=(archive, "fp1"))) == 6
    assert Attack.calls == 6 and archive.read_bytes() != blob
    with pytest.raises(ArchiveMismatch, match="another model"):  # never mixes two victims' records
        run_attacks(tmp_path / "d.jsonl", items, Attack(), 2, "row", False, archive=(archive, "fp2"))
    assert not (tmp_path / "d.jsonl").exists()


def test_run_attacks_reduces_earlier_searches_instead_of_searching(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from nlprobust.experiments.tables import run_attacks

    class Attack:
        reduced: list = []

        def attack_batch(self, chunk: list) -> list:
            raise AssertionError("searched again")

        def reduce_records(self, recs: list, items: list | None = None) -> list:
            Attack.reduced += [r["index"] for r in recs]
            return [SimpleNamespace(to_dict=lambda r=r: {"index": r["index"], "changed": r["changed"] - 1})
                    for r in recs]

    items = [SimpleNamespace(index=i) for i in range(4)]
    earlier = [{"index": i, "changed": 3} for i in reversed(range(4))]
    recs = run_attacks(tmp_path / "a.jsonl", items, Attack(), 3, "row", False, searched=earlier)
    assert sorted(Attack.reduced) == [0, 1, 2, 3] and [r["changed"] for r in recs] == [2] * 4
    with pytest.raises(ValueError, match="no earlier search for 1 of 5"):
        run_attacks(tmp_path / "b.jsonl", [*items, SimpleNamespace(index=9)], Attack(), 3, "row", False,
                    searched=earlier)


def test_run_attacks_does_again_the_records_redo_picks(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from nlprobust.experiments.tables import judged_on_other_text, run_attacks

    class Attack:
        calls: list = []

        def __init__(self, text: str) -> None:
            self.text = text

        def attack_batch(self, chunk: list) -> list:
            Attack.calls += [it.index for it in chunk]
            return [SimpleNamespace(to_dict=lambda it=it: {"index": it.index, "adversarial": self.text})
                    for it in chunk]

    items = [SimpleNamespace(index=i) for i in range(4)]
    archive = tmp_path / "kept" / "row.jsonl.gz"
    run_attacks(tmp_path / "a.jsonl", items[:2], Attack("a <unk> dog"), 2, "row", False, archive=(archive, "fp"))
    run_attacks(tmp_path / "a.jsonl", items, Attack("a cat"), 2, "row", False, archive=(archive, "fp"))
    assert Attack.calls == [0, 1, 2, 3]
    # a fresh checkout restores the archive; only the records redo picks are attacked again, once
    for _ in range(2):
        recs = run_attacks(tmp_path / "b.jsonl", items, Attack("a hound"), 2, "row", False,
                           archive=(archive, "fp"), redo=judged_on_other_text)
    assert Attack.calls == [0, 1, 2, 3, 0, 1]
    assert [r["adversarial"] for r in recs] == ["a hound", "a hound", "a cat", "a cat"]
    assert judged_on_other_text({"adversarial": "a b", "before_reduction": {"adversarial": "<unk> b"}})
    assert not judged_on_other_text({"adversarial": "a b", "before_reduction": {}, "source_words": ["a", "b"]})
    # the attack changed the unknown word, but its trials that kept it were judged on another text
    assert judged_on_other_text({"adversarial": "a b", "source_words": ["a", "<unk>"]})
    # an interrupted redo does not get its dropped records back from the archive
    from nlprobust.core.runio import read_archive

    class Killed:
        def attack_batch(self, chunk: list) -> list:
            raise KeyboardInterrupt

    other = tmp_path / "kept" / "other.jsonl.gz"
    run_attacks(tmp_path / "d.jsonl", items, Attack("a <unk> dog"), 2, "row", False, archive=(other, "fp"))
    with pytest.raises(KeyboardInterrupt):
        run_attacks(tmp_path / "e.jsonl", items, Killed(), 2, "row", False, archive=(other, "fp"),
                    redo=judged_on_other_text)
    assert read_archive(other, "fp") == []
    with pytest.raises(ValueError, match="no earlier search"):  # checked before anything is dropped
        run_attacks(tmp_path / "b.jsonl", items, Attack("x"), 2, "row", False, searched=[], redo=lambda r: True)
    assert len(read_jsonl(tmp_path / "b.jsonl")) == 4


def _recording(seen: list[list[str]]):
    """:func:`_process` that also notes the items of each call in ``seen``."""
    inner = _process()

    def process(chunk: int, items: list[str]) -> list[dict]:
        seen.append(items)
        return inner(chunk, items)

    return process


def test_a_chunk_with_finished_items_runs_whole_or_only_its_unfinished_items(tmp_path: Path) -> None:
    full = run_items(ITEMS, _process(), tmp_path / "full.jsonl", chunk_size=5, progress=False, shard=Shard()).records
    for partial in (False, True):
        out = tmp_path / f"p{partial}.jsonl"
        log = JsonlLog(out)
        log.extend(full)
        log.drop([1, 3, 12])  # e.g. records found stale and removed to be done again
        seen: list[list[str]] = []
        recs = run_items(ITEMS, _recording(seen), out, chunk_size=5, progress=False, shard=Shard(),
                         partial=partial).records
        assert [r["index"] for r in recs] == list(range(23))
        if partial:
            assert seen == [["s1", "s3"], ["s12"]]
        else:  # whole chunks again: the per-chunk seed gives every redone item its uninterrupted record
            assert seen == [ITEMS[0:5], ITEMS[10:15]] and recs == full


def test_run_attacks_searches_afresh_where_redo_picks_the_earlier_search(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from nlprobust.experiments.tables import judged_on_other_text, run_attacks

    class Attack:
        searched: list = []
        reduced: list = []

        def attack_batch(self, chunk: list) -> list:
            Attack.searched += [it.index for it in chunk]
            return [SimpleNamespace(to_dict=lambda it=it: {"index": it.index, "adversarial": "fresh"}) for it in chunk]

        def reduce_records(self, recs: list, items: list | None = None) -> list:
            Attack.reduced += [r["index"] for r in recs]
            return [SimpleNamespace(to_dict=lambda r=r: {"index": r["index"], "adversarial": "reduced"}) for r in recs]

    items = [SimpleNamespace(index=i) for i in range(4)]
    earlier = [{"index": i, "adversarial": "a <unk>" if i % 2 else "a b"} for i in range(4)]
    recs = run_attacks(tmp_path / "a.jsonl", items, Attack(), 3, "row", False, searched=earlier,
                       redo=judged_on_other_text)
    assert Attack.searched == [1, 3] and Attack.reduced == [0, 2]
    assert [r["adversarial"] for r in recs] == ["reduced", "fresh", "reduced", "fresh"]
