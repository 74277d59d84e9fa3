"""Character noise: the typos people make (adjacent swaps, dropped letters, a neighbouring key) and the edits a
character-level attack searches over (DeepWordBug, Gao et al., 2018: swap, substitute, delete, insert).

Edits stay inside words made of letters, so a word never disappears or merges with its neighbour (Chinese, where
every character is a word, has its own: two adjacent characters swapped, one dropped), and `noisy` makes exactly
the number of edits asked for: it checks the result's edit distance (Damerau's optimal string alignment: an
adjacent swap is one edit) and draws again when two edits happen to undo each other.
"""

from __future__ import annotations

import random
import string

from bertkit.data.words import is_cjk
from bertkit.data.pieces import Pieces

NATURAL = ("swap", "delete", "keyboard")
"""The edits of `charnoise`: what a hurried typist does."""
DEEPWORDBUG = ("swap", "substitute", "delete", "insert")
"""The edits DeepWordBug tries on a word."""

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
KEYBOARD: dict[str, str] = {}
"""Each letter's neighbours on a QWERTY keyboard (same row and the rows above and below, one key apart)."""
for r, row in enumerate(_ROWS):
    for c, ch in enumerate(row):
        near = [row[j] for j in (c - 1, c + 1) if 0 <= j < len(row)]
        for other in (r - 1, r + 1):
            if 0 <= other < len(_ROWS):
                near += [_ROWS[other][j] for j in (c - 1, c, c + 1) if 0 <= j < len(_ROWS[other])]
        KEYBOARD[ch] = "".join(near)


def editable(word: str) -> bool:
    """Words made of letters only (not numbers, punctuation or mixed tokens) are edited."""
    return word.isalpha()


def _letter(rng: random.Random, like: str, alphabet: str, avoid: str = "") -> str | None:
    """A random letter in the case of `like`: a-z for ASCII words, else one of `alphabet` (letters of the text)."""
    pool = string.ascii_lowercase if like.isascii() else alphabet
    pool = "".join(ch for ch in dict.fromkeys(pool) if ch.lower() != avoid.lower())
    if not pool:
        return None
    ch = rng.choice(pool)
    return ch.upper() if like.isupper() else ch


def edit(word: str, kind: str, rng: random.Random, alphabet: str = "") -> str | None:
    """word with one edit of `kind` at a random place, or None where that edit cannot change it (a swap of two
    equal letters, deleting the only letter, a letter with no keyboard neighbour).

    swap: two adjacent, different letters; delete: one letter (words of 2+ letters); keyboard: a letter by a
    QWERTY neighbour; substitute: a letter by any other; insert: a random letter anywhere. Non-ASCII words draw
    new letters from `alphabet`."""
    n = len(word)
    if kind == "swap":
        places = [i for i in range(n - 1) if word[i] != word[i + 1]]
        if not places:
            return None
        i = rng.choice(places)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "delete":
        if n < 2:
            return None
        i = rng.randrange(n)
        return word[:i] + word[i + 1:]
    if kind == "keyboard":
        places = [i for i in range(n) if word[i].lower() in KEYBOARD]
        if not places:
            return None
        i = rng.choice(places)
        new = rng.choice(KEYBOARD[word[i].lower()])
        return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1:]
    if kind == "substitute":
        i = rng.randrange(n)
        new = _letter(rng, word[i], alphabet, avoid=word[i])
        return None if new is None else word[:i] + new + word[i + 1:]
    if kind == "insert":
        i = rng.randrange(n + 1)
        new = _letter(rng, word[max(0, i - 1)], alphabet or word)
        return None if new is None else word[:i] + new + word[i:]
    raise ValueError(f"unknown edit {kind!r}")


def noisy(pieces: Pieces, edits: int, rng: random.Random, kinds=NATURAL, tries: int = 20,
          keep_words: bool = False) -> Pieces:
    """pieces with `edits` random edits (of `kinds`) in its letter words, each in a different word while there are
    enough; the text is exactly `edits` edits away from the original (edit_distance), unless no such draw came up
    in `tries` (a text of one short word), or it has no letter word at all (returned unchanged). keep_words: no
    word may vanish (a dropped Chinese character), so tagged words keep their tags."""
    candidates = [i for i, w in enumerate(pieces.words) if editable(w)]
    if not candidates or edits < 1:
        return pieces
    alphabet = "".join(ch for w in pieces.words if editable(w) for ch in w)
    best = pieces
    for _ in range(tries):
        out = pieces
        for i in _spread(candidates, edits, rng):
            kinds_left = list(kinds)
            rng.shuffle(kinds_left)
            for kind in kinds_left:
                changed = _edit_at(out, i, kind, rng, alphabet, keep_words)
                if changed is not None:
                    out = changed
                    break
        distance = edit_distance(pieces.text, out.text, limit=edits)
        if distance == edits:
            return out
        if distance <= edits:
            best = out
    return best


def _edit_at(pieces: Pieces, i: int, kind: str, rng: random.Random, alphabet: str,
             keep_words: bool = False) -> Pieces | None:
    """pieces with one edit of `kind` in word i, or None where it cannot change anything. A Chinese character is
    a word of its own, so its typos are a swap with the character right after it, or the character dropped."""
    word = pieces.words[i]
    if len(word) == 1 and is_cjk(word):
        after = pieces.words[i + 1] if i + 1 < len(pieces) and not pieces.parts[2 * i + 2] else ""
        if kind == "swap" and len(after) == 1 and is_cjk(after) and after != word:
            return pieces.replace(i, after).replace(i + 1, word)
        return pieces.replace(i, "") if kind == "delete" and not keep_words else None
    new = edit(word, kind, rng, alphabet)
    return None if new is None or new == word else pieces.replace(i, new)


def _spread(candidates: list[int], k: int, rng: random.Random) -> list[int]:
    """k word indices: distinct while there are enough words, then repeating."""
    picked = rng.sample(candidates, min(k, len(candidates)))
    return picked + [rng.choice(candidates) for _ in range(k - len(picked))]


def noise_words(words: list[str], edits: int, rng: random.Random, kinds=NATURAL) -> list[str]:
    """The same for pre-split words (a tagged sentence): every word stays, so tags stay aligned."""
    return noisy(Pieces.from_words(words), edits, rng, kinds, keep_words=True).words


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of adjacent characters,
    one each. With `limit`, any distance above it comes back as limit + 1 (found in a band, much faster)."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a, b = a[start:len(a) - end], b[start:len(b) - end]
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    far = len(a) + len(b) + 1
    band = far if limit is None else limit + 1
    before, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [far] * (len(b) + 1)
        row[0] = i
        for j in range(max(1, i - band), min(len(b), i + band) + 1):
            cost = a[i - 1] != b[j - 1]
            d = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if before is not None and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d = min(d, before[j - 2] + 1)
            row[j] = d
        before, prev = prev, row
    d = prev[len(b)]
    return d if limit is None else min(d, limit + 1)
