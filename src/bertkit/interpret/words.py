"""Words of an encoded text, and sub-token scores summed into word scores.

A word is what the tokenizer's pre-tokenizer split off (a run of letters or digits, one punctuation mark, one CJK
character); its sub-tokens are the WordPiece tokens with its word id. Explanations are shown and perturbed per
word, because a user reads words, and masking half of "un ##believ ##able" is not a sentence anyone wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bertkit.tokenizer import Encoding


@dataclass(frozen=True)
class Word:
    sequence: int
    """0 for the text, 1 for the pair."""
    start: int
    """Character span in its own text, end exclusive."""
    end: int
    text: str
    tokens: tuple[int, ...]
    """Positions of its sub-tokens in the encoding."""


def words_of(encoding: Encoding, text: str, pair: str | None = None) -> list[Word]:
    """The words of an encoding, in order (the text's, then the pair's). Special tokens belong to no word."""
    spans: dict[tuple[int, int], list] = {}  # (sequence, word id) -> [start, end, positions]
    for pos, (w, seq, (s, e)) in enumerate(zip(encoding.word_ids, encoding.sequence_ids, encoding.offsets)):
        if w is None or seq is None:
            continue
        span = spans.setdefault((seq, w), [s, e, []])
        span[0], span[1] = min(span[0], s), max(span[1], e)
        span[2].append(pos)
    sources = (text, pair or "")
    return [Word(seq, s, e, sources[seq][s:e], tuple(positions))
            for (seq, _), (s, e, positions) in sorted(spans.items())]


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
