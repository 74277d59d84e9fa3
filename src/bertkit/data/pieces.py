"""A text as words and the gaps between them, so an attack can change word i and keep every other character.

The words are the tokenizer's pre-tokenizer pieces (a run of letters or digits, one punctuation mark, one CJK
character), as explanations use them (`bertkit.encoding.inputs.words_of`): the words the model itself reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from bertkit.encoding.inputs import words_of
from bertkit.tokenizer import Tokenizer


@dataclass(frozen=True)
class Pieces:
    """parts = (gap 0, word 0, gap 1, word 1, ..., gap n): the text is their concatenation. Words are changed in
    place, so word i of a changed text is still word i of the original, and two versions align word by word."""

    parts: tuple[str, ...]

    @classmethod
    def split(cls, tokenizer: Tokenizer, text: str) -> Pieces:
        """The text cut at the tokenizer's word boundaries (the whole text, never truncated)."""
        words = words_of(tokenizer.encode(text, truncation=None), text)
        return cls.from_spans(text, [(w.start, w.end) for w in words])

    @classmethod
    def from_spans(cls, text: str, spans: list[tuple[int, int]]) -> Pieces:
        parts, at = [], 0
        for start, end in sorted(spans):
            parts += [text[at:start], text[start:end]]
            at = end
        return cls(tuple(parts + [text[at:]]))

    @classmethod
    def from_words(cls, words: list[str], gap: str = " ") -> Pieces:
        """Pre-split words (a tagged sentence) joined by `gap`."""
        return cls(tuple([""] + [p for w in words for p in (w, gap)][:-1] + [""]) if words else ("",))

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def words(self) -> list[str]:
        return list(self.parts[1::2])

    def __len__(self) -> int:
        return len(self.parts) // 2

    def span(self, i: int) -> tuple[int, int]:
        """Character span of word i in `text`."""
        start = sum(len(p) for p in self.parts[:2 * i + 1])
        return start, start + len(self.parts[2 * i + 1])

    def replace(self, i: int, word: str) -> Pieces:
        parts = list(self.parts)
        parts[2 * i + 1] = word
        return Pieces(tuple(parts))

    def without(self, i: int) -> str:
        """The text with word i deleted (its gaps stay: the tokenizer reads runs of spaces as one)."""
        return self.replace(i, "").text

    def changed(self, other: Pieces) -> list[int]:
        """Indices of the words that differ from other's (a version of the same text)."""
        return [i for i, (a, b) in enumerate(zip(self.words, other.words)) if a != b]
