"""Model directories: `config.json` + `model.safetensors` + tokenizer files (+ `labels.json` for task models).

Written atomically (a temporary sibling directory, then a rename), loaded strictly. `load_model` also
accepts a Hugging Face BERT folder and converts it in memory (see convert.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.config import BertConfig, read_json
from bertkit.errors import BertkitError
from bertkit.folders import write_atomically
from bertkit.model.heads import LABELLED_TASKS, TASKS, build_model
from bertkit.tokenizer import Tokenizer

FORMAT = "bertkit-model/1"
CONFIG, WEIGHTS, LABELS = "config.json", "model.safetensors", "labels.json"


@dataclass
class Loaded:
    """What a model directory holds."""

    model: nn.Module
    tokenizer: Tokenizer | None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    """What the loader had to do that a user should hear of (heads initialised, weights ignored)."""


def model_meta(model: nn.Module, labels: list[str] | None = None) -> dict:
    """config.json content for a task model."""
    meta = {"format": FORMAT, "task": model.task, "model": model.config.to_dict()}
    if model.task in LABELLED_TASKS:
        meta["num_labels"] = model.num_labels
    if model.task == "sequence_classification":
        meta["problem_type"] = model.problem_type
    return meta


def save_model(folder: str | Path, model: nn.Module, tokenizer: Tokenizer | None = None,
               labels: list[str] | None = None) -> Path:
    """Write a bertkit model directory. An existing directory is replaced only once the new one is complete."""
    folder = Path(folder)
    if labels is not None and model.task in LABELLED_TASKS and len(labels) != model.num_labels:
        raise BertkitError(f"{len(labels)} labels given for a model with {model.num_labels} outputs")
    if tokenizer is not None:
        check_vocab(tokenizer, model.config, folder)

    return write_atomically(folder, lambda tmp: write_model_files(tmp, model, tokenizer, labels))


def write_model_files(folder: Path, model: nn.Module, tokenizer: Tokenizer | None = None,
                      labels: list[str] | None = None) -> None:
    """config.json, model.safetensors, tokenizer files and labels.json into an existing folder."""
    (folder / CONFIG).write_text(json.dumps(model_meta(model, labels), indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(folder)
    if labels is not None:
        write_labels(folder, labels)


def write_labels(folder: Path, labels: list[str]) -> None:
    """labels.json: the label (or tag) of each output, in order."""
    (folder / LABELS).write_text(json.dumps({"labels": list(labels)}, indent=2, ensure_ascii=False) + "\n",
                                 encoding="utf-8")


def is_hf_folder(folder: Path) -> bool:
    meta = read_json(folder / CONFIG)
    return "format" not in meta and meta.get("model_type") == "bert"


def load_model(folder: str | Path, task: str | None = None, num_labels: int | None = None,
               problem_type: str | None = None, device: str | torch.device = "cpu") -> Loaded:
    """Load a bertkit model directory, or a Hugging Face BERT folder converted on the fly.

    task, num_labels, problem_type: the head wanted, default what the folder holds. Asking for another
    (a classifier on a pre-trained encoder, say) keeps the encoder, initialises the new head and says so
    in `Loaded.notes`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BertkitError(f"{folder}: no such model directory")
    if not (folder / CONFIG).is_file():
        raise BertkitError(f"{folder}: no {CONFIG}; not a model directory")
    if is_hf_folder(folder):
        from bertkit.convert import load_hf
        loaded = load_hf(folder, task=task, num_labels=num_labels, problem_type=problem_type)
    else:
        loaded = _load_bertkit(folder, task, num_labels, problem_type)
    loaded.model.to(device)
    loaded.model.source = str(folder)  # named by errors about what the model computes (require_finite)
    return loaded


def require_finite(model: nn.Module, *outputs: torch.Tensor) -> None:
    """A model that computes NaN or infinity (damaged weights, a bad config) is an error naming its folder, never
    a prediction."""
    if not all(bool(torch.isfinite(t).all()) for t in outputs):
        raise BertkitError(f"{getattr(model, 'source', 'the model')}: the model computed NaN or infinite outputs; its "
                           "weights (model.safetensors) or config.json are damaged")


def _load_bertkit(folder: Path, task: str | None, num_labels: int | None, problem_type: str | None) -> Loaded:
    meta = read_json(folder / CONFIG)
    if meta.get("format") != FORMAT:
        raise BertkitError(f"{folder / CONFIG}: neither a bertkit model (format {FORMAT}) nor a Hugging Face "
                           f"BERT config (model_type 'bert')")
    saved_task = meta.get("task")
    if saved_task not in TASKS:
        raise BertkitError(f"{folder / CONFIG}: unknown task {saved_task!r}")
    config = BertConfig.from_dict(meta.get("model", {}))
    tokenizer = load_tokenizer(folder, config)
    state = read_weights(folder / WEIGHTS)
    labels = None
    if (folder / LABELS).is_file():
        labels = read_json(folder / LABELS).get("labels")
        if not isinstance(labels, list) or len(labels) != meta.get("num_labels", len(labels)):
            raise BertkitError(f"{folder / LABELS}: expected a list of {meta.get('num_labels', '?')} labels")
    same = (task in (None, saved_task) and num_labels in (None, meta.get("num_labels"))
            and problem_type in (None, meta.get("problem_type")))
    if same:
        model = build_model(config, saved_task, meta.get("num_labels"), meta.get("problem_type", "single_label"))
        load_state(model, state, folder / WEIGHTS)
        return Loaded(model.eval(), tokenizer, labels)
    # A new head on this encoder, e.g. a classifier on a pre-trained model.
    model = build_model(config, task or saved_task, num_labels, problem_type or "single_label")
    notes = load_into(model, state, folder / WEIGHTS)
    return Loaded(model.eval(), tokenizer, None, notes)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path,
              unused: list[str] = ()) -> list[str]:
    """Load every weight `state` has for `model`; head weights it lacks (or has in another shape) keep their
    fresh init. The encoder must be complete. Returns notes saying what was initialised and what was left."""
    fresh = model.state_dict()
    initialised = sorted(k for k in fresh if k not in state or (
        not k.startswith("bert.") and state[k].shape != fresh[k].shape))
    encoder_missing = [k for k in initialised if k.startswith("bert.") and not k.startswith("bert.pooler")]
    if encoder_missing:
        raise BertkitError(f"{source}: the checkpoint lacks encoder weights, e.g. {encoder_missing[0]} "
                           f"({len(encoder_missing)} in all)")
    unused = sorted(set(unused) | (set(state) - set(fresh)))
    load_state(model, {k: fresh[k] if k in initialised else state[k] for k in fresh}, source)
    notes = []
    if initialised:
        notes.append(f"not in the source, freshly initialised: {', '.join(_groups(initialised))}")
    if unused:
        notes.append(f"in the source but not used by a {model.task} model: {', '.join(_groups(unused))}")
    return notes


def _groups(names: list[str]) -> list[str]:
    return sorted({k.rsplit(".", 1)[0] for k in names})


def load_tokenizer(folder: Path, config: BertConfig) -> Tokenizer | None:
    """The folder's tokenizer, checked against the model's vocabulary; None if it has no tokenizer files."""
    if not ((folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()):
        return None
    tokenizer = Tokenizer.load(folder)
    check_vocab(tokenizer, config, folder)
    return tokenizer


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or from a pytorch_model.bin loaded with weights_only=True."""
    if not path.is_file():
        raise BertkitError(f"{path}: file not found")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except SafetensorError as e:
        raise BertkitError(f"{path}: corrupt or not a safetensors file ({e})") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        raise BertkitError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BertkitError(f"{path}: not a state dict of tensors")
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with one-line errors: every key present, none extra, every shape as the config implies."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weight(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise BertkitError(f"{source}: does not match config.json: {'; '.join(parts)}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise BertkitError(f"{source}: weight {k} has shape {tuple(v.shape)} but config.json implies "
                               f"{tuple(expected[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise BertkitError(f"{source}: weight {k} holds NaN or infinite values; the file is damaged")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def check_vocab(tokenizer: Tokenizer, config: BertConfig, where: Path | str) -> None:
    """Every id the tokenizer can emit must have an embedding row."""
    if tokenizer.vocab_size > config.vocab_size:
        raise BertkitError(f"{where}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                           f"{config.vocab_size}; they must be trained together")
