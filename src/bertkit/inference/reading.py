"""How a model reads its input: saved with the model, used by every verb unless the user overrides it.

`finetune` writes the settings it trained with (max length, windows, ...) into the model directory; `predict`,
`evaluate`, `explain`, `embed` and the server read them from there, so one model and one file always give one
score. A sentence-transformers folder's own settings (modules.json and the modules it lists) are read the same
way, by sentence.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from bertkit.config import BertConfig, reading_length
from bertkit.errors import BertkitError
from bertkit.options import at_least, between, check_fields

WINDOW_POOLS = ("mean", "max")
POOLINGS = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
"""Sentence-vector poolings, sentence-transformers' modes; several joined by '+' ("cls+mean") are concatenated."""


@dataclass
class Reading:
    max_length: int | None = field(default=None, metadata=at_least(8))
    """Tokens read at once, [CLS] and [SEP] included. Fine-tuning's default is 128 (fewer if the model has
    fewer positions); a model saved without this setting is read up to its position limit."""
    window_stride: int = field(default=0, metadata=at_least(0))
    """Classification of long texts: a text longer than max_length is read as windows sharing this many tokens,
    whose logits are pooled; 0 truncates instead."""
    window_pool: str = "mean"
    """How windows make a text's logits: mean or max."""
    doc_stride: int | None = field(default=None, metadata=at_least(0))
    """Question answering: tokens shared by consecutive windows over a long context; unset: a third of
    max_length (128 at 384, as in BERT's SQuAD runs)."""
    max_answer_length: int = field(default=30, metadata=at_least(1))
    """Question answering: the longest answer, in tokens."""
    pooling: str = "mean"
    """Sentence embeddings: the mean of the token vectors, the [CLS] vector, or another of POOLINGS; several
    joined by '+' are concatenated in that order."""
    normalize: bool = True
    """Sentence embeddings: scaled to unit length (cosine similarity is then a dot product)."""
    threshold: float = field(default=0.5, metadata=between(0.0, 1.0))
    """Multi-label classification: a label is predicted when its probability reaches this."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.window_pool not in WINDOW_POOLS:
            raise BertkitError(f"window_pool must be one of {WINDOW_POOLS}, got {self.window_pool!r}")
        pooling_modes(self.pooling)
        if not isinstance(self.normalize, bool):
            raise BertkitError(f"normalize must be true or false, got {self.normalize!r}")
        if self.max_length is not None:
            if self.window_stride >= self.max_length - 2:
                raise BertkitError(f"window_stride {self.window_stride} must be below max_length - 2 "
                                   f"({self.max_length - 2}): windows share that many tokens")
            if self.doc_stride is not None and self.doc_stride >= self.max_length - 3:
                raise BertkitError(f"doc_stride {self.doc_stride} must be below max_length - 3 "
                                   f"({self.max_length - 3})")

    def for_model(self, config: BertConfig, where: str | Path = "the model", default_length: int | None = None
                  ) -> Reading:
        """Every None filled in for this model (max_length: default_length, else all the model's positions); a
        max_length it cannot read is an error."""
        max_length = reading_length(config, self.max_length, where, default_length)
        return replace(self, max_length=max_length,
                       doc_stride=max_length // 3 if self.doc_stride is None else self.doc_stride)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = "reading settings") -> Reading:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BertkitError(f"{where}: unknown reading setting(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except BertkitError as e:
            raise BertkitError(f"{where}: {e}") from None


def resolve(saved: Reading, overrides: dict, config: BertConfig, where: str | Path) -> tuple[Reading, list[str]]:
    """The model's saved settings with the user's (non-None) overrides on top, completed for the model; and a note
    for each override that changes a saved value, so a user hears that they read differently from the training."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    notes = [f"reading with {k} {v!r}, not the {getattr(saved, k)!r} this model was saved with"
             for k, v in changes.items() if getattr(saved, k, None) is not None and getattr(saved, k) != v]
    length = changes.get("max_length")
    for stride, room, share in (("doc_stride", 3, 3), ("window_stride", 2, 4)):
        old = getattr(saved, stride)
        if length and stride not in changes and old and old >= length - room:  # a stride the shorter length can't hold
            changes[stride] = length // share
            notes.append(f"{stride} {old} does not fit max_length {length}: reading with {changes[stride]}")
    unknown = sorted(set(changes) - {f.name for f in fields(Reading)})
    if unknown:
        raise BertkitError(f"unknown reading setting(s): {', '.join(unknown)}")
    reading = replace(saved, **changes)
    return reading.for_model(config, where), notes


def pooling_modes(pooling: str) -> list[str]:
    """The modes of a pooling setting ("cls+mean" -> ["cls", "mean"]), each one of POOLINGS."""
    modes = pooling.split("+") if isinstance(pooling, str) else [pooling]
    if not all(m in POOLINGS for m in modes):
        raise BertkitError(f"pooling must be one of {POOLINGS} (several joined by '+'), got {pooling!r}")
    return modes
