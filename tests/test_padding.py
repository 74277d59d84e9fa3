"""unpad / pad: exact values on a hand-made batch."""

import torch

from bertkit.model.padding import first_rows, pad, packing, unpad


def test_packing_exact_values():
    mask = torch.tensor([[1, 1, 1, 0],
                         [1, 0, 0, 0],
                         [1, 1, 1, 1]])
    p = packing(mask)
    assert p.keep.tolist() == [0, 1, 2, 4, 8, 9, 10, 11]
    assert p.cu_seqlens.tolist() == [0, 3, 4, 8]
    assert p.lengths == [3, 1, 4] and p.shape == (3, 4)
    assert first_rows(p).tolist() == [0, 3, 4]


def test_unpad_then_pad_round_trips_with_zeros_at_padding():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    x = torch.arange(3 * 3 * 2, dtype=torch.float32).view(3, 3, 2)  # (B, T, C)
    p = packing(mask)
    packed = unpad(x, p)
    assert packed.tolist() == [[0, 1], [2, 3], [6, 7], [8, 9], [10, 11], [12, 13]]
    back = pad(packed, p)
    assert torch.equal(back, x * mask.unsqueeze(-1))
    # one token, one sequence, a full row
    p1 = packing(torch.ones(1, 1, dtype=torch.long))
    assert p1.cu_seqlens.tolist() == [0, 1] and torch.equal(pad(unpad(x[:1, :1], p1), p1), x[:1, :1])
