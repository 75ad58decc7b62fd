"""Victims: seq2seq models seen by an attack. ``load_victim("hf:PATH_OR_ID" | "onmt:CKPT")`` builds one."""

from __future__ import annotations

from nlprobust.victims.base import EncodedSource, Seq2SeqVictim, VictimError

__all__ = ["EncodedSource", "Seq2SeqVictim", "VictimError", "load_victim"]


def load_victim(spec: str, *, trust_checkpoint: bool = False, device: str | None = None,
                lowercase: bool = False, task_prefix: str = "", dtype: str | None = None) -> Seq2SeqVictim:
    """Build a victim from ``hf:PATH_OR_HUB_ID`` or ``onmt:CHECKPOINT.pt`` (``dtype``: the model's floating-point
    type, e.g. ``bfloat16``; attack state stays float32)."""
    kind, sep, where = spec.partition(":")
    if not sep or not where:
        raise VictimError(f"victim must look like hf:PATH_OR_ID or onmt:CHECKPOINT, not {spec!r}")
    if kind == "onmt":
        from nlprobust.victims.opennmt import OpenNMTVictim

        return OpenNMTVictim(where, trust_checkpoint=trust_checkpoint, device=device, lowercase=lowercase,
                             dtype=dtype)
    if kind == "hf":
        from nlprobust.victims.huggingface import HFVictim

        return HFVictim(where, device=device, task_prefix=task_prefix, dtype=dtype)
    raise VictimError(f"unknown victim kind {kind!r} in {spec!r}; expected 'hf' or 'onmt'")
