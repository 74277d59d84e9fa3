"""The classic baseline BERT replaced: TF-IDF features + logistic regression (scikit-learn), on the same task
files and split as fine-tuning, scored with the same metrics, so a user sees what BERT buys on their data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bertkit.data.tasks import load_task_data
from bertkit.encoding.bio import bio_decode
from bertkit.errors import BertkitError
from bertkit.evaluate.metrics import classification_metrics, entity_metrics, plot_confusion


def _has_cjk(texts: list[str]) -> bool:
    sample = "".join(texts[:200])
    return sum("\u4e00" <= c <= "\u9fff" for c in sample) > 0.2 * max(len(sample), 1)


def run_baseline(out: str | Path, train_file, dev_file=None, test_file=None, columns: dict | None = None,
                 analyzer: str = "auto", seed: int = 0, task: str = "classification") -> dict:
    """Word 1-2-grams (or character 1-3-grams for Chinese, which has no spaces) weighted by TF-IDF, then a
    logistic regression whose C is picked on the dev split. Single-label classification; task="ner" runs
    `run_ner_baseline` instead."""
    if task == "ner":
        return run_ner_baseline(out, train_file, dev_file, test_file, seed)
    if task != "classification":
        raise BertkitError(f"the baseline covers classification and ner, not {task!r}")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    splits, labels = load_task_data("classification", train_file, dev_file, test_file, columns)
    index = {name: i for i, name in enumerate(labels)}

    def texts(part):
        return [e.text if e.pair is None else f"{e.text} [SEP] {e.pair}" for e in part]

    train_texts = texts(splits["train"])
    if analyzer == "auto":
        analyzer = "char" if _has_cjk(train_texts) else "word"
    vec = (TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2) if analyzer == "char"
           else TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2))
    t0 = time.perf_counter()
    X = {name: (vec.fit_transform if name == "train" else vec.transform)(texts(part))
         for name, part in splits.items() if part}
    y = {name: np.array([index[e.label] for e in part]) for name, part in splits.items() if part}
    best = None
    for C in (0.25, 1.0, 4.0, 16.0):
        clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(X["train"], y["train"])
        acc = float((clf.predict(X["dev"]) == y["dev"]).mean())
        if best is None or acc > best[0]:
            best = (acc, C, clf)
    _, C, clf = best
    results = {"method": f"TF-IDF ({analyzer} n-grams) + logistic regression", "C": C, "labels": labels,
               "train_seconds": round(time.perf_counter() - t0, 2)}
    for name in ("dev", "test"):
        if name in X:
            probs = clf.predict_proba(X[name])
            results[name] = classification_metrics(y[name].tolist(), probs.argmax(1).tolist(), labels, probs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if "test" in results:
        plot_confusion(results["test"]["confusion_matrix"], labels, out / "confusion.png", title="TF-IDF baseline, test")
    return results


def token_features(tokens: list[str], i: int) -> list[str]:
    """The classic window features of a feature-based tagger for token i: the token, its neighbours two either
    side, the bigrams around it, and its shape (affixes, case, digits) for alphabetic scripts."""
    def at(j):
        return tokens[j] if 0 <= j < len(tokens) else ("<s>" if j < 0 else "</s>")
    w = tokens[i]
    feats = [f"w={w.lower()}", f"w-1={at(i - 1).lower()}", f"w+1={at(i + 1).lower()}", f"w-2={at(i - 2).lower()}",
             f"w+2={at(i + 2).lower()}", f"b-1={at(i - 1)}|{w}", f"b+1={w}|{at(i + 1)}"]
    if len(w) > 1:
        feats += [f"pre3={w[:3]}", f"suf3={w[-3:]}"]
    feats += [f"title={w.istitle()}", f"upper={w.isupper()}", f"digit={w.isdigit()}"]
    return feats


def run_ner_baseline(out: str | Path, train_file, dev_file, test_file=None, seed: int = 0) -> dict:
    """Per-token logistic regression on window features (`token_features`): the feature-based tagger that
    came before BERT. Each token's tag probabilities come from the classifier; each sentence is decoded as
    well-formed BIO by the same decoder fine-tuned taggers use (bio_decode), and scored at the entity level."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    splits, tags = load_task_data("ner", train_file, dev_file, test_file)
    index = {t: i for i, t in enumerate(tags)}
    # a feature column only for what the training split shows (seen twice in a large one): a small weight matrix
    # keeps L-BFGS fast, where hashing into a fixed 2^20 columns made it crawl
    n_train = sum(len(s.tokens) for s in splits["train"])
    vec = CountVectorizer(analyzer=lambda feats: feats, binary=True, min_df=2 if n_train > 50_000 else 1)

    def features(part, fit=False):
        rows = (token_features(s.tokens, i) for s in part for i in range(len(s.tokens)))
        return vec.fit_transform(rows) if fit else vec.transform(rows)

    def decode(part, clf, X):
        log_probs = np.full((X.shape[0], len(tags)), -np.inf)  # a tag absent from training is never predicted
        log_probs[:, clf.classes_] = clf.predict_log_proba(X)
        out, k = [], 0
        for s in part:
            out.append([tags[j] for j in bio_decode(log_probs[k:k + len(s.tokens)], tags)])
            k += len(s.tokens)
        return out

    t0 = time.perf_counter()
    X = {name: features(part, fit=name == "train") for name, part in splits.items() if part}
    y_train = np.array([index[t] for s in splits["train"] for t in s.tags])
    best = None
    for C in (1.0, 8.0):
        clf = LogisticRegression(C=C, max_iter=300, random_state=seed).fit(X["train"], y_train)
        f1 = entity_metrics([s.tags for s in splits["dev"]], decode(splits["dev"], clf, X["dev"]))["f1"]
        if best is None or f1 > best[0]:
            best = (f1, C, clf)
    _, C, clf = best
    results = {"method": "window features + logistic regression (per token)", "C": C, "labels": tags,
               "train_seconds": round(time.perf_counter() - t0, 2)}
    for name in ("dev", "test"):
        if name in X:
            results[name] = entity_metrics([s.tags for s in splits[name]], decode(splits[name], clf, X[name]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return results
