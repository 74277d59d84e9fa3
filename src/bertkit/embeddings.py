"""Sentence embeddings from any encoder, and nearest-neighbour search over them.

Shapes: N texts, B batch, T tokens, C hidden.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bertkit.tokenizer import Tokenizer

POOLING = ("mean", "cls")


@torch.inference_mode()
def embed_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], *, pooling: str = "mean",
                max_length: int = 128, batch_size: int = 64, normalize: bool = True,
                progress: bool = True) -> torch.Tensor:
    """(N, C) vectors: the mean of the last layer over real tokens ("mean", as sentence-transformers
    does) or the [CLS] vector ("cls"). Texts are run in length-sorted batches so little time goes to padding;
    rows come back in input order."""
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {POOLING}")
    bert = model.bert if hasattr(model, "bert") else model
    bert.eval()
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out = torch.empty(len(texts), bert.config.hidden_size)
    with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer.encode_batch([texts[i] for i in idx], max_length=max_length)
            hidden = bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).hidden  # (B, T, C)
            if pooling == "mean":
                m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (B, C)
            else:
                vec = hidden[:, 0]  # (B, C)
            out[idx] = vec.float()
            bar.update(len(idx))
    return F.normalize(out, dim=-1) if normalize else out


def knn_classify(train_vecs: torch.Tensor, train_labels: Sequence[str], query_vecs: torch.Tensor,
                 k: int = 10, batch_size: int = 1024) -> list[str]:
    """Majority label of the k most cosine-similar training vectors (rows assumed L2-normalised);
    ties go to the label whose neighbours are more similar in sum."""
    preds = []
    for start in range(0, len(query_vecs), batch_size):
        sims = query_vecs[start:start + batch_size] @ train_vecs.T  # (b, N)
        top = sims.topk(min(k, sims.shape[1]), dim=1)
        for vals, ids in zip(top.values.tolist(), top.indices.tolist()):
            votes: Counter = Counter()
            weight: Counter = Counter()
            for v, i in zip(vals, ids):
                votes[train_labels[i]] += 1
                weight[train_labels[i]] += v
            preds.append(max(votes, key=lambda lab: (votes[lab], weight[lab])))
    return preds
