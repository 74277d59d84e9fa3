"""Inference verbs: `predict` (JSON lines for texts or a file, for every task) and `evaluate` (a labelled file's
metrics). Both read as the model was saved to read; the reading options override that, with a note."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from bertkit.cli.common import add_columns, add_overwrite, add_quiet, add_threads, add_workers, columns, headline
from bertkit.cli.options import add_fields, given
from bertkit.errors import BertkitError
from bertkit.folders import claim, mark
from bertkit.options import POSITIVE_INT

READING_FIELDS = ["max_length", "window_stride", "window_pool", "doc_stride", "max_answer_length", "threshold"]


def _add_inference(p: argparse.ArgumentParser) -> None:
    from bertkit.inference.reading import WINDOW_POOLS, Reading
    from bertkit.model.precision import PRECISIONS
    add_fields(p, Reading, READING_FIELDS, choices={"window_pool": WINDOW_POOLS})
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="inference precision: bf16 (CPU with bf16 instructions, GPU) or int8 (CPU) run faster")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model on a few fixed shapes (fp32, bf16; ~10 s a shape, cached on disk)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="inputs per forward pass (default 64)")
    add_threads(p)
    add_workers(p)


def register(verbs) -> None:
    pr = verbs.add_parser("predict", help="predictions as JSON lines: labels, entities, answers or masked words")
    pr.add_argument("model", help="a bertkit or Hugging Face BERT directory, or a Hub name")
    pr.add_argument("--text", action="append", help="a text (repeatable); with [MASK] for a fill-mask model")
    pr.add_argument("--pair", action="append", help="the second text of each --text (sentence-pair models)")
    pr.add_argument("--question", action="append", help="question answering: a question (repeatable)")
    pr.add_argument("--context", action="append", help="question answering: the context of each --question")
    pr.add_argument("--input", help="a file: CSV/TSV/JSON lines or Parquet/Arrow, a datasets folder or NAME:SPLIT "
                    "(classification; question answering: JSON lines "
                    "with question and context fields, or SQuAD JSON), or a text per line (ner, fill-mask)")
    pr.add_argument("--top-k", type=POSITIVE_INT, default=5, help="fill-mask: fillers per [MASK] (default 5)")
    pr.add_argument("--output", help="write the JSON lines to this file (default: standard output); with --resume, "
                    "a killed run continues from its last complete line. Several processes (torchrun, --workers) "
                    "write parts into OUTPUT.parts/, joined into OUTPUT at the end; a killed job run again continues "
                    "from its parts")
    pr.add_argument("--resume", action="store_true", help="continue the unfinished run that writes --output")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --output file (and the parts of "
                    "an unfinished run of several processes)")
    add_columns(pr, label=False)
    _add_inference(pr)
    add_quiet(pr)
    pr.set_defaults(func=predict)

    ev = verbs.add_parser("evaluate", help="score a fine-tuned model on a labelled file")
    ev.add_argument("model", help="a fine-tuned classifier, tagger or question-answering model directory, or a "
                    "Hub name")
    ev.add_argument("--input", required=True, help="CSV/TSV/JSON lines (classification), CoNLL/JSON lines (ner) "
                    "or SQuAD JSON (qa); or Parquet/Arrow, a datasets folder or NAME:SPLIT")
    ev.add_argument("--out", help="directory for metrics.json and confusion.png")
    add_columns(ev)
    _add_inference(ev)
    add_overwrite(ev)
    add_quiet(ev)
    ev.set_defaults(func=evaluate)


def predict(args: argparse.Namespace) -> None:
    from bertkit.encoding.inputs import truncation_note
    from bertkit.inference import FillMask, QuestionAnswerer, Reading, TextClassifier, TokenTagger, pipeline
    from bertkit.hardware import world
    from bertkit.inference.shards import parts_folder, predict_parts
    from bertkit.inference.stream import count_lines, finish_output, open_output, stream
    if not (args.text or args.input or args.question):
        raise BertkitError("give --text, --question/--context or --input")
    if args.resume and not args.output:
        raise BertkitError("--resume needs --output FILE (the output of the run to continue)")
    shared = world() > 1 or bool(args.output and parts_folder(args.output).is_dir())
    if shared and not args.output:
        raise BertkitError("several processes write --output FILE (each its parts of it); give --output")
    if shared and args.resume:
        raise BertkitError("--resume continues a one-process run; the processes of a job continue from their "
                           "parts by themselves: run the same command again, without --resume")
    p = pipeline(args.model, precision=args.precision, compile=args.compile, **given(args, Reading, READING_FIELDS))
    for note in p.notes:
        print(f"note: {note}", file=sys.stderr)
    bs = args.batch_size
    pairs = bool(args.pair or (args.input and not args.text and args.pair_column))
    # rows: the inputs, lazily read; run: a chunk of rows -> one JSON object per row
    if isinstance(p, QuestionAnswerer):
        rows = _questions(args)

        def run(part):
            questions, contexts = [q for q, _ in part], [c for _, c in part]
            return [{"question": q, **r} for q, r in zip(questions, p(questions, contexts, bs))]
    elif isinstance(p, TextClassifier):
        rows = _texts_and_pairs(args)

        def run(part):
            texts = [t for t, _ in part]
            return [{"text": t, **r} for t, r in zip(texts, p(texts, [x for _, x in part] if pairs else None, bs))]
    elif isinstance(p, TokenTagger):
        rows = args.text or _lines(args.input)

        def run(part):  # entities, and how much of a long text was not read
            return [{"text": t, **{k: r[k] for k in ("entities", "truncated") if k in r}}
                    for t, r in zip(part, p(part, bs))]
    elif isinstance(p, FillMask):
        rows = args.text or _lines(args.input)

        def run(part):
            return [{"text": t, "fills": r} for t, r in zip(part, p(part, args.top_k))]
    else:
        raise BertkitError(f"{args.model} holds a {p.model.task} model with no task head; for sentence vectors use "
                           "`bertkit embed`, or fine-tune it first")
    counts = {"rows": 0, "cut": 0}

    def counted(part: list) -> list[dict]:
        out = run(part)
        counts["rows"] += len(out)
        counts["cut"] += sum("truncated" in r for r in out)
        return out

    from_file = bool(args.input) and not (args.text or args.question)
    total = count_lines(args.input) if from_file and Path(args.input).suffix.lower() not in (".json",) else None
    if total and isinstance(p, TextClassifier) and Path(args.input).suffix.lower() in (".csv", ".tsv"):
        total -= 1  # the header
    if shared:
        job = predict_parts(rows, counted, args.output, _run_record(args), overwrite=args.overwrite, total=total,
                            progress=from_file and not args.quiet)
        every = job.gather(counts)
        if every is None:
            return
        counts = {k: sum(c[k] for c in every) for k in counts}
    elif args.output:
        sink, done = open_output(args.output, _run_record(args), resume=args.resume, overwrite=args.overwrite)
        try:
            with sink:
                stream(rows, counted, sink, skip=done, total=total, progress=from_file and not args.quiet)
        except BertkitError:
            if not Path(args.output).stat().st_size:  # refused before any row: leave nothing behind
                finish_output(args.output)
                Path(args.output).unlink()
            raise
        except OSError as e:  # a full or vanished disk: the complete lines written so far are kept for --resume
            raise BertkitError(f"--output {args.output}: cannot write ({e.strerror}); the rows written are kept: "
                               "make room, then run the same command with --resume") from None
        finish_output(args.output)
    else:
        stream(rows, counted, sys.stdout, total=total, progress=from_file and not args.quiet)
    note = truncation_note([(counts["cut"], counts["rows"], "texts")], p.reading.max_length,
                           windows=isinstance(p, TextClassifier) and not pairs)
    if note:
        print(f"note: {note}", file=sys.stderr)


def _run_record(args) -> dict:
    """What a resumed predict must read as the run it continues did: model, input (path, size, time) and options."""
    record = {"model": str(Path(args.model).resolve()), "weights": _stat(Path(args.model))}
    if args.input and not (args.text or args.question):
        path = Path(args.input)
        stat = path.stat() if path.is_file() else None
        record["input"] = {"path": str(path.resolve()), "bytes": stat and stat.st_size,
                           "mtime_ns": stat and stat.st_mtime_ns}
    else:
        record["input"] = {k: getattr(args, k) for k in ("text", "pair", "question", "context")}
    record["options"] = {k: getattr(args, k) for k in ("text_column", "pair_column", "top_k", "precision",
                                                       *READING_FIELDS)}
    return record


def _stat(model: Path) -> dict | None:
    """The size and time of a model folder's weights: a model retrained in place reads as another model."""
    from bertkit.checkpoint import weights_file
    try:
        stat = weights_file(model).stat()
    except (BertkitError, OSError):
        return None
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _texts_and_pairs(args) -> Iterable[tuple[str, str | None]]:
    if args.text:
        if args.pair and len(args.pair) != len(args.text):
            raise BertkitError(f"{len(args.text)} --text but {len(args.pair)} --pair")
        return list(zip(args.text, args.pair or [None] * len(args.text)))
    from bertkit.data.tasks import iter_examples
    examples = iter_examples(args.input, text_column=args.text_column, pair_column=args.pair_column,
                             require_labels=False)
    return ((e.text, e.pair or "" if args.pair_column else None) for e in examples)


def _questions(args) -> Iterable[tuple[str, str]]:
    if args.question:
        if not args.context or len(args.context) != len(args.question):
            raise BertkitError("give one --context for each --question")
        return list(zip(args.question, args.context))
    if not args.input:
        raise BertkitError("a question-answering model needs --question and --context, or --input")
    from bertkit.data.tables import is_table
    if Path(args.input).suffix == ".json" or is_table(args.input):  # SQuAD: a JSON document or a table, read whole
        from bertkit.data.tasks import read_squad
        return [(e.question, e.context) for e in read_squad(args.input)]
    return _question_lines(args.input)


def _question_lines(path: str) -> Iterator[tuple[str, str]]:
    from bertkit.data.text import json_object
    for n, line in _numbered_lines(path):
        record = json_object(line, f"{path}:{n}")
        if not isinstance(record.get("question"), str) or not isinstance(record.get("context"), str):
            raise BertkitError(f"{path}:{n}: expected string fields 'question' and 'context'")
        yield record["question"], record["context"]


def _lines(path: str | None) -> Iterator[str]:
    if path is None:
        raise BertkitError("give --text or --input")
    return (line for _, line in _numbered_lines(path))


def _numbered_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, read lazily; an error names the file (and the line)."""
    from bertkit.data.text import read_lines
    if Path(path).is_dir():
        raise BertkitError(f"{path}: is a folder, not a file")
    if not Path(path).exists():
        raise BertkitError(f"{path}: file not found")
    seen = False
    for n, line, _ in read_lines(Path(path)):
        line = line.rstrip("\r\n")
        if line.strip():
            seen = True
            yield n, line
    if not seen:
        raise BertkitError(f"{path}: no texts in this file")


def evaluate(args: argparse.Namespace) -> None:
    from bertkit.evaluate.runner import evaluate_file
    from bertkit.hardware import rank
    from bertkit.inference import Reading
    if args.out and rank() == 0:
        claim(args.out, "evaluate", overwrite=args.overwrite, inputs=[args.model])
    results = evaluate_file(args.model, args.input, args.out, columns(args), precision=args.precision,
                            compile=args.compile, batch_size=args.batch_size, progress=not args.quiet,
                            **given(args, Reading, READING_FIELDS))
    if rank() != 0:  # the processes of a job: the first one speaks and writes
        return
    print(json.dumps(headline(results), indent=2))
    if args.out:
        mark(args.out, "evaluate")
        print(f"all metrics: {Path(args.out) / 'metrics.json'}")
