"""Inference: a model directory in, predictions out, for every task, reading as the model was trained to.

    from bertkit import pipeline
    clf = pipeline("runs/sentiment/model")          # the right predictor for the saved task
    clf(["a gorgeous, witty film"])                 # [{"label": "positive", "score": 0.97, "probs": {...}}]
    pipeline("runs/ner/model")(["Alice moved to Paris"])[0]["entities"]
    pipeline("runs/qa/model")(["where does Alice live?"], ["Alice lives in Paris."])
    pipeline("runs/mini/model")(["the capital of france is [MASK] ."])   # fill-mask
    pipeline("data/minilm-l6").encode(["a witty film"])                  # sentence vectors

This package owns the batched forward pass over encoded inputs (bertkit.encoding, which sits below it and below
training data), windows over long texts, precision (fp32 / bf16 / int8, compiled), decoding, files of any size a
chunk at a time (stream.py), and the reading settings a model was saved with. Evaluation, explanation and serving
are built on it; training imports it, never the other way round.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bertkit.checkpoint import load_model
from bertkit.errors import BertkitError
from bertkit.hub import resolve_model
from bertkit.inference.base import Predictor
from bertkit.inference.batches import forward, pool_windows
from bertkit.inference.embed import Embedder, embed_texts
from bertkit.inference.qa import QuestionAnswerer
from bertkit.inference.reading import Reading
from bertkit.inference.text import TextClassifier
from bertkit.inference.tokens import FillMask, TokenTagger

PREDICTORS: dict[str, type[Predictor]] = {
    "sequence_classification": TextClassifier,
    "token_classification": TokenTagger,
    "question_answering": QuestionAnswerer,
    "masked_lm": FillMask,
    "pretraining": FillMask,
    "encoder": Embedder,
}
KINDS = {"text-classification": TextClassifier, "token-classification": TokenTagger,
         "question-answering": QuestionAnswerer, "fill-mask": FillMask, "feature-extraction": Embedder}


def pipeline(model_dir: str | Path, task: str | None = None, *, precision: str = "fp32", compile: bool = False,
             device: str | torch.device | None = None, **reading) -> Predictor:
    """The predictor for a model directory: by its saved head, or `task` (transformers' pipeline names:
    text-classification, token-classification, question-answering, fill-mask, feature-extraction — the last
    works on any model), on `device` (auto, cpu, cuda, cuda:N, mps; None: the process's, by default auto).
    reading: settings overriding the saved ones (see Reading)."""
    if task is not None and task not in KINDS:
        raise BertkitError(f"unknown task {task!r}; choose one of {', '.join(KINDS)}")
    model_dir = resolve_model(model_dir)  # a Hugging Face Hub name: its snapshot in the HF cache
    loaded = load_model(model_dir)
    cls = KINDS[task] if task else PREDICTORS[loaded.model.task]
    return cls.from_loaded(loaded, model_dir, precision=precision, compile=compile, device=device, **reading)


__all__ = ["pipeline", "Predictor", "Reading", "TextClassifier", "TokenTagger", "QuestionAnswerer", "FillMask",
           "Embedder", "forward", "pool_windows", "embed_texts", "PREDICTORS"]
