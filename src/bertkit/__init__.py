"""bertkit: BERT end to end — vocabulary, pre-training, fine-tuning, evaluation, interpretation, speed, serving."""

import os

__version__ = "0.1.0"
"""The one place the version is written: pyproject.toml reads it from here (dynamic), `bertkit --version` prints it."""

# oneDNN caches a compiled primitive per matmul shape (1,024 by default). Unpadded and sparse-MLM batches change
# shape every step, so under bf16 that cache alone grew a pre-training process past 7 GB in 7 minutes; 32 entries
# keep memory flat at no measured cost in speed. Set before torch creates its first primitive; a user's value wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

from bertkit.checkpoint import Loaded, load_model, save_model, write_model_card
from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.inference import pipeline
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

__all__ = [
    "BertConfig", "BertkitError", "Tokenizer", "Bert", "BertModel", "BertForMaskedLM", "BertForPreTraining",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering", "build_model",
    "Loaded", "load_model", "save_model", "write_model_card", "pipeline",
]
