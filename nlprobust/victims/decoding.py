"""Batched greedy and beam-search decoding over an incremental step function.

Used by victims whose library offers no decoding from encoder states we control (OpenNMT-py). Finished
hypotheses stay in the beam and extend with EOS at no cost; decoding stops when every row's best beam has
finished (no length penalty, as OpenNMT-py's default), so the result is the best-scoring hypothesis the
beam holds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SYNC_EVERY = 4  # decoding asks the device whether every row is done this often (one host sync)


def may_stop(step: int, finished: Tensor) -> bool:
    """Whether a greedy attack pass may stop after ``step`` because every row has ``finished``. On an
    accelerator it never asks (the pass runs to its length, which the goal keeps short, without a host sync);
    elsewhere the answer costs nothing and is asked every :data:`SYNC_EVERY` steps."""
    if finished.device.type != "cpu":
        return False
    return (step + 1) % SYNC_EVERY == 0 and bool(finished.all())


@torch.no_grad()
def beam_search(
    step: Callable[[Tensor], Tensor],
    reorder: Callable[[Tensor], None],
    *,
    batch_size: int,
    beam_size: int,
    bos: int,
    eos: int,
    max_len: int,
    device: torch.device,
    ban: list[int] | None = None,
) -> list[list[int]]:
    """Decode ``batch_size`` rows; state for ``batch_size * beam_size`` rows must already be set up.

    Args:
        step: last tokens ``[B*k]`` -> log-probabilities ``[B*k, V]`` (advances the caller's state).
        reorder: row indices ``[B*k]`` -> reorders the caller's state (called only when ``beam_size > 1``).
        ban: token ids that may never be produced (padding, BOS, ...).
    Returns:
        per row, the best hypothesis without BOS and EOS.
    """
    b, k = batch_size, beam_size
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    scores = scores.view(-1)
    last = torch.full((b * k,), bos, dtype=torch.long, device=device)
    history = torch.empty((b * k, 0), dtype=torch.long, device=device)
    finished = torch.zeros(b * k, dtype=torch.bool, device=device)
    base = (torch.arange(b, device=device) * k).unsqueeze(1)
    t_done = 0
    for _ in range(max_len):
        lp = step(last).float()
        if ban:
            lp[:, ban] = float("-inf")
        # finished rows may only repeat EOS at no cost (a no-op while none has finished: no host branch)
        lp.masked_fill_(finished.unsqueeze(1), float("-inf"))
        lp[:, eos] = lp[:, eos].masked_fill(finished, 0.0)
        vocab = lp.shape[1]
        top, idx = (scores.unsqueeze(1) + lp).view(b, k * vocab).topk(k, dim=1)
        tok = (idx % vocab).view(-1)
        rows = (base + idx // vocab).view(-1)
        if k > 1:
            reorder(rows)
            history = history[rows]
            finished = finished[rows]
        history = torch.cat([history, tok.unsqueeze(1)], dim=1)
        finished = finished | (tok == eos)
        scores = top.view(-1)
        last = tok
        # the host asks whether every row's best hypothesis has ended only every SYNC_EVERY steps: a finished
        # best hypothesis keeps its score while the others can only fall, so extra steps change nothing
        t_done += 1
        if t_done % SYNC_EVERY == 0 and bool(finished.view(b, k)[:, 0].all()):
            break
    best = history.view(b, k, -1)[:, 0].tolist()
    out = []
    for seq in best:
        out.append(seq[: seq.index(eos)] if eos in seq else seq)
    return out
