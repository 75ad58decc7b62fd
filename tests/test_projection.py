import torch

from nlprobust.attacks.projection import group_lasso_prox, nearest_rows, project_to_vocab


def test_nearest_rows_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(1000, 16, generator=g)
    x = torch.randn(50, 16, generator=g)
    d, i = nearest_rows(x, table, chunk=97)  # chunk boundary not a divisor of the table size
    brute = torch.cdist(x, table)
    assert torch.equal(i, brute.argmin(1))
    assert torch.allclose(d, brute.min(1).values ** 2, atol=1e-4)


def test_project_keeps_original_on_ties_and_non_editable() -> None:
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    cand_ids = torch.tensor([1, 2])  # 0 and 3 are specials / <unk>
    cand = table[cand_ids]
    orig = torch.tensor([[3, 1, 0]])
    x0 = table[orig]
    editable = torch.tensor([[True, True, False]])
    # no perturbation: every position maps to its original id, even <unk> (3) outside the candidates
    assert torch.equal(project_to_vocab(x0, orig, x0, editable, cand_ids, cand, (cand**2).sum(1)), orig)
    x = x0.clone()
    x[0, 0] = torch.tensor([0.1, 0.9])  # near word 2
    x[0, 1] = torch.tensor([0.2, 0.95])  # near word 2
    x[0, 2] = torch.tensor([1.0, 0.0])  # non-editable stays 0
    out = project_to_vocab(x, orig, x0, editable, cand_ids, cand, (cand**2).sum(1))
    assert out.tolist() == [[2, 2, 0]]


def test_group_lasso_prox() -> None:
    d = torch.tensor([[[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]])
    out = group_lasso_prox(d, 1.0)
    assert torch.allclose(out[0, 0], torch.tensor([3.0, 4.0]) * (1 - 1 / 5))
    assert torch.equal(out[0, 1], torch.zeros(2))  # norm 0.5 < threshold -> zeroed
    assert torch.equal(out[0, 2], torch.zeros(2))


def test_dense_projection_equals_the_masked_one() -> None:
    """The synchronisation-free path (GPU default) gives the masked path's ids, ties and non-editable kept."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 8, generator=g)
    cand_ids = torch.arange(3, 50)
    cand = table[cand_ids]
    orig = torch.randint(0, 50, (4, 7), generator=g)
    x0 = table[orig]
    editable = torch.rand(4, 7, generator=g) > 0.2
    x = x0 + (torch.rand(4, 7, 1, generator=g) > 0.5) * torch.randn(4, 7, 8, generator=g)
    sq = (cand**2).sum(1)
    masked = project_to_vocab(x, orig, x0, editable, cand_ids, cand, sq, dense=False)
    dense = project_to_vocab(x, orig, x0, editable, cand_ids, cand, sq, dense=True)
    assert torch.equal(masked, dense) and not torch.equal(masked, orig)
    assert torch.equal(project_to_vocab(x0, orig, x0, editable, cand_ids, cand, sq, dense=True), orig)
