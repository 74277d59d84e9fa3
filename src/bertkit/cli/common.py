"""What the verbs share: the one-line-error parser and the options several verbs take."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bertkit.errors import BertkitError
from bertkit.folders import MARKER, claim, mark
from bertkit.options import POSITIVE_INT


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (`bertkit: error: finetune: argument --lr: ...`, exit 2)."""

    def error(self, message: str):
        verb = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise BertkitError(f"{verb}{message}")


MODEL_ARGS = ("model", "teacher", "init", "src", "mlm", "augment_mlm")
"""The options that name a model folder (distill's --student, a preset or a model, is resolved by distill), in every
verb that has them: a Hugging Face Hub name given there is
resolved to its snapshot in the HF cache before the verb runs (`resolve_models`), so that the verb, its claim on
its output folder and the run config it writes all see one local folder."""


TOKENIZER_ARGS = ("tokenizer",)
"""The options that name a tokenizer (`tokenizer encode`, `prepare --tokenizer`): a Hub name there fetches the
tokenizer's files only."""


def resolve_models(args: argparse.Namespace) -> None:
    """Each model option holding a Hub name (`org/name`, `org/name@revision`) replaced by its local snapshot."""
    from bertkit.hub import resolve_model, resolve_tokenizer
    for dests, resolve in ((MODEL_ARGS, resolve_model), (TOKENIZER_ARGS, resolve_tokenizer)):
        for dest in dests:
            value = getattr(args, dest, None)
            if isinstance(value, str):
                setattr(args, dest, str(resolve(value)))
    if getattr(args, "verb", None) == "serve":  # NAME=DIR or DIR; a Hub model is named as on the Hub, not by commit
        args.models = [_served(spec) for spec in args.models]


def _served(spec: str) -> str:
    from bertkit.hub import is_hub_name, resolve_model
    name, sep, folder = spec.partition("=")
    if sep and folder:
        return f"{name}={resolve_model(folder)}"
    if is_hub_name(spec):
        return f"{spec.partition('@')[0].rsplit('/', 1)[-1]}={resolve_model(spec)}"
    return spec


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="write into an existing, non-empty output folder that "
                   "another command wrote (never one that holds the input model or a training run)")


TEXT_COLUMN_HELP = "the CSV/TSV column or JSON lines key that holds the text (default: text)"
LABEL_COLUMN_HELP = "the CSV/TSV column or JSON lines key that holds the label (default: label)"


def add_columns(p: argparse.ArgumentParser, label: bool = True) -> None:
    p.add_argument("--text-column", default="text", help=TEXT_COLUMN_HELP)
    p.add_argument("--pair-column", help="second text of a pair (NLI, paraphrase)")
    if label:
        p.add_argument("--label-column", default="label", help=LABEL_COLUMN_HELP)
        p.add_argument("--label-separator", default="|", help="between labels of a multi-label example")


def columns(args: argparse.Namespace) -> dict:
    return {"text_column": args.text_column, "pair_column": args.pair_column, "label_column": args.label_column,
            "label_separator": args.label_separator}


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_threads(p: argparse.ArgumentParser) -> None:
    """--threads and --device on a verb that runs a model; `main` applies them (bertkit.hardware.use_threads,
    use_device) before the verb runs."""
    add_device(p)
    p.add_argument("--threads", type=POSITIVE_INT, help="torch threads (default: the CPUs this process may use, "
                   "os.sched_getaffinity; OMP_NUM_THREADS when set). Fewer than the cores leaves room for "
                   "another job on a shared machine")


def add_workers(p: argparse.ArgumentParser) -> None:
    """--workers on a batch inference verb; `main` starts them (bertkit.cli.workers)."""
    p.add_argument("--workers", type=POSITIVE_INT, default=1, help="processes on this machine sharing the input, "
                   "each with the CPUs divided among them (or a GPU each), as `torchrun --nproc-per-node N` would "
                   "(default 1)")


def add_device(p: argparse.ArgumentParser) -> None:
    """--device on a verb that runs a model (bertkit.hardware.resolve_device reads it)."""
    from bertkit.hardware import DEFAULT_DEVICE, DEVICES
    p.add_argument("--device", metavar="DEVICE", help=f"{', '.join(DEVICES)} (default {DEFAULT_DEVICE}: the GPU "
                   "when there is one, else the CPU; int8 runs on the CPU)")


@contextmanager
def claimed(out: str | Path, verb: str, *, overwrite: bool, inputs: Iterable[str | Path] = (),
            run: bool = False, needs: int = 0) -> Iterator[Path]:
    """claim `out` for `bertkit verb` and mark it as the verb's at once, not when the verb is done: a run killed
    midway (kill -9, a lost machine) leaves a folder the same command may resume or rewrite. A verb that fails
    before writing anything else takes its marker (and the folder it made) away again. Rank 0 of a torchrun job
    claims; the other ranks write into the folder it made."""
    from bertkit.hardware import rank

    if rank() != 0:
        yield Path(out)
        return
    out = claim(out, verb, overwrite=overwrite, inputs=inputs, run=run, needs=needs)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    mark(out, verb)
    try:
        yield out
    except BaseException:
        if not any(p.name != MARKER for p in out.iterdir()):
            (out / MARKER).unlink(missing_ok=True)
            if made:
                out.rmdir()
        raise


def headline(m: dict) -> dict:
    """The metrics worth printing, rounded."""
    keys = ("accuracy", "macro_f1", "micro_f1", "mcc", "ece", "precision", "recall", "f1", "exact_match", "pearson",
            "spearman", "mse", "loss")
    return {k: round(m[k], 4) for k in keys if k in m and isinstance(m[k], (int, float))}


def print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False))
