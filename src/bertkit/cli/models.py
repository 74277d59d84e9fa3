"""Model-directory verbs: `convert` (Hugging Face <-> bertkit), `info`, `export --onnx`."""

from __future__ import annotations

import argparse
import json

from bertkit.cli.common import add_overwrite
from bertkit.folders import claim, mark
from bertkit.heads import HEADS
from bertkit.options import Range



def register(verbs) -> None:
    c = verbs.add_parser("convert", help="a Hugging Face BERT folder or an old bertkit directory as a current model "
                         "directory (which transformers also opens), optionally with another head")
    c.add_argument("src", help="a bertkit or Hugging Face BERT directory, or a Hub name")
    c.add_argument("dst", help="output directory (replaced atomically if it exists)")
    c.add_argument("--to", choices=["hf", "bertkit"], default="hf",
                   help="kept for scripts: both write the same folder, Hugging Face's layout plus bertkit.json")
    c.add_argument("--task", choices=list(HEADS),
                   help="head to build when importing (default: the source's architecture)")
    add_overwrite(c)
    c.set_defaults(func=convert)

    i = verbs.add_parser("info", help="describe a model directory (bertkit or Hugging Face)")
    i.add_argument("model", help="a bertkit or Hugging Face BERT directory, or a Hub name")
    i.set_defaults(func=info)

    ex = verbs.add_parser("export", help="a model directory as ONNX for ONNX Runtime (fused; int8 optional)")
    ex.add_argument("model", help="a bertkit or Hugging Face BERT directory, or a Hub name")
    ex.add_argument("out", help="output directory: model.onnx (+ model.int8.onnx), tokenizer, labels, config")
    ex.add_argument("--onnx", action="store_true", required=True, help="export to ONNX (the one format so far)")
    ex.add_argument("--int8", action="store_true", help="also write a dynamically quantised model.int8.onnx")
    ex.add_argument("--no-optimize", action="store_true", help="skip ONNX Runtime's BERT graph fusions")
    ex.add_argument("--opset", type=Range(int, 14, 20), default=17, help="ONNX opset (14-20; default 17)")
    add_overwrite(ex)
    ex.set_defaults(func=export)


def convert(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import convert_model, weights_bytes
    claim(args.dst, "convert", overwrite=args.overwrite, inputs=[args.src], needs=weights_bytes(args.src))
    loaded = convert_model(args.src, args.dst, task=args.task)
    mark(args.dst, "convert")
    for note in loaded.notes:
        print(f"note: {note}")
    print(f"{loaded.model.task} model written to {args.dst} (a Hugging Face BERT folder that bertkit reads as its "
          "own; --to hf and --to bertkit write the same)")


def info(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import load_model
    loaded = load_model(args.model)
    m, c = loaded.model, loaded.model.config
    described = {"task": m.task, "layers": c.num_layers, "hidden": c.hidden_size, "heads": c.num_heads,
                 "intermediate": c.intermediate_size, "vocab_size": c.vocab_size,
                 "max_positions": c.max_position_embeddings,
                 "parameters": sum(p.numel() for p in m.parameters()),
                 "tokenizer_vocab": loaded.tokenizer.vocab_size if loaded.tokenizer else None,
                 "labels": loaded.labels, "reading": loaded.reading, "notes": loaded.notes}
    print(json.dumps(described, indent=2, ensure_ascii=False))


def export(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import weights_bytes
    from bertkit.export import export_onnx
    claim(args.out, "export", overwrite=args.overwrite, inputs=[args.model], needs=weights_bytes(args.model))
    out = export_onnx(args.model, args.out, optimize=not args.no_optimize, int8=args.int8, opset=args.opset)
    mark(out, "export")
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.onnx')))} to {out}")
