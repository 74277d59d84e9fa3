"""Word starts for whole-word masking: which tokens begin a word.

A WordPiece piece written "##..." continues the word before it. Chinese has no spaces, so a BERT vocabulary
reads it one character per token and every character would be a word; runs of Chinese characters are cut
into words by jieba instead, as Chinese-BERT-wwm (Cui et al., 2019) cut them with a segmenter before masking.
"""

from __future__ import annotations

import logging

import torch

from bertkit.data.masking import continuation_table
from bertkit.errors import BertkitError


def is_cjk(ch: str) -> bool:
    """A CJK ideograph, as BERT's BasicTokenizer counts them (the blocks it splits into single characters)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class WordStarts:
    """word_starts(ids (B, T)) -> (B, T) bool for `mask_tokens`: False where a token continues the word before it."""

    def __init__(self, vocab: dict[str, int]):
        self.continuation = continuation_table(vocab)  # (V,)
        self.char = {i: t for t, i in vocab.items() if len(t) == 1 and is_cjk(t)}  # id -> Chinese character
        self.cjk = torch.zeros(len(self.continuation), dtype=torch.bool)
        if self.char:
            self.cjk[torch.tensor(sorted(self.char))] = True
        self._segmenter = None

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.clamp(max=len(self.continuation) - 1)
        starts = ~self.continuation[ids]
        cjk = self.cjk[ids]
        if not bool(cjk.any()):
            return starts
        for b in torch.nonzero(cjk.any(1)).flatten().tolist():
            row, flags = ids[b].tolist(), cjk[b].tolist()
            t = 0
            while t < len(row):
                if not flags[t]:
                    t += 1
                    continue
                end = t
                while end < len(row) and flags[end]:
                    end += 1
                pos = t
                for word in self.segment("".join(self.char[i] for i in row[t:end])):
                    for k in range(1, len(word)):
                        starts[b, pos + k] = False
                    pos += len(word)
                t = end
        return starts

    def segment(self, text: str) -> list[str]:
        if self._segmenter is None:
            try:
                import jieba
            except ImportError:
                raise BertkitError("whole-word masking of Chinese text needs the jieba word segmenter: "
                                   "pip install 'bertkit[zh]'") from None
            jieba.setLogLevel(logging.WARNING)
            self._segmenter = jieba.Tokenizer()
        return self._segmenter.lcut(text, HMM=True)
