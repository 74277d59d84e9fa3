"""bertkit: BERT end to end — vocabulary, pre-training, fine-tuning, evaluation, interpretation, speed, serving."""

from bertkit.checkpoint import Loaded, load_model, save_model
from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.model import (
    Bert,
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    build_model,
)
from bertkit.tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = [
    "BertConfig", "BertkitError", "Tokenizer", "Bert", "BertModel", "BertForMaskedLM", "BertForPreTraining",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering", "build_model",
    "Loaded", "load_model", "save_model",
]
