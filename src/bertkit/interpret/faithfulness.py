"""Faithfulness of an explanation: does removing the words it ranks highest change the prediction most?

Deletion (the AOPC of Samek et al., 2017; "comprehensiveness" in DeYoung et al., 2020): mask the top-k words of a
method's ranking, k = 1..K, and average the drop f(x) - f(x without them). Insertion: start from every word
masked and add the top-k back, averaging the rise over the all-masked score. Higher is better for both. A random
ranking gives the floor: a method that does not beat it says nothing about this model.
"""

from __future__ import annotations

import numpy as np

from bertkit.encoding.inputs import Word
from bertkit.interpret.scoring import Scorer
from bertkit.interpret.words import mask_words


def ranking(scores) -> list[int]:
    """Word indices, highest score first (ties in text order)."""
    scores = np.asarray(scores, dtype=np.float64)
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def random_rankings(n: int, count: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(n).tolist() for _ in range(count)]


def curves(scorer: Scorer, ids: list[int], words: list[Word], rankings: dict[str, list[list[int]]],
           mask_id: int, max_words: int = 10) -> dict[str, dict]:
    """For each name -> rankings (one for a method, several for the random baseline, averaged): the deletion
    curve [f(x), f(x - top1), ..., f(x - topK)], the insertion curve [f(none), f(top1), ..., f(topK)], with
    K = min(max_words, W), and their AOPCs. All variants go through the model in one batched pass."""
    n = len(words)
    K = min(max_words, n)
    everything = range(n)
    variants = [ids, mask_words(ids, words, everything, mask_id)]
    for orders in rankings.values():
        for order in orders:
            for k in range(1, K + 1):
                variants.append(mask_words(ids, words, order[:k], mask_id))  # deletion
                variants.append(mask_words(ids, words, order[k:], mask_id))  # insertion: only the top k kept
    p = scorer(variants)
    full, empty = p[0], p[1]
    out, at = {}, 2
    for name, orders in rankings.items():
        block = p[at:at + 2 * K * len(orders)].reshape(len(orders), K, 2)
        at += 2 * K * len(orders)
        deletion, insertion = block[..., 0].mean(0), block[..., 1].mean(0)  # (K,) each
        out[name] = {"deletion": [float(full), *map(float, deletion)],
                     "insertion": [float(empty), *map(float, insertion)],
                     "aopc_deletion": float(np.mean(full - deletion)) if K else 0.0,
                     "aopc_insertion": float(np.mean(insertion - empty)) if K else 0.0}
    return out


def faithfulness(scorer: Scorer, ids: list[int], words: list[Word], word_scores: dict[str, list[float]],
                 mask_id: int, max_words: int = 10, random_orders: int = 5, seed: int = 0) -> dict[str, dict]:
    """Deletion/insertion curves and AOPCs of each method's word scores, and of `random_orders` random rankings
    (averaged) under the name "random"."""
    rankings = {name: [ranking(s)] for name, s in word_scores.items()}
    rankings["random"] = random_rankings(len(words), random_orders, seed)
    return curves(scorer, ids, words, rankings, mask_id, max_words)
