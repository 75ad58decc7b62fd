import torch

from nlprobust.attacks.losses import keywords_loss, nonoverlap_loss


def test_nonoverlap_hand_computed() -> None:
    # one sentence, 2 positions, vocab 3; original output s = [0, 2]
    z = torch.tensor([[[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]])
    s = torch.tensor([[0, 2]])
    valid = torch.tensor([[True, True]])
    # t1: z[s]=3, max other=2 -> 1 ; t2: z[s]=4, max other=5 -> -1 clamped at -eps
    assert torch.allclose(nonoverlap_loss(z, s, valid, epsilon=0.0), torch.tensor([1.0 + 0.0]))
    assert torch.allclose(nonoverlap_loss(z, s, valid, epsilon=0.5), torch.tensor([1.0 - 0.5]))
    assert torch.allclose(nonoverlap_loss(z, s, valid, epsilon=2.0), torch.tensor([1.0 - 1.0]))


def test_nonoverlap_ignores_padding_and_ended_positions() -> None:
    z = torch.tensor([[[3.0, 1.0, 2.0], [0.0, 1.0, 4.0], [9.0, 0.0, 0.0]]])
    s = torch.tensor([[0, 2, -1]])
    assert torch.allclose(nonoverlap_loss(z, s, torch.tensor([[True, True, True]])), torch.tensor([1.0 + 3.0]))
    # the adversarial output ended after position 1: position 2 cannot overlap
    assert torch.allclose(nonoverlap_loss(z, s, torch.tensor([[True, False, False]])), torch.tensor([1.0]))


def test_nonoverlap_batch_rows_independent() -> None:
    z = torch.randn(3, 4, 7)
    s = torch.randint(0, 7, (3, 4))
    v = torch.ones(3, 4, dtype=torch.bool)
    full = nonoverlap_loss(z, s, v, 0.1)
    for i in range(3):
        assert torch.allclose(full[i], nonoverlap_loss(z[i : i + 1], s[i : i + 1], v[i : i + 1], 0.1)[0])


def test_keywords_single_hand_computed() -> None:
    z = torch.tensor([[[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]])
    kw = torch.tensor([[2]])
    valid = torch.tensor([[True, True]])
    # t1: max other = 3, z_k = 2 -> 1 ; t2: max other = 5, z_k = 4 -> 1 ; min = 1
    assert torch.allclose(keywords_loss(z, kw, valid), torch.tensor([1.0]))
    # keyword already top-1 at t2 -> hinge clamped at -eps
    z2 = torch.tensor([[[3.0, 1.0, 2.0], [0.0, 4.0, 6.0]]])
    assert torch.allclose(keywords_loss(z2, kw, valid, epsilon=1.0), torch.tensor([-1.0]))
    assert torch.allclose(keywords_loss(z2, kw, valid, epsilon=3.0), torch.tensor([-2.0]))


def test_keywords_collision_mask() -> None:
    # two keywords 1 and 2; keyword 1 is top-1 at t1, keyword 2 is closest at t1 too
    z = torch.tensor([[[0.0, 5.0, 4.9, 0.0], [3.0, 0.0, 1.0, 0.0]]])
    valid = torch.tensor([[True, True]])
    kw = torch.tensor([[1, 2]])
    # k=1: t1 -> max other 4.9 - 5 = -0.1 (eps 0 -> 0 after clamp), t2 -> 3 - 0 = 3; min 0
    # k=2: t1 is held by keyword 1 -> masked; t2 -> 3 - 1 = 2
    assert torch.allclose(keywords_loss(z, kw, valid), torch.tensor([0.0 + 2.0]))
    # without the mask keyword 2 would have chosen t1 (5 - 4.9 = 0.1)
    only2 = keywords_loss(z, torch.tensor([[2]]), valid)
    assert torch.allclose(only2, torch.tensor([0.1]), atol=1e-6)


def test_keywords_all_positions_masked_gives_zero_and_padding_ignored() -> None:
    z = torch.tensor([[[0.0, 5.0, 1.0]]])
    kw = torch.tensor([[1, 2, -1]])
    # the only position is held by keyword 1 -> keyword 2 has nowhere to go -> contributes 0
    assert torch.allclose(keywords_loss(z, kw, torch.tensor([[True]])), torch.tensor([0.0]))


def test_keywords_gradient_goes_to_argmin_position() -> None:
    z = torch.tensor([[[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]]], requires_grad=True)
    loss = keywords_loss(z, torch.tensor([[2]]), torch.tensor([[True, True]]))
    loss.sum().backward()
    assert z.grad is not None
    assert z.grad[0, 1].abs().sum() == 0  # position 2 (hinge 4) is not the min
    assert z.grad[0, 0, 2] == -1 and z.grad[0, 0, 0] == 1
