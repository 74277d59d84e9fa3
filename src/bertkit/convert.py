"""Hugging Face BERT <-> bertkit: configs, weight names and folders, both ways.

Hugging Face keeps query, key and value as three Linear layers; bertkit fuses them into one `qkv`
(rows q, then k, then v), so import concatenates and export splits. Everything else is a rename.
The MLM decoder is tied to the word embeddings on both sides; export writes the tied copy too, so that
`transformers` reports no missing key whatever its tying rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from bertkit.checkpoint import CONFIG, Loaded, load_into, load_tokenizer, read_weights
from bertkit.config import BertConfig, read_json
from bertkit.errors import BertkitError
from bertkit.folders import write_atomically
from bertkit.model.heads import LABELLED_TASKS, TASKS, build_model
from bertkit.tokenizer import Tokenizer

ARCHITECTURES = {
    "BertModel": "encoder",
    "BertForPreTraining": "pretraining",
    "BertForMaskedLM": "masked_lm",
    "BertForSequenceClassification": "sequence_classification",
    "BertForTokenClassification": "token_classification",
    "BertForQuestionAnswering": "question_answering",
}
TASK_TO_ARCH = {task: arch for arch, task in ARCHITECTURES.items()}
HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
BERTKIT_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
HF_PROBLEM = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
              "regression": "regression"}

# ---- configs ----------------------------------------------------------------------------------------------


def config_from_hf(hf: dict, where: Path | str = "config.json") -> BertConfig:
    """bertkit's BertConfig from the fields of a Hugging Face BertConfig json."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise BertkitError(f"{where}: position_embedding_type {hf['position_embedding_type']!r} is not "
                           "supported (only 'absolute', as in BERT)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise BertkitError(f"{where}: decoder / cross-attention BERT variants are not supported")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACT:
        raise BertkitError(f"{where}: hidden_act {act!r} is not supported (one of {', '.join(HF_ACT)})")
    try:
        return BertConfig(
            vocab_size=hf["vocab_size"],
            hidden_size=hf.get("hidden_size", 768),
            num_layers=hf.get("num_hidden_layers", 12),
            num_heads=hf.get("num_attention_heads", 12),
            intermediate_size=hf.get("intermediate_size", 3072),
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            classifier_dropout=hf.get("classifier_dropout"),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            initializer_range=hf.get("initializer_range", 0.02),
            hidden_act=HF_ACT[act],
            pad_token_id=hf.get("pad_token_id") or 0,
        )
    except KeyError as e:
        raise BertkitError(f"{where}: missing field {e.args[0]}") from None
    except BertkitError as e:
        raise BertkitError(f"{where}: {e}") from None


def config_to_hf(config: BertConfig, task: str, num_labels: int | None = None,
                 problem_type: str | None = None, labels: list[str] | None = None) -> dict:
    """A Hugging Face config.json for a bertkit model."""
    hf = {
        "architectures": [TASK_TO_ARCH[task]],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": BERTKIT_ACT[config.hidden_act],
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "classifier_dropout": config.classifier_dropout,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }
    if task in LABELLED_TASKS:
        names = labels or [f"LABEL_{i}" for i in range(num_labels)]
        hf["id2label"] = {str(i): name for i, name in enumerate(names)}
        hf["label2id"] = {name: i for i, name in enumerate(names)}
    if task == "sequence_classification" and problem_type:
        hf["problem_type"] = HF_PROBLEM[problem_type]
    return hf


def _task_from_hf(hf: dict, state_keys: set[str]) -> str:
    for arch in hf.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    # No (known) architecture: judge by the weights, as far as they tell.
    if any(k.startswith("cls.seq_relationship") for k in state_keys):
        return "pretraining"
    if any(k.startswith("cls.predictions") for k in state_keys):
        return "masked_lm"
    if any(k.startswith("qa_outputs") for k in state_keys):
        return "question_answering"
    if any(k.startswith("classifier") for k in state_keys):
        if any("pooler" in k for k in state_keys):
            return "sequence_classification"
        return "token_classification"
    return "encoder"


def _labels_from_hf(hf: dict) -> list[str] | None:
    id2label = hf.get("id2label")
    if not id2label:
        return None
    try:
        return [id2label[k] for k in sorted(id2label, key=int)]
    except ValueError:
        return None

# ---- weight names -----------------------------------------------------------------------------------------


def _name_pairs(config: BertConfig, task: str) -> list[tuple[str, str]]:
    """(Hugging Face name without the 'bert.' prefix, bertkit name) for every one-to-one weight."""
    pairs = [
        ("embeddings.word_embeddings.weight", "bert.embeddings.word.weight"),
        ("embeddings.position_embeddings.weight", "bert.embeddings.position.weight"),
        ("embeddings.token_type_embeddings.weight", "bert.embeddings.token_type.weight"),
    ]
    for p in ("weight", "bias"):
        pairs.append((f"embeddings.LayerNorm.{p}", f"bert.embeddings.norm.{p}"))
        for i in range(config.num_layers):
            hf, bk = f"encoder.layer.{i}.", f"bert.blocks.{i}."
            pairs += [
                (f"{hf}attention.output.dense.{p}", f"{bk}attn.proj.{p}"),
                (f"{hf}attention.output.LayerNorm.{p}", f"{bk}attn_norm.{p}"),
                (f"{hf}intermediate.dense.{p}", f"{bk}mlp.up.{p}"),
                (f"{hf}output.dense.{p}", f"{bk}mlp.down.{p}"),
                (f"{hf}output.LayerNorm.{p}", f"{bk}mlp_norm.{p}"),
            ]
        if task in ("encoder", "pretraining", "sequence_classification"):
            pairs.append((f"pooler.dense.{p}", f"bert.pooler.{p}"))
        if task in ("pretraining", "masked_lm"):
            pairs += [(f"cls.predictions.transform.dense.{p}", f"mlm.dense.{p}"),
                      (f"cls.predictions.transform.LayerNorm.{p}", f"mlm.norm.{p}")]
        if task == "pretraining":
            pairs.append((f"cls.seq_relationship.{p}", f"nsp.{p}"))
        if task in LABELLED_TASKS:
            pairs.append((f"classifier.{p}", f"classifier.{p}"))
        if task == "question_answering":
            pairs.append((f"qa_outputs.{p}", f"qa.{p}"))
    if task in ("pretraining", "masked_lm"):
        pairs.append(("cls.predictions.bias", "mlm.bias"))
    return pairs


def _normalise_hf_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the 'bert.' prefix, rename TF-era LayerNorm gamma/beta, drop non-weight buffers."""
    out = {}
    for k, v in state.items():
        if k.startswith("bert."):
            k = k[len("bert."):]
        if k.endswith("position_ids"):
            continue
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[k] = v
    return out


def state_from_hf(hf_state: dict[str, torch.Tensor], config: BertConfig, task: str):
    """Hugging Face weights -> (bertkit state, names the source lacked, source names left unused)."""
    src = _normalise_hf_keys(hf_state)
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}
    for hf_name, name in _name_pairs(config, task):
        if hf_name in src:
            state[name] = src[hf_name]
            used.add(hf_name)
    for i in range(config.num_layers):
        for p in ("weight", "bias"):
            parts = [f"encoder.layer.{i}.attention.self.{m}.{p}" for m in ("query", "key", "value")]
            if all(n in src for n in parts):
                state[f"bert.blocks.{i}.attn.qkv.{p}"] = torch.cat([src[n] for n in parts], dim=0)
                used.update(parts)
    if task in ("pretraining", "masked_lm"):
        # Tied to the word embeddings (and to cls.predictions.bias) on both sides: nothing to load.
        used.update(k for k in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias") if k in src)
    unused = sorted(set(src) - used)
    return state, unused


def state_to_hf(state: dict[str, torch.Tensor], config: BertConfig, task: str) -> dict[str, torch.Tensor]:
    """bertkit weights -> Hugging Face names ('bert.' prefix for task models, none for BertModel)."""
    prefix = "" if task == "encoder" else "bert."
    heads = ("cls.", "classifier.", "qa_outputs.")
    out = {}
    for hf_name, name in _name_pairs(config, task):
        out[hf_name if hf_name.startswith(heads) else prefix + hf_name] = state[name]
    C = config.hidden_size
    for i in range(config.num_layers):
        for p in ("weight", "bias"):
            q, k, v = state[f"bert.blocks.{i}.attn.qkv.{p}"].split(C, dim=0)
            for m, t in (("query", q), ("key", k), ("value", v)):
                out[f"{prefix}encoder.layer.{i}.attention.self.{m}.{p}"] = t
    if task in ("pretraining", "masked_lm"):
        out["cls.predictions.decoder.weight"] = state["bert.embeddings.word.weight"]
        out["cls.predictions.decoder.bias"] = state["mlm.bias"]
    # safetensors refuses tensors that share memory: give each its own storage.
    return {k: v.detach().clone().contiguous().cpu() for k, v in out.items()}

# ---- folders ----------------------------------------------------------------------------------------------


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    if (folder / "model.safetensors.index.json").is_file() or (folder / "pytorch_model.bin.index.json").is_file():
        raise BertkitError(f"{folder}: sharded checkpoints are not supported; BERT fits in one file")
    raise BertkitError(f"{folder}: no model.safetensors or pytorch_model.bin")


def load_hf(folder: str | Path, task: str | None = None, num_labels: int | None = None,
            problem_type: str | None = None) -> Loaded:
    """A Hugging Face BERT folder as a bertkit model; heads the source lacks are freshly initialised."""
    folder = Path(folder)
    hf = read_json(folder / CONFIG)
    config = config_from_hf(hf, folder / CONFIG)
    hf_state = read_weights(_weights_file(folder))
    source_task = _task_from_hf(hf, set(_normalise_hf_keys(hf_state)))
    task = task or source_task
    if task not in TASKS:
        raise BertkitError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    labels = _labels_from_hf(hf) if task in LABELLED_TASKS else None
    if task in LABELLED_TASKS:
        if num_labels is None:
            num_labels = len(labels) if labels else int(hf.get("num_labels", 2))
        if labels is not None and len(labels) != num_labels:
            labels = None
    problem = problem_type or {v: k for k, v in HF_PROBLEM.items()}.get(hf.get("problem_type"))
    if problem is None:
        problem = "regression" if num_labels == 1 else "single_label"
    model = build_model(config, task, num_labels, problem)
    state, unused = state_from_hf(hf_state, config, task)
    notes = load_into(model, state, _weights_file(folder), unused)
    tokenizer = load_tokenizer(folder, config)
    if tokenizer is None:
        notes.append("no tokenizer files in the source")
    return Loaded(model.eval(), tokenizer, labels, notes)


def export_hf(folder: str | Path, model: nn.Module, tokenizer: Tokenizer | None = None,
              labels: list[str] | None = None) -> Path:
    """Write a folder that `transformers.AutoModel*.from_pretrained` loads with no missing or unexpected keys."""
    task = model.task
    hf = config_to_hf(model.config, task, getattr(model, "num_labels", None),
                      getattr(model, "problem_type", None), labels)
    state = state_to_hf(model.state_dict(), model.config, task)

    def write(tmp: Path) -> None:
        (tmp / CONFIG).write_text(json.dumps(hf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)

    return write_atomically(Path(folder), write)


def convert(src: str | Path, dst: str | Path, to: str, task: str | None = None) -> Loaded:
    """Read a bertkit or Hugging Face folder and write it as `to` ('hf' or 'bertkit')."""
    from bertkit.checkpoint import load_model, save_model
    if to not in ("hf", "bertkit"):
        raise BertkitError(f"--to must be 'hf' or 'bertkit', got {to!r}")
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise BertkitError("source and destination are the same directory")
    loaded = load_model(src, task=task)
    if to == "hf":
        export_hf(dst, loaded.model, loaded.tokenizer, loaded.labels)
    else:
        save_model(dst, loaded.model, loaded.tokenizer, loaded.labels)
    return loaded


__all__ = ["config_from_hf", "config_to_hf", "state_from_hf", "state_to_hf", "load_hf", "export_hf", "convert"]
