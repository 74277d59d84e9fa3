"""Numeric options: the valid range of a number is declared once, where the option is defined, and checked
for every way in (the config dataclasses, the command line, config files).

A config dataclass declares it on the field, `lr: float = field(default=5e-4, metadata=at_least(0, open=True))`,
and calls `check_fields(self)` in `__post_init__`; a command-line option takes the same `Range` as its argparse
`type`, either its own or the field's (`field_range(TrainConfig, "lr")`). Non-finite numbers are never valid.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields

from bertkit.errors import BertkitError


@dataclass(frozen=True)
class Range:
    """An int or float interval; None ends are open to infinity. Called with a string it is an argparse type."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.high is None and (self.low, self.low_open) in ((1, False), (0, True)):
            return f"a positive {'integer' if self.kind is int else 'number'}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{what} {' and '.join(parts)}".strip()

    def error(self, value) -> str | None:
        """Why value is not in the range, or None when it is."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.kind is int and not isinstance(value, int)):
            return f"must be {self.describe()}, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"must be {self.describe()}, got {value!r}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return f"must be {self.describe()}, got {value!r}"
        return None

    def check(self, name: str, value) -> None:
        why = self.error(value)
        if why:
            raise BertkitError(f"{name} {why}")

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        why = self.error(value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    def __repr__(self) -> str:  # argparse names the type in some messages
        return self.kind.__name__

    def bad_values(self) -> list[str]:
        """Strings the range rejects (for the command-line fuzz test)."""
        bad = ["nan", "inf", "x"] + (["1.5"] if self.kind is int else [])
        if self.low is not None:
            bad.append(repr(self.kind(self.low)) if self.low_open else repr(self.kind(self.low - 1)))
        if self.high is not None:
            bad.append(repr(self.kind(self.high)) if self.high_open else repr(self.kind(self.high + 1)))
        return bad


def at_least(low: float, *, open: bool = False, kind: type | None = None) -> dict:
    """Field metadata: the value is >= low (> low when open)."""
    return {"range": Range(kind or type(low), low, low_open=open)}


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False,
            kind: type | None = None) -> dict:
    """Field metadata: low <= value <= high (either end open on request)."""
    return {"range": Range(kind or type(low), low, high, low_open, high_open)}


def check_fields(obj, prefix: str = "") -> None:
    """Check every field of a dataclass instance that declares a range; None means unset and passes."""
    for f in fields(obj):
        r = f.metadata.get("range")
        value = getattr(obj, f.name)
        if r is not None and value is not None:
            if r.kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(obj, f.name, value)
            r.check(f"{prefix}{f.name}", value)


def field_range(cls, name: str) -> Range:
    """The Range declared on a dataclass field, to use as an argparse type."""
    for f in fields(cls):
        if f.name == name:
            return f.metadata["range"]
    raise KeyError(name)


POSITIVE_INT = Range(int, 1)
NON_NEGATIVE_INT = Range(int, 0)
POSITIVE = Range(float, 0, low_open=True)
