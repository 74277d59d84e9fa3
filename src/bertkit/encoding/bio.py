"""BIO tags (B-X begins an entity of type X, I-X continues it, O is outside): entities from a tag sequence, and
the most probable well-formed sequence from per-word scores. Used by inference (tagging) and evaluation (scores).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, start, end_exclusive) spans of a BIO tag sequence, read as seqeval / conlleval do by default.

    B-X always starts an entity; I-X continues an open X entity and otherwise starts a new one (after O,
    at the start, or after another type); O closes. Any tag other than O, B-<type>, I-<type> is a ValueError.
    """
    spans: list[tuple[str, int, int]] = []
    open_type, start = None, 0
    for i, tag in enumerate(tags):
        prefix, kind = ("O", None) if tag == "O" else (tag[:2], tag[2:])
        if prefix not in ("O", "B-", "I-") or (prefix != "O" and not kind):
            raise ValueError(f"tag {tag!r} at position {i} is not O, B-<type> or I-<type>")
        if open_type is not None and (prefix != "I-" or kind != open_type):
            spans.append((open_type, start, i))
            open_type = None
        if prefix == "B-" or (prefix == "I-" and open_type is None):
            open_type, start = kind, i
    if open_type is not None:
        spans.append((open_type, start, len(tags)))
    return spans


def bio_decode(log_probs, tags: Sequence[str]) -> list[int]:
    """The most probable tag sequence (indices into tags) that reads as well-formed BIO: an I-X only after B-X
    or I-X, never first. log_probs: (words, tags) per-word log-probabilities, taken as independent (Viterbi
    with transitions that are allowed or not). Tags that are not all O / B-<type> / I-<type>: plain argmax."""
    scores = np.asarray(log_probs, dtype=np.float64)
    if len(scores) == 0:
        return []
    inside = [t[2:] if t.startswith("I-") else None for t in tags]
    if not all(t == "O" or t[:2] in ("B-", "I-") for t in tags) or not any(inside):
        return scores.argmax(-1).tolist()
    # allowed[prev, cur]: cur is not I-X, or prev is B-X / I-X
    allowed = np.array([[k is None or prev[2:] == k for k in inside] for prev in tags])
    step = np.where(allowed, 0.0, -np.inf)
    best = scores[0] + np.where([k is None for k in inside], 0.0, -np.inf)
    back = np.zeros(scores.shape, dtype=np.int64)
    for i in range(1, len(scores)):
        cand = best[:, None] + step  # (prev, cur)
        back[i] = cand.argmax(0)
        best = cand[back[i], np.arange(len(tags))] + scores[i]
    path = [int(best.argmax())]
    for i in range(len(scores) - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return path[::-1]


def orphan_inside_tags(tags: Sequence[str]) -> int:
    """How many I-X tags follow neither B-X nor I-X (what plain per-token argmax can produce)."""
    return sum(t.startswith("I-") and (i == 0 or tags[i - 1][2:] != t[2:]) for i, t in enumerate(tags))
