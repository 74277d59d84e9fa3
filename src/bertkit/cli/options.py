"""Command-line options derived from the config dataclasses, so a default, a range and a help text are written
once, on the field: `--batch-size` is `FinetuneConfig.batch_size`, typed and checked as the field declares."""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import textwrap
from dataclasses import MISSING, fields

from bertkit.options import Range

TYPES = {"int": int, "float": float, "str": str}


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (litgpt's style), whitespace collapsed."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def add_fields(parser: argparse.ArgumentParser, cls, names: list[str], *, defaults: dict | None = None,
               flags: dict[str, str | tuple] | None = None, choices: dict[str, tuple] | None = None) -> None:
    """An option for each named field of cls. Its value is None unless given, so the dataclass's default (or the
    recipe's, in `defaults`, shown in the help) applies. A bool field defaulting to True becomes --no-NAME.
    flags: another spelling of a field's option, or a tuple of spellings (aliases)."""
    docs = field_docs(cls)
    by_name = {f.name: f for f in fields(cls)}
    for name in names:
        f = by_name[name]
        default = (defaults or {}).get(name, f.default if f.default is not MISSING else None)
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        help_text = docs.get(name, "").replace("%", "%%")  # argparse formats help with %
        kind = str(f.type).split("|")[0].strip()
        if kind == "bool":
            if default:
                flag = flag if (flags or {}).get(name) else "--no-" + name.replace("_", "-")
            if default and help_text:
                help_text = "(on by default; this flag turns it off) " + help_text
            parser.add_argument(*_spellings(flag), dest=name, action="store_const", const=not default, default=None,
                                help=help_text)
            continue
        shown = "" if default is None else f" (default {default})"
        parser.add_argument(*_spellings(flag), dest=name, default=None, type=f.metadata.get("range", TYPES.get(kind, str)),
                            choices=(choices or {}).get(name), metavar=None if (choices or {}).get(name) else
                            name.upper(), help=help_text + shown)


def _spellings(flag: str | tuple) -> tuple:
    return flag if isinstance(flag, tuple) else (flag,)


def given(args: argparse.Namespace, cls, names: list[str] | None = None) -> dict:
    """{field: value} of the options of cls that were given (not None)."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if (names is None or f.name in names) and getattr(args, f.name, None) is not None}


def check_value(action: argparse.Action, value, where: str):
    """A value from a config file, checked as the command line would check it (type, range, choices)."""
    if isinstance(action.type, Range) and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            value = action.type(str(value))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{where}: {action.dest} {e}") from None
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(f"{where}: {action.dest} must be one of {', '.join(map(str, action.choices))}, "
                                         f"got {value!r}")
    return value
