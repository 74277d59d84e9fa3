"""The saved heads by name, and what each is called outside bertkit: the one table of task names.

A model folder's task (bertkit.json, the architecture in config.json) is one of these keys; bertkit.model.heads
holds the classes that compute them. No torch here: the CLI reads it to list choices.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    """What a saved head is called outside bertkit, and what it is trained on: the one table of task names."""

    pipeline: str
    """transformers' pipeline name, also the Hub's pipeline_tag."""
    transformers_class: str
    """The transformers class that loads the folder with no missing or unexpected weight."""
    outputs: tuple[str, ...]
    """Its outputs under transformers' names (an ONNX export's output names)."""
    kind: str | None = None
    """The labelled data it is fine-tuned and evaluated on: classification, ner or qa (None: none)."""


HEADS: dict[str, Head] = {
    "encoder": Head("feature-extraction", "AutoModel", ("last_hidden_state", "pooler_output")),
    "pretraining": Head("fill-mask", "BertForPreTraining", ("prediction_logits", "seq_relationship_logits")),
    "masked_lm": Head("fill-mask", "AutoModelForMaskedLM", ("logits",)),
    "sequence_classification": Head("text-classification", "AutoModelForSequenceClassification", ("logits",),
                                    "classification"),
    "token_classification": Head("token-classification", "AutoModelForTokenClassification", ("logits",), "ner"),
    "question_answering": Head("question-answering", "AutoModelForQuestionAnswering",
                               ("start_logits", "end_logits"), "qa"),
}
HEAD_FOR_KIND = {head.kind: task for task, head in HEADS.items() if head.kind}
"""classification / ner / qa (a recipe's --task) -> the head it trains."""
