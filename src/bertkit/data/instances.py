"""Pre-training instances from a prepared corpus: NSP sentence pairs or packed blocks, in a resumable order.

NSP pairs follow google-research/bert's `create_pretraining_data.py` (create_instances_from_document):
a target length (max - 3, or with probability short_seq_prob a random length from 2), segment A from
consecutive sentences, B the true continuation or (50%, and always for a one-sentence chunk) sentences
from a random other document, the pair truncated to fit by trimming the longer side from a random end.
The one difference: the random document comes from the same shard (shards hold millions of tokens), so
a corpus never has to be in memory at once. Instances are rebuilt every epoch with a new seed, so the
pairs, like the masks, change between epochs.

Packed blocks (no NSP, RoBERTa/MosaicBERT style): documents back to back with [SEP] between them, cut
into blocks of max_len - 2 tokens, each wrapped as [CLS] block [SEP].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bertkit.data.corpus import Corpus, Shard
from bertkit.encoding.collate import pad_inputs
from bertkit.errors import BertkitError


@dataclass
class Instance:
    ids: np.ndarray  # (T,) int64 with [CLS] and [SEP]s
    type_ids: np.ndarray  # (T,) int64, 0 for A, 1 for B
    is_random_next: int  # 1 random B, 0 true B, -1 no NSP


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def nsp_instances(shard: Shard, max_len: int, short_seq_prob: float, rng: np.random.Generator,
                  cls_id: int, sep_id: int) -> list[Instance]:
    """Every NSP instance of one shard, in document order (shuffle afterwards)."""
    max_tokens = max_len - 3  # [CLS] A [SEP] B [SEP]
    docs = [shard.document(d) for d in range(shard.num_documents)]
    out: list[Instance] = []
    for d, document in enumerate(docs):
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = int(rng.integers(2, max_tokens + 1))
        chunk: list[np.ndarray] = []
        length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                a = [int(t) for s in chunk[:a_end] for t in s]
                b: list[int] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random = 1
                    target_b = target - len(a)
                    other = d
                    for _ in range(10):
                        other = int(rng.integers(0, len(docs)))
                        if other != d:
                            break
                    rand_doc = docs[other]
                    for s in rand_doc[int(rng.integers(0, len(rand_doc))):]:
                        b.extend(int(t) for t in s)
                        if len(b) >= target_b:
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    is_random = 0
                    b = [int(t) for s in chunk[a_end:] for t in s]
                _truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    ids = np.array([cls_id, *a, sep_id, *b, sep_id], dtype=np.int64)
                    types = np.zeros(len(ids), dtype=np.int64)
                    types[len(a) + 2:] = 1
                    out.append(Instance(ids, types, is_random))
                chunk, length = [], 0
            i += 1
    return out


def packed_instances(shard: Shard, max_len: int, cls_id: int, sep_id: int) -> list[Instance]:
    """Contiguous blocks of max_len - 2 tokens (documents joined by [SEP]), wrapped in [CLS] ... [SEP]."""
    parts = []
    for d in range(shard.num_documents):
        s0, s1 = shard.sentences[shard.documents[d]], shard.sentences[shard.documents[d + 1]]
        parts.append(np.asarray(shard.tokens[s0:s1], dtype=np.int64))
        parts.append(np.array([sep_id], dtype=np.int64))
    stream = np.concatenate(parts[:-1]) if parts else np.zeros(0, dtype=np.int64)
    block = max_len - 2
    out = []
    for start in range(0, len(stream), block):
        piece = stream[start:start + block]
        if len(piece) < 2 and out:
            break  # a one-token tail teaches nothing
        ids = np.concatenate([[cls_id], piece, [sep_id]]).astype(np.int64)
        out.append(Instance(ids, np.zeros(len(ids), dtype=np.int64), -1))
    return out


@dataclass(frozen=True)
class Position:
    """Where a stream stands: the next instance to read is number `index` of the `shard`-th shard (in this
    epoch's shard order) of `epoch`."""

    epoch: int = 0
    shard: int = 0
    index: int = 0


class InstanceStream:
    """Instances of one split, epoch after epoch, in a seeded order that can be resumed from a Position."""

    def __init__(self, corpus: Corpus, split: str, max_len: int, *, nsp: bool = True, short_seq_prob: float = 0.1,
                 seed: int = 0, shuffle: bool = True):
        if max_len < 8:
            raise BertkitError(f"max_len must be at least 8, got {max_len}")
        self.shards = corpus.shards(split)
        self.max_len, self.nsp, self.short_seq_prob = max_len, nsp, short_seq_prob
        self.seed, self.shuffle = seed, shuffle
        tok = corpus.tokenizer
        self.cls_id, self.sep_id = tok.cls_id, tok.sep_id

    def _shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch, 1 << 20]).shuffle(order)
        return order

    def shard_instances(self, epoch: int, shard_index: int) -> list[Instance]:
        """All instances of one shard for one epoch, deterministic in (seed, epoch, shard)."""
        rng = np.random.default_rng([self.seed, epoch, shard_index])
        shard = self.shards[shard_index]
        if self.nsp:
            items = nsp_instances(shard, self.max_len, self.short_seq_prob, rng, self.cls_id, self.sep_id)
        else:
            items = packed_instances(shard, self.max_len, self.cls_id, self.sep_id)
        if self.shuffle:
            perm = rng.permutation(len(items))
            items = [items[i] for i in perm]
        return items

    def __call__(self, start: Position = Position()) -> Iterator[tuple[Instance, Position]]:
        """Yield (instance, position of the instance after it) forever, starting at `start`."""
        epoch, shard_pos, index = start.epoch, start.shard, start.index
        while True:
            order = self._shard_order(epoch)
            produced = 0
            while shard_pos < len(order):
                items = self.shard_instances(epoch, order[shard_pos])
                produced += len(items)
                while index < len(items):
                    index += 1
                    yield items[index - 1], Position(epoch, shard_pos, index)
                shard_pos, index = shard_pos + 1, 0
            if produced == 0:
                raise BertkitError("the corpus yields no training instances (is every document empty?)")
            epoch, shard_pos = epoch + 1, 0

    def first(self, n: int) -> list[Instance]:
        """The first n instances of epoch 0 (the held-out evaluation set)."""
        out = []
        for inst, pos in self():
            if pos.epoch > 0 or len(out) >= n:
                break
            out.append(inst)
        return out


def collate(instances: list[Instance], pad_id: int) -> dict[str, np.ndarray]:
    """pad_inputs (the longest instance, rounded up to a multiple of 8) plus next_sentence_label (B,)."""
    nsp = np.array([x.is_random_next for x in instances], dtype=np.int64)
    return pad_inputs(instances, pad_id) | {"next_sentence_label": nsp}
