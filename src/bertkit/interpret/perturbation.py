"""Perturbation explanations over words: occlusion and a LIME-style local linear surrogate.

A word is removed by replacing every one of its sub-tokens with [MASK] through the tokenizer's word ids (see
words.mask_words), never by deleting characters: the input keeps its length, positions and segments, and no
half-word or merged word appears that the tokenizer would never have produced.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

from bertkit.encoding.inputs import Word
from bertkit.interpret.scoring import Scorer
from bertkit.interpret.words import mask_words


def occlusion(scorer: Scorer, ids: list[int], words: list[Word], mask_id: int) -> np.ndarray:
    """Per word (W,): f(input) - f(input with that word masked). A word the model ignores scores 0."""
    variants = [ids] + [mask_words(ids, words, [i], mask_id) for i in range(len(words))]
    p = scorer(variants)
    return p[0] - p[1:]


def lime(scorer: Scorer, ids: list[int], words: list[Word], mask_id: int, samples: int = 300, seed: int = 0,
         kernel_width: float = 25.0) -> tuple[np.ndarray, dict]:
    """Per-word coefficients (W,) of a weighted ridge regression of f on which words are kept, fit on `samples`
    random maskings near the input (Ribeiro et al., 2016, with LIME's text defaults: the number of words removed
    uniform in 1..W-1, an exponential kernel of width 25 on the cosine distance x 100, ridge alpha 1).
    Also returns {"samples", "r2"}: how well the linear surrogate fits (weighted R^2)."""
    n = len(words)
    rng = np.random.default_rng(seed)
    keep = np.ones((samples, n), dtype=bool)  # row 0: the input itself
    for row in keep[1:]:
        removed = rng.integers(1, n) if n > 1 else 1
        row[rng.choice(n, size=removed, replace=False)] = False
    variants = [mask_words(ids, words, np.flatnonzero(~row), mask_id) for row in keep]
    y = scorer(variants)
    kept_fraction = keep.sum(1) / n
    distance = (1 - np.sqrt(kept_fraction)) * 100  # cosine distance between the keep vector and all-ones, x 100
    weight = np.exp(-distance ** 2 / kernel_width ** 2)
    surrogate = Ridge(alpha=1.0).fit(keep.astype(np.float64), y, sample_weight=weight)
    r2 = float(surrogate.score(keep.astype(np.float64), y, sample_weight=weight))
    return surrogate.coef_.astype(np.float64), {"samples": samples, "r2": r2}
