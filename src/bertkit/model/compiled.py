"""torch.compile for inference on a bounded set of shapes.

torch.compile specialises a graph to the shapes it sees; unpadded execution (a new token count every batch) and
free batch lengths would recompile without end. `ShapeStable` instead pads every batch to `batch_size` rows
and to a multiple of `bucket` tokens, runs the compiled model in the padded layout (unpadding off) and cuts the
outputs back, so at most batch_size-independent max_length / bucket graphs are ever compiled, once each.
Inductor keeps compiled graphs in its on-disk cache (/tmp/torchinductor_<user> by default), so a second
process with the same model and shapes compiles in a fraction of the first one's time.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bertkit.model.bert import choose_execution


class ShapeStable(nn.Module):
    """Wraps an eval-mode bertkit model: same call, same outputs (to float rounding), compiled shapes only."""

    def __init__(self, model: nn.Module, batch_size: int = 32, bucket: int = 32, copy_model: bool = True):
        """copy_model=False: `model` is a private copy already (for_inference's bf16 one): its config is changed."""
        super().__init__()
        if copy_model:
            model = copy.deepcopy(model)  # the caller's model keeps its own (unpadded) settings
        model.eval()
        choose_execution(model, unpad=False, traced=True)
        self.model = model
        for name in ("task", "problem_type", "num_labels", "source"):  # what callers read off a bertkit model
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))
        self.batch_size = batch_size
        self.bucket = bucket
        self.max_length = model.config.max_position_embeddings
        self.pad_id = model.config.pad_token_id
        self.compiled = torch.compile(model, dynamic=False)

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """input_ids, attention_mask, token_type_ids (B, T) -> what the model returns for them."""
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if B > self.batch_size:  # in chunks of batch_size rows
            parts = [self(input_ids[i:i + self.batch_size], attention_mask[i:i + self.batch_size],
                          token_type_ids[i:i + self.batch_size]) for i in range(0, B, self.batch_size)]
            return _join(parts)
        Tp = min(-(-T // self.bucket) * self.bucket, max(self.max_length, T))
        rows, cols = self.batch_size - B, Tp - T
        ids = nn.functional.pad(input_ids, (0, cols), value=self.pad_id)
        mask = nn.functional.pad(attention_mask, (0, cols))
        types = nn.functional.pad(token_type_ids, (0, cols))
        if rows:  # filler rows: one visible [PAD] token, so position 0 stays real in every row
            ids = torch.cat([ids, ids.new_full((rows, Tp), self.pad_id)])
            filler = mask.new_zeros((rows, Tp))
            filler[:, 0] = 1
            mask = torch.cat([mask, filler])
            types = torch.cat([types, types.new_zeros((rows, Tp))])
        return _cut(self.compiled(ids, mask, types), B, T, getattr(self, "task", None) == "question_answering")


def _cut(out, B: int, T: int, per_token_2d: bool):
    """Outputs of the padded batch -> those of the (B, T) one: rows beyond B go, and positions beyond T from
    per-token outputs, known by rank ((B, T, C) hidden states and logits; (B, T) only for QA's start/end; never
    (B, C) pooled vectors or (B, L) class logits, whatever their width)."""
    if isinstance(out, torch.Tensor):
        out = out[:B]
        if out.dim() == 3 or out.dim() == 2 and per_token_2d:
            return out[:, :T]
        return out[:, :, :T, :T] if out.dim() == 4 else out  # (B, H, T, T) attention maps
    if out is None:
        return None
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # NamedTuple (EncoderOutput)
        return type(out)(*(_cut(x, B, T, per_token_2d) for x in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_cut(x, B, T, per_token_2d) for x in out)
    return out


def _join(parts: list):
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if first is None:
        return None
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(_join(list(xs)) for xs in zip(*parts)))
    return type(first)(_join(list(xs)) for xs in zip(*parts))
