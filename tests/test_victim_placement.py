"""Victims on devices and dtypes: a placed model is never moved, low-precision victims keep float32 attack state
with finite gradients, and a device this machine lacks is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nlprobust.attacks import AttackItem, build_attack, preset, word_swap_preset
from nlprobust.synthetic import synthetic_corpus
from nlprobust.victims import VictimError, load_victim
from nlprobust.victims.base import resolve_device, resolve_dtype
from nlprobust.victims.huggingface import HFLoadError, HFVictim

ITEMS = [AttackItem(i, s) for i, s in enumerate(synthetic_corpus(8, 31).src)]


def _grad(victim) -> torch.Tensor:  # noqa: ANN001
    """The gradient an attack takes, through the victim in its own dtype, for float32 attack state."""
    table = victim.source_embedding_table().detach().float()  # attack state: float32 whatever the victim's
    ids, mask = victim.pad_sources([victim.encode_source(it.text).ids for it in ITEMS[:4]])
    x = table[ids].requires_grad_(True)
    with victim.grad_context():
        _, logits, valid = victim.greedy_with_logits(x.to(victim.dtype), mask, max_len=20)
        (grad,) = torch.autograd.grad((logits.float().logsumexp(-1) * valid).sum(), x)
    return grad


def _successes(victim) -> tuple[list[bool], list[bool]]:  # noqa: ANN001
    s2s = build_attack("seq2sick", victim, preset("multi30k-lstm", "nonoverlap", iterations=40)).run(ITEMS)
    ws = build_attack("word-swap", victim, word_swap_preset("default", "nonoverlap")).run(ITEMS)
    return [r.success for r in s2s], [r.success for r in ws]


def _same_success(low, ref) -> None:  # noqa: ANN001
    """A low-precision victim is a slightly different model (its greedy and beam outputs can differ where two
    words are nearly tied; bfloat16 keeps 8 bits of mantissa) and Seq2Sick's trajectory moves with rounding: each
    attack still succeeds, within two of 8 sentences of float32's count."""
    for got, want in zip(_successes(low), _successes(ref)):
        assert sum(got) >= 1 and abs(sum(got) - sum(want)) <= 2, (got, want)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_onmt_victim_finite_gradients_and_success(tiny_onmt_ckpt: Path, dtype: str) -> None:
    ref = load_victim(f"onmt:{tiny_onmt_ckpt}", trust_checkpoint=True, device="cpu")
    low = load_victim(f"onmt:{tiny_onmt_ckpt}", trust_checkpoint=True, device="cpu", dtype=dtype)
    assert low.dtype == getattr(torch, dtype) and ref.dtype == torch.float32
    g = _grad(low)
    assert g.dtype == torch.float32 and torch.isfinite(g).all() and g.abs().sum() > 0
    _same_success(low, ref)


def test_low_precision_hf_victim(tiny_marian: Path) -> None:
    ref = HFVictim(tiny_marian, device="cpu")
    low = HFVictim(tiny_marian, device="cpu", dtype="bfloat16")
    assert low.dtype == torch.bfloat16
    g = _grad(low)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    _same_success(low, ref)


def test_a_placed_model_is_never_moved(tiny_marian: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_marian)
    tok = AutoTokenizer.from_pretrained(tiny_marian)

    def no_move(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("the victim moved a model it was given")

    monkeypatch.setattr(model, "to", no_move)
    victim = HFVictim(model, tok)
    assert victim.model is model and victim.device == torch.device("cpu")
    with pytest.raises(HFLoadError, match="the model is on cpu"):
        HFVictim(model, tok, device="meta")
    with pytest.raises(HFLoadError, match="dtype"):
        HFVictim(model, tok, dtype="bfloat16")


def test_device_and_dtype_errors_are_one_clear_line() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(None) is None
    with pytest.raises(VictimError, match="unknown dtype"):
        resolve_dtype("int8")
    if torch.cuda.is_available():
        with pytest.raises(VictimError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(VictimError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            from nlprobust.cli import main

            main(["evaluate", "--victim", "hf:missing-dir-is-not-reached", "--device", "cuda"])
