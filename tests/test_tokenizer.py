"""Tokenizer parity with transformers' BertTokenizerFast on >= 1,000 varied strings, and training from scratch."""

import random
import shutil

import pytest
import torch
import transformers

from bertkit import BertkitError, Tokenizer
from sentences import SENTENCES

FRAGMENTS = [
    "", " ", "   ", "\t\n", "hello", "Hello, World!", "naïve café", "Crème Brûlée", "ÀÉÎÕÜ", "résumé",
    "straße", "Ångström", "İstanbul", "北京欢迎你", "東京都", "한국어 문장", "日本語のテキスト", "中文，标点！",
    "😀", "👍🏽 great", "🇫🇷 flag", "e-mail", "can't", "don't-stop", "U.S.A.", "3.14159", "1,000,000",
    "$42.50", "50%", "2024-11-23", "12:30pm", "+44 20 7946 0958", "https://example.com/a/b?c=d&e=f#g",
    "www.python.org", "user@example.com", "#hashtag", "@mention", "C++", "x^2 + y^2 = z^2", "a/b\\c",
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 120, "ab" * 60, "Donaudampfschifffahrtsgesellschaftskapitän", "\u200b zero width", "soft\u00adhyphen",
    "tab\there", "line\r\nbreak", "ctrl\x07char", "nbsp\u00a0space", "ＦＵＬＬＷＩＤＴＨ", "ﬁ ligature",
    "Ελληνικά", "русский текст", "עברית", "العربية", "हिन्दी", "ไทย", "Tiếng Việt", "<html><b>bold</b></html>",
    "[CLS] literal [SEP]", "[MASK]", "[UNK]", "##hash", "...", "?!?!", "——", "“quoted”", "‘single’", "«guillemets»",
]


def varied_strings(n: int = 1000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pool = FRAGMENTS + SENTENCES
    out = list(FRAGMENTS) + list(SENTENCES)
    while len(out) < n:
        k = rng.randint(1, 6)
        sep = rng.choice([" ", "", " ", "\n", ", "])
        out.append(sep.join(rng.choice(pool) for _ in range(k)))
    return out


STRINGS = varied_strings()


def hf_encode(hf, text, pair=None, **kw):
    e = hf(text, pair, return_offsets_mapping=True, **kw)
    return e["input_ids"], e["token_type_ids"], [tuple(o) for o in e["offset_mapping"]]


def ours_encode(tok, text, pair=None, **kw):
    e = tok.encode(text, pair, **kw)
    return e.ids, e.type_ids, [tuple(o) for o in e.offsets]


@pytest.fixture(scope="module")
def minilm_tokenizers(minilm_dir):
    return Tokenizer.load(minilm_dir), transformers.BertTokenizerFast.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def vocab_only(minilm_dir, tmp_path_factory):
    """The checkpoint's vocab.txt and tokenizer_config.json alone: both sides must build the tokenizer."""
    d = tmp_path_factory.mktemp("vocab_only")
    shutil.copy(minilm_dir / "vocab.txt", d)
    shutil.copy(minilm_dir / "tokenizer_config.json", d)
    theirs = transformers.BertTokenizerFast.from_pretrained(str(d))
    assert theirs.vocab_size == 30522
    return Tokenizer.load(d / "vocab.txt"), theirs


def test_single_texts_match_transformers(minilm_tokenizers, vocab_only):
    assert len(STRINGS) >= 1000
    for ours, theirs in (minilm_tokenizers, vocab_only):
        for s in STRINGS:
            assert ours_encode(ours, s, max_length=512) == hf_encode(theirs, s, truncation=True, max_length=512), s


@pytest.mark.parametrize("strategy", ["longest_first", "only_second"])
def test_pairs_with_truncation_match_transformers(minilm_tokenizers, vocab_only, strategy):
    rng = random.Random(1)
    n = 0
    for ours, theirs in (minilm_tokenizers, vocab_only):
        for _ in range(500):
            a, b = rng.choice(STRINGS[:200]), rng.choice(STRINGS)
            if strategy == "only_second":
                a = a[:12]
                b = b + " " + rng.choice(SENTENCES) * 3
            got = ours_encode(ours, a, b, max_length=32, truncation=strategy)
            assert got == hf_encode(theirs, a, b, truncation=strategy, max_length=32), (a, b)
            assert len(got[0]) <= 32 and set(got[1]) <= {0, 1}
            n += 1
    assert n == 1000


def test_batch_padding_matches_transformers(minilm_tokenizers):
    ours, theirs = minilm_tokenizers
    texts = STRINGS[:64]
    batch = ours.encode_batch(texts, max_length=64)
    ref = theirs(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    for k in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(batch[k], ref[k]), k
    fixed = ours.encode_batch(texts[:3], STRINGS[3:6], max_length=40, padding="max_length", pad_to_multiple_of=8)
    assert fixed["input_ids"].shape == (3, 40)


def test_offsets_and_word_ids(minilm_tokenizers):
    ours, _ = minilm_tokenizers
    text = "Tokenization unbelievably works"
    e = ours.encode(text)
    assert e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]"
    assert e.word_ids[0] is None and e.word_ids[-1] is None
    for tok, (s, t), w in zip(e.tokens[1:-1], e.offsets[1:-1], e.word_ids[1:-1]):
        assert text[s:t].lower() == tok.removeprefix("##")
        assert text.split()[w].lower().find(tok.removeprefix("##")) >= 0
    assert e.word_ids[1:-1] == sorted(e.word_ids[1:-1]) and len(set(e.word_ids[1:-1])) == 3
    pair = ours.encode("first one", "second")
    assert pair.sequence_ids == [None, 0, 0, None, 1, None]
    assert pair.type_ids == [0, 0, 0, 0, 1, 1]


CORPUS = [
    "The cat sat on the mat. The dog sat on the log.",
    "Natural language processing with BERT needs a vocabulary.",
    "北京是中国的首都，上海是中国最大的城市。",
    "Café au lait and crème brûlée are French.",
] * 50


def test_trained_tokenizer_round_trips_and_adds_cls_sep(tmp_path):
    tok = Tokenizer.train(CORPUS, vocab_size=300, min_frequency=1, show_progress=False)
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    e = tok.encode("the cat", "the dog")
    assert e.ids[0] == tok.cls_id and e.ids.count(tok.sep_id) == 2  # the pitfall: a post-processor is set
    assert "北" in tok.tokenize("北京") and len(tok.tokenize("北京")) == 2  # one CJK character, one token
    assert tok.tokenize("Café") == ["cafe"]  # lowercased, accents stripped (uncased default)
    tok.save(tmp_path)
    for source in (tmp_path, tmp_path / "tokenizer.json", tmp_path / "vocab.txt"):
        again = Tokenizer.load(source)
        assert again.vocab() == tok.vocab()
        for s in CORPUS[:4] + STRINGS[:200]:
            assert ours_encode(again, s) == ours_encode(tok, s), (source, s)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for s in CORPUS[:4] + STRINGS[:200]:
        assert theirs(s)["input_ids"] == tok.encode(s).ids, s


def test_cased_training_keeps_case():
    tok = Tokenizer.train(CORPUS, vocab_size=300, min_frequency=1, lowercase=False, show_progress=False)
    assert tok.tokenize("The")[0] == "The"
    assert tok.normalizer_settings()["lowercase"] is False


def test_training_from_files_and_the_cli(tmp_path):
    from bertkit.cli import main
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(CORPUS), encoding="utf-8")
    assert main(["tokenizer", "train", str(f), "-o", str(tmp_path / "tok"), "--vocab-size", "200",
                 "--min-frequency", "1", "-q"]) == 0
    assert Tokenizer.load(tmp_path / "tok").vocab_size <= 200


@pytest.mark.parametrize("make", [
    lambda p: Tokenizer.load(p),  # empty directory
    lambda p: Tokenizer.load(p / "nope.txt"),
    lambda p: (p / "tokenizer.json").write_text("{not json") and Tokenizer.load(p / "tokenizer.json"),
    lambda p: Tokenizer.train([""] * 3, vocab_size=100, show_progress=False),
    lambda p: Tokenizer.train(files=[p / "missing.txt"], vocab_size=100, show_progress=False),
    lambda p: Tokenizer.train(["x"], files=["y"], vocab_size=100),
])
def test_bad_input_is_a_one_line_error(tmp_path, make):
    with pytest.raises(BertkitError) as e:
        make(tmp_path)
    assert "\n" not in str(e.value)


def test_impossible_truncation_is_a_clear_error(minilm_tokenizers):
    ours, _ = minilm_tokenizers
    with pytest.raises(BertkitError, match="cannot encode"):
        ours.encode("a very long first sentence " * 10, "short", max_length=8, truncation="only_second")
    with pytest.raises(BertkitError, match="truncation must be"):
        ours.encode("x", truncation="both")


def test_windows_with_no_room_past_the_stride_are_an_error_not_a_panic():
    """A first text leaving the second no more tokens than the stride made tokenizers panic (a BaseException that
    ended `bertkit serve`'s model thread, so every later request waited forever)."""
    from bertkit.tokenizer import Tokenizer
    tok = Tokenizer.train(["where does alice live in paris"] * 3, vocab_size=60, min_frequency=1, show_progress=False)
    first = "where does alice live"
    room = 24 - len(tok.tokenize(first)) - 3
    for stride in (room, room + 1):
        with pytest.raises(BertkitError, match="no room for windows"):
            tok.encode_windows(first, "alice lives in paris " * 10, max_length=24, stride=stride)
    assert len(tok.encode_windows(first, "alice lives in paris " * 10, max_length=24, stride=room - 1)) > 1
