"""`bertkit <verb>`: thin argument parsing over the library, one module per pipeline stage. A user's mistake
prints one line and exits 2. Options of a long verb can also come from `--config FILE` (TOML or JSON; flags win).

    cli/data.py      tokenizer, prepare, data          cli/train.py    pretrain, finetune, distill, baseline
    cli/infer.py     predict, evaluate                 cli/inspect.py  explain, embed, similar
    cli/models.py    convert, info, export             cli/demo.py     demo
    cli/serve.py     serve                             cli/robust.py   attack, bias
    cli/about.py     env (and `bertkit --version`)    cli/workers.py  --workers N (predict, embed, evaluate)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertkit.cli.common import Parser, resolve_models
from bertkit.errors import BertkitError

SHORT_VERBS = ("info", "data", "tokenizer encode", "data list", "data get", "env")
"""Verbs without a --config file: a handful of options at most."""


def build_parser() -> argparse.ArgumentParser:
    from bertkit.cli import about, data, demo, infer, inspect, models, robust, serve, train
    from bertkit.env import version
    p = Parser(prog="bertkit", description="BERT end to end: vocabulary, pre-training, fine-tuning, evaluation, "
               "explanation, speed.")
    p.add_argument("--version", action="version", version=f"bertkit {version()}")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for stage in (data, models, train, infer, inspect, robust, serve, demo, about):
        stage.register(verbs)
    for name, sub in _verbs(p).items():
        if name not in SHORT_VERBS:
            sub.add_argument("--config", help="TOML or JSON file of these options (command-line flags win)")
    return p


def _verbs(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """{'finetune': its parser, 'tokenizer train': ..., ...}: every leaf verb."""
    out = {}
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            if sub._subparsers is not None:
                out |= _verbs(sub, f"{prefix}{name} ")
            else:
                out[prefix + name] = sub
    return out


def _apply_config_file(sub: argparse.ArgumentParser, path: Path) -> None:
    """Make the options of a TOML/JSON file the verb's defaults, so command-line flags still win; each value is
    checked as its flag would be."""
    from bertkit.cli.options import check_value
    from bertkit.config import read_json
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise BertkitError(f"{path}: reading TOML on Python 3.10 needs `pip install tomli` (or give the "
                                   "options as JSON)") from None
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise BertkitError(f"{path}: {e}") from None
    else:
        values = read_json(path)
    # a key is an option's name as on the command line (steps, no-nsp) or its field name (max_steps)
    names = {}
    for a in sub._actions:
        if a.dest not in ("help", "config"):
            names[a.dest] = a
            names |= {o.lstrip("-").replace("-", "_"): a for o in a.option_strings if o.startswith("--")}
    defaults = {}
    for key, value in values.items():
        action = names.get(key.replace("-", "_"))
        if action is None:
            raise BertkitError(f"{path}: unknown option {key!r}")
        if isinstance(action, (argparse._StoreConstAction, argparse._StoreTrueAction)) and key != action.dest:
            if not isinstance(value, bool):  # a flag: `no-nsp = true`
                raise BertkitError(f"{path}: {key} is a flag; give true or false")
            if value:
                defaults[action.dest] = action.const
        else:
            try:
                defaults[action.dest] = check_value(action, value, str(path))
            except argparse.ArgumentTypeError as e:
                raise BertkitError(str(e)) from None
        action.required = False  # given in the file, no longer required on the command line
    sub.set_defaults(**defaults)


def _config_path(argv: list[str]) -> Path | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--config="):
            return Path(a.split("=", 1)[1])
    return None


def main(argv: list[str] | None = None) -> int:
    from bertkit.folders import disk_error, release
    argv = sys.argv[1:] if argv is None else list(argv)
    from bertkit.cli.workers import follow_parent
    follow_parent()
    parser = build_parser()
    args = None
    try:
        config = _config_path(argv)
        if config is not None:
            verbs = _verbs(parser)
            name = next((" ".join(argv[:n]) for n in (2, 1) if " ".join(argv[:n]) in verbs), None)
            if name is None or name in SHORT_VERBS:
                raise BertkitError("--config works with a verb that has options: bertkit VERB --config FILE")
            _apply_config_file(verbs[name], config)
        args = parser.parse_args(argv)
        if hasattr(args, "device"):  # a verb that runs a model: its device is decided once, and one this machine
            from bertkit.hardware import use_device  # lacks is refused before a model is fetched or read
            use_device(args.device, precision=getattr(args, "precision", None))
        resolve_models(args)
        if getattr(args, "workers", 1) > 1:  # processes that share the input: each runs this command
            from bertkit.cli.workers import launch
            return launch(argv, args.workers, args.threads)
        if hasattr(args, "threads"):  # a verb that runs a model: torch's threads are decided in one place
            from bertkit.hardware import use_threads
            use_threads(args.threads, adapt=True)
        args.func(args)
    except BertkitError as e:
        print(f"bertkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        sys.stderr.close()
        return 0
    except (OSError, RuntimeError) as e:  # a full or read-only disk wherever a verb wrote: one line naming the path
        out = getattr(args, "out", None) or getattr(args, "dst", None)
        where = getattr(e, "filename", None) or out
        error = disk_error(e, where) if where else None
        if error is None:
            raise
        print(f"bertkit: error: {error}", file=sys.stderr)
        return 2
    finally:
        if args is not None and hasattr(args, "device"):  # main() called in-process (tests): back to the default
            from bertkit.hardware import use_device
            use_device(None)
        release()  # the output folders this verb locked
    return 0
