"""Adversarial attacks on seq2seq victims."""

from nlprobust.attacks.seq2sick import AttackItem, AttackResult, Seq2Sick, Seq2SickConfig, preset

__all__ = ["AttackItem", "AttackResult", "Seq2Sick", "Seq2SickConfig", "preset"]
