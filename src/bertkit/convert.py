"""Hugging Face BERT <-> bertkit: config fields and weight names, both ways, as pure functions.

A bertkit model directory is stored in Hugging Face's layout (checkpoint.py writes it with these functions), so
`transformers` opens it as it is. Hugging Face keeps query, key and value as three Linear layers; bertkit fuses
them into one `qkv` (rows q, then k, then v), so reading concatenates and writing splits. Everything else is a
rename. The MLM decoder is tied to the word embeddings unless the source says otherwise (`decoder_is_tied`); the
written weights hold the decoder either way, so that `transformers` reports no missing key whatever its tying
rules. The few BertConfig fields Hugging Face's config has no place for (`BERTKIT_ONLY`: attention backend,
unpadding) travel beside it, in bertkit.json.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from bertkit.config import BertConfig
from bertkit.errors import BertkitError
from bertkit.model.heads import LABELLED_TASKS

ARCHITECTURES = {
    "BertModel": "encoder",
    "BertForPreTraining": "pretraining",
    "BertForMaskedLM": "masked_lm",
    "BertForSequenceClassification": "sequence_classification",
    "BertForTokenClassification": "token_classification",
    "BertForQuestionAnswering": "question_answering",
}
TASK_TO_ARCH = {task: arch for arch, task in ARCHITECTURES.items()}
UNSUPPORTED = ("BertLMHeadModel", "BertForNextSentencePrediction", "BertForMultipleChoice")
"""transformers' other BERT heads: bertkit has no such head, so a folder holding one is refused by name rather than
read with a freshly initialised head of another kind."""
HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
BERTKIT_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
HF_PROBLEM = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
              "regression": "regression"}
HF_FIELDS = {  # bertkit BertConfig field -> Hugging Face BertConfig field, same value
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "classifier_dropout": "classifier_dropout",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
    "tie_word_embeddings": "tie_word_embeddings",
}
BERTKIT_ONLY = tuple(f.name for f in fields(BertConfig) if f.name not in HF_FIELDS and f.name != "hidden_act")
"""BertConfig fields with no Hugging Face counterpart (attention_backend, unpad): saved in bertkit.json."""

# ---- configs ----------------------------------------------------------------------------------------------


def config_from_hf(hf: dict, where: Path | str = "config.json", extras: dict | None = None) -> BertConfig:
    """bertkit's BertConfig from the fields of a Hugging Face BertConfig json, plus `extras` (BERTKIT_ONLY fields,
    as config_extras gives them; defaults when None). Errors name the field as config.json spells it."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise BertkitError(f"{where}: position_embedding_type {hf['position_embedding_type']!r} is not "
                           "supported (only 'absolute', as in BERT)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise BertkitError(f"{where}: decoder / cross-attention BERT variants are not supported")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACT:
        raise BertkitError(f"{where}: hidden_act {act!r} is not supported (one of {', '.join(HF_ACT)})")
    if "vocab_size" not in hf:
        raise BertkitError(f"{where}: missing field vocab_size")
    extras = extras or {}
    stray = sorted(set(extras) - set(BERTKIT_ONLY))
    if stray:
        raise BertkitError(f"{where}: unknown bertkit field(s) {', '.join(stray)} (known: {', '.join(BERTKIT_ONLY)})")
    ranges = {f.name: f.metadata.get("range") for f in fields(BertConfig)}
    values = {"intermediate_size": 3072}  # Hugging Face's default, where bertkit's is 4 * hidden_size
    for name, hf_name in HF_FIELDS.items():
        if hf.get(hf_name) is not None:
            if ranges[name] is not None:
                ranges[name].check(f"{where}: {hf_name}", hf[hf_name])
            values[name] = hf[hf_name]
    try:
        return BertConfig.from_dict(values | {"hidden_act": HF_ACT[act]} | extras)
    except BertkitError as e:
        raise BertkitError(f"{where}: {e}") from None


def config_to_hf(config: BertConfig, task: str, num_labels: int | None = None,
                 problem_type: str | None = None, labels: list[str] | None = None) -> dict:
    """A Hugging Face config.json for a bertkit model (all but the BERTKIT_ONLY fields)."""
    hf = {"architectures": [TASK_TO_ARCH[task]], "model_type": "bert"}
    hf |= {hf_name: getattr(config, name) for name, hf_name in HF_FIELDS.items()}
    hf |= {"hidden_act": BERTKIT_ACT[config.hidden_act], "position_embedding_type": "absolute"}
    if task in LABELLED_TASKS:
        names = labels or default_labels(num_labels)
        hf["id2label"] = {str(i): name for i, name in enumerate(names)}
        hf["label2id"] = {name: i for i, name in enumerate(names)}
    if task == "sequence_classification" and problem_type:
        hf["problem_type"] = HF_PROBLEM[problem_type]
    return hf


def config_extras(config: BertConfig) -> dict:
    """The BERTKIT_ONLY fields of a config, for bertkit.json."""
    return {name: getattr(config, name) for name in BERTKIT_ONLY}


def default_labels(num_labels: int) -> list[str]:
    """The names transformers gives labels nobody named: LABEL_0, LABEL_1, ..."""
    return [f"LABEL_{i}" for i in range(num_labels)]


def unsupported_architecture(hf: dict) -> str | None:
    """The first `architectures` entry of a config.json that bertkit has no head for (UNSUPPORTED, or any name it
    does not know); None when every entry is one of ARCHITECTURES."""
    archs = hf.get("architectures") or []
    if not isinstance(archs, list):
        return repr(archs)
    return next((str(a) for a in archs if a not in ARCHITECTURES), None)


def task_from_hf(hf: dict, state_keys: set[str]) -> str | None:
    """The head a Hugging Face folder holds: its architecture, else what its (normalised) weight names tell; None
    for an architecture bertkit has no head for (unsupported_architecture)."""
    if unsupported_architecture(hf):
        return None
    for arch in hf.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
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


def labels_from_hf(hf: dict) -> list[str] | None:
    """The label names of id2label in id order (transformers' LABEL_i when nobody named them); None when absent
    or not a list of names."""
    id2label = hf.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        labels = [id2label[k] for k in sorted(id2label, key=int)]
    except ValueError:
        return None
    return labels if all(isinstance(x, str) for x in labels) else None


def problem_from_hf(hf: dict, num_labels: int | None) -> str:
    """bertkit's problem_type of a sequence classifier: the config's, else regression for one output."""
    problem = {v: k for k, v in HF_PROBLEM.items()}.get(hf.get("problem_type"))
    return problem or ("regression" if num_labels == 1 else "single_label")

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
        if not config.tie_word_embeddings:
            pairs.append(("cls.predictions.decoder.weight", "mlm.decoder"))
    return pairs


def decoder_is_tied(hf: dict, state: dict[str, torch.Tensor]) -> bool:
    """Whether a Hugging Face folder's MLM decoder is its word-embedding matrix, by transformers' rule: not when
    config.json says tie_word_embeddings false, nor when the weights hold a decoder that differs from the
    embeddings (transformers then leaves the two apart)."""
    if hf.get("tie_word_embeddings", True) is False:
        return False
    src = normalise_hf_keys(state)
    decoder, words = src.get("cls.predictions.decoder.weight"), src.get("embeddings.word_embeddings.weight")
    return decoder is None or words is None or (decoder.shape == words.shape and torch.equal(decoder, words))


def normalise_hf_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
    src = normalise_hf_keys(hf_state)
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
        # A tied decoder is the word embeddings: nothing more to load. Its bias is the one transformers' forward
        # adds, decoder.bias: tied to cls.predictions.bias when both are equal, apart (and the one used) otherwise.
        if "cls.predictions.decoder.bias" in src:
            state["mlm.bias"] = src["cls.predictions.decoder.bias"]
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
        if config.tie_word_embeddings:
            out["cls.predictions.decoder.weight"] = state["bert.embeddings.word.weight"]
        out["cls.predictions.decoder.bias"] = state["mlm.bias"]
    # safetensors refuses tensors that share memory: give each its own storage.
    return {k: v.detach().clone().contiguous().cpu() for k, v in out.items()}


__all__ = ["config_from_hf", "config_to_hf", "config_extras", "decoder_is_tied", "state_from_hf", "state_to_hf"]
