"""Text classification: a label (or labels, or a value) per text or text pair, long texts read as windows."""

from __future__ import annotations

import torch

from bertkit.encoding.inputs import encode_texts
from bertkit.errors import BertkitError
from bertkit.inference.base import Predictor, check_texts
from bertkit.inference.batches import forward, pool_windows


class TextClassifier(Predictor):
    """    clf = TextClassifier.load("runs/sentiment/model")
    clf(["a gorgeous, witty film"])
    # [{"label": "positive", "score": 0.97, "probs": {"negative": 0.03, "positive": 0.97}}]
    """

    tasks = ("sequence_classification",)
    what = "text classifier (a sequence-classification model)"

    @property
    def problem_type(self) -> str:
        return self.model.problem_type

    def logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> torch.Tensor:
        """(N, L) logits, one row per text: the pooled windows' when a text is longer than max_length and the model
        reads windows (window_stride > 0), else those of the text truncated to max_length."""
        return self._logits(texts, pairs, batch_size)[0]

    def _logits(self, texts, pairs, batch_size: int) -> tuple[torch.Tensor, list[int | None]]:
        """logits, and per text the words truncation kept from the model (None: read whole)."""
        texts = check_texts(texts)
        if pairs is not None:
            pairs = check_texts(pairs, "second text")
            if len(pairs) != len(texts):
                raise BertkitError(f"{len(texts)} texts but {len(pairs)} second texts")
        r = self.reading
        items = encode_texts(self.tokenizer, texts, pairs, r.max_length, r.window_stride)
        docs, logits = pool_windows(items, forward(self.model, items, self.tokenizer.pad_id, batch_size),
                                    r.window_pool)
        return torch.stack(logits), [d.unread_words for d in docs]

    def __call__(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> list[dict]:
        """single_label: {"label", "score", "probs"}; multi_label: {"labels", "probs"} (labels at or above the
        threshold); regression: {"value"}. One dict per text; a text cut at max_length (a model without windows)
        also gets {"truncated": {"words_not_read": N}}, so a prediction never hides that it saw part of a text."""
        out = []
        logits, unread = self._logits(texts, pairs, batch_size)
        # one conversion for the whole batch: iterating over tensor rows costs more than the model on short texts
        if self.problem_type == "regression":
            rows = logits[:, 0].tolist()
        else:
            rows = (logits.sigmoid() if self.problem_type == "multi_label" else logits.softmax(-1)).tolist()
        for p, cut in zip(rows, unread):
            if self.problem_type == "regression":
                out.append({"value": p})
            elif self.problem_type == "multi_label":
                out.append({"labels": [n for n, x in zip(self.labels, p) if x >= self.reading.threshold],
                            "probs": {n: round(x, 6) for n, x in zip(self.labels, p)}})
            else:
                best = max(range(len(p)), key=p.__getitem__)
                out.append({"label": self.labels[best], "score": round(p[best], 6),
                            "probs": {n: round(x, 6) for n, x in zip(self.labels, p)}})
            if cut is not None:
                out[-1]["truncated"] = {"words_not_read": cut}
        return out

    predict = __call__
