"""Sub-token scores summed into word scores, and words hidden from the model.

Words are bertkit.encoding.inputs.words_of's (what the tokenizer's pre-tokenizer split off). Explanations are shown
and perturbed per word, because a user reads words, and masking half of "un ##believ ##able" is not a sentence
anyone wrote.
"""

from __future__ import annotations

import torch

from bertkit.encoding.inputs import Word


def word_scores(token_scores: torch.Tensor | list[float], words: list[Word]) -> list[float]:
    """Per-token scores (T,) -> one score per word: the sum over its sub-tokens (so the words' scores add up to the
    tokens' scores, special tokens excepted, and IG's completeness carries over to words)."""
    scores = torch.as_tensor(token_scores, dtype=torch.float64)
    return [float(scores[list(w.tokens)].sum()) for w in words]


def mask_words(ids: list[int], words: list[Word], masked, mask_id: int) -> list[int]:
    """ids with every sub-token of the words whose index is in `masked` replaced by mask_id: the same length, so
    the model sees the same positions and segments, only those words hidden."""
    out = list(ids)
    for i in masked:
        for pos in words[i].tokens:
            out[pos] = mask_id
    return out
