"""Prediction from a fine-tuned model directory: `TextClassifier` and `TokenTagger`.

    from bertkit.predict import TextClassifier
    TextClassifier.load("runs/sentiment/model").predict(["a gorgeous, witty film"])
    # [{"label": "positive", "probs": {"negative": 0.03, "positive": 0.97}}]
"""

from __future__ import annotations

from pathlib import Path

import torch

from bertkit.checkpoint import load_model
from bertkit.errors import BertkitError
from bertkit.evaluate.metrics import bio_entities
from bertkit.finetune import Encoded, pool_windows, predict_logits, predicted_word_tags
from bertkit.model.precision import for_inference


class TextClassifier:
    """A sequence-classification model: a label (or labels, or a value) per text or text pair."""

    def __init__(self, model, tokenizer, labels: list[str], max_length: int = 512):
        self.model, self.tokenizer, self.labels, self.max_length = model.eval(), tokenizer, labels, max_length
        self.problem_type = model.problem_type

    @classmethod
    def load(cls, folder: str | Path, max_length: int = 512, precision: str = "fp32",
             compile: bool = False) -> TextClassifier:
        """precision: fp32, bf16 or int8 (CPU; see bertkit.model.precision); compile: torch.compile on a few
        fixed shapes (bertkit.model.compiled), for long-running use: compiling takes ~10 s a shape."""
        loaded = load_model(folder)
        if loaded.model.task != "sequence_classification":
            raise BertkitError(f"{folder} holds a {loaded.model.task} model, not a text classifier")
        if loaded.tokenizer is None:
            raise BertkitError(f"{folder} has no tokenizer files")
        labels = loaded.labels or [f"LABEL_{i}" for i in range(loaded.model.num_labels)]
        return cls(for_inference(loaded.model, precision, compile), loaded.tokenizer, labels,
                   min(max_length, loaded.model.config.max_position_embeddings))

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64,
                threshold: float = 0.5, window_stride: int = 0, window_pool: str = "mean") -> list[dict]:
        """window_stride > 0: a text longer than max_length is read as windows sharing that many tokens, and
        their logits pooled (mean or max) — no length limit; otherwise long texts are truncated."""
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise BertkitError("every text to classify must be a non-empty string")
        if window_stride and pairs is None:
            items = [Encoded(w.ids, w.type_ids, None, doc=d) for d, t in enumerate(texts)
                     for w in self.tokenizer.encode_windows(t, max_length=self.max_length, stride=window_stride)]
        else:
            enc = self.tokenizer.encode_all(texts, pairs, max_length=self.max_length)
            items = [Encoded(e.ids, e.type_ids, None, doc=d) for d, e in enumerate(enc)]
        logits = predict_logits(self.model, items, self.tokenizer.pad_id, "classification", batch_size)
        _, logits = pool_windows(items, logits, window_pool)
        out = []
        for lg in logits:
            if self.problem_type == "regression":
                out.append({"value": float(lg[0])})
            elif self.problem_type == "multi_label":
                p = lg.sigmoid().tolist()
                out.append({"labels": [n for n, x in zip(self.labels, p) if x >= threshold],
                            "probs": {n: round(x, 6) for n, x in zip(self.labels, p)}})
            else:
                p = lg.softmax(-1).tolist()
                best = max(range(len(p)), key=p.__getitem__)
                out.append({"label": self.labels[best], "probs": {n: round(x, 6) for n, x in zip(self.labels, p)}})
        return out


class TokenTagger:
    """A token-classification (NER) model: entities with character spans in the input text."""

    def __init__(self, model, tokenizer, tags: list[str], max_length: int = 512):
        self.model, self.tokenizer, self.tags, self.max_length = model.eval(), tokenizer, tags, max_length

    @classmethod
    def load(cls, folder: str | Path, max_length: int = 512, precision: str = "fp32",
             compile: bool = False) -> TokenTagger:
        loaded = load_model(folder)
        if loaded.model.task != "token_classification" or not loaded.labels:
            raise BertkitError(f"{folder} holds no token-classification model with a tag list")
        return cls(for_inference(loaded.model, precision, compile), loaded.tokenizer, loaded.labels,
                   min(max_length, loaded.model.config.max_position_embeddings))

    @torch.no_grad()
    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """For each text: its words (as the tokenizer splits them; one per character for Chinese), a tag per word,
        and entities {type, text, start, end} with end-exclusive character offsets."""
        enc = self.tokenizer.encode_all(texts, max_length=self.max_length)
        items = [Encoded(e.ids, e.type_ids, None, e.word_ids) for e in enc]
        logits = predict_logits(self.model, items, self.tokenizer.pad_id, "ner", batch_size)
        out = []
        for text, e, lg in zip(texts, enc, logits):
            spans: dict[int, list[int]] = {}  # word -> [start, end] characters
            for w, (s, t) in zip(e.word_ids, e.offsets):
                if w is not None:
                    spans.setdefault(w, [s, t])[1] = t
            n = len(spans)
            tags = predicted_word_tags(e.word_ids, lg, self.tags, n)
            entities = []
            for kind, a, b in bio_entities(tags):
                start, end = spans[a][0], spans[b - 1][1]
                entities.append({"type": kind, "text": text[start:end], "start": start, "end": end})
            out.append({"words": [text[spans[w][0]:spans[w][1]] for w in range(n)], "tags": tags,
                        "entities": entities})
        return out
