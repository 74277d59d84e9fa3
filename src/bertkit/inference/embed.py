"""Sentence embeddings: one vector per text, pooled from any layer with the model's own pooling and length (and a
sentence-transformers folder's Dense layers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bertkit.checkpoint import require_finite
from bertkit.config import reading_length
from bertkit.encoding.collate import sorted_batches
from bertkit.errors import BertkitError
from bertkit.hardware import adjust
from bertkit.inference.base import Predictor, check_texts
from bertkit.inference.reading import pooling_modes
from bertkit.tokenizer import Tokenizer


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """hidden (B, T, C), mask (B, T) 1 on real tokens (padding on the right) -> (B, k*C) for k modes, as
    sentence-transformers' Pooling computes them: cls (first token), max and mean over real tokens, mean_sqrt_len
    (the sum over sqrt(length)), weightedmean (token i weighted i+1), lasttoken (the last real token)."""
    hidden = hidden.float()  # pooled in fp32, as sentence-transformers accumulates half precision
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    out = []
    for mode in pooling_modes(pooling):
        if mode == "cls":
            out.append(hidden[:, 0])  # (B, C)
        elif mode == "max":
            out.append(hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            n = m.sum(1).clamp(min=1e-9)  # (B, 1)
            out.append((hidden * m).sum(1) / (n if mode == "mean" else n.sqrt()))
        elif mode == "weightedmean":
            w = m * torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
            out.append((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9))
        else:  # lasttoken
            last = (mask.sum(1) - 1).clamp(min=0)  # (B,)
            out.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
    return torch.cat(out, dim=-1)


@torch.inference_mode()
def embed_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], *, pooling: str = "mean",
                layer: int | None = None, max_length: int | None = None, batch_size: int = 64, normalize: bool = True,
                progress: bool = True, head: nn.Module | None = None) -> torch.Tensor:
    """(N, D) vectors: the last layer's token vectors (or `layer`'s: 0 the embeddings, 1..L the blocks, negative
    from the end) pooled (see pool), then through `head` (a sentence-transformers folder's Dense layers) if given,
    then scaled to unit length if normalize. Texts are run in length-sorted batches so little time goes to
    padding; rows come back in input order."""
    pooling_modes(pooling)
    bert = model.bert if hasattr(model, "bert") else model
    L = bert.config.num_layers
    if layer is not None and not -(L + 1) <= layer <= L:
        raise BertkitError(f"layer {layer} does not exist: the model has layers 0 (embeddings) to {L}")
    max_length = reading_length(bert.config, max_length)
    bert.eval()
    device = next(bert.parameters()).device
    if head is not None:
        head = head.to(device).eval()
    out = None
    with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar:
        for idx in sorted_batches([len(t) for t in texts], batch_size):  # characters: texts are not encoded yet
            batch = tokenizer.encode_batch([texts[i] for i in idx], max_length=max_length)
            batch = {k: v.to(device) for k, v in batch.items()}
            adjust()  # threads follow the CPUs other processes leave free
            enc = bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                       output_hidden_states=layer is not None)
            hidden = enc.hidden if layer is None else enc.hidden_states[layer]  # (B, T, C)
            vec = pool(hidden, batch["attention_mask"], pooling)  # (B, k*C)
            if head is not None:
                takes = head[0].linear.in_features
                if vec.shape[1] != takes:
                    raise BertkitError(f"pooling {pooling!r} gives {vec.shape[1]}-wide vectors but the model's "
                                       f"Dense module takes {takes}; read with the folder's own pooling")
                vec = head(vec)  # (B, D)
            require_finite(model, vec)
            if out is None:
                out = torch.empty(len(texts), vec.shape[1])
            out[idx] = vec.float().cpu()
            bar.update(len(idx))
    if out is None:
        out = torch.empty(0, bert.config.hidden_size)
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
                           progress=progress, head=self.modules.head if self.modules else None).numpy()

    __call__ = encode
