"""Evaluation metrics as pure functions of gold labels and predictions (numpy only).

Every function returns plain Python floats, ints, lists and dicts, so a result goes straight into
JSON. A ratio with a zero denominator is 0, as scikit-learn's ``zero_division=0``; undefined
correlations (a constant series) are 0 as well, like scikit-learn's MCC. tests/test_metrics.py
checks each metric against hand-computed cases and against scikit-learn / scipy.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from bertkit.encoding.bio import bio_entities
from bertkit.errors import BertkitError

# ---------------------------------------------------------------------------------------------
# shared helpers


def _ratio(num, den) -> np.ndarray:
    """num / den elementwise, 0 where den == 0."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    return np.divide(num, den, out=np.zeros(num.shape), where=den != 0)


def _prf(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from counts. F1 = 2tp / (2tp + fp + fn): equal to 2PR / (P + R), without its 0/0."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def _per_class(names: Sequence[str], tp, fp, fn) -> dict:
    p, r, f = _prf(tp, fp, fn)
    support = np.asarray(tp) + np.asarray(fn)
    return {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, name in enumerate(names)}


def _check_labels(labels: Sequence[str]) -> list[str]:
    names = [str(x) for x in labels]
    if not names:
        raise BertkitError("no label names given")
    if len(set(names)) != len(names):
        raise BertkitError(f"duplicate label names: {names}")
    return names


def _class_ids(y, name: str, n_labels: int) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class ids, got shape {a.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise ValueError(f"{name} must hold integer class ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    bad = (a < 0) | (a >= n_labels)
    if bad.any():
        raise BertkitError(f"{name} holds class id {a[bad][0]}, but there are {n_labels} labels (ids 0..{n_labels - 1})")
    return a


def _check_probs(probs, n: int, n_labels: int) -> np.ndarray:
    a = np.asarray(probs, dtype=np.float64)
    if a.shape != (n, n_labels):
        raise BertkitError(f"probs has shape {a.shape}, expected ({n}, {n_labels}): one row per example, one column per label")
    # 1e-3 leaves room for float16/bfloat16 softmax outputs; logits fail it.
    if not np.isfinite(a).all() or (a < 0).any() or not np.allclose(a.sum(1), 1.0, atol=1e-3):
        raise ValueError("probs rows must be probability distributions (softmax outputs, not logits)")
    return a


# ---------------------------------------------------------------------------------------------
# single-label classification


def _mcc(cm: np.ndarray) -> float:
    """Gorodkin's multi-class MCC from a confusion matrix (rows true): (c s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t))."""
    cm = cm.astype(np.float64)  # s^2 * s^2 overflows int64 from about 55k examples
    s, c, t, p = cm.sum(), np.trace(cm), cm.sum(1), cm.sum(0)
    den = (s * s - p @ p) * (s * s - t @ t)
    return float((c * s - p @ t) / np.sqrt(den)) if den > 0 else 0.0


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str],
                           probs: np.ndarray | None = None) -> dict:
    """Accuracy, precision/recall/F1 (macro, micro, weighted), MCC, per-class scores and the confusion matrix.

    y_true, y_pred: class ids into ``labels``. probs: (N, L) predicted distributions; adds ``ece`` and
    ``log_loss``. Macro averages run over the labels that occur in y_true or y_pred (scikit-learn's
    default): a label absent from both has no defined score. ``per_class`` lists every label.
    """
    names = _check_labels(labels)
    L = len(names)
    t, p = _class_ids(y_true, "y_true", L), _class_ids(y_pred, "y_pred", L)
    if len(t) != len(p):
        raise BertkitError(f"{len(t)} gold labels but {len(p)} predictions")
    if len(t) == 0:
        raise BertkitError("nothing to evaluate: no examples")
    n = len(t)
    cm = np.bincount(t * L + p, minlength=L * L).reshape(L, L)  # (L true, L predicted)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    fp, fn = predicted - tp, support - tp
    prec, rec, f1 = _prf(tp, fp, fn)
    present = (support + predicted) > 0
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    out = {
        "accuracy": float(tp.sum() / n),
        "macro_precision": float(prec[present].mean()),
        "macro_recall": float(rec[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "micro_f1": float(micro[2]),
        "weighted_f1": float(f1 @ support / n),
        "mcc": _mcc(cm),
        "per_class": _per_class(names, tp, fp, fn),
        "confusion_matrix": cm.tolist(),
        "n": n,
    }
    if probs is not None:
        a = _check_probs(probs, n, L)
        out["ece"] = expected_calibration_error(a, t)
        # Clipped as scikit-learn did for years, so one confident mistake costs ~34.5 nats, not inf.
        out["log_loss"] = float(-np.log(np.clip(a[np.arange(n), t], 1e-15, 1.0)).mean())
    return out


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): equal-width bins over (0, 1], sum over bins of n_b / N * |acc_b - conf_b|.

    probs: (N, L). Bin b is (b / n_bins, (b + 1) / n_bins], its edges taken from np.linspace as in the
    paper's reference code, so a confidence on an edge falls in the lower bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    a = np.asarray(probs, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"probs must be (N, L), got shape {a.shape}")
    t = _class_ids(y_true, "y_true", a.shape[1])
    if len(t) == 0:
        raise BertkitError("nothing to evaluate: no examples")
    a = _check_probs(a, len(t), a.shape[1])
    conf, correct = a.max(1), (a.argmax(1) == t).astype(np.float64)
    uppers = np.linspace(0.0, 1.0, n_bins + 1)[1:]
    b = np.minimum(np.searchsorted(uppers, conf, side="left"), n_bins - 1)
    # n_b * |acc_b - conf_b| = |sum of correct in b - sum of conf in b|
    gaps = np.abs(np.bincount(b, correct, n_bins) - np.bincount(b, conf, n_bins))
    return float(gaps.sum() / len(t))


# ---------------------------------------------------------------------------------------------
# multi-label classification


def _indicator(y, name: str, n_labels: int) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 2 or a.shape[1] != n_labels:
        raise BertkitError(f"{name} has shape {a.shape}, expected (N, {n_labels}): one 0/1 column per label")
    if not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return a.astype(bool)


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Subset accuracy, micro/macro precision/recall/F1, Hamming loss and per-class scores of (N, L) 0/1 arrays.

    Macro averages run over all L columns, as scikit-learn does for indicator matrices.
    """
    names = _check_labels(labels)
    t, p = _indicator(y_true, "y_true", len(names)), _indicator(y_pred, "y_pred", len(names))
    if len(t) != len(p):
        raise BertkitError(f"{len(t)} gold rows but {len(p)} predicted rows")
    if len(t) == 0:
        raise BertkitError("nothing to evaluate: no examples")
    tp, fp, fn = (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)
    prec, rec, f1 = _prf(tp, fp, fn)
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    return {
        "subset_accuracy": float((t == p).all(1).mean()),
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "micro_f1": float(micro[2]),
        "macro_precision": float(prec.mean()),
        "macro_recall": float(rec.mean()),
        "macro_f1": float(f1.mean()),
        "hamming_loss": float((t != p).mean()),
        "per_class": _per_class(names, tp, fp, fn),
        "n": len(t),
    }


# ---------------------------------------------------------------------------------------------
# regression


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (scipy.stats.rankdata's 'average')."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]  # start of each run of equal values
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(first) - 1]  # mean of ranks starts+1 .. ends
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if (x == x[0]).all() or (y == y[0]).all():
        return 0.0  # undefined; tested by value, not by the rounding noise of x - x.mean()
    dx, dy = x - x.mean(), y - y.mean()
    return float(np.clip(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)), -1.0, 1.0))


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """Pearson and Spearman correlation (average ranks for ties), MSE, MAE and R^2 (STS-B style)."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got shapes {t.shape} and {p.shape}")
    if len(t) != len(p):
        raise BertkitError(f"{len(t)} gold values but {len(p)} predictions")
    if len(t) == 0:
        raise BertkitError("nothing to evaluate: no examples")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise BertkitError("regression targets and predictions must be finite numbers")
    err = p - t
    # Constancy tested by value: (0.1, 0.1, 0.1) - its mean is not exactly 0 and would give R^2 = -1e34.
    ss_res, ss_tot = err @ err, 0.0 if (t == t[0]).all() else ((t - t.mean()) ** 2).sum()
    # A constant y_true leaves R^2 undefined: 1 for a perfect fit, else 0 (scikit-learn's force_finite).
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float(ss_res == 0)
    return {
        "pearson": _pearson(t, p),
        "spearman": _pearson(_average_ranks(t), _average_ranks(p)),
        "mse": float(ss_res / len(t)),
        "mae": float(np.abs(err).mean()),
        "r2": float(r2),
        "n": len(t),
    }


# ---------------------------------------------------------------------------------------------
# token classification (BIO / IOB2 tags)


def entity_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro precision/recall/F1 over exact (type, start, end) matches, per-type scores, token accuracy.

    One list of BIO tags per sentence; an entity never crosses a sentence boundary.
    """
    if len(true_tags) != len(pred_tags):
        raise BertkitError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted sentences")
    gold, pred = set(), set()  # (sentence, type, start, end)
    right = total = 0
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise BertkitError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted tags")
        try:
            gold.update((i, *span) for span in bio_entities(t))
            pred.update((i, *span) for span in bio_entities(p))
        except ValueError as e:
            raise BertkitError(f"sentence {i}: {e}") from None
        right += sum(a == b for a, b in zip(t, p))
        total += len(t)
    if total == 0:
        raise BertkitError("nothing to evaluate: no tokens")
    hits = gold & pred
    g, q, h = (Counter(e[1] for e in s) for s in (gold, pred, hits))
    types = sorted(g.keys() | q.keys())
    p_, r_, f_ = _prf(len(hits), len(pred) - len(hits), len(gold) - len(hits))
    return {
        "precision": float(p_),
        "recall": float(r_),
        "f1": float(f_),
        "per_type": _per_class(types, [h[k] for k in types], [q[k] - h[k] for k in types],
                               [g[k] - h[k] for k in types]),
        "token_accuracy": right / total,
        "n_entities": len(gold),
        "n": len(true_tags),
    }


# ---------------------------------------------------------------------------------------------
# extractive question answering (SQuAD v1.1 / v2.0)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def squad_normalize(s: str) -> str:
    """The official SQuAD normalisation: lower case, drop punctuation, drop a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _squad_f1(prediction: str, answer: str) -> float:
    p, a = squad_normalize(prediction).split(), squad_normalize(answer).split()
    if not p or not a:
        return float(p == a)  # the v2.0 script's rule: abstaining is right only on a no-answer question
    same = sum((Counter(p) & Counter(a)).values())
    return 2 * same / (len(p) + len(a))  # = 2PR / (P + R) with P = same/len(p), R = same/len(a)


def squad_metrics(predictions: dict[str, str], gold: dict[str, list[str]]) -> dict:
    """Exact match and token F1 in percent, each the max over a question's gold answers, as the official scripts.

    gold: question id -> answer texts; an empty list (or answers that normalise to "") means no answer
    (SQuAD v2.0), which a prediction gets right by being "" after normalisation. A question missing from
    ``predictions`` counts as answered "". With both kinds present, adds has_answer_* and no_answer_*.
    """
    if not gold:
        raise BertkitError("nothing to evaluate: no gold questions")
    em, f1, answerable = [], [], []
    for qid, answers in gold.items():
        if isinstance(answers, str):
            raise ValueError(f"gold answers of {qid!r} must be a list of strings, not a string")
        answers = [a for a in answers if squad_normalize(a)] or [""]
        prediction = predictions.get(qid, "")
        em.append(max(float(squad_normalize(prediction) == squad_normalize(a)) for a in answers))
        f1.append(max(_squad_f1(prediction, a) for a in answers))
        answerable.append(answers != [""])
    em, f1, answerable = np.array(em), np.array(f1), np.array(answerable)
    out = {"exact_match": 100 * float(em.mean()), "f1": 100 * float(f1.mean()), "n": len(em),
           "n_missing": sum(qid not in predictions for qid in gold)}
    if answerable.any() and not answerable.all():
        for name, mask in (("has_answer", answerable), ("no_answer", ~answerable)):
            out[f"{name}_exact_match"] = 100 * float(em[mask].mean())
            out[f"{name}_f1"] = 100 * float(f1[mask].mean())
            out[f"{name}_n"] = int(mask.sum())
    return out


# ---------------------------------------------------------------------------------------------
# plots


def plot_confusion(matrix: list[list[int]], labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A PNG of a confusion matrix (rows true, columns predicted): counts in the cells, colour = share of the row.

    Colouring by row keeps rare classes visible next to frequent ones.
    """
    from bertkit.plots import plt  # matplotlib on the Agg backend, loaded only when a plot is asked for

    cm = np.asarray(matrix, dtype=np.int64)
    L = len(labels)
    if cm.shape != (L, L):
        raise ValueError(f"confusion matrix has shape {cm.shape}, expected ({L}, {L}) for {L} labels")
    share = _ratio(cm, cm.sum(1, keepdims=True))
    side = min(max(4.0, 0.45 * L + 2.5), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")  # keeps long tick labels in frame
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    size = max(7.0, min(12.0, 120.0 / L))
    for i in range(L):
        for j in range(L):
            colour = "white" if share[i, j] > 0.5 else ("black" if cm[i, j] else "0.6")
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=size, color=colour)
    rotate = L > 4 or max(len(str(x)) for x in labels) > 6
    ax.set_xticks(range(L), [str(x) for x in labels], rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  fontsize=size)
    ax.set_yticks(range(L), [str(x) for x in labels], fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
