"""Model configuration: one small dataclass, named presets, and its json form.

The field names are bertkit's own; `convert.py` maps them to and from Hugging Face's `BertConfig`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from bertkit.errors import BertkitError

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
ATTENTION_BACKENDS = ("sdpa", "eager")

# (layers, hidden, heads): the BERT paper's base/large and the compact models of Turc et al. (2019).
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


@dataclass
class BertConfig:
    vocab_size: int = 30522
    """Rows of the word-embedding matrix; must cover every id the tokenizer produces."""
    hidden_size: int = 768
    """C: width of every token vector."""
    num_layers: int = 12
    """Transformer blocks in the encoder."""
    num_heads: int = 12
    """H: attention heads per block; hidden_size must divide evenly into them."""
    intermediate_size: int = 0
    """Feed-forward width; 0 means 4 * hidden_size, as in the paper."""
    max_position_embeddings: int = 512
    """Longest sequence (in tokens, [CLS] and [SEP] included) the model can take."""
    type_vocab_size: int = 2
    """Segment ids: 0 for sentence A, 1 for sentence B."""
    hidden_dropout: float = 0.1
    """Dropout after embeddings, attention output and feed-forward output."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    classifier_dropout: float | None = None
    """Dropout before a task classifier; None means hidden_dropout."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon (1e-12 in the original BERT)."""
    initializer_range: float = 0.02
    """Std of the truncated-free normal init; 0.02 is what BERT and every checkpoint since used."""
    hidden_act: str = "gelu"
    """Feed-forward activation: gelu (exact, erf), gelu_tanh (the tanh approximation) or relu."""
    pad_token_id: int = 0
    """Id of [PAD]; its embedding row starts at zero."""
    attention_backend: str = "sdpa"
    """sdpa (fast, default) or eager (slower, can return attention probabilities)."""
    unpad: bool = False
    """Run every layer but attention on real tokens only, skipping padding (faster on padded batches; outputs at
    padded positions are then zero instead of the values transformers computes there)."""

    def __post_init__(self) -> None:
        if self.intermediate_size == 0:
            self.intermediate_size = 4 * self.hidden_size
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BertkitError(f"config: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise BertkitError(f"config: hidden_size {self.hidden_size} is not divisible by "
                               f"num_heads {self.num_heads}")
        for name in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise BertkitError(f"config: {name} must be in [0, 1), got {value!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise BertkitError(f"config: hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise BertkitError(f"config: attention_backend {self.attention_backend!r} is not one of "
                               f"{ATTENTION_BACKENDS}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise BertkitError(f"config: pad_token_id {self.pad_token_id} is outside the vocabulary "
                               f"of {self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def preset(cls, name: str, **overrides) -> BertConfig:
        """A named size (tiny, mini, small, medium, base, large) with any field overridden."""
        if name not in PRESETS:
            raise BertkitError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        return cls(**{"num_layers": layers, "hidden_size": hidden, "num_heads": heads, **overrides})

    def replace(self, **changes) -> BertConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BertConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BertkitError(f"config: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:  # wrong types that __post_init__ could not phrase
            raise BertkitError(f"config: {e}") from None


def read_json(path: Path) -> dict:
    """A json object from disk, or a one-line error naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BertkitError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{path}: not valid json ({e})") from None
    if not isinstance(data, dict):
        raise BertkitError(f"{path}: expected a json object")
    return data
