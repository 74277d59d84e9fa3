import random

import pytest
import torch

from bertkit.data.masking import _take_words_in_order, continuation_table, mask_tokens
from bertkit.objectives import IGNORE_INDEX

PAD, CLS, SEP, MASK = 0, 1, 2, 3
WORD_LOW, WORD_HIGH = 5, 1000
# Random replacements come from [RANDOM_LOW, VOCAB), disjoint from the ids in the batch, so a random
# replacement can never coincide with the original id and the three outcomes can be counted apart exactly.
RANDOM_LOW, VOCAB = 1000, 30000


def python_k(n: int, rate: float) -> int:
    """google-research/bert's num_to_predict, on eligible tokens and without max_predictions_per_seq."""
    return max(1, int(round(n * rate))) if n > 0 else 0


def pair_batch(B: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] a [SEP] b [SEP] [PAD]... rows of random lengths: ids (B, T) and special_mask (B, T)."""
    rng = random.Random(seed)
    ids = torch.randint(WORD_LOW, WORD_HIGH, (B, T), generator=torch.Generator().manual_seed(seed))
    for row in range(B):
        length = rng.randint(T // 4 * 3, T)
        ids[row, 0] = CLS
        ids[row, rng.randint(2, length - 3)] = SEP
        ids[row, length - 1] = SEP
        ids[row, length:] = PAD
    return ids, ids < WORD_LOW


def mask(ids, special, seed=0, **kw):
    kw = {"mask_id": MASK, "vocab_size": VOCAB, "random_low": RANDOM_LOW, **kw}
    return mask_tokens(ids, special, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("rate", [0.15, 0.30])
def test_statistics_over_100k_tokens(rate):
    ids, special = pair_batch(1000, 128, seed=1)
    original = ids.clone()
    masked, labels = mask(ids, special, rate=rate)
    selected = labels != IGNORE_INDEX
    n = (~special).sum(dim=1)
    assert n.sum() >= 100_000

    assert torch.equal(ids, original), "input_ids modified in place"
    assert selected.sum(dim=1).tolist() == [python_k(int(x), rate) for x in n]
    assert not (selected & special).any()
    assert torch.equal(masked[~selected], ids[~selected])                  # specials, padding, unselected
    assert torch.equal(labels[selected], ids[selected])

    out = masked[selected]
    is_mask = out == MASK
    is_random = (out >= RANDOM_LOW) & (out < VOCAB)
    is_same = out == ids[selected]
    assert torch.equal(is_mask ^ is_random ^ is_same, torch.ones_like(is_mask))  # exactly one outcome each
    assert abs(is_mask.float().mean().item() - 0.80) < 0.01
    assert abs(is_random.float().mean().item() - 0.10) < 0.01
    assert abs(is_same.float().mean().item() - 0.10) < 0.01
    # No favoured positions: the first half of each row's eligible tokens gets half of the selections.
    rank = (~special).cumsum(dim=1) - 1
    first_half = (rank < n[:, None] / 2)[selected].float().mean().item()
    assert abs(first_half - 0.5) < 0.02


def test_random_ids_cover_exactly_random_low_to_vocab_size():
    ids, special = pair_batch(200, 128, seed=2)
    masked, labels = mask(ids, special, vocab_size=RANDOM_LOW + 3)
    selected = labels != IGNORE_INDEX
    out = masked[selected]
    random_ids = out[(out != MASK) & (out != ids[selected])]
    assert set(random_ids.tolist()) == {RANDOM_LOW, RANDOM_LOW + 1, RANDOM_LOW + 2}


def test_k_formula_exact_values():
    # n eligible per row: 7 -> 1.05 -> 1; 20 -> 3; 10 -> 1.5 -> 2 and 30 -> 4.5 -> 4 (round half to even,
    # as Python 3's round in google's script); 1 -> max(1, 0) = 1; 0 -> nothing to select.
    n_per_row = [7, 20, 10, 30, 1, 0]
    T = 34
    ids = torch.full((len(n_per_row), T), PAD)
    for row, n in enumerate(n_per_row):
        ids[row, 0] = CLS
        ids[row, 1:n + 1] = torch.arange(n) + WORD_LOW
        ids[row, n + 1] = SEP
    special = ids < WORD_LOW
    for seed in range(5):
        masked, labels = mask(ids, special, seed=seed)
        assert (labels != IGNORE_INDEX).sum(dim=1).tolist() == [1, 3, 2, 4, 1, 0]
    assert torch.equal(masked[-1], ids[-1])


def test_row_without_eligible_tokens_selects_nothing():
    ids = torch.tensor([[CLS, SEP, PAD, PAD], [PAD, PAD, PAD, PAD]])
    masked, labels = mask(ids, ids < WORD_LOW, word_starts=torch.ones_like(ids, dtype=torch.bool))
    assert torch.equal(masked, ids)
    assert (labels == IGNORE_INDEX).all()


def test_bad_rate_raises():
    ids, special = pair_batch(2, 16, seed=0)
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            mask(ids, special, rate=rate)


def test_continuation_table_exact():
    vocab = {"[PAD]": 0, "the": 1, "##s": 2, "#a": 3, "##ing": 6, "run": 4}
    assert continuation_table(vocab).tolist() == [False, False, True, False, False, False, True]
    # Used as word_starts: "run ##ing ##s the" -> words start at run and the.
    starts = ~continuation_table(vocab)[torch.tensor([4, 6, 2, 1])]
    assert starts.tolist() == [True, False, False, True]


def google_take(sizes: list[int], k: int) -> list[bool]:
    """google-research/bert's loop over shuffled words, with the shuffle already applied."""
    count, taken = 0, []
    for size in sizes:
        fits = count + size <= k
        count += size if fits else 0
        taken.append(fits)
    return taken


def test_take_words_in_order_matches_google_loop():
    rng = random.Random(0)
    rows = [[rng.choice([0, 1, 1, 2, 3, 5]) for _ in range(24)] for _ in range(500)]
    ks = [rng.randint(0, 20) for _ in rows]
    got = _take_words_in_order(torch.tensor(rows), torch.tensor(ks))
    for row, k, taken in zip(rows, ks, got.tolist()):
        # Words of size 0 hold no tokens, so whether they count as taken does not matter.
        assert [t for t, s in zip(taken, row) if s] == [t for t, s in zip(google_take(row, k), row) if s]
    # Hand-checked: k=4, sizes 3, 2 (overflows: skipped), 2 (skipped), 1 (fits) -> 3 + 1 = 4.
    assert _take_words_in_order(torch.tensor([[3, 2, 2, 1]]), torch.tensor([4])).tolist() == [[True, False, False, True]]


def wwm_batch(B: int, T: int, seed: int):
    """pair_batch rows cut into words of 1 to 4 tokens (70% of them single tokens): ids, special_mask,
    word_starts, and the word id of each token (-1 on specials) to check the grouping against."""
    ids, special = pair_batch(B, T, seed)
    rng = random.Random(seed)
    starts = torch.ones(B, T, dtype=torch.bool)
    word = torch.full((B, T), -1)
    for row in range(B):
        t, w = 0, 0
        while t < T:
            size = 1 if rng.random() < 0.7 else rng.randint(2, 4)
            for piece in range(min(size, T - t)):
                if special[row, t]:
                    w += 1      # a word cut by [SEP]: its pieces after [SEP] are a word of their own
                else:
                    starts[row, t] = piece == 0
                    word[row, t] = w
                t += 1
            w += 1
    return ids, special, starts, word


def test_whole_word_masking_selects_whole_words():
    ids, special, starts, word = wwm_batch(300, 128, seed=3)
    masked, labels = mask(ids, special, word_starts=starts)
    selected = labels != IGNORE_INDEX
    n = (~special).sum(dim=1)
    k = torch.tensor([python_k(int(x), 0.15) for x in n])
    assert not (selected & special).any()
    assert (starts & ~special).sum() < (~special).sum(), "batch has no multi-token words"
    multi_token_words_selected = 0
    for row in range(ids.shape[0]):
        in_word = word[row] >= 0
        sizes = torch.bincount(word[row][in_word])                          # tokens per word id
        chosen = torch.bincount(word[row][in_word], weights=selected[row][in_word].float()).long()
        assert ((chosen == 0) | (chosen == sizes)).all(), f"row {row}: a word partially selected"
        assert (sizes == 1).sum() >= k[row], "precondition of the exact-k check below"
        multi_token_words_selected += int(((sizes > 1) & (chosen == sizes)).sum())
    assert multi_token_words_selected > 100
    # Exactly k, not just <= k: with more single-token words than k, skip-and-continue always fills up
    # (a loop that stopped at the first word that overflows would fall short in many rows).
    assert torch.equal(selected.sum(dim=1), k)


def test_continuation_after_special_token_starts_its_own_word():
    # [CLS] a ##b [SEP] ##c d [SEP]: words {1, 2}, {4}, {5}. k = max(1, round(0.75)) = 1, so the two-token word
    # never fits and exactly one of positions 4 and 5 is selected. Were ##c glued to "a ##b" across [SEP],
    # position 4 could never be selected.
    ids = torch.tensor([[CLS, 10, 11, SEP, 12, 13, SEP]])
    starts = torch.tensor([[True, True, False, True, False, True, True]])
    seen = torch.zeros(7, dtype=torch.long)
    for seed in range(40):
        _, labels = mask(ids, ids < WORD_LOW, seed=seed, word_starts=starts)
        selected = (labels != IGNORE_INDEX)[0]
        assert selected.sum() == 1
        seen += selected
    assert seen[[0, 1, 2, 3, 6]].sum() == 0
    assert seen[4] > 0 and seen[5] > 0


def test_determinism_and_global_rng_untouched():
    ids, special, starts, _ = wwm_batch(16, 64, seed=5)
    torch.manual_seed(123)
    global_state = torch.get_rng_state()

    a = mask(ids, special, seed=7, word_starts=starts)
    b = mask(ids, special, seed=7, word_starts=starts)
    c = mask(ids, special, seed=8, word_starts=starts)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(torch.get_rng_state(), global_state)

    # Resume: restoring a saved generator state reproduces the next batch exactly.
    g = torch.Generator().manual_seed(9)
    kw = {"mask_id": MASK, "vocab_size": VOCAB, "random_low": RANDOM_LOW, "generator": g}
    mask_tokens(ids, special, **kw)
    saved = g.get_state()
    first = mask_tokens(ids, special, **kw)
    g.set_state(saved)
    again = mask_tokens(ids, special, **kw)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


# ---- whole words of Chinese text (jieba) ----------------------------------------------------------------------


def chinese_vocab(tmp_path):
    from bertkit import Tokenizer
    chars = sorted(set("我来到北京清华大学他说的确实在理"))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing"]
                                                  + chars) + "\n", encoding="utf-8")
    return Tokenizer.load(tmp_path / "vocab.txt")


def test_chinese_word_starts_follow_jieba(tmp_path):
    from bertkit.data.words import WordStarts
    tok = chinese_vocab(tmp_path)
    # jieba's README: 我来到北京清华大学 -> 我 / 来到 / 北京 / 清华大学
    enc = tok.encode_all(["我来到北京清华大学 playing"], max_length=32)[0]
    starts = WordStarts(tok.vocab())(torch.tensor([enc.ids]))[0].tolist()
    pieces = [tok.id_to_token(i) for i in enc.ids]
    assert pieces == ["[CLS]", "我", "来", "到", "北", "京", "清", "华", "大", "学", "play", "##ing", "[SEP]"]
    assert starts == [True, True, True, False, True, False, True, False, False, False, True, False, True]


def test_chinese_whole_word_masking_masks_whole_jieba_words(tmp_path):
    from bertkit.data.words import WordStarts
    tok = chinese_vocab(tmp_path)
    ids = torch.tensor([tok.encode_all(["我来到北京清华大学"], max_length=32)[0].ids] * 400)
    starts = WordStarts(tok.vocab())(ids)
    special = torch.isin(ids, torch.tensor([tok.cls_id, tok.sep_id]))
    words = [[1], [2, 3], [4, 5], [6, 7, 8, 9]]
    _, labels = mask_tokens(ids, special, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                            generator=torch.Generator().manual_seed(0), rate=0.5, word_starts=starts)
    chosen = labels != IGNORE_INDEX
    seen = set()
    for row in chosen.tolist():
        for w in words:  # a word is selected whole or not at all
            assert len({row[i] for i in w}) == 1
        seen.add(tuple(i for i, c in enumerate(row) if c))
    assert len(seen) >= 4  # and the selection varies (k = 4 of 9 characters)
