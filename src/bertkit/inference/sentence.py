"""sentence-transformers folders: their modules.json read into bertkit's reading settings and a projection head, so
`Embedder` gives the vectors `SentenceTransformer(folder).encode` gives, or a one-line refusal naming what it
cannot follow. Never other vectors.

What is followed (as sentence-transformers 6.3 reads it): a Transformer (the folder itself), one Pooling (every mode
it has, several at once concatenated in its order), Dense layers (Linear + a torch activation, optionally with
its residual), Dropout (nothing at inference) and a final Normalize; the length it reads (sentence_bert_config's
max_seq_length, else the tokenizer's model_max_length capped at the model's positions). Anything else (another
module type, a default prompt, a Dense reading another feature) is refused by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import load_state, read_weights
from bertkit.errors import BertkitError
from bertkit.inference.reading import POOLINGS

MODULES = "modules.json"
LEGACY_POOLING = {  # sentence-transformers' old boolean keys, in the order it concatenates them
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class Dense(nn.Module):
    """sentence-transformers' Dense: activation(linear(x)), plus x (or a bias-free projection of x) when it was
    trained with a residual."""

    def __init__(self, in_features: int, out_features: int, bias: bool, activation: nn.Module, residual: bool):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation
        self.use_residual = residual
        if residual and in_features != out_features:
            self.residual = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in) -> (N, out)."""
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return out


@dataclass
class SentenceModules:
    """What a sentence-transformers folder says about reading and pooling."""

    reading: dict
    """max_length, pooling (modes joined by '+'), normalize."""
    head: nn.Sequential | None = None
    """The Dense layers after pooling; None when there are none."""
    lowercase: bool = False
    """sentence_bert_config's do_lower_case: texts are lower-cased before the tokenizer."""


def read_modules(folder: Path, hidden_size: int, max_positions: int) -> SentenceModules | None:
    """The modules of a sentence-transformers folder (None for a folder without modules.json); refuses what
    bertkit cannot compute as sentence-transformers does."""
    path = folder / MODULES
    if not path.is_file():
        return None
    modules = _json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise BertkitError(f"{path}: expected a list of modules")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != "Transformer" or modules[0].get("path", "") not in ("", "."):
        raise BertkitError(f"{path}: the first module must be the Transformer in the folder itself, found "
                           f"{modules[0].get('type') if modules else 'none'}")
    _check_prompts(folder)
    st = _json(folder / "sentence_bert_config.json") if (folder / "sentence_bert_config.json").is_file() else {}
    reading = {"max_length": _max_length(folder, st, max_positions), "normalize": False}
    out = SentenceModules(reading, lowercase=bool(st.get("do_lower_case", False)))
    dense: list[nn.Module] = []
    dim = None  # the sentence vector's width once pooled
    for module, kind in zip(modules[1:], kinds[1:]):
        where = folder / str(module.get("path", ""))
        if out.reading["normalize"]:
            raise BertkitError(f"{path}: module {module.get('type')!r} after Normalize is not supported")
        if kind == "Pooling" and dim is None:
            out.reading["pooling"] = _pooling(where, hidden_size)
            dim = hidden_size * len(out.reading["pooling"].split("+"))
        elif kind == "Dense" and dim is not None:
            layer = _dense(where, dim)
            dense.append(layer)
            dim = layer.linear.out_features
        elif kind == "Dropout" and dim is not None:
            continue  # nothing at inference
        elif kind == "Normalize" and dim is not None:
            config = _json(where / "config.json") if (where / "config.json").is_file() else {}
            _check_feature(where, config)
            out.reading["normalize"] = True
        else:
            raise BertkitError(f"{path}: module {module.get('type')!r} is not supported here (bertkit follows "
                               "Transformer, Pooling, Dense, Dropout and Normalize, in that order)")
    if dim is None:
        raise BertkitError(f"{path}: no Pooling module; bertkit embeds only pooled sentence vectors")
    out.head = nn.Sequential(*dense).eval() if dense else None
    return out


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BertkitError(f"{path}: cannot read json ({str(e).splitlines()[0]})") from None


def _check_prompts(folder: Path) -> None:
    """A default prompt is put before every text by sentence-transformers; bertkit does not, so it refuses."""
    path = folder / "config_sentence_transformers.json"
    config = _json(path) if path.is_file() else {}
    if isinstance(config, dict) and config.get("default_prompt_name"):
        raise BertkitError(f"{path}: default_prompt_name {config['default_prompt_name']!r} is not supported "
                           "(sentence-transformers puts that prompt before every text)")


def _max_length(folder: Path, st: dict, max_positions: int) -> int:
    """sentence-transformers' rule: max_seq_length of sentence_bert_config.json, else the tokenizer's
    model_max_length capped at the model's positions (the tokenizer's default when it has none)."""
    given = st.get("max_seq_length") if isinstance(st, dict) else None
    if isinstance(given, int) and not isinstance(given, bool) and given > 0:
        return min(given, max_positions)
    config = folder / "tokenizer_config.json"
    length = (_json(config) if config.is_file() else {}).get("model_max_length")
    if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        return max_positions
    return min(length, max_positions)


def _pooling(where: Path, hidden_size: int) -> str:
    """The pooling modes of a Pooling module, joined by '+' in the order sentence-transformers concatenates them."""
    path = where / "config.json"
    config = _json(path)
    if not isinstance(config, dict):
        raise BertkitError(f"{path}: expected a json object")
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else modes
    if not isinstance(modes, list) or not modes or any(m not in POOLINGS for m in modes):
        raise BertkitError(f"{path}: pooling_mode {config.get('pooling_mode')!r} is not one of {POOLINGS}")
    width = config.get("embedding_dimension", config.get("word_embedding_dimension", hidden_size))
    if width != hidden_size:
        raise BertkitError(f"{path}: embedding_dimension {width} is not the model's hidden_size {hidden_size}")
    return "+".join(modes)


def _check_feature(where: Path, config: dict) -> None:
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise BertkitError(f"{where / 'config.json'}: {key} {config[key]!r} is not supported (bertkit reads "
                               "only the sentence embedding)")


def _activation(path: Path, name) -> nn.Module:
    """A torch.nn activation by its dotted name, made without arguments (how sentence-transformers restores it)."""
    if name is None:
        return nn.Tanh()  # sentence-transformers' default when the config names none
    cls = getattr(nn, str(name).rsplit(".", 1)[-1], None) if str(name).startswith("torch.") else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise BertkitError(f"{path}: activation_function {name!r} is not supported (a torch.nn module is)")
    try:
        return cls()
    except TypeError:
        raise BertkitError(f"{path}: activation_function {name!r} needs arguments; not supported") from None


def _dense(where: Path, dim: int) -> Dense:
    """A Dense module with its weights (model.safetensors, else pytorch_model.bin, as sentence-transformers)."""
    path = where / "config.json"
    config = _json(path)
    if not isinstance(config, dict):
        raise BertkitError(f"{path}: expected a json object")
    _check_feature(where, config)
    sizes = (config.get("in_features"), config.get("out_features"))
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise BertkitError(f"{path}: in_features and out_features must be positive integers, got {sizes}")
    if sizes[0] != dim:
        raise BertkitError(f"{path}: in_features {sizes[0]} does not match the {dim}-wide vectors before it")
    layer = Dense(*sizes, bias=bool(config.get("bias", True)),
                  activation=_activation(path, config.get("activation_function")),
                  residual=bool(config.get("use_residual", False)))
    weights = next((where / n for n in ("model.safetensors", "pytorch_model.bin") if (where / n).is_file()), None)
    if weights is None:
        raise BertkitError(f"{where}: no model.safetensors or pytorch_model.bin for the Dense module")
    load_state(layer, read_weights(weights), weights)
    return layer
