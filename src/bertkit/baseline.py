"""The classic baseline BERT replaced: TF-IDF features + logistic regression (scikit-learn), on the same task
files and split as fine-tuning, scored with the same metrics, so a user sees what BERT buys on their data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bertkit.evaluate.metrics import classification_metrics, plot_confusion
from bertkit.finetune import FinetuneConfig, load_task_data


def _has_cjk(texts: list[str]) -> bool:
    sample = "".join(texts[:200])
    return sum("\u4e00" <= c <= "\u9fff" for c in sample) > 0.2 * max(len(sample), 1)


def run_baseline(out: str | Path, train_file, dev_file=None, test_file=None, columns: dict | None = None,
                 analyzer: str = "auto", seed: int = 0) -> dict:
    """Word 1-2-grams (or character 1-3-grams for Chinese, which has no spaces) weighted by TF-IDF, then a
    logistic regression whose C is picked on the dev split. Single-label classification."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    cfg = FinetuneConfig(task="classification", problem_type="single_label", seed=seed)
    splits, labels = load_task_data(cfg, train_file, dev_file, test_file, columns)
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
