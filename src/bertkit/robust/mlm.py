"""What robustness and bias tests ask of a masked language model: the words it would put in place of one
(BAE's candidates) and the log-probability of a token hidden from it (pseudo-log-likelihood, CrowS-Pairs style).

Shapes: N masked inputs, V vocab.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bertkit import checkpoint
from bertkit.encoding.collate import collate_inputs, sorted_batches
from bertkit.encoding.inputs import Encoded, words_of
from bertkit.inference import FillMask


def load_masked_lm(folder: str | Path, need: str) -> FillMask:
    """The masked language model in `folder` as a FillMask (checkpoint.load_masked_lm says which folders count),
    or a one-line error saying what `need`s one."""
    return FillMask.from_loaded(checkpoint.load_masked_lm(folder, need), folder)


def same_vocabulary(a, b) -> bool:
    return a.vocab() == b.vocab()


@torch.no_grad()
def masked_log_probs(mlm: FillMask, items: list[tuple[list[int], int]], batch_size: int = 64) -> torch.Tensor:
    """(N, V) log-probabilities at one masked position per input: items are (ids with [MASK] at position,
    position). Inputs are batched by length; the decoder runs on the masked positions only."""
    model, pad = mlm.model, mlm.tokenizer.pad_id
    device = next(model.parameters()).device
    out = torch.empty(len(items), model.config.vocab_size)
    for idx in sorted_batches([len(ids) for ids, _ in items], batch_size):
        batch = collate_inputs([Encoded(items[i][0], [0] * len(items[i][0])) for i in idx], pad)
        selected = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        for row, i in enumerate(idx):
            selected[row, items[i][1]] = True
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       batch["token_type_ids"].to(device), mlm_mask=selected.to(device))
        if isinstance(logits, tuple):  # pre-training heads: (mlm, nsp)
            logits = logits[0]
        out[idx] = logits.float().log_softmax(-1).cpu()  # rows in the order of `selected`, i.e. of idx
    return out


def fill_candidates(mlm: FillMask, spans: list[tuple[str, int, int]], k: int, batch_size: int = 64
                    ) -> list[list[str]]:
    """For each (text, start, end): the k tokens the model likes best in place of the word text[start:end]
    (all its sub-tokens replaced by one [MASK], as BAE-R does), best first; [] when the word lies beyond the
    model's max_length."""
    tok = mlm.tokenizer
    encodings = tok.encode_all([t for t, _, _ in spans], max_length=mlm.reading.max_length)
    items, where = [], []
    for n, (e, (text, start, end)) in enumerate(zip(encodings, spans)):
        inside = [p for w in words_of(e, text) if w.start < end and w.end > start for p in w.tokens]
        if not inside:
            continue
        ids = e.ids[:inside[0]] + [tok.mask_id] + e.ids[inside[-1] + 1:]
        items.append((ids, inside[0]))
        where.append(n)
    out: list[list[str]] = [[] for _ in spans]
    if items:
        top = masked_log_probs(mlm, items, batch_size).topk(min(k, mlm.model.config.vocab_size)).indices
        for n, row in zip(where, top.tolist()):
            out[n] = [tok.id_to_token(i) for i in row]
    return out
