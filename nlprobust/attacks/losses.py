"""The Seq2Sick attack losses: non-overlapping (2.8) and targeted keywords with collision mask (2.11, 2.12).

All functions are batched: ``logits`` is ``[B, T, V]`` (teacher-forced on the current adversarial output),
``valid`` ``[B, T]`` marks the output positions that exist, and every loss returns one value per row.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nonoverlap_loss(logits: Tensor, original: Tensor, valid: Tensor, epsilon: float = 0.0, *,
                    eos_id: int | None = None, word_index: Tensor | None = None) -> Tensor:
    """Eq. (2.8): ``sum_t max(-eps, z_t[s_t] - max_{y != s_t} z_t[y])`` over positions ``t <= M``.

    Args:
        logits: ``[B, T, V]``.
        original: original output ids ``s`` ``[B, M]``, padded with ``-1``.
        valid: ``[B, T]`` positions where the adversarial output exists (up to and including its EOS);
            positions after the adversarial output ended cannot overlap and are not counted.
        epsilon: confidence margin.
        eos_id: for the ``at-least-as-long`` criterion: EOS is forbidden like ``s_t`` at every position
            ``t < M`` (``max(z_t[s_t], z_t[eos]) - max_{y not in {s_t, eos}} z_t[y]``), so ending the output
            early is no longer a way to avoid overlap. ``None``: the thesis's loss.
        word_index: ``[B, M]`` word of each original output token (``-1`` past the end), for subword victims:
            success is judged per word, and one changed token changes its word, so the hinge is aggregated per
            word by its minimum over the word's tokens. ``None``: one token per word.
    """
    t = min(logits.shape[1], original.shape[1])
    z = logits[:, :t]
    s = original[:, :t]
    use = (s >= 0) & valid[:, :t]
    idx = s.clamp(min=0).unsqueeze(-1)
    z_s = z.gather(-1, idx).squeeze(-1)
    # max over y != s_t: the top-1 logit unless it is s_t itself, then the top-2 (sparse backward, no copy of z)
    if eos_id is None:
        top2_val, top2_idx = z.topk(2, dim=-1)
        z_other = torch.where(top2_idx[..., 0] == s, top2_val[..., 1], top2_val[..., 0])
        z_bad = z_s
    else:
        top3_val, top3_idx = z.topk(3, dim=-1)
        allowed = (top3_idx != s.unsqueeze(-1)) & (top3_idx != eos_id)
        first = allowed.float().argmax(-1, keepdim=True)  # the best entry that is neither s_t nor EOS
        z_other = top3_val.gather(-1, first).squeeze(-1)
        z_bad = torch.maximum(z_s, z[..., eos_id])
    hinge = (z_bad - z_other).clamp(min=-epsilon)
    if word_index is None:
        return (hinge * use).sum(1)
    w = word_index[:, :t]
    words = torch.arange(word_index.shape[1], device=logits.device)  # at most one word per token
    member = (w.unsqueeze(-1) == words) & use.unsqueeze(-1)  # [B, t, W]
    per_word = hinge.unsqueeze(-1).masked_fill(~member, float("inf")).amin(1)  # [B, W]
    return torch.where(torch.isinf(per_word), torch.zeros_like(per_word), per_word).sum(1)


def nearest_word_distance(x: Tensor, e: Tensor) -> Tensor:
    """``||x_i - e_i||_2`` per position ``[B, N]``, computed in float32 with a gradient that is finite at 0.

    The ``1e-12`` that keeps ``sqrt`` differentiable at zero underflows to 0 in float16, where the old
    formula gave NaN gradients; attack state is kept in float32 and so is this term.
    """
    d2 = ((x.float() - e.float()) ** 2).sum(-1)
    return d2.add(1e-12).sqrt()


def keywords_loss(logits: Tensor, keywords: Tensor, valid: Tensor, epsilon: float = 0.0) -> Tensor:
    """Eq. (2.12): ``sum_i min_t m_t(max(-eps, max_{y != k_i} z_t[y] - z_t[k_i]))``.

    The mask (2.11) removes from keyword ``k_i``'s search every position whose top-1 word is *another*
    keyword, so keywords do not compete for one position. (Masking also the positions held by ``k_i``
    itself, a literal reading of (2.11), would push a keyword that is already placed to a second place.)
    A keyword with no position left contributes 0.

    Args:
        logits: ``[B, T, V]``.
        keywords: ``[B, K]`` keyword ids, padded with ``-1``.
        valid: ``[B, T]`` existing output positions.
        epsilon: confidence margin.
    """
    b, t, _ = logits.shape
    k = keywords.shape[1]
    kw = keywords.clamp(min=0)
    top2_val, top2_idx = logits.topk(2, dim=-1)  # [B, T, 2]
    top = top2_idx[..., 0]
    z_k = logits.gather(-1, kw.unsqueeze(1).expand(b, t, k))  # [B, T, K]
    is_k_top = top.unsqueeze(-1) == keywords.unsqueeze(1)  # [B, T, K]
    z_other = torch.where(is_k_top, top2_val[..., 1:2], top2_val[..., 0:1])
    hinge = (z_other - z_k).clamp(min=-epsilon)
    held_by_keyword = is_k_top.any(-1, keepdim=True)  # top-1 word of t is in K
    masked = (held_by_keyword & ~is_k_top) | ~valid.unsqueeze(-1)
    hinge = hinge.masked_fill(masked, float("inf"))
    per_kw = hinge.amin(1)  # [B, K]
    per_kw = torch.where(torch.isinf(per_kw) | (keywords < 0), torch.zeros_like(per_kw), per_kw)
    return per_kw.sum(1)
