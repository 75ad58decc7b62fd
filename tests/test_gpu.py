"""CUDA checks (``-m gpu``; skipped without a GPU): the text attacks on both victim kinds in float32 and bfloat16,
a hard-label and a white-box vision attack, and negotiation self-play, all on the device.

Run by ``recipes/gpu_check.sh`` together with the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _attack_both(victim) -> list[tuple[str, float]]:  # noqa: ANN001
    from nlprobust.attacks import AttackItem, build_attack, preset, word_swap_preset
    from nlprobust.synthetic import synthetic_corpus

    items = [AttackItem(i, s) for i, s in enumerate(synthetic_corpus(16, 31).src)]
    out = []
    for name, cfg in (("seq2sick", preset("multi30k-lstm", "nonoverlap", iterations=40)),
                      ("word-swap", word_swap_preset("default", "nonoverlap"))):
        res = build_attack(name, victim, cfg).run(items, batch_size=16)
        assert not any(r.error for r in res)
        out.append((name, sum(r.success for r in res) / len(res)))
    return out


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_text_attacks_on_cuda_onmt(dtype: str | None, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("onmt", reason="OpenNMT-py is not installed here")
    from nlprobust.victims import load_victim

    tiny_onmt_ckpt = request.getfixturevalue("tiny_onmt_ckpt")
    victim = load_victim(f"onmt:{tiny_onmt_ckpt}", trust_checkpoint=True, device="cuda", dtype=dtype)
    assert victim.device.type == "cuda"
    rates = _attack_both(victim)
    assert all(rate > 0 for _, rate in rates), rates


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_text_attacks_on_cuda_hf(tiny_marian: Path, dtype: str | None) -> None:
    from nlprobust.victims.huggingface import HFVictim

    victim = HFVictim(tiny_marian, device="cuda", dtype=dtype)
    assert victim.device.type == "cuda" and next(victim.model.parameters()).is_cuda
    rates = _attack_both(victim)
    assert all(rate > 0 for _, rate in rates), rates


def test_hf_model_placed_on_cuda_is_used_where_it_is(tiny_marian: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from nlprobust.victims.huggingface import HFVictim

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_marian).to(f"cuda:{torch.cuda.device_count() - 1}")
    victim = HFVictim(model, AutoTokenizer.from_pretrained(tiny_marian))
    assert victim.device == next(model.parameters()).device and victim.model is model
    assert victim.translate(["A dog runs."], beam_size=2)


def test_vision_attacks_on_cuda() -> None:
    from vision_fixtures import tiny_mnist

    from nlprobust.vision.attacks import get_attack

    model, x, y, *_ = tiny_mnist()
    model = model.cuda()
    x, y = x[:8].cuda(), y[:8].cuda()
    for name, kwargs in (("sign-opt", {"budget": 2000}), ("pgd", {"epsilon": 2.0})):
        res = get_attack(name, **kwargs)(model, x, y)
        assert res.x_adv.is_cuda and float(res.success.float().mean()) > 0, name


def test_negotiation_selfplay_on_cuda() -> None:
    import random

    from negotiation.attacks.run import run_attack, summarize_games
    from negotiation.domain import random_scenario
    from negotiation.model import DialogModel, DialogModelConfig

    rng = random.Random(0)
    scenarios = [random_scenario(rng) for _ in range(32)]
    from negotiation import corpus as C

    words = C.build_word_vocab([], min_freq=1)
    model = DialogModel(words, config=DialogModelConfig(ctx_embed=8, ctx_hidden=8, word_embed=16, lang_hidden=12,
                                                         attn_hidden=10, sel_hidden=12, dropout=0.0)).cuda().eval()
    games = run_attack("none", target=model, speaker=model, scenarios=scenarios, batch_size=16, progress=False)
    assert summarize_games(games)["games"] == 32
