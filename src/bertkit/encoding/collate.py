"""Padded batches of encoded inputs, and the length-sorted order to run them in.

One padding routine for every batch the model reads: inference and fine-tuning items (Encoded) as torch tensors
(collate_inputs), pre-training instances as the numpy arrays their loader yields (pad_inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PAD_MULTIPLE = 8  # batch length rounded up to a multiple of 8: friendlier matmul shapes


def pad_inputs(items: Sequence, pad_id: int) -> dict[str, np.ndarray]:
    """input_ids, token_type_ids, attention_mask (B, T) int64 from items with .ids and .type_ids (an Encoded, a
    pre-training Instance), T the longest rounded up to a multiple of PAD_MULTIPLE."""
    T = -(-max(len(x.ids) for x in items) // PAD_MULTIPLE) * PAD_MULTIPLE
    B = len(items)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    types = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    for i, x in enumerate(items):
        n = len(x.ids)
        ids[i, :n], types[i, :n], mask[i, :n] = x.ids, x.type_ids, 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def collate_inputs(items: Sequence, pad_id: int) -> dict[str, torch.Tensor]:
    """pad_inputs as torch.long tensors (B, T)."""
    return {k: torch.from_numpy(v) for k, v in pad_inputs(items, pad_id).items()}


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of batch_size, shortest first (ties in input order): a batch holds inputs of similar
    length, so little time goes to padding (and the unpadded model skips what padding there is). A caller puts
    each batch's outputs back at its indices to return them in input order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
