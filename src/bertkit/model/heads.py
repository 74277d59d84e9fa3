"""Task heads on top of the encoder. Every head returns logits; losses live in `bertkit.objectives`.

Shapes: B batch, T tokens, C hidden, V vocab, L labels.

A task model is `Bert` + one head, named by a task string (the keys of TASKS) that is saved in
bertkit.json (and as the architecture in config.json), so a model directory says what it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.model.bert import Bert, Dropout, EncoderOutput, activation, init_weights

PROBLEM_TYPES = ("single_label", "multi_label", "regression")


class MLMHead(nn.Module):
    """Transform (Linear, activation, LayerNorm), then a decoder, plus a bias. The decoder is the word embeddings
    (tied, as in BERT), or its own (V, C) matrix when config.tie_word_embeddings is false: some checkpoints
    trained it apart, and reading those as tied gives other predictions."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = None if config.tie_word_embeddings else nn.Parameter(
            torch.empty(config.vocab_size, config.hidden_size).normal_(std=config.initializer_range))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (..., C), word_embeddings (V, C) -> logits (..., V)."""
        decoder = word_embeddings if self.decoder is None else self.decoder  # (V, C)
        return F.linear(self.norm(self.act(self.dense(hidden))), decoder, self.bias)


class BertModel(nn.Module):
    """The bare encoder with its pooler: sentence vectors, features, similarity."""

    task = "encoder"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=True)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs) -> EncoderOutput:
        return self.bert(input_ids, attention_mask, token_type_ids, **kwargs)


class BertForMaskedLM(nn.Module):
    """MLM only (no NSP), as RoBERTa-style pre-training uses it. Returns logits (B, T, V)."""

    task = "masked_lm"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=False)
        self.mlm = MLMHead(config)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_mask=None) -> torch.Tensor:
        """mlm_mask (B, T) bool: decode only those positions, giving (N, V) instead of (B, T, V)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).hidden  # (B, T, C)
        return self.mlm(_select(hidden, mlm_mask), self.bert.embeddings.word.weight)  # (B, T, V) or (N, V)


class BertForPreTraining(nn.Module):
    """MLM + next-sentence prediction, the original BERT objective. Returns (mlm (B, T, V), nsp (B, 2))."""

    task = "pretraining"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=True)
        self.mlm = MLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_mask=None):
        """mlm_mask (B, T) bool: decode only those positions, giving mlm logits (N, V) instead of (B, T, V).
        At 15% masking that skips 85% of the decoder, the largest matmul of a small BERT."""
        out = self.bert(input_ids, attention_mask, token_type_ids)
        return self.mlm(_select(out.hidden, mlm_mask), self.bert.embeddings.word.weight), self.nsp(out.pooled)


class BertForSequenceClassification(nn.Module):
    """One vector of L logits per text (or text pair) from the pooled [CLS] vector.

    problem_type picks the loss and how logits are read: single_label (softmax), multi_label (sigmoid per
    label) or regression (L real values).
    """

    task = "sequence_classification"

    def __init__(self, config: BertConfig, num_labels: int = 2, problem_type: str = "single_label"):
        super().__init__()
        if problem_type not in PROBLEM_TYPES:
            raise BertkitError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
        self.config = config
        self.num_labels = num_labels
        self.problem_type = problem_type
        self.bert = Bert(config, pooler=True)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.head(self.bert(input_ids, attention_mask, token_type_ids, cls_only=True))

    def head(self, out: EncoderOutput) -> torch.Tensor:
        """The logits (B, L) from the encoder's output (distillation reads its hidden states beside them)."""
        return self.classifier(self.dropout(out.pooled))  # (B, L)


class BertForTokenClassification(nn.Module):
    """L logits per token (NER tags). Returns (B, T, L)."""

    task = "token_classification"

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.bert = Bert(config, pooler=False)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.head(self.bert(input_ids, attention_mask, token_type_ids))

    def head(self, out: EncoderOutput) -> torch.Tensor:
        """The logits (B, T, L) from the encoder's output."""
        return self.classifier(self.dropout(out.hidden))  # (B, T, L)


class BertForQuestionAnswering(nn.Module):
    """Extractive QA: a start and an end logit per token. Returns (start (B, T), end (B, T))."""

    task = "question_answering"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=False)
        self.qa = nn.Linear(config.hidden_size, 2)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.bert(input_ids, attention_mask, token_type_ids).hidden  # (B, T, C)
        start, end = self.qa(hidden).unbind(dim=-1)  # each (B, T)
        return start, end


def _select(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """hidden (B, T, C) -> the rows where mask (B, T) is True, (N, C); all of hidden when mask is None."""
    return hidden if mask is None else hidden[mask]


def _classifier_dropout(config: BertConfig) -> float:
    return config.hidden_dropout if config.classifier_dropout is None else config.classifier_dropout


TASKS: dict[str, type[nn.Module]] = {
    cls.task: cls
    for cls in (BertModel, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,
                BertForTokenClassification, BertForQuestionAnswering)
}
LABELLED_TASKS = ("sequence_classification", "token_classification")



def build_model(config: BertConfig, task: str = "encoder", num_labels: int | None = None,
                problem_type: str = "single_label") -> nn.Module:
    """A freshly initialised task model."""
    if task not in TASKS:
        raise BertkitError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "sequence_classification":
        return BertForSequenceClassification(config, num_labels or 2, problem_type)
    if task == "token_classification":
        return BertForTokenClassification(config, num_labels or 2)
    return TASKS[task](config)
