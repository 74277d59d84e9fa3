"""Remove padding once, after the embeddings, and put it back at the end.

Shapes: B batch, T padded length, C hidden, N real tokens (the ones of the attention mask), H heads, D head dim.

Every layer of BERT but attention works token by token, so it can run on the N real tokens packed into one
(N, C) matrix instead of the (B, T, C) padded batch: on real batches of mixed lengths a third or more of the
padded tokens are padding. Attention needs to know where each sequence starts: `cu_seqlens` (B + 1,) holds
the offsets of the sequences in the packed rows, as variable-length attention kernels take them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Packing(NamedTuple):
    keep: torch.Tensor  # (N,) flat indices of the real tokens in (B * T), ascending
    cu_seqlens: torch.Tensor  # (B + 1,) int64: sequence b is packed rows cu_seqlens[b]:cu_seqlens[b + 1]
    lengths: list[int]  # B real lengths, on the host (attention loops over them)
    starts: list[int] | None  # B first packed rows, on the host; None unless every row is right-padded
    shape: tuple[int, int]  # (B, T)


def packing(attention_mask: torch.Tensor) -> Packing:
    """attention_mask (B, T), 1 for real tokens. Sequences are contiguous packed rows when each row's real tokens
    come first (right padding, as tokenizers pad); other masks still unpad, attention then runs padded."""
    B, T = attention_mask.shape
    lengths = attention_mask.sum(dim=1)  # (B,)
    cu_seqlens = torch.zeros(B + 1, dtype=torch.long, device=attention_mask.device)
    cu_seqlens[1:] = lengths.cumsum(0)
    keep = attention_mask.flatten().nonzero().squeeze(1)  # (N,)
    right_padded = not bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any())
    starts = cu_seqlens[:-1].tolist() if right_padded else None
    return Packing(keep, cu_seqlens, lengths.tolist(), starts, (B, T))


def unpad(x: torch.Tensor, p: Packing) -> torch.Tensor:
    """x (B, T, ...) -> (N, ...), the real tokens in order."""
    B, T = p.shape
    return x.reshape(B * T, *x.shape[2:]).index_select(0, p.keep)


def pad(x: torch.Tensor, p: Packing) -> torch.Tensor:
    """x (N, ...) -> (B, T, ...), zeros at padding."""
    B, T = p.shape
    return x.new_zeros(B * T, *x.shape[1:]).index_copy(0, p.keep, x).view(B, T, *x.shape[1:])


def first_rows(p: Packing) -> torch.Tensor:
    """(B,) packed row of each sequence's position 0 ([CLS]), which must be a real token."""
    return p.cu_seqlens[:-1]
