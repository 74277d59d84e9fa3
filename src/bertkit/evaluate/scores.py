"""A task's metrics from a model's outputs on labelled items: what fine-tuning reports on its dev and test
sets and what `bertkit evaluate` reports on a file, computed by the one function so they agree exactly."""

from __future__ import annotations

import math

import torch

from bertkit.encoding.bio import orphan_inside_tags
from bertkit.encoding.inputs import Encoded
from bertkit.evaluate import metrics as M
from bertkit.inference.batches import pool_windows
from bertkit.inference.reading import Reading
from bertkit.objectives import IGNORE_INDEX, classification_loss, token_classification_loss


def score(items: list[Encoded], logits: list, task: str, problem_type: str, labels: list[str], reading: Reading,
          context=None) -> dict:
    """Metrics of outputs (bertkit.inference.forward) against the items' targets. task: classification, ner or
    qa; context: the tagged sentences (ner) or (examples, windows) (qa)."""
    if task == "qa":
        from bertkit.inference.qa import decode_answers
        examples, windows = context
        allow_null = any(not ex.answers for ex in examples)
        answers = decode_answers(examples, windows, logits, max_answer_length=reading.max_answer_length,
                                 allow_no_answer=allow_null)
        gold = {ex.id: [t for t, _ in ex.answers] for ex in examples}
        return M.squad_metrics({k: v["text"] for k, v in answers.items()}, gold)
    scores = Scores(task, problem_type, labels, reading)
    scores.add(items, logits, context)
    return scores.result()


class Scores:
    """Classification or NER metrics gathered a chunk at a time (`bertkit evaluate` streams a file of any size):
    only what the metrics need is kept (targets and logits, or gold and predicted tags and the loss sum), never
    the texts. Adding every item at once or in chunks gives the same result: score() is this with one chunk."""

    def __init__(self, task: str, problem_type: str, labels: list[str], reading: Reading):
        if task not in ("classification", "ner"):
            raise ValueError(f"Scores gathers classification and ner metrics, not {task!r}")
        self.task, self.problem_type, self.labels, self.reading = task, problem_type, labels, reading
        self.targets: list = []
        self.logits: list[torch.Tensor] = []  # classification: one (L,) row per text, windows pooled
        self.gold: list[list[str]] = []
        self.pred: list[list[str]] = []
        self.orphans = 0
        self.losses: list[float] = []  # ner: each sentence's summed loss, added up (exactly: math.fsum) at the end
        self.tokens = 0  # tagged tokens, the ner loss's denominator

    def add(self, items: list[Encoded], logits: list, context=None) -> None:
        """One chunk: its items, their outputs and (ner) their tagged sentences."""
        if self.task == "classification":
            if self.reading.window_stride:
                items, logits = pool_windows(items, logits, self.reading.window_pool)
            self.targets += [it.target for it in items]
            self.logits += logits
            return
        from bertkit.inference.tokens import word_tags
        labels = self.labels
        for item, lg, sent in zip(items, logits, context):
            self.gold.append(list(sent.tags))
            self.pred.append([t for t, _ in word_tags(item.word_ids, lg, labels, len(sent.tokens))])
            firsts = [p for p, w in enumerate(item.word_ids) if w is not None and (p == 0 or item.word_ids[p - 1] != w)]
            self.orphans += orphan_inside_tags([labels[k] for k in lg[firsts].argmax(-1).tolist()])
            self.losses.append(float(token_classification_loss(lg, torch.tensor(item.target), reduction="sum")))
            self.tokens += sum(t != IGNORE_INDEX for t in item.target)

    def merge(self, other: Scores) -> None:
        """Append the items another Scores gathered (the next chunk): the result is as if they were added here."""
        self.targets += other.targets
        self.logits += other.logits
        self.gold += other.gold
        self.pred += other.pred
        self.orphans += other.orphans
        self.losses += other.losses
        self.tokens += other.tokens

    def result(self) -> dict:
        if self.task == "ner":
            # how many I- tags plain per-token argmax would have left without their B- (the decoding repairs them)
            return {"loss": math.fsum(self.losses) / max(1, self.tokens), **M.entity_metrics(self.gold, self.pred),
                    "argmax_orphan_inside_tags": self.orphans}
        labels, reading, problem_type = self.labels, self.reading, self.problem_type
        stacked = torch.stack(self.logits)
        y = torch.tensor(self.targets)
        if problem_type == "single_label":
            result = M.classification_metrics(y.tolist(), stacked.argmax(-1).tolist(), labels,
                                              stacked.softmax(-1).numpy())
        elif problem_type == "multi_label":
            result = M.multilabel_metrics(y.numpy(), (stacked.sigmoid() >= reading.threshold).int().numpy(), labels)
        else:
            result = M.regression_metrics(y.tolist(), stacked.squeeze(-1).tolist())
        result["loss"] = float(classification_loss(stacked, y, problem_type))
        return result
