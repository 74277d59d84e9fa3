"""`bertkit <verb>`: thin argument parsing over the library. A user's mistake prints one line and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertkit.errors import BertkitError


def _tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import Tokenizer
    strip = {"auto": None, "yes": True, "no": False}[args.strip_accents]
    tok = Tokenizer.train(files=args.files, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                          lowercase=not args.cased, strip_accents=strip, chinese_chars=not args.no_chinese_chars,
                          limit_alphabet=args.limit_alphabet, show_progress=not args.quiet)
    tok.save(args.out)
    print(f"vocabulary of {tok.vocab_size} tokens written to {args.out} (tokenizer.json, vocab.txt)")


def _tokenizer_encode(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import Tokenizer
    tok = Tokenizer.load(args.tokenizer)
    e = tok.encode(args.text, args.pair, max_length=args.max_length)
    print(json.dumps({"tokens": e.tokens, "input_ids": e.ids, "token_type_ids": e.type_ids,
                      "offsets": e.offsets, "word_ids": e.word_ids}, ensure_ascii=False))


def _convert(args: argparse.Namespace) -> None:
    from bertkit.convert import convert
    loaded = convert(args.src, args.dst, args.to, task=args.task)
    for note in loaded.notes:
        print(f"note: {note}")
    kind = "Hugging Face" if args.to == "hf" else "bertkit"
    print(f"{loaded.model.task} model written to {args.dst} in {kind} format")


def _info(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import load_model
    loaded = load_model(args.model)
    m, c = loaded.model, loaded.model.config
    info = {"task": m.task, "layers": c.num_layers, "hidden": c.hidden_size, "heads": c.num_heads,
            "intermediate": c.intermediate_size, "vocab_size": c.vocab_size,
            "max_positions": c.max_position_embeddings,
            "parameters": sum(p.numel() for p in m.parameters()),
            "tokenizer_vocab": loaded.tokenizer.vocab_size if loaded.tokenizer else None,
            "labels": loaded.labels, "notes": loaded.notes}
    print(json.dumps(info, indent=2, ensure_ascii=False))


def _demo(args: argparse.Namespace) -> None:
    from bertkit.demo import run_demo
    if args.limit is not None and args.limit < 20:
        raise BertkitError("--limit must be at least 20 paragraphs per split")
    run_demo(Path(args.out), model_dir=args.model, limit=args.limit)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertkit", description=__doc__.split("\n")[0])
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    tok = verbs.add_parser("tokenizer", help="train or try a WordPiece tokenizer")
    tok_verbs = tok.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tok_verbs.add_parser("train", help="learn a WordPiece vocabulary from text files")
    t.add_argument("files", nargs="+", help="plain-text files (UTF-8)")
    t.add_argument("-o", "--out", required=True, help="directory for tokenizer.json and vocab.txt")
    t.add_argument("--vocab-size", type=int, default=30522, help="vocabulary size (default 30522)")
    t.add_argument("--min-frequency", type=int, default=2, help="least count for a merge (default 2)")
    t.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    t.add_argument("--strip-accents", choices=["auto", "yes", "no"], default="auto",
                   help="auto strips accents only when lowercasing (default)")
    t.add_argument("--no-chinese-chars", action="store_true",
                   help="do not split CJK characters into one token each")
    t.add_argument("--limit-alphabet", type=int, default=1000,
                   help="most single characters kept (raise to ~6000 for Chinese)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_tokenizer_train)
    e = tok_verbs.add_parser("encode", help="show how a tokenizer splits a text (JSON)")
    e.add_argument("tokenizer", help="model directory, tokenizer.json or vocab.txt")
    e.add_argument("text")
    e.add_argument("--pair", help="second text of a pair (segment 1)")
    e.add_argument("--max-length", type=int, help="truncate to this many tokens")
    e.set_defaults(func=_tokenizer_encode)

    c = verbs.add_parser("convert", help="Hugging Face BERT folder <-> bertkit model directory")
    c.add_argument("src", help="a bertkit or Hugging Face BERT directory")
    c.add_argument("dst", help="output directory (replaced atomically if it exists)")
    c.add_argument("--to", required=True, choices=["hf", "bertkit"], help="output format")
    c.add_argument("--task", choices=["encoder", "pretraining", "masked_lm", "sequence_classification",
                                      "token_classification", "question_answering"],
                   help="head to build when importing (default: the source's architecture)")
    c.set_defaults(func=_convert)

    i = verbs.add_parser("info", help="describe a model directory (bertkit or Hugging Face)")
    i.add_argument("model")
    i.set_defaults(func=_info)

    d = verbs.add_parser("demo", help="the main job: a real pipeline on embedded defaults")
    d.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    d.add_argument("--model", help="a BERT folder to use instead of the packaged all-MiniLM-L6-v2")
    d.add_argument("--limit", type=int, help="use N evenly spaced paragraphs per split (a quick check)")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BertkitError as e:
        print(f"bertkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
