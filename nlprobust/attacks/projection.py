"""Projection of continuous embeddings onto the vocabulary and the group-lasso proximal step."""

from __future__ import annotations

import torch
from torch import Tensor


def nearest_rows(x: Tensor, table: Tensor, table_sq: Tensor | None = None, *,
                 chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Squared Euclidean distance to, and index of, the nearest row of ``table`` for each row of ``x``.

    Computed as ``||x||^2 - 2 x W^T + ||W||^2`` in chunks of ``chunk`` table rows, on ``x``'s device.
    """
    if table_sq is None:
        table_sq = (table * table).sum(1)
    x_sq = (x * x).sum(1, keepdim=True)
    best = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
    arg = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for s in range(0, table.shape[0], chunk):
        d = x_sq - 2.0 * (x @ table[s : s + chunk].T) + table_sq[s : s + chunk].unsqueeze(0)
        val, idx = d.min(1)
        better = val < best
        best = torch.where(better, val, best)
        arg = torch.where(better, idx + s, arg)
    return best.clamp(min=0.0), arg


def project_to_vocab(x: Tensor, original_ids: Tensor, original_embeds: Tensor, editable: Tensor,
                     cand_ids: Tensor, cand_table: Tensor, cand_sq: Tensor, *, dense: bool | None = None) -> Tensor:
    """Token ids of the vocabulary embeddings nearest to ``x`` ``[B, N, d]``.

    Candidates are ``cand_ids`` plus each position's own original token, which wins ties (so an unchanged
    position always maps back to its original word, even an ``<unk>`` outside the candidate set).
    Positions that are not ``editable`` keep their original id.

    ``dense`` (default: on a GPU) searches every position and keeps the result only where a position moved:
    no host synchronisation. Otherwise only the moved positions are searched (after the group-lasso prox most
    positions are exactly unperturbed, the CPU's saving), which needs their count on the host. Both give the
    same ids.
    """
    moved = editable & (x != original_embeds).any(-1)
    if dense is None:
        dense = x.is_cuda
    if dense:
        flat, orig = x.reshape(-1, x.shape[-1]), original_embeds.reshape(-1, x.shape[-1])
        d_nn, i_nn = nearest_rows(flat, cand_table, cand_sq)
        d_orig = ((flat - orig) ** 2).sum(1)
        keep = (d_orig <= d_nn + 1e-6 * (1.0 + d_nn)).view(moved.shape)
        nearest = cand_ids[i_nn].view(moved.shape)
        return torch.where(moved & ~keep, nearest, original_ids)
    out = original_ids.clone()
    if not bool(moved.any()):
        return out
    xe = x[moved]
    d_nn, i_nn = nearest_rows(xe, cand_table, cand_sq)
    d_orig = ((xe - original_embeds[moved]) ** 2).sum(1)
    keep = d_orig <= d_nn + 1e-6 * (1.0 + d_nn)
    out[moved] = torch.where(keep, original_ids[moved], cand_ids[i_nn])
    return out


def group_lasso_prox(delta: Tensor, threshold: float | Tensor) -> Tensor:
    """Proximal operator of ``threshold * sum_i ||delta_i||_2`` (group soft-thresholding over the last dim)."""
    norms = delta.norm(dim=-1, keepdim=True)
    scale = (1.0 - threshold / norms.clamp(min=1e-12)).clamp(min=0.0)
    return delta * scale
