"""What every predictor shares: loading a model directory for inference with its reading settings."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import Loaded, load_model
from bertkit.errors import BertkitError
from bertkit.hardware import resolve_device
from bertkit.hub import resolve_model
from bertkit.inference.reading import Reading, resolve
from bertkit.inference.sentence import SentenceModules, read_modules
from bertkit.model.precision import for_inference
from bertkit.tokenizer import Tokenizer


class Predictor:
    """A model ready for inference: the model (in its precision), its tokenizer, labels and reading settings."""

    tasks: tuple[str, ...] = ()
    """The saved tasks (heads) this predictor serves; empty: any."""
    what = "model"
    modules: SentenceModules | None = None
    """A sentence-transformers folder's modules (its Dense head after pooling); None for any other folder."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, labels: list[str] | None, reading: Reading,
                 notes: list[str] | None = None):
        self.model, self.tokenizer, self.reading = model.eval(), tokenizer, reading
        self.labels = labels or [f"LABEL_{i}" for i in range(getattr(model, "num_labels", 0))]
        self.notes = list(notes or [])
        """What the user should hear: reading settings overridden, heads initialised, an old format."""

    @classmethod
    def load(cls, folder: str | Path, *, precision: str = "fp32", compile: bool = False,
             device: str | torch.device | None = None, **reading):
        """A model directory (bertkit or Hugging Face) for inference on `device` (auto, cpu, cuda, cuda:N, mps;
        None: the process's, see bertkit.hardware.resolve_device). reading: settings that override the saved
        ones (max_length=256, window_stride=128, ...); None values keep the saved ones."""
        folder = resolve_model(folder)
        return cls.from_loaded(load_model(folder), folder, precision=precision, compile=compile, device=device,
                               **reading)

    @classmethod
    def from_loaded(cls, loaded: Loaded, folder: str | Path, *, precision: str = "fp32", compile: bool = False,
                    device: str | torch.device | None = None, **reading):
        """As load, for a model directory already loaded (folder: where it came from, for settings and errors);
        the model is moved to `device`."""
        folder = Path(folder)
        device = resolve_device(device, precision=precision)  # before any work: a missing GPU is one line
        task = loaded.model.task
        if cls.tasks and task not in cls.tasks:
            raise BertkitError(f"{folder} holds a {task} model, not a {cls.what}")
        if loaded.tokenizer is None:
            raise BertkitError(f"{folder} has no tokenizer files")
        config = loaded.model.config
        modules = read_modules(folder, config.hidden_size, config.max_position_embeddings)
        if modules and modules.lowercase and not loaded.tokenizer.normalizer_settings()["lowercase"]:
            raise BertkitError(f"{folder / 'sentence_bert_config.json'}: do_lower_case over a tokenizer that keeps "
                               "case is not supported")
        saved = Reading.from_dict({**(modules.reading if modules else {}), **loaded.reading},
                                  folder / ("bertkit.json" if loaded.reading or not modules else "modules.json"))
        settings, notes = resolve(saved, reading, config, folder)
        model = for_inference(loaded.model.to(device), precision, compile)
        predictor = cls(model, loaded.tokenizer, loaded.labels, settings, loaded.notes + notes)
        predictor.modules = modules
        return predictor


def check_texts(texts, what: str = "text") -> list[str]:
    """A list of non-empty strings (a single string is one text). None, a non-sequence or an empty list is an
    error, as in transformers' pipelines ("At least one input is required.")."""
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
        raise BertkitError(f"give a {what} (a string) or a list of them, got {type(texts).__name__} {texts!r:.60}")
    texts = list(texts)
    if not texts:
        raise BertkitError(f"no {what} given: give at least one (a string or a non-empty list of strings)")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise BertkitError(f"every {what} must be a non-empty string, got {t!r}")
    return texts
