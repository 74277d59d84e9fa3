"""Sentence embeddings: one vector per text, pooled from any layer with the model's own pooling and length."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bertkit.checkpoint import require_finite
from bertkit.config import reading_length
from bertkit.errors import BertkitError
from bertkit.inference.base import Predictor, check_texts
from bertkit.inference.reading import POOLINGS
from bertkit.tokenizer import Tokenizer


@torch.inference_mode()
def embed_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], *, pooling: str = "mean",
                layer: int | None = None, max_length: int | None = None, batch_size: int = 64, normalize: bool = True,
                progress: bool = True) -> torch.Tensor:
    """(N, C) vectors: the mean over real tokens ("mean", as sentence-transformers does) or the [CLS] vector
    ("cls") of the last layer, or of `layer` (0 the embeddings, 1..L the blocks, negative from the end). Texts
    are run in length-sorted batches so little time goes to padding; rows come back in input order."""
    if pooling not in POOLINGS:
        raise BertkitError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    bert = model.bert if hasattr(model, "bert") else model
    L = bert.config.num_layers
    if layer is not None and not -(L + 1) <= layer <= L:
        raise BertkitError(f"layer {layer} does not exist: the model has layers 0 (embeddings) to {L}")
    max_length = reading_length(bert.config, max_length)
    bert.eval()
    device = next(bert.parameters()).device
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out = torch.empty(len(texts), bert.config.hidden_size)
    with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer.encode_batch([texts[i] for i in idx], max_length=max_length)
            batch = {k: v.to(device) for k, v in batch.items()}
            enc = bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                       output_hidden_states=layer is not None)
            hidden = enc.hidden if layer is None else enc.hidden_states[layer]  # (B, T, C)
            if pooling == "mean":
                m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (B, C)
            else:
                vec = hidden[:, 0]  # (B, C)
            require_finite(model, vec)
            out[idx] = vec.float().cpu()
            bar.update(len(idx))
    return F.normalize(out, dim=-1) if normalize else out


class Embedder(Predictor):
    """Any BERT model as a sentence encoder (a classifier's encoder too), reading as the model was saved to
    (sentence-transformers' max_seq_length, pooling and normalisation for such a folder).

        Embedder.load("data/minilm-l6").encode(["a witty film", "a dull film"])  # (2, 384), unit length
    """

    what = "model"

    def encode(self, texts: Sequence[str], batch_size: int = 64, layer: int | None = None,
               progress: bool = False) -> np.ndarray:
        """(N, C) float32 vectors, in input order."""
        r = self.reading
        return embed_texts(self.model, self.tokenizer, check_texts(texts), pooling=r.pooling, layer=layer,
                           max_length=r.max_length, batch_size=batch_size, normalize=r.normalize,
                           progress=progress).numpy()

    __call__ = encode
