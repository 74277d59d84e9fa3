"""Dynamic masking for masked-language-model pre-training: a fresh mask for every batch.

The rule is google-research/bert's `create_masked_lm_predictions`, applied per batch instead of once
when the data is written (RoBERTa's "dynamic masking"), and vectorised over the whole batch:
  1. per row, k = max(1, round(rate * n)) of the n eligible (non-special) tokens are to be predicted;
  2. words are visited in a random order and a word is selected whole while the count stays <= k
     (a word that would overflow is skipped and later, smaller words are still tried);
  3. each selected token independently becomes [MASK] (80%), a random id (10%) or stays as it is (10%).

Two deliberate differences from google's script: n counts eligible tokens only (google counts every token,
[CLS] and [SEP] included), and there is no max_predictions_per_seq cap (k is the only limit).

Every random number comes from the caller's `torch.Generator` and the draws have fixed shapes (they depend
on (B, T) only, never on the data), so saving `generator.get_state()` is enough to resume exactly.

Shapes: B batch, T tokens, W word slots per row (W = T: a row never has more words than tokens), V vocab.
"""

from __future__ import annotations

import torch

from bertkit.objectives import IGNORE_INDEX

CONTINUATION_PREFIX = "##"
"""WordPiece marks a piece that continues the previous one with this prefix (as in tokenizer.py)."""

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
"""Of the selected tokens: 80% become [MASK], 10% a random id, the remaining 10% keep their id (BERT paper)."""


def continuation_table(vocab: dict[str, int]) -> torch.Tensor:
    """(V,) bool, True for ids whose token starts with '##' (a WordPiece continuation). V = max id + 1.

    Built once per vocabulary; `~table[input_ids]` is then the `word_starts` that `mask_tokens` wants
    for whole-word masking. Ids missing from `vocab` (gaps) count as word starts.
    """
    table = torch.zeros(max(vocab.values(), default=-1) + 1, dtype=torch.bool)
    ids = [i for token, i in vocab.items() if token.startswith(CONTINUATION_PREFIX)]
    table[torch.tensor(ids, dtype=torch.long)] = True
    return table


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, *, mask_id: int, vocab_size: int,
                generator: torch.Generator, rate: float = 0.15, word_starts: torch.Tensor | None = None,
                random_low: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids (B, T) long; special_mask (B, T) bool, True where a token must never be selected ([CLS], [SEP], [PAD]).
    Returns (masked_ids (B, T), labels (B, T)) — labels hold the original id at selected positions and IGNORE_INDEX elsewhere.
    input_ids is not modified in place.

    word_starts (B, T) bool turns on whole-word masking: an eligible token with word_starts False joins the word
    of the eligible token before it (after a special token it starts a word of its own). Without it every
    eligible token is a word. Random replacement ids are drawn uniformly from [random_low, vocab_size), so
    setting random_low past the special ids keeps [PAD]/[CLS]/... out of the inputs.
    """
    _check(input_ids, special_mask, word_starts, rate, vocab_size, random_low)
    B, T = input_ids.shape
    device = input_ids.device
    eligible = ~special_mask

    word_of, word_sizes = _words(eligible, word_starts)                    # (B, T), (B, W)
    order = _rand(generator, (B, T), device).argsort(dim=1, stable=True)   # (B, W): random visiting order of word slots
    taken_in_order = _take_words_in_order(word_sizes.gather(1, order), _num_to_mask(eligible, rate))
    taken = torch.zeros_like(taken_in_order).scatter_(1, order, taken_in_order)  # (B, W), back in slot order
    selected = eligible & taken.gather(1, word_of)                         # (B, T)

    # Fixed-shape draws (not one per selected token) keep the generator's consumption independent of the data.
    action = _rand(generator, (B, T), device)
    random_ids = torch.randint(random_low, vocab_size, (B, T), generator=generator,
                               device=generator.device).to(device)
    masked_ids = torch.where(selected & (action < MASK_SHARE), mask_id, input_ids)
    masked_ids = torch.where(selected & (action >= MASK_SHARE) & (action < MASK_SHARE + RANDOM_SHARE),
                             random_ids, masked_ids)
    labels = torch.where(selected, input_ids, IGNORE_INDEX)
    return masked_ids, labels


def _num_to_mask(eligible: torch.Tensor, rate: float) -> torch.Tensor:
    """(B,) long: k = max(1, round(rate * n)) for rows with n > 0 eligible tokens, else 0.

    float64 and round-half-to-even reproduce Python 3's `round(n * rate)` exactly, as google's script computes it.
    """
    n = eligible.sum(dim=1)
    k = torch.round(n.double() * rate).long().clamp(min=1)
    return torch.where(n > 0, k, 0)


def _words(eligible: torch.Tensor, word_starts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Group eligible tokens into words. Returns (word_of (B, T), sizes (B, W)): the word slot of each token
    (meaningless at ineligible positions, which callers mask out) and the eligible-token count of each slot
    (0 for slots past the row's last word)."""
    if word_starts is None:
        starts = eligible
    else:
        after_ineligible = torch.ones_like(eligible)
        after_ineligible[:, 1:] = ~eligible[:, :-1]
        starts = eligible & (word_starts | after_ineligible)
    word_of = (starts.cumsum(dim=1) - 1).clamp(min=0)                      # (B, T)
    sizes = torch.zeros(eligible.shape, dtype=torch.long, device=eligible.device)
    sizes.scatter_add_(1, word_of, eligible.long())                        # (B, W)
    return word_of, sizes


def _take_words_in_order(sizes: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """sizes (B, W) word sizes in visiting order; k (B,). Returns (B, W) bool, the words google's loop takes:
    `for w in words: if count + size(w) <= k: take w, count += size(w)`.

    Exact, without a loop over words. A prefix sum is the loop's count until the first word that overflows.
    That word is skipped, and so is every later word larger than the room left just before it (the room only
    shrinks), so those words are excluded and the prefix sum is taken again. Each round strictly shrinks the
    room at the next overflow, so there are at most max(k) + 1 rounds; in practice 2-4 (one per distinct
    word size that overflows).
    """
    k = k[:, None]                                                         # (B, 1)
    position = torch.arange(sizes.shape[1], device=sizes.device)           # (W,)
    excluded = torch.zeros(sizes.shape, dtype=torch.bool, device=sizes.device)
    while True:
        counted = torch.where(excluded, 0, sizes)
        count = counted.cumsum(dim=1)                                      # (B, W): the loop's count after each word
        overflow = ~excluded & (count > k)
        if not overflow.any():
            return ~excluded
        first = overflow.byte().argmax(dim=1, keepdim=True)                # (B, 1): first True per row
        room = k - (count.gather(1, first) - counted.gather(1, first))     # (B, 1): room just before that word
        excluded |= overflow.any(dim=1, keepdim=True) & (position >= first) & (sizes > room)


def _rand(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) from `generator` on its own device, moved to `device` (a CPU generator can feed CUDA data)."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _check(input_ids, special_mask, word_starts, rate, vocab_size, random_low) -> None:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    for name, t in (("special_mask", special_mask), ("word_starts", word_starts)):
        if t is not None and (t.shape != input_ids.shape or t.dtype != torch.bool):
            raise ValueError(f"{name} must be a bool tensor shaped like input_ids {tuple(input_ids.shape)}, "
                             f"got {t.dtype} {tuple(t.shape)}")
    if not 0 <= random_low < vocab_size:
        raise ValueError(f"need 0 <= random_low < vocab_size, got {random_low} and {vocab_size}")
