"""Model directories, stored in Hugging Face's layout so that `transformers` (and tools built on it) open one as it
is:

    config.json        Hugging Face's BertConfig: architectures, sizes, id2label/label2id, problem_type
    model.safetensors  the weights under Hugging Face's names (query, key, value apart; fused into qkv on loading)
    tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
    bertkit.json       {"format": "bertkit-model/2", "task", "bertkit": the config fields Hugging Face's config has
                       no place for, "reading": how the model reads text (max_length, windows, pooling, ...)}
    README.md          a model card (model_card.py)

Written atomically (a temporary sibling directory, then a rename), loaded strictly. `load_model` also reads a plain
Hugging Face BERT folder (heads it lacks are freshly initialised) and bertkit's first layout (bertkit-model/1:
bertkit's own names in config.json and the weights, labels.json beside them), which a later release will drop.
The name and config mapping lives in convert.py, below this module.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.config import BertConfig, read_json
from bertkit.convert import (ARCHITECTURES, config_extras, config_from_hf, config_to_hf, decoder_is_tied,
                             labels_from_hf, normalise_hf_keys, problem_from_hf, state_from_hf, state_to_hf,
                             task_from_hf, unsupported_architecture)
from bertkit.errors import BertkitError
from bertkit.folders import atomic_file, write_atomically
from bertkit.hub import hub_origin, resolve_model
from bertkit.model.heads import LABELLED_TASKS, TASKS, build_model
from bertkit.model_card import model_card
from bertkit.tokenizer import Tokenizer

FORMAT = "bertkit-model/2"
OLD_FORMAT = "bertkit-model/1"
CONFIG, WEIGHTS, EXTRAS, CARD = "config.json", "model.safetensors", "bertkit.json", "README.md"
OLD_LABELS = "labels.json"
OLD_FORMAT_NOTE = (f"this directory is in bertkit's old format ({OLD_FORMAT}), which a later release will not read; "
                   "save it again, or run `bertkit convert DIR NEW_DIR --to bertkit`")


@dataclass
class Loaded:
    """What a model directory holds."""

    model: nn.Module
    tokenizer: Tokenizer | None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    """What the loader had to do that a user should hear of (heads initialised, weights ignored, an old format)."""
    reading: dict = field(default_factory=dict)
    """How the model reads text, as saved (max_length, window_stride, pooling, ...); empty when nothing was."""
    initialised: list[str] = field(default_factory=list)
    """Weights (bertkit names) the source lacked, freshly (randomly) initialised at this load: a verb that needs
    them trained (bias, bae) refuses such a model."""


# ---- writing ----------------------------------------------------------------------------------------------


def save_model(folder: str | Path, model: nn.Module, tokenizer: Tokenizer | None = None,
               labels: list[str] | None = None, reading: dict | None = None,
               also: Callable[[Path], object] | None = None) -> Path:
    """Write a model directory. An existing directory is replaced only once the new one is complete.

    labels: the name of each output of a classifier or tagger; reading: how the model reads text, kept as given
    (json) and handed back by load_model; also: writes more files into the new folder before it is moved in place."""
    folder = Path(folder)
    _check_labels(model, labels)
    if tokenizer is not None:
        check_vocab(tokenizer, model.config, folder)

    def write(tmp: Path) -> None:
        write_model_files(tmp, model, tokenizer, labels, reading)
        if also is not None:
            also(tmp)

    return write_atomically(folder, write)


def write_model_files(folder: Path, model: nn.Module, tokenizer: Tokenizer | None = None,
                      labels: list[str] | None = None, reading: dict | None = None) -> None:
    """config.json, model.safetensors, bertkit.json, tokenizer files and README.md into an existing folder."""
    _check_labels(model, labels)
    _write_json(folder / CONFIG, hf_config(model, labels))
    save_file(state_to_hf(model.state_dict(), model.config, model.task), str(folder / WEIGHTS),
              metadata={"format": "pt"})
    _write_json(folder / EXTRAS, bertkit_meta(model, reading))
    if tokenizer is not None:
        tokenizer.save(folder)
    write_model_card(folder, task=model.task, labels=labels, reading=reading)


def hf_config(model: nn.Module, labels: list[str] | None = None) -> dict:
    """config.json: Hugging Face's BertConfig for the model, its labels in id2label."""
    return config_to_hf(model.config, model.task, getattr(model, "num_labels", None),
                        getattr(model, "problem_type", None), labels)


def bertkit_meta(model: nn.Module, reading: dict | None = None) -> dict:
    """bertkit.json: what a Hugging Face config cannot say about a bertkit model."""
    return {"format": FORMAT, "task": model.task, "bertkit": config_extras(model.config),
            "reading": dict(reading or {})}


def write_model_card(folder: str | Path, *, task: str, labels: list[str] | None = None,
                     reading: dict | None = None, data: dict | None = None, metrics: dict | None = None,
                     base: dict | None = None) -> Path:
    """(Re)write folder/README.md, a Hugging Face model card. labels and reading default to what the folder's
    config.json and bertkit.json hold, so a recipe can call this again after training to add its data files
    ({role: path}), metrics ({name: value} or {split: {name: value}}) and the Hub model it started from (base:
    {"name", "revision"}, hub.hub_origin)."""
    folder = Path(folder)
    hf = read_json(folder / CONFIG) if (folder / CONFIG).is_file() else {}
    hf = hf if hf.get("model_type") == "bert" else {}
    if labels is None and task in LABELLED_TASKS:
        labels = labels_from_hf(hf)
    if reading is None and (folder / EXTRAS).is_file():
        reading = read_json(folder / EXTRAS).get("reading")
    text = model_card(task, labels=labels, reading=reading, data=data, metrics=metrics, hf_config=hf, base=base)
    with atomic_file(folder / CARD) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return folder / CARD


def _check_labels(model: nn.Module, labels: list[str] | None) -> None:
    if labels is not None and model.task in LABELLED_TASKS and len(labels) != model.num_labels:
        raise BertkitError(f"{len(labels)} labels given for a model with {model.num_labels} outputs")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---- reading ----------------------------------------------------------------------------------------------


def load_model(folder: str | Path, task: str | None = None, num_labels: int | None = None,
               problem_type: str | None = None, device: str | torch.device = "cpu") -> Loaded:
    """Load a model directory (or a plain Hugging Face BERT folder, or bertkit's old layout).

    task, num_labels, problem_type: the head wanted, default what the folder holds. Asking for another
    (a classifier on a pre-trained encoder, say) keeps the encoder, initialises the new head and says so
    in `Loaded.notes`.
    """
    folder = resolve_model(folder)  # a Hugging Face Hub name: its snapshot in the HF cache
    if folder.is_file():
        raise BertkitError(f"{folder}: is a file; give the model directory (the folder holding config.json)")
    if not folder.is_dir():
        raise BertkitError(f"{folder}: no such model directory")
    if not (folder / CONFIG).is_file():
        raise BertkitError(f"{folder}: no {CONFIG}; not a model directory")
    meta = read_json(folder / CONFIG)
    if meta.get("format") == OLD_FORMAT:
        loaded = _load_old_format(folder, meta, task, num_labels, problem_type)
    elif "format" not in meta and meta.get("model_type") == "bert":
        loaded = _load_hf_layout(folder, meta, task, num_labels, problem_type)
    else:
        raise BertkitError(f"{folder / CONFIG}: neither a Hugging Face BERT config (model_type 'bert') nor a "
                           f"bertkit model ({OLD_FORMAT})")
    loaded.model.to(device)
    loaded.model.source = str(folder)  # named by errors about what the model computes (require_finite)
    return loaded


def require_finite(model: nn.Module, *outputs: torch.Tensor) -> None:
    """A model that computes NaN or infinity (damaged weights, a bad config) is an error naming its folder, never
    a prediction."""
    if not all(bool(torch.isfinite(t).all()) for t in outputs):
        raise BertkitError(f"{getattr(model, 'source', 'the model')}: the model computed NaN or infinite outputs; its "
                           "weights (model.safetensors) or config.json are damaged")


def _load_hf_layout(folder: Path, hf: dict, task: str | None, num_labels: int | None,
                    problem_type: str | None) -> Loaded:
    """A folder in Hugging Face's layout: bertkit's own (bertkit.json beside it: loaded strictly) or any other
    (heads it lacks freshly initialised, weights it has that the head does not use reported)."""
    ours = _read_extras(folder, hf)
    arch = unsupported_architecture(hf)
    if arch and task is None:
        raise BertkitError(f"{folder / CONFIG}: architecture {arch} is not supported (bertkit reads "
                           f"{', '.join(ARCHITECTURES)}); `bertkit convert` with --task keeps its encoder under "
                           "a new head")
    config = config_from_hf(hf, folder / CONFIG, ours["bertkit"] if ours else None)
    weights = folder / WEIGHTS if ours else weights_file(folder)
    hf_state = read_weights(weights)
    if not ours:  # transformers' rule: a decoder unlike the embeddings is kept apart
        config = config.replace(tie_word_embeddings=decoder_is_tied(hf, hf_state))
    saved_task = ours["task"] if ours else task_from_hf(hf, set(normalise_hf_keys(hf_state)))
    hf_labels = labels_from_hf(hf)
    saved_num = None
    if saved_task in LABELLED_TASKS:  # id2label's length, as transformers reads it (num_labels, 2 without either)
        given = hf.get("num_labels")
        saved_num = len(hf_labels) if hf_labels else given if isinstance(given, int) and given > 0 else 2
    saved_problem = problem_from_hf(hf, saved_num) if saved_task == "sequence_classification" else None

    task = task or saved_task
    if task not in TASKS:
        raise BertkitError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    num_labels = (num_labels or saved_num or 2) if task in LABELLED_TASKS else None
    if task == "sequence_classification":  # the saved problem type, unless the head changes
        kept = saved_problem if (task, num_labels) == (saved_task, saved_num) else None
        problem_type = problem_type or kept or problem_from_hf({}, num_labels)
    else:
        problem_type = None
    model = build_model(config, task, num_labels, problem_type or "single_label")
    state, unused = state_from_hf(hf_state, config, task)
    same_head = (task, num_labels, problem_type) == (saved_task, saved_num, saved_problem)
    labels = hf_labels if same_head and task in LABELLED_TASKS else None
    if ours and same_head:  # bertkit wrote it: every weight in place, none left over
        if unused:
            raise BertkitError(f"{weights}: does not match {CONFIG}: {len(unused)} unexpected weight(s), "
                               f"e.g. {unused[0]}")
        load_state(model, state, weights)
        notes, initialised = [], []
    else:
        notes, initialised = load_into(model, state, weights, unused)
    tokenizer = load_tokenizer(folder, config)
    if tokenizer is None and not ours:
        notes.append("no tokenizer files in the source")
    return Loaded(model.eval(), tokenizer, labels, notes, dict(ours["reading"]) if ours else {}, initialised)


def _read_extras(folder: Path, hf: dict) -> dict | None:
    """bertkit.json, checked against config.json (hf); None for a folder without one (a plain Hugging Face
    folder)."""
    path = folder / EXTRAS
    if not path.is_file():
        return None
    meta = read_json(path)
    fmt = meta.get("format")
    if isinstance(fmt, str) and fmt.startswith("bertkit-onnx/"):
        raise BertkitError(f"{folder}: an ONNX export, not a model directory; run it with onnxruntime "
                           "(bertkit.export.onnx_session)")
    if fmt != FORMAT:
        raise BertkitError(f"{path}: format {fmt!r}; this bertkit reads {FORMAT}")
    if meta.get("task") not in TASKS:
        raise BertkitError(f"{path}: unknown task {meta.get('task')!r}")
    for key in ("bertkit", "reading"):
        if not isinstance(meta.get(key, {}), dict):
            raise BertkitError(f"{path}: {key} must be a json object")
    arch = (hf.get("architectures") or [None])[0]
    if arch in ARCHITECTURES and ARCHITECTURES[arch] != meta["task"]:
        raise BertkitError(f"{folder}: {CONFIG} holds a {arch} but {EXTRAS} says task {meta['task']!r}")
    return {"bertkit": {}, "reading": {}} | meta


def weights_bytes(folder: str | Path) -> int:
    """The size of a model folder's weights file, 0 where it has none (the loader says why): what a verb that
    writes the model again needs on disk at least (`folders.claim(needs=...)`)."""
    try:
        return weights_file(Path(folder)).stat().st_size
    except (BertkitError, OSError):
        return 0


MLM_TASKS = ("masked_lm", "pretraining")


def load_masked_lm(folder: str | Path, need: str, required: bool = True) -> Loaded | None:
    """The masked language model in `folder`, or a one-line error saying what `need`s one (None instead, when not
    `required`). Besides MLM and pre-training models, a folder of another task (a classifier fine-tuned from
    BertForPreTraining, say) counts when its weights file kept the `cls.predictions` head. A head the weights lack
    would be drawn at random on every load, its proposals changing from run to run: refused."""
    from bertkit.convert import normalise_hf_keys
    folder = Path(folder)
    loaded = load_model(folder)
    if loaded.model.task not in MLM_TASKS:
        keys = normalise_hf_keys(read_weights(weights_file(folder)))
        if not any(k.startswith("cls.predictions") for k in keys):
            if not required:
                return None
            raise BertkitError(f"{folder} has no masked-LM head (its task: {loaded.model.task}); {need}")
        loaded = load_model(folder, task="masked_lm")
    if any(k.startswith("mlm.") for k in loaded.initialised):
        raise BertkitError(f"{folder}: its masked-LM head (cls.predictions) is not in its weights and would be "
                           f"initialised at random, a different answer each run; {need}")
    if loaded.tokenizer is None:
        raise BertkitError(f"{folder} has no tokenizer files")
    return loaded


def weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    if (folder / "model.safetensors.index.json").is_file() or (folder / "pytorch_model.bin.index.json").is_file():
        raise BertkitError(f"{folder}: sharded checkpoints are not supported; BERT fits in one file")
    raise BertkitError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _load_old_format(folder: Path, meta: dict, task: str | None, num_labels: int | None,
                     problem_type: str | None) -> Loaded:
    """bertkit-model/1: config.json {"format", "task", "model": BertConfig, "num_labels", "problem_type"}, weights
    under bertkit's names, labels.json."""
    saved_task = meta.get("task")
    if saved_task not in TASKS:
        raise BertkitError(f"{folder / CONFIG}: unknown task {saved_task!r}")
    config = BertConfig.from_dict(meta.get("model", {}))
    tokenizer = load_tokenizer(folder, config)
    state = read_weights(folder / WEIGHTS)
    labels = None
    if (folder / OLD_LABELS).is_file():
        labels = read_json(folder / OLD_LABELS).get("labels")
        if not isinstance(labels, list) or len(labels) != meta.get("num_labels", len(labels)):
            raise BertkitError(f"{folder / OLD_LABELS}: expected a list of {meta.get('num_labels', '?')} labels")
    same = (task in (None, saved_task) and num_labels in (None, meta.get("num_labels"))
            and problem_type in (None, meta.get("problem_type")))
    if same:
        model = build_model(config, saved_task, meta.get("num_labels"), meta.get("problem_type", "single_label"))
        load_state(model, state, folder / WEIGHTS)
        return Loaded(model.eval(), tokenizer, labels, [OLD_FORMAT_NOTE])
    # A new head on this encoder, e.g. a classifier on a pre-trained model.
    model = build_model(config, task or saved_task, num_labels, problem_type or "single_label")
    notes, initialised = load_into(model, state, folder / WEIGHTS)
    return Loaded(model.eval(), tokenizer, None, notes + [OLD_FORMAT_NOTE], initialised=initialised)


def convert_model(src: str | Path, dst: str | Path, task: str | None = None) -> Loaded:
    """`bertkit convert`: read any folder load_model reads (a Hugging Face folder, bertkit's old layout) and save
    it as a current model directory, with the head `task` (default the source's). A Hub model's name and commit
    go into the model card (base_model, base_model_revision)."""
    src, dst = resolve_model(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise BertkitError("source and destination are the same directory")
    loaded = load_model(src, task=task)
    origin = hub_origin(src)

    def also(tmp: Path) -> None:
        if loaded.model.task == "encoder":
            _copy_sentence_modules(src, tmp)
        if origin is not None:
            write_model_card(tmp, task=loaded.model.task, labels=loaded.labels, reading=loaded.reading, base=origin)

    save_model(dst, loaded.model, loaded.tokenizer, loaded.labels, loaded.reading, also=also)
    loaded.notes = [n for n in loaded.notes if n != OLD_FORMAT_NOTE]
    return loaded


def _copy_sentence_modules(src: Path, dst: Path) -> None:
    """A sentence-transformers folder's modules (modules.json, its settings files, the module folders it lists)
    travel with the converted encoder, so it still pools, projects and normalises as before."""
    if not (src / "modules.json").is_file():
        return
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    try:
        modules = json.loads((src / "modules.json").read_text(encoding="utf-8"))
        paths = [str(m.get("path", "")) for m in modules if isinstance(m, dict)]
    except (OSError, ValueError, TypeError):
        return  # copied as it is; reading it says what is wrong
    for rel in paths:
        folder = src / rel
        if rel and ".." not in Path(rel).parts and not Path(rel).is_absolute() and folder.is_dir():
            shutil.copytree(folder, dst / rel, dirs_exist_ok=True)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path,
              unused: list[str] = ()) -> tuple[list[str], list[str]]:
    """Load every weight `state` has for `model`; head weights it lacks (or has in another shape) keep their
    fresh init. The encoder must be complete. Returns notes saying what was initialised and what was left, and
    the names of the weights initialised."""
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
    return notes, initialised


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
