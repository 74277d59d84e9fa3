"""Encoded inputs, padded batches and the batched forward pass that every inference path shares.

Items are run in length-sorted batches, so a batch holds inputs of similar length and little time goes to
padding (and the unpadded model skips what padding there is); outputs come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bertkit.checkpoint import require_finite
from bertkit.errors import BertkitError
from bertkit.hardware import adjust
from bertkit.tokenizer import Tokenizer


@dataclass
class Encoded:
    """One input as the model reads it: ids and segment ids with [CLS]/[SEP]. target (training, evaluation) is a
    class id, a 0/1 vector, a float, per-token tag ids or a (start, end) pair; None at inference."""

    ids: list[int]
    type_ids: list[int]
    target: object = None
    word_ids: list[int | None] | None = None
    doc: int = -1  # the text a window belongs to (long texts read as windows)
    unread_words: int | None = None  # cut at max_length: words not read at all (None: read whole; windows: None)


def encode_texts(tokenizer: Tokenizer, texts: list[str], pairs: list[str] | None, max_length: int,
                 window_stride: int = 0) -> list[Encoded]:
    """Texts (or pairs) as items tagged with their text's index; with window_stride, a single text longer than
    max_length becomes every window over it (pairs are truncated)."""
    if window_stride and pairs is None:
        return [Encoded(w.ids, w.type_ids, doc=d) for d, t in enumerate(texts)
                for w in tokenizer.encode_windows(t, max_length=max_length, stride=window_stride)]
    return [Encoded(e.ids, e.type_ids, doc=d, unread_words=e.unread_words if e.truncated else None)
            for d, e in enumerate(tokenizer.encode_all(texts, pairs, max_length=max_length))]


def truncation_note(counts: list[tuple[int, int, str]], max_length: int, windows: bool = True) -> str | None:
    """The note a verb prints when inputs were cut at max_length (None when none was): truncation is never silent.
    counts: (cut, total, what) per set, e.g. (145, 148, "train examples"). It names the ways to read more: windows
    (single texts of a classifier: windows=True) or a longer limit."""
    parts = [f"{cut:,} of {total:,} {what}" for cut, total, what in counts if cut]
    if not parts:
        return None
    fix = "read them as windows with --window-stride, or raise --max-length" if windows else "raise --max-length"
    return (f"{', '.join(parts)} {'are' if len(parts) > 1 or counts[0][0] > 1 else 'is'} longer than max_length "
            f"{max_length} tokens and {'were' if len(parts) > 1 or counts[0][0] > 1 else 'was'} cut: the model did "
            f"not read the end ({fix})")


def collate_inputs(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids, attention_mask (B, T), T padded to a multiple of 8 (friendlier matmul shapes)."""
    T = -(-max(len(x.ids) for x in items) // 8) * 8
    B = len(items)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x.ids)
        ids[i, :n] = torch.tensor(x.ids)
        types[i, :n] = torch.tensor(x.type_ids)
        mask[i, :n] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


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
    order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
    out: list = [None] * len(items)
    device = next(model.parameters()).device
    per_token = model.task in ("token_classification", "masked_lm")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
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
