"""The transfer attack's sentence pool (thesis 3.2.2.2): the attacker's last sentences of high-reward dialogues."""

from __future__ import annotations

from collections.abc import Sequence

from negotiation.agents import RnnAgent
from negotiation.corpus import EOS
from negotiation.dialog import play
from negotiation.domain import Scenario
from negotiation.model import DialogModel


def collect_transfer_sentences(attacker: DialogModel, target: DialogModel, scenarios: Sequence[Scenario], *,
                               min_advantage: int = 4, temperature: float = 0.5, seed: int = 0,
                               batch_size: int = 256, limit: int | None = None) -> list[list[str]]:
    """Play ``attacker`` (forced agreement) against ``target`` on ``scenarios`` and return, from every game
    whose advantage is at least ``min_advantage``, the attacker's last message with words in it (ending
    ``<eos>``), without duplicates, in game order (at most ``limit``).

    Use scenarios other than the evaluation ones: the pool is meant to transfer to unseen dialogues.
    """
    if not scenarios:
        raise ValueError("no scenarios to collect transfer sentences from")
    a = RnnAgent(attacker, name="attacker", temperature=temperature, seed=seed)
    b = RnnAgent(target, name="target", temperature=temperature, seed=seed + 1)
    pool: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for r in play(a, b, scenarios, complement="a", batch_size=batch_size):
        if r.advantage < min_advantage:
            continue
        own = [m.tokens for m in r.messages if m.speaker == "a" and m.tokens[-1] == EOS and len(m.tokens) > 1]
        if own and own[-1] not in seen:
            seen.add(own[-1])
            pool.append(list(own[-1]))
        if limit is not None and len(pool) >= limit:
            break
    if not pool:
        raise ValueError(f"no game reached an advantage of {min_advantage} in {len(scenarios)} scenarios; lower "
                         f"min_advantage or use more scenarios")
    return pool


__all__ = ["collect_transfer_sentences"]
