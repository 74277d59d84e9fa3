"""Model configuration: one small dataclass, named presets, and its json form.

The field names are bertkit's own; `convert.py` maps them to and from Hugging Face's `BertConfig`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from bertkit.errors import BertkitError
from bertkit.options import at_least, between, check_fields

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
DEFAULT_MAX_LENGTH = 128
"""Tokens a model is fine-tuned to read when nothing says otherwise (fewer if the model has fewer positions); the
model then reads the same way at inference."""
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
    vocab_size: int = field(default=30522, metadata=at_least(1))
    """Rows of the word-embedding matrix; must cover every id the tokenizer produces."""
    hidden_size: int = field(default=768, metadata=at_least(1))
    """C: width of every token vector."""
    num_layers: int = field(default=12, metadata=at_least(1))
    """Transformer blocks in the encoder."""
    num_heads: int = field(default=12, metadata=at_least(1))
    """H: attention heads per block; hidden_size must divide evenly into them."""
    intermediate_size: int = field(default=0, metadata=at_least(0))
    """Feed-forward width; 0 means 4 * hidden_size, as in the paper."""
    max_position_embeddings: int = field(default=512, metadata=at_least(1))
    """Longest sequence (in tokens, [CLS] and [SEP] included) the model can take."""
    type_vocab_size: int = field(default=2, metadata=at_least(1))
    """Segment ids: 0 for sentence A, 1 for sentence B."""
    hidden_dropout: float = field(default=0.1, metadata=between(0.0, 1.0, high_open=True))
    """Dropout after embeddings, attention output and feed-forward output."""
    attention_dropout: float = field(default=0.1, metadata=between(0.0, 1.0, high_open=True))
    """Dropout on attention probabilities."""
    classifier_dropout: float | None = field(default=None, metadata=between(0.0, 1.0, high_open=True))
    """Dropout before a task classifier; None means hidden_dropout."""
    layer_norm_eps: float = field(default=1e-12, metadata=between(0.0, 1.0, low_open=True))
    """LayerNorm epsilon (1e-12 in the original BERT)."""
    initializer_range: float = field(default=0.02, metadata=at_least(0.0))
    """Std of the truncated-free normal init; 0.02 is what BERT and every checkpoint since used."""
    hidden_act: str = "gelu"
    """Feed-forward activation: gelu (exact, erf), gelu_tanh (the tanh approximation) or relu."""
    pad_token_id: int = field(default=0, metadata=at_least(0))
    """Id of [PAD]; its embedding row starts at zero."""
    tie_word_embeddings: bool = True
    """The masked-LM decoder is the word-embedding matrix (BERT's choice); false: a matrix of its own, as some
    checkpoints have."""
    attention_backend: str = "sdpa"
    """sdpa (fast, default) or eager (slower, can return attention probabilities)."""
    unpad: bool = False
    """Run every layer but attention on real tokens only, skipping padding (faster on padded batches; outputs at
    padded positions are then zero instead of the values transformers computes there)."""

    def __post_init__(self) -> None:
        check_fields(self, "config: ")
        if self.intermediate_size == 0:
            self.intermediate_size = 4 * self.hidden_size
        if self.hidden_size % self.num_heads:
            raise BertkitError(f"config: hidden_size {self.hidden_size} is not divisible by "
                               f"num_heads {self.num_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise BertkitError(f"config: hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise BertkitError(f"config: attention_backend {self.attention_backend!r} is not one of "
                               f"{ATTENTION_BACKENDS}")
        for name in ("unpad", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise BertkitError(f"config: {name} must be true or false, got {getattr(self, name)!r}")
        if self.pad_token_id >= self.vocab_size:
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


def reading_length(config: BertConfig, max_length: int | None, where: str | Path = "the model",
                   default: int | None = None) -> int:
    """The tokens a model reads at once: max_length; when None, `default` (at most the model's positions), or all
    its positions when no default is given (inference on a model saved without reading settings, as transformers
    reads it). A max_length the model cannot read is an error."""
    positions = config.max_position_embeddings
    if max_length is None:
        return min(default or positions, positions)
    if not 3 <= max_length <= positions:
        raise BertkitError(f"max_length {max_length} must be in 3..{positions}: {where} reads {positions} positions")
    return max_length


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
