"""Texts as the model reads them, and the words of an encoded text.

The one encoding every path shares: fine-tuning and evaluation add targets to these items (bertkit.data.labelled),
inference runs them (bertkit.inference.batches). A word is what the tokenizer's pre-tokenizer split off (a run of
letters or digits, one punctuation mark, one CJK character); its sub-tokens are the WordPiece tokens with its word id.
"""

from __future__ import annotations

from dataclasses import dataclass

from bertkit.tokenizer import Encoding, Tokenizer


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


@dataclass
class QAExample:
    """One SQuAD question; `answers` are (text, character start in context), [] when unanswerable."""
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]


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
    """The words of an encoding, in order (the text's, then the pair's), each spanning its sub-tokens' offsets.
    Special tokens belong to no word; only the tokens the encoding holds count (truncation may cut a word)."""
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
