"""The batched forward pass that every inference path shares, and windows pooled back into texts.

Items (bertkit.encoding.inputs.Encoded) are run in length-sorted batches (bertkit.encoding.collate.sorted_batches);
outputs come back in input order.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.checkpoint import require_finite
from bertkit.encoding.collate import collate_inputs, sorted_batches
from bertkit.encoding.inputs import Encoded
from bertkit.errors import BertkitError
from bertkit.hardware import adjust


def check_segments(model: nn.Module, items: list[Encoded]) -> None:
    """Refuse pairs (a second text, a question with its context) for a model of one token type: with
    type_vocab_size 1 its token-type table has no row for the second segment (transformers fails there with an
    IndexError). Costs nothing for the usual two-type models; a wrapper without a config (attack's, around a
    classifier its other calls check) is passed over."""
    config = getattr(model, "config", None)
    if config is not None and config.type_vocab_size < 2 and any(any(x.type_ids) for x in items):
        raise BertkitError(f"{getattr(model, 'source', 'the model')}: type_vocab_size is 1 in its config.json, so it "
                           "reads single texts, not pairs (a second text, or a question with its context); give "
                           "single texts, or a model with type_vocab_size 2")


@torch.no_grad()
def forward(model: nn.Module, items: list[Encoded], pad_id: int, batch_size: int = 64) -> list:
    """The model's outputs per item, in input order: a logit vector (sequence classification), per-token logits
    (T_i, L) (token classification, masked LM) or (start, end) logits (question answering), as fp32 on the CPU."""
    if batch_size < 1:
        raise BertkitError(f"batch_size must be a positive integer, got {batch_size}")
    check_segments(model, items)
    model.eval()
    out: list = [None] * len(items)
    device = next(model.parameters()).device
    per_token = model.task in ("token_classification", "masked_lm")
    for idx in sorted_batches([len(x.ids) for x in items], batch_size):
        batch = collate_inputs([items[i] for i in idx], pad_id)
        adjust()  # threads follow the CPUs other processes leave free
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       batch["token_type_ids"].to(device))
        if model.task == "question_answering":
            start_logits, end_logits = (x.float().cpu() for x in logits)
            require_finite(model, start_logits, end_logits)
            for j, i in enumerate(idx):
                n = len(items[i].ids)
                out[i] = (start_logits[j, :n], end_logits[j, :n])
            continue
        logits = logits.float().cpu()
        require_finite(model, logits)
        for j, i in enumerate(idx):
            out[i] = logits[j, :len(items[i].ids)] if per_token else logits[j]
    return out


def pool_windows(items: list[Encoded], logits: list[torch.Tensor], how: str = "mean"):
    """Windows -> texts: one item and one logit vector per text (the mean or max over its windows)."""
    if how not in ("mean", "max"):
        raise BertkitError(f"window pooling must be mean or max, got {how!r}")
    groups: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.doc, []).append(i)
    docs, pooled = [], []
    for d in sorted(groups):
        stack = torch.stack([logits[i] for i in groups[d]])
        pooled.append(stack.mean(0) if how == "mean" else stack.max(0).values)
        docs.append(items[groups[d][0]])
    return docs, pooled
