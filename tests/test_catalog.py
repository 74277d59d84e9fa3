import hashlib

from bertkit.data.catalog import split_labelled, split_of


def test_split_rule_exact_values():
    for text in ["a", "hello world", "  padded  ", "北京"]:
        h = int(hashlib.sha1(text.strip().encode("utf-8")).hexdigest(), 16) % 10
        assert split_of(text) == ("test" if h == 0 else "dev" if h == 1 else "train")
    assert split_of(" x ") == split_of("x")


def test_duplicates_kept_once_and_conflicts_dropped():
    pairs = [("good film", "pos"), ("good film", "pos"), ("odd film", "pos"), ("odd film", "neg"), ("bad", "neg")]
    out = split_labelled(pairs)
    kept = sorted(p for part in out.values() for p in part)
    assert kept == [("bad", "neg"), ("good film", "pos")]
