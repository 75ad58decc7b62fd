"""Seq2Sick runs end to end on HuggingFace victims (tiny Marian / T5 / BART built from config).

These models are untrained, so only the mechanics are checked here (subword-aware change counting,
re-tokenised judging, fixed task prefix); attacks on trained victims are tested with OpenNMT-py models
and measured in docs/RESULTS.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hf_fixtures import FAMILIES

from nlprobust.attacks import AttackItem, Seq2Sick, preset
from nlprobust.metrics import changed_words
from nlprobust.victims.huggingface import HFVictim

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_seq2sick_on_hf_victim(family: str, tmp_path: Path) -> None:
    make_tok, make_model = FAMILIES[family]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = make_tok(tmp_path)
        victim = HFVictim(make_model(tok), tok, device="cpu",
                          task_prefix="translate English to German: " if family == "t5" else "")
    items = [AttackItem(0, "the dog runs in the park"), AttackItem(1, "a man"), AttackItem(2, "")]
    res = Seq2Sick(victim, preset("paper", "nonoverlap", iterations=8, lr=5.0, lambda1=0.1)).run(items)
    assert res[2].error is not None and "empty" in res[2].error
    for r in res[:2]:
        assert r.error is None, r.error
        assert r.changed == changed_words(r.source_words, r.adversarial_words)
        assert "translate" not in r.adversarial  # the fixed prefix is never part of the attacked text
        # the reported output is what the model gives for the adversarial *text*
        assert victim.translate([r.adversarial], beam_size=5)[0] == r.adversarial_output
