"""The encoding layer's batches: one padding routine for inference, fine-tuning and pre-training (exact values and
dtypes), and the length-sorted batch order. Words of an encoding: test_interpret; BIO: test_metrics."""

import numpy as np
import torch

from bertkit.data.instances import Instance, collate
from bertkit.encoding.collate import collate_inputs, pad_inputs, sorted_batches
from bertkit.encoding.inputs import Encoded


def test_one_padding_for_inference_fine_tuning_and_pre_training_batches():
    items = [Encoded([2, 5, 3], [0, 0, 0]), Encoded([2, 5, 6, 7, 3, 8, 9, 3, 3], [0, 0, 0, 0, 0, 1, 1, 1, 1])]
    want_ids = np.full((2, 16), 1)  # 9 tokens padded to 16, a multiple of 8
    want_ids[0, :3], want_ids[1, :9] = items[0].ids, items[1].ids
    want_types, want_mask = np.zeros((2, 16)), np.zeros((2, 16))
    want_types[1, 5:9] = 1
    want_mask[0, :3], want_mask[1, :9] = 1, 1

    batch = collate_inputs(items, pad_id=1)
    assert {k: v.dtype for k, v in batch.items()} == dict.fromkeys(("input_ids", "token_type_ids", "attention_mask"),
                                                                   torch.long)
    for key, want in (("input_ids", want_ids), ("token_type_ids", want_types), ("attention_mask", want_mask)):
        np.testing.assert_array_equal(batch[key].numpy(), want)

    instances = [Instance(np.array(x.ids), np.array(x.type_ids), is_random_next=r) for x, r in zip(items, (1, 0))]
    arrays = collate(instances, pad_id=1)
    assert isinstance(arrays["input_ids"], np.ndarray) and {v.dtype for v in arrays.values()} == {np.dtype(np.int64)}
    for key in batch:
        np.testing.assert_array_equal(arrays[key], batch[key].numpy())
    np.testing.assert_array_equal(arrays["next_sentence_label"], [1, 0])
    assert pad_inputs(items[:1], 0)["input_ids"].shape == (1, 8)  # 3 tokens: one multiple of 8


def test_sorted_batches_run_shortest_first_and_keep_ties_in_input_order():
    assert sorted_batches([5, 1, 3, 1, 4], 2) == [[1, 3], [2, 4], [0]]
    assert sorted_batches([], 4) == []

