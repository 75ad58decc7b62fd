"""Adversarial fine-tuning (nlprobust.training.robust) on the tiny Marian of the test suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nlprobust.synthetic import synthetic_corpus
from nlprobust.training import robust as R


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(str(path)).state_dict()


def test_hotflip_swaps_pieces_that_raise_the_loss(tiny_marian_victim) -> None:  # type: ignore[no-untyped-def]
    from nlprobust.training.marian import _collate, _encode

    v = tiny_marian_victim
    data = synthetic_corpus(6, 3)
    src, tgt = _encode(v.tokenizer, data)
    start = int(v.model.config.decoder_start_token_id)
    batch = _collate(src, tgt, int(v.tokenizer.pad_token_id), start, v.device)
    vocab = R._Vocab(v)
    new = R.hotflip_sources(v, vocab, batch, max_changes=2)
    changed = (new != batch["input_ids"]).sum(dim=1)
    assert bool((changed <= 2).all()) and int(changed.sum()) > 0
    swapped = new != batch["input_ids"]
    old_start, new_start = vocab.word_start[batch["input_ids"][swapped]], vocab.word_start[new[swapped]]
    assert torch.equal(old_start, new_start)  # word boundaries kept
    assert bool((vocab.start_candidates | vocab.inner_candidates)[new[swapped]].all())

    def nll(ids: torch.Tensor) -> float:
        with torch.no_grad():
            out = v.model(input_ids=ids, attention_mask=batch["attention_mask"],
                          decoder_input_ids=batch["decoder_input_ids"], labels=None)
            return float(torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten(),
                                                           ignore_index=-100))
    assert nll(new) > nll(batch["input_ids"])  # the swaps raise the translation loss


@pytest.mark.parametrize("adversary", ["hotflip", "embedding", "word-swap", "seq2sick"])
def test_every_adversary_fine_tunes(tiny_marian: Path, tmp_path: Path, adversary: str) -> None:
    cfg = R.preset("tiny", adversary=adversary, max_steps=4, eval_every=2, batch_size=4)
    out = R.train_robust(tiny_marian, synthetic_corpus(40, 0), synthetic_corpus(8, 1), tmp_path / adversary, cfg,
                         progress=False)
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["done"] and meta["steps"] == 4 and meta["seconds_per_step"] > 0
    assert (adversary in ("hotflip", "word-swap", "seq2sick")) == (meta["adversary_seconds_per_step"] > 0)
    before, after = _weights(tiny_marian), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]


def test_a_killed_run_resumes_to_the_same_weights(tiny_marian: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = R.preset("tiny", max_steps=6, eval_every=2, batch_size=4)
    data, valid = synthetic_corpus(40, 0), synthetic_corpus(8, 1)
    straight = R.train_robust(tiny_marian, data, valid, tmp_path / "a", cfg, progress=False)
    real, calls = R.hotflip_sources, []

    def killed(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 4:  # step 4: steps 1-2 are checkpointed, 3 is lost
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(R, "hotflip_sources", killed)
    with pytest.raises(KeyboardInterrupt):
        R.train_robust(tiny_marian, data, valid, tmp_path / "b", cfg, progress=False)
    monkeypatch.undo()
    assert not R.is_complete(tmp_path / "b")
    resumed = R.train_robust(tiny_marian, data, valid, tmp_path / "b", cfg, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    mtime = (resumed / "model.safetensors").stat().st_mtime_ns  # a finished run is returned as it is
    assert R.train_robust(tiny_marian, data, valid, resumed, cfg, progress=False) == resumed
    assert (resumed / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other settings"):
        R.train_robust(tiny_marian, data, valid, resumed, R.preset("tiny", max_steps=5), progress=False)
    with pytest.raises(ValueError, match="unknown adversary"):
        R.preset("tiny", adversary="magic")


def test_train_robust_cli(tiny_marian: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nlprobust.cli import main

    out = tmp_path / "robust"
    args = ["train", "robust", str(tiny_marian), "--out", str(out), "--corpus", "synthetic", "--scale", "tiny",
            "--max-steps", "2", "--batch-size", "4", "--quiet"]
    assert main(args) == 0
    assert "robust model in" in capsys.readouterr().out and R.is_complete(out)
    with pytest.raises(SystemExit, match="model directory not found"):
        main(["train", "robust", str(tmp_path / "none"), "--out", str(out)])
    with pytest.raises(SystemExit, match="adv_fraction must be in"):
        main([*args[:3], "--out", str(tmp_path / "x"), "--corpus", "synthetic", "--scale", "tiny",
              "--adv-fraction", "2"])


def test_opening_share_counts_successes_that_change_a_first_word() -> None:
    from nlprobust.experiments.robust import opening_share

    recs = [{"success": True, "changed_positions": [0]}, {"success": True, "changed_positions": [1, 5]},
            {"success": True, "changed_positions": [3]}, {"success": False, "changed_positions": [0]}]
    assert opening_share(recs) == round(100 * 2 / 3, 1)
    assert opening_share(recs, first=1) == round(100 / 3, 1)
    assert opening_share([{"success": False, "changed_positions": []}]) is None
    with pytest.raises(ValueError, match="first"):
        opening_share(recs, first=0)
