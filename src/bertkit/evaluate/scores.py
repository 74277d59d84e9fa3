"""A task's metrics from a model's outputs on labelled items: what fine-tuning reports on its dev and test
sets and what `bertkit evaluate` reports on a file, computed by the one function so they agree exactly."""

from __future__ import annotations

import torch

from bertkit.evaluate import metrics as M
from bertkit.inference.batches import Encoded, pool_windows
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
    if task == "ner":
        from bertkit.inference.tokens import word_tags
        gold, pred, orphans = [], [], 0
        for item, lg, sent in zip(items, logits, context):
            gold.append(list(sent.tags))
            pred.append([t for t, _ in word_tags(item.word_ids, lg, labels, len(sent.tokens))])
            firsts = [p for p, w in enumerate(item.word_ids) if w is not None and (p == 0 or item.word_ids[p - 1] != w)]
            orphans += M.orphan_inside_tags([labels[k] for k in lg[firsts].argmax(-1).tolist()])
        total = sum(token_classification_loss(lg, torch.tensor(it.target), reduction="sum")
                    for it, lg in zip(items, logits))
        n = max(1, sum(sum(t != IGNORE_INDEX for t in it.target) for it in items))
        # how many I- tags plain per-token argmax would have left without their B- (the decoding repairs them)
        return {"loss": float(total / n), **M.entity_metrics(gold, pred), "argmax_orphan_inside_tags": orphans}
    if reading.window_stride:
        items, logits = pool_windows(items, logits, reading.window_pool)
    stacked = torch.stack(logits)
    y = torch.tensor([it.target for it in items])
    if problem_type == "single_label":
        result = M.classification_metrics(y.tolist(), stacked.argmax(-1).tolist(), labels,
                                          stacked.softmax(-1).numpy())
    elif problem_type == "multi_label":
        result = M.multilabel_metrics(y.numpy(), (stacked.sigmoid() >= reading.threshold).int().numpy(), labels)
    else:
        result = M.regression_metrics(y.tolist(), stacked.squeeze(-1).tolist())
    result["loss"] = float(classification_loss(stacked, y, problem_type))
    return result

