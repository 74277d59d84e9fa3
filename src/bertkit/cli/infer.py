"""Inference verbs: `predict` (JSON lines for texts or a file, for every task) and `evaluate` (a labelled file's
metrics). Both read as the model was saved to read; the reading options override that, with a note."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertkit.cli.common import add_columns, add_overwrite, add_threads, columns, headline, print_json
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


def register(verbs) -> None:
    pr = verbs.add_parser("predict", help="predictions as JSON lines: labels, entities, answers or masked words")
    pr.add_argument("model")
    pr.add_argument("--text", action="append", help="a text (repeatable); with [MASK] for a fill-mask model")
    pr.add_argument("--pair", action="append", help="the second text of each --text (sentence-pair models)")
    pr.add_argument("--question", action="append", help="question answering: a question (repeatable)")
    pr.add_argument("--context", action="append", help="question answering: the context of each --question")
    pr.add_argument("--input", help="a file: CSV/TSV/JSON lines (classification; question answering: JSON lines "
                    "with question and context fields, or SQuAD JSON), or a text per line (ner, fill-mask)")
    pr.add_argument("--top-k", type=POSITIVE_INT, default=5, help="fill-mask: fillers per [MASK] (default 5)")
    add_columns(pr, label=False)
    _add_inference(pr)
    pr.set_defaults(func=predict)

    ev = verbs.add_parser("evaluate", help="score a fine-tuned model on a labelled file")
    ev.add_argument("model")
    ev.add_argument("--input", required=True, help="CSV/TSV/JSON lines (classification), CoNLL/JSON lines (ner) "
                    "or SQuAD JSON (qa)")
    ev.add_argument("--out", help="directory for metrics.json and confusion.png")
    add_columns(ev)
    _add_inference(ev)
    add_overwrite(ev)
    ev.set_defaults(func=evaluate)


def predict(args: argparse.Namespace) -> None:
    from bertkit.inference import FillMask, QuestionAnswerer, Reading, TextClassifier, TokenTagger, pipeline
    if not (args.text or args.input or args.question):
        raise BertkitError("give --text, --question/--context or --input")
    p = pipeline(args.model, precision=args.precision, compile=args.compile, **given(args, Reading, READING_FIELDS))
    for note in p.notes:
        print(f"note: {note}", file=sys.stderr)
    if isinstance(p, QuestionAnswerer):
        questions, contexts = _questions(args)
        for q, c, r in zip(questions, contexts, p(questions, contexts, args.batch_size)):
            print_json({"question": q, **r})
    elif isinstance(p, TextClassifier):
        texts, pairs = _texts_and_pairs(args)
        for text, r in zip(texts, p(texts, pairs, args.batch_size)):
            print_json({"text": text, **r})
    elif isinstance(p, TokenTagger):
        texts = args.text or _lines(args.input)
        for text, r in zip(texts, p(texts, args.batch_size)):
            print_json({"text": text, "entities": r["entities"]})
    elif isinstance(p, FillMask):
        texts = args.text or _lines(args.input)
        for text, r in zip(texts, p(texts, args.top_k)):
            print_json({"text": text, "fills": r})
    else:
        raise BertkitError(f"{args.model} holds a {p.model.task} model with no task head; for sentence vectors use "
                           "`bertkit embed`, or fine-tune it first")


def _texts_and_pairs(args) -> tuple[list[str], list[str] | None]:
    if args.text:
        if args.pair and len(args.pair) != len(args.text):
            raise BertkitError(f"{len(args.text)} --text but {len(args.pair)} --pair")
        return args.text, args.pair
    from bertkit.data.tasks import read_examples
    examples = read_examples(args.input, text_column=args.text_column, pair_column=args.pair_column,
                             require_labels=False)
    return [e.text for e in examples], ([e.pair or "" for e in examples] if args.pair_column else None)


def _questions(args) -> tuple[list[str], list[str]]:
    if args.question:
        if not args.context or len(args.context) != len(args.question):
            raise BertkitError("give one --context for each --question")
        return args.question, args.context
    if not args.input:
        raise BertkitError("a question-answering model needs --question and --context, or --input")
    if Path(args.input).suffix == ".json":
        from bertkit.data.tasks import read_squad
        examples = read_squad(args.input)
        return [e.question for e in examples], [e.context for e in examples]
    from bertkit.data.text import json_object
    questions, contexts = [], []
    for n, line in enumerate(_lines(args.input), 1):
        record = json_object(line, f"{args.input}:{n}")
        if not isinstance(record.get("question"), str) or not isinstance(record.get("context"), str):
            raise BertkitError(f"{args.input}:{n}: expected string fields 'question' and 'context'")
        questions.append(record["question"])
        contexts.append(record["context"])
    return questions, contexts


def _lines(path: str | None) -> list[str]:
    if path is None:
        raise BertkitError("give --text or --input")
    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise BertkitError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise BertkitError(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError:
        raise BertkitError(f"{path}: not UTF-8 text") from None
    if not lines:
        raise BertkitError(f"{path}: no texts in this file")
    return lines


def evaluate(args: argparse.Namespace) -> None:
    from bertkit.evaluate.runner import evaluate_file
    from bertkit.inference import Reading
    if args.out:
        claim(args.out, "evaluate", overwrite=args.overwrite, inputs=[args.model])
    results = evaluate_file(args.model, args.input, args.out, columns(args), precision=args.precision,
                            compile=args.compile, batch_size=args.batch_size, **given(args, Reading, READING_FIELDS))
    print(json.dumps(headline(results), indent=2))
    if args.out:
        mark(args.out, "evaluate")
        print(f"all metrics: {Path(args.out) / 'metrics.json'}")
