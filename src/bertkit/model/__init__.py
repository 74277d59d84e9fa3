"""The encoder (bert.py) and its task heads (heads.py)."""

from bertkit.model.bert import Bert, EncoderOutput
from bertkit.model.heads import (
    TASKS,
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    build_model,
)

__all__ = [
    "Bert", "EncoderOutput", "TASKS", "BertModel", "BertForMaskedLM", "BertForPreTraining",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
    "build_model",
]
