"""Labelled examples as model inputs with targets (fine-tuning and evaluation), and their padded batches.

The inputs are encoded exactly as inference encodes them (bertkit.encoding.inputs); this module adds the
targets: a class id, a 0/1 vector or a value per text (its windows share it), tag ids per token, answer spans.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from bertkit.encoding.collate import collate_inputs
from bertkit.encoding.inputs import Encoded, encode_texts
from bertkit.errors import BertkitError
from bertkit.objectives import IGNORE_INDEX
from bertkit.tokenizer import Tokenizer


def encode_classification(tokenizer: Tokenizer, examples, labels: list[str], problem_type: str,
                          max_length: int, window_stride: int = 0) -> list[Encoded]:
    """Each example (or each of its windows) with its target; unlabelled examples get target None."""
    texts = [e.text for e in examples]
    pairs = [e.pair or "" for e in examples] if any(e.pair is not None for e in examples) else None
    items = encode_texts(tokenizer, texts, pairs, max_length, window_stride)
    index = {name: i for i, name in enumerate(labels)}
    for item in items:
        label = examples[item.doc].label
        if label is None:
            item.target = None
        elif problem_type == "single_label":
            item.target = index[label]
        elif problem_type == "multi_label":
            item.target = [1.0 if name in label else 0.0 for name in labels]
        else:
            item.target = float(label)
    return items


def align_tags(word_ids: list[int | None], word_tags: list[int] | None) -> list[int]:
    """Tag ids per token: the word's tag on its first sub-token, IGNORE_INDEX on later sub-tokens and specials."""
    out, previous = [], None
    for w in word_ids:
        if w is None or w == previous or word_tags is None:
            out.append(IGNORE_INDEX)
        else:
            out.append(word_tags[w])
        previous = w
    return out


def encode_tagged(tokenizer: Tokenizer, sentences, tags: list[str], max_length: int) -> list[Encoded]:
    """Tagged sentences (pre-split words) with tag ids per token (see align_tags)."""
    encodings = tokenizer.encode_all([s.tokens for s in sentences], max_length=max_length, pretokenized=True)
    index = {t: i for i, t in enumerate(tags)}
    out = []
    for s, enc in zip(sentences, encodings):
        word_tags = [index[t] for t in s.tags] if s.tags else None
        out.append(Encoded(enc.ids, enc.type_ids, align_tags(enc.word_ids, word_tags), enc.word_ids,
                           unread_words=enc.unread_words if enc.truncated else None))
    return out


def collate(items: list[Encoded], pad_id: int, task: str, problem_type: str) -> dict[str, torch.Tensor]:
    """collate_inputs plus "labels" shaped for the task's loss (see bertkit.objectives). A classification row
    without a target (an augmented text in distillation) among labelled ones gets IGNORE_INDEX targets."""
    batch = collate_inputs(items, pad_id)
    labelled = [x for x in items if x.target is not None]
    if not labelled:
        return batch
    B, T = batch["input_ids"].shape
    if task == "qa":
        labels = torch.tensor([x.target for x in items], dtype=torch.long)  # (B, 2) start, end
    elif task == "ner":
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        for i, x in enumerate(items):
            labels[i, :len(x.target)] = torch.tensor(x.target)
    elif problem_type == "single_label":
        labels = torch.tensor([IGNORE_INDEX if x.target is None else x.target for x in items], dtype=torch.long)
    else:  # (B, L) 0/1 or (B,) values
        none = [IGNORE_INDEX] * len(labelled[0].target) if isinstance(labelled[0].target, list) else IGNORE_INDEX
        labels = torch.tensor([none if x.target is None else x.target for x in items], dtype=torch.float32)
    batch["labels"] = labels
    return batch


def length_grouped_order(lengths: list[int], batch_size: int, rng: np.random.Generator, group: bool) -> list[int]:
    """A random order in which each run of batch_size indices has similar lengths (when group is set)."""
    order = rng.permutation(len(lengths))
    if not group:
        return order.tolist()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk].tolist(), key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [i for b in (batches[j] for j in rng.permutation(len(batches))) for i in b]


def global_batches(lengths: list[int], batch_size: int, accum: int, seed: int, group: bool, state: dict | None,
                   rank: int, world: int) -> Iterator[tuple[list[int], list[list[int]], dict]]:
    """The optimiser steps of a fine-tuning run, endlessly, from `state` (None: the start): for each step, the
    example indices of its global batch, this process's share of each micro-step, and the state after the step
    ({"epoch", "index"}, for checkpoints). Each epoch is a length_grouped_order seeded by (seed, epoch); its last,
    partial batch is dropped."""
    micro_size = batch_size // accum
    if micro_size % world:
        raise BertkitError(f"batch_size / accum = {micro_size} does not split evenly over {world} processes")
    per_rank = micro_size // world
    epoch, index = (state["epoch"], state["index"]) if state else (0, 0)
    while True:
        order = length_grouped_order(lengths, batch_size, np.random.default_rng([seed, epoch]), group)
        while index + batch_size <= len(order):
            rows = order[index:index + batch_size]
            index += batch_size
            micro = [rows[lo:lo + per_rank] for lo in (m * micro_size + rank * per_rank for m in range(accum))]
            yield rows, micro, {"epoch": epoch, "index": index}
        epoch, index = epoch + 1, 0
