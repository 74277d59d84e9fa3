"""`explain`: every method on one classification input, and `evaluate`: their faithfulness over a data set.

    from bertkit.interpret import explain
    e = explain("runs/sentiment/model", "a gorgeous, witty film", methods=["ig", "occlusion", "lime"])
    e.word_scores["ig"], e.faithfulness["ig"]["aopc_deletion"], e.completeness
    e.save("runs/explain")  # explanation.html, explanation.png (+ attention.png), scores.json
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bertkit.checkpoint import Loaded
from bertkit.encoding.inputs import Word, words_of
from bertkit.errors import BertkitError
from bertkit.inference.text import TextClassifier
from bertkit.interpret.attention import attention_maps, rollout
from bertkit.interpret.attributions import baseline_ids, gradient_attributions, integrated_gradients
from bertkit.interpret.faithfulness import faithfulness as faithfulness_of
from bertkit.interpret.perturbation import lime, occlusion
from bertkit.interpret.report import METHOD_NAMES, write_report
from bertkit.interpret.scoring import Scorer
from bertkit.interpret.words import word_scores

METHODS = ("ig", "gxi", "saliency", "occlusion", "lime", "attention")


@dataclass
class Explanation:
    """What `explain` found. Word lists are aligned with `words`; token lists with `tokens`."""

    text: str
    pair: str | None
    tokens: list[str]
    words: list[Word]
    labels: list[str]
    outputs: dict[str, float]
    """The model's output per label: probabilities (single/multi-label) or values (regression)."""
    target: str
    """The label explained; every score is about this label's output."""
    word_scores: dict[str, list[float]]
    token_scores: dict[str, list[float]] = field(default_factory=dict)
    """Per token, for the methods that work per token (ig, gxi, saliency, attention)."""
    completeness: dict | None = None
    """Integrated gradients' check: sum of attributions against f(input) - f(reference)."""
    lime_fit: dict | None = None
    attention: torch.Tensor | None = None
    """(L, H, T, T) attention probabilities, when the attention method ran."""
    faithfulness: dict[str, dict] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Everything but the attention tensor, as JSON-ready values."""
        return {"text": self.text, "pair": self.pair, "target": self.target, "outputs": self.outputs,
                "notes": self.notes, "tokens": self.tokens,
                "words": [{"text": w.text, "sequence": w.sequence, "start": w.start, "end": w.end,
                           "tokens": list(w.tokens)} for w in self.words],
                "word_scores": self.word_scores, "token_scores": self.token_scores,
                "completeness": self.completeness, "lime_fit": self.lime_fit, "faithfulness": self.faithfulness}

    def summary(self, top: int = 5) -> str:
        """A few lines for a terminal: the output, each method's top words and AOPC, IG's completeness."""
        lines = [f"note: {n}" for n in self.notes]
        lines.append(f"explaining {self.target!r}: " + ", ".join(f"{k} {v:.4f}" for k, v in self.outputs.items()))
        for name, scores in self.word_scores.items():
            best = sorted(zip(scores, (w.text for w in self.words)), key=lambda sw: -sw[0])[:top]
            line = f"{name:>10}: " + "  ".join(f"{w} {s:+.3g}" for s, w in best)
            if self.faithfulness:
                line += f"   (deletion AOPC {self.faithfulness[name]['aopc_deletion']:.4f})"
            lines.append(line)
        if self.faithfulness:
            lines.append(f"{'random':>10}: deletion AOPC {self.faithfulness['random']['aopc_deletion']:.4f}")
        if self.completeness:
            c = self.completeness
            lines.append(f"integrated gradients completeness error {c['error']:.2e} (sum {c['sum']:.5f} vs "
                         f"f(x) - f(reference) {c['delta']:.5f})")
        return "\n".join(lines)

    def save(self, out: str | Path) -> Path:
        """explanation.html (self-contained), explanation.png, attention.png (with attention) and scores.json."""
        return write_report(self, Path(out))


def classifier(model: str | Path | Loaded | TextClassifier, **reading) -> TextClassifier:
    """A sequence-classification model ready for inference, reading as it was saved to (reading: overrides),
    or a one-line error."""
    if isinstance(model, TextClassifier):
        return model
    if isinstance(model, Loaded):
        return TextClassifier.from_loaded(model, getattr(model.model, "source", "the model"), **reading)
    return TextClassifier.load(model, **reading)


def parse_methods(methods) -> list[str]:
    """A list or a comma-separated string of method names, checked."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise BertkitError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                           f"{', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def explain(model: str | Path | Loaded | TextClassifier, text: str, pair: str | None = None, *, target: str | None = None,
            methods=METHODS, steps: int = 50, ig_batch_size: int = 10, lime_samples: int = 300, seed: int = 0,
            faithfulness: bool = True, max_words: int = 10, random_orders: int = 5,
            max_length: int | None = None, window_stride: int | None = None) -> Explanation:
    """Explain a classification model's output for `target` (default: the predicted label) on one text or pair.

    The text is read as the model was saved to read it (max_length, window_stride; None keeps those): a text
    longer than max_length is read as windows sharing `window_stride` tokens, as `TextClassifier` reads it: the
    prediction is the mean of the windows' logits, every window is explained for the same target, and a word's
    score is the mean over the windows holding it (faithfulness AOPCs: the mean over windows). window_stride=0,
    or a sentence pair, truncates instead, with a note.
    faithfulness: also score each method by deletion/insertion AOPC against random rankings (max_words words).
    """
    loaded = classifier(model, max_length=max_length, window_stride=window_stride)
    methods = parse_methods(methods)
    m, tok, labels = loaded.model, loaded.tokenizer, loaded.labels
    if not isinstance(text, str) or not text.strip():
        raise BertkitError("the text to explain is empty")
    if pair is not None and not pair.strip():
        raise BertkitError("the pair text is empty")
    limit, window_stride = loaded.reading.max_length, loaded.reading.window_stride
    enc = tok.encode(text, pair, max_length=limit)
    notes = []
    full = len(tok.encode(text, pair, truncation=None).ids)
    encodings = [enc]
    if full > len(enc.ids) and pair is None and window_stride > 0:
        stride = min(window_stride, limit - 4)
        encodings = tok.encode_windows(text, max_length=limit, stride=stride)
        notes.append(f"the input has {full} tokens but the model reads at most {limit}: it was read as "
                     f"{len(encodings)} windows sharing {stride} tokens; the prediction is the mean of their logits, "
                     "a word's score the mean over the windows holding it (attention, per-token scores and curves "
                     "shown: the first window)")
    elif full > len(enc.ids):
        notes.append(f"the input has {full} tokens but the model reads at most {limit}: the explanation covers "
                     f"the first {len(enc.ids)} tokens (the rest was truncated, shown greyed)")
    windows = [(e, words_of(e, text, pair)) for e in encodings]
    if not any(words for _, words in windows):
        raise BertkitError("the text has no words the tokenizer keeps")
    device = next(m.parameters()).device
    with torch.no_grad():
        logits = torch.stack([m(torch.tensor([e.ids], device=device), None,
                                torch.tensor([e.type_ids], device=device))[0].float() for e in encodings]).mean(0)
    outputs = _outputs(m, logits)
    t = _target_index(target, labels, logits, m)
    options = dict(steps=steps, ig_batch_size=ig_batch_size, lime_samples=lime_samples, seed=seed,
                   faithfulness=faithfulness, max_words=max_words, random_orders=random_orders)
    parts = [_explain_window(m, tok, e, words, t, methods, **options) for e, words in windows if words]
    first = parts[0]
    e = Explanation(text, pair, encodings[0].tokens, first["words"], labels, dict(zip(labels, outputs)), labels[t],
                    first["word_scores"], first["token_scores"], first["completeness"], first["lime_fit"],
                    first["attention"], first["faithfulness"], notes)
    if len(parts) > 1:
        _merge_windows(e, parts, words_of(tok.encode(text, truncation=None), text))
    return e


def _explain_window(m, tok, enc, words: list[Word], t: int, methods: list[str], *, steps: int, ig_batch_size: int,
                    lime_samples: int, seed: int, faithfulness: bool, max_words: int, random_orders: int) -> dict:
    """Every method on one encoded input (one window) for target index t."""
    ids, type_ids = enc.ids, enc.type_ids
    scorer = Scorer(m, type_ids, t)
    token_scores: dict[str, np.ndarray] = {}
    out = {"words": words, "word_scores": {}, "completeness": None, "lime_fit": None, "attention": None,
           "faithfulness": None}
    if "ig" in methods:
        keep = (tok.cls_id, tok.sep_id)
        token_scores["ig"], out["completeness"] = integrated_gradients(
            scorer, ids, baseline_ids(ids, keep, tok.pad_id), steps=steps, batch_size=ig_batch_size)
    if "gxi" in methods or "saliency" in methods:
        gxi, saliency = gradient_attributions(scorer, ids)
        token_scores.update({k: v for k, v in (("gxi", gxi), ("saliency", saliency)) if k in methods})
    if "attention" in methods:
        out["attention"] = attention_maps(m, ids, type_ids)
        token_scores["attention"] = rollout(out["attention"])[0].double().numpy()
    for name in methods:  # in the order asked
        if name in token_scores:
            out["word_scores"][name] = word_scores(token_scores[name], words)
        elif name == "occlusion":
            out["word_scores"][name] = occlusion(scorer, ids, words, tok.mask_id).tolist()
        elif name == "lime":
            coef, out["lime_fit"] = lime(scorer, ids, words, tok.mask_id, samples=lime_samples, seed=seed)
            out["word_scores"][name] = coef.tolist()
    out["token_scores"] = {k: v.tolist() for k, v in token_scores.items()}
    if faithfulness:
        out["faithfulness"] = faithfulness_of(scorer, ids, words, out["word_scores"], tok.mask_id,
                                              max_words=max_words, random_orders=random_orders, seed=seed)
    return out


def _merge_windows(e: Explanation, parts: list[dict], words: list[Word]) -> None:
    """Windows' explanations -> one over `words`, every word of the whole text (token positions in its full
    encoding): word scores averaged over the windows holding the word (a word cut by a window edge counts there
    with the part that window saw), AOPCs averaged over windows, IG's completeness error the worst window's."""
    starts = np.array([w.start for w in words])
    sums = {name: [[] for _ in words] for name in e.word_scores}
    for part in parts:
        for i, w in enumerate(part["words"]):
            j = int(np.searchsorted(starts, w.start, side="right")) - 1  # the word holding this piece's start
            for name, scores in part["word_scores"].items():
                sums[name][j].append(scores[i])
    e.words = words
    e.word_scores = {name: [float(np.mean(v)) if v else 0.0 for v in by] for name, by in sums.items()}
    if e.completeness:
        e.completeness = dict(e.completeness, error=max(p["completeness"]["error"] for p in parts),
                              windows=len(parts))
    if e.faithfulness:
        for name, f in e.faithfulness.items():
            for key in ("aopc_deletion", "aopc_insertion"):
                f[key] = float(np.mean([p["faithfulness"][name][key] for p in parts]))


def _outputs(model, logits: torch.Tensor) -> list[float]:
    kind = model.problem_type
    if kind == "single_label":
        return logits.softmax(-1).tolist()
    return (logits.sigmoid() if kind == "multi_label" else logits).tolist()


def _target_index(target: str | None, labels: list[str], logits: torch.Tensor, model) -> int:
    if target is None:
        return int(logits.argmax()) if model.problem_type != "regression" else 0
    if target not in labels:
        raise BertkitError(f"unknown target label {target!r}; the model's labels are {', '.join(labels)}")
    return labels.index(target)


def evaluate(model: str | Path | Loaded | TextClassifier, texts: list[str], pairs: list[str] | None = None, *,
             methods=METHODS, max_words: int = 10, random_orders: int = 5, seed: int = 0, progress: bool = True,
             **explain_kwargs) -> dict:
    """Faithfulness over many inputs: per method (and the random baseline) the mean deletion and insertion AOPC,
    each input explained for its predicted label. Returns {"n": inputs, "methods": {name: {...}}}."""
    loaded = classifier(model, max_length=explain_kwargs.pop("max_length", None),
                        window_stride=explain_kwargs.pop("window_stride", None))
    methods = parse_methods(methods)
    sums: dict[str, np.ndarray] = {}
    for i in tqdm(range(len(texts)), desc="explaining", unit="text", disable=not progress):
        e = explain(loaded, texts[i], pairs[i] if pairs else None, methods=methods, max_words=max_words,
                    random_orders=random_orders, seed=seed + i, **explain_kwargs)
        for name, f in e.faithfulness.items():
            sums.setdefault(name, np.zeros(2))
            sums[name] += (f["aopc_deletion"], f["aopc_insertion"])
    n = len(texts)
    table = {name: {"aopc_deletion": float(s[0] / n), "aopc_insertion": float(s[1] / n)} for name, s in sums.items()}
    rand = table.get("random", {}).get("aopc_deletion", 0.0)
    for row in table.values():
        row["deletion_over_random"] = row["aopc_deletion"] - rand
    return {"n": n, "max_words": max_words, "methods": table}


def evaluate_file(model: str | Path | Loaded | TextClassifier, path: str | Path, *, limit: int = 100, seed: int = 0,
                  text_column: str = "text", pair_column: str | None = None, **kwargs) -> dict:
    """`evaluate` on a seeded sample of `limit` inputs of a CSV/TSV/JSON-lines file (labels not needed)."""
    from bertkit.data.tasks import read_examples
    loaded = classifier(model, max_length=kwargs.pop("max_length", None),  # a bad model fails before the data
                        window_stride=kwargs.pop("window_stride", None))  # is read
    examples = read_examples(path, text_column=text_column, pair_column=pair_column, require_labels=False)
    if len(examples) > limit:
        examples = [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), limit))]
    pairs = [x.pair for x in examples] if pair_column else None
    return evaluate(loaded, [x.text for x in examples], pairs, seed=seed, **kwargs)


def format_table(result: dict) -> str:
    """The evaluate() result as a Markdown table, best deletion AOPC first, random last."""
    rows = sorted(((k, v) for k, v in result["methods"].items() if k != "random"), key=lambda kv: -kv[1]["aopc_deletion"])
    if "random" in result["methods"]:
        rows.append(("random", result["methods"]["random"]))
    lines = [f"faithfulness over {result['n']} inputs (top-1..{result['max_words']} words masked; higher is better)",
             "| method | deletion AOPC | insertion AOPC | deletion - random |", "|---|---|---|---|"]
    lines += [f"| {METHOD_NAMES.get(k, k)} | {v['aopc_deletion']:.4f} | {v['aopc_insertion']:.4f} | "
              f"{v['deletion_over_random']:+.4f} |" for k, v in rows]
    return "\n".join(lines)
