"""Inspection verbs: `explain` (attributions, attention, faithfulness), `embed` (sentence vectors of a file, a
t-SNE plot), `similar` (nearest texts or words)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertkit.cli.common import (TEXT_COLUMN_HELP, add_columns, add_device, add_overwrite, add_quiet, add_threads,
                               add_workers)
from bertkit.cli.options import add_fields, given
from bertkit.errors import BertkitError
from bertkit.folders import claim, mark
from bertkit.options import NON_NEGATIVE_INT, POSITIVE_INT, Range


def register(verbs) -> None:
    from bertkit.inference.reading import POOLINGS, Reading
    xp = verbs.add_parser("explain", help="why a classifier says what it says: attributions, attention, "
                          "faithfulness (HTML, PNG, JSON)")
    xp.add_argument("model", help="a sequence-classification model directory")
    xp.add_argument("--text", help="the text to explain")
    xp.add_argument("--pair", help="its second text, for sentence-pair models")
    xp.add_argument("--target", help="the label to explain (default: the predicted one)")
    xp.add_argument("--method", default="ig,gxi,saliency,occlusion,lime,attention",
                    help="comma-separated: ig, gxi, saliency, occlusion, lime, attention (default: all)")
    xp.add_argument("--out", default="explanation", help="output directory (default ./explanation)")
    xp.add_argument("--evaluate", metavar="FILE", help="instead of --text: faithfulness (AOPC) of each method "
                    "over a sample of this CSV/TSV/JSON-lines file, as a table")
    xp.add_argument("--limit", type=POSITIVE_INT, default=100, help="with --evaluate: inputs sampled (default 100)")
    xp.add_argument("--steps", type=POSITIVE_INT, default=50, help="integrated-gradients steps (default 50)")
    xp.add_argument("--ig-batch-size", type=POSITIVE_INT, default=10,
                    help="integrated-gradients steps run at once: bounds memory (default 10)")
    xp.add_argument("--lime-samples", type=Range(int, 10), default=300, help="masked variants LIME fits on (default 300)")
    xp.add_argument("--max-words", type=POSITIVE_INT, default=10, help="faithfulness: top 1..N words masked (default 10)")
    xp.add_argument("--no-faithfulness", action="store_true", help="skip the deletion/insertion curves")
    xp.add_argument("--max-length", type=Range(int, 8), help="tokens read at once (default: as the model was saved)")
    xp.add_argument("--window-stride", type=NON_NEGATIVE_INT, help="a text longer than --max-length is explained as "
                    "windows sharing this many tokens; 0 truncates it (default: as the model was saved)")
    xp.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="fixes LIME's samples and the random "
                    "orders of the faithfulness check (default 0)")
    add_quiet(xp)
    add_columns(xp, label=False)
    add_overwrite(xp)
    add_threads(xp)
    xp.set_defaults(func=explain)

    em = verbs.add_parser("embed", help="sentence vectors of a file of texts (+ t-SNE plot by label)")
    em.add_argument("model", help="a bertkit or Hugging Face BERT directory")
    em.add_argument("--input", required=True, help="CSV/TSV/JSON lines (a label column is optional) or .txt "
                    "(a text a line)")
    em.add_argument("--out", required=True, help="directory: vectors.npy, index.jsonl, meta.json (+ tsne.png)")
    add_fields(em, Reading, ["pooling", "max_length"], choices={"pooling": POOLINGS})
    em.add_argument("--layer", type=int, help="hidden layer to pool: 0 embeddings .. L last, negative from the "
                    "end (default: last)")
    em.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="texts per forward pass (default 64)")
    em.add_argument("--no-tsne", action="store_true", help="skip the t-SNE plot")
    em.add_argument("--tsne-limit", type=Range(int, 5), default=2000, help="rows in the t-SNE plot (a seeded sample)")
    em.add_argument("--text-column", default="text", help=TEXT_COLUMN_HELP)
    em.add_argument("--label-column", default="label", help="the CSV/TSV column or JSON lines key of the "
                    "labels that colour the t-SNE plot; optional (default: label)")
    em.add_argument("--resume", action="store_true", help="continue a run into --out that was stopped (killed, disk "
                    "full) from its complete chunks, and refuse one that reads otherwise (the same command continues "
                    "by itself; another one starts again); the old index in --out stays until the new one is complete")
    add_quiet(em)
    add_overwrite(em)
    add_threads(em)
    add_workers(em)
    em.set_defaults(func=embed)

    si = verbs.add_parser("similar", help="nearest texts of an embedded file, or nearest words / analogies")
    si.add_argument("dir", help="a directory written by `bertkit embed` (with --words also a model directory)")
    si.add_argument("--query", action="append", help="a text whose nearest texts to list (repeatable)")
    add_device(si)
    si.add_argument("--words", help='a word or word arithmetic, e.g. "king - man + woman", over the input '
                    "embedding table")
    si.add_argument("--model", help="embed the queries with this model directory (default: the one the index "
                    "records); it must be the model that built the index, a copy elsewhere included")
    si.add_argument("--k", type=POSITIVE_INT, default=10, help="neighbours per query (default 10)")
    si.add_argument("--ivf", action="store_true", help="use the clustered (approximate) index even for a small set")
    si.set_defaults(func=similar)


def explain(args: argparse.Namespace) -> None:
    from bertkit.interpret import evaluate_file, explain, format_table
    if (args.text is None) == (args.evaluate is None):
        raise BertkitError("give --text (explain one input) or --evaluate FILE (faithfulness over a data set)")
    options = {"methods": args.method, "steps": args.steps, "ig_batch_size": args.ig_batch_size,
               "lime_samples": args.lime_samples, "max_words": args.max_words, "seed": args.seed,
               "max_length": args.max_length, "window_stride": args.window_stride}
    out = claim(args.out, "explain", overwrite=args.overwrite, inputs=[args.model])
    if args.text is not None:
        e = explain(args.model, args.text, args.pair, target=args.target, faithfulness=not args.no_faithfulness,
                    **options)
        e.save(out)
        mark(out, "explain")
        print(e.summary())
        written = [p.name for p in sorted(out.iterdir()) if p.suffix in (".png", ".json") and p.stem != "explanation"]
        print(f"wrote {out / 'explanation.html'}, explanation.png, {', '.join(written)}")
        return
    result = evaluate_file(args.model, args.evaluate, limit=args.limit, text_column=args.text_column,
                           pair_column=args.pair_column, progress=not args.quiet, **options)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faithfulness.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "faithfulness.md").write_text(format_table(result) + "\n", encoding="utf-8")
    mark(out, "explain")
    print(format_table(result))
    print(f"wrote {out / 'faithfulness.json'} and faithfulness.md")


def embed(args: argparse.Namespace) -> None:
    from bertkit.embeddings import embed_file
    from bertkit.hardware import rank
    from bertkit.inference.reading import Reading
    if rank() == 0:  # the processes of a job (torchrun, --workers): the first one claims, assembles and speaks
        claim(args.out, "embed", overwrite=args.overwrite, inputs=[args.model])
    out = embed_file(args.model, args.input, args.out, **given(args, Reading, ["pooling", "max_length"]),
                     layer=args.layer, batch_size=args.batch_size, text_column=args.text_column,
                     label_column=args.label_column, tsne=not args.no_tsne, tsne_limit=args.tsne_limit,
                     progress=not args.quiet, resume=args.resume)
    if rank() != 0:
        return
    mark(out, "embed")
    meta = json.loads((out / "meta.json").read_text())
    resumed = f" (resumed at row {meta['resumed_at_row']:,})" if meta.get("resumed_at_row") else ""
    print(f"{meta['rows']:,} vectors of {meta['dim']} ({meta['pooling']} pooling, layer "
          f"{'last' if args.layer is None else args.layer}) in {meta['embed_seconds']:.1f} s{resumed}")
    written = ["vectors.npy", "index.jsonl", "meta.json"] + (["tsne.png"] if (out / "tsne.png").is_file() else [])
    print(f"wrote {', '.join(written)} to {out}")


def similar(args: argparse.Namespace) -> None:
    from bertkit.embeddings import nearest_words, similar as nearest_texts
    if not args.query and not args.words:
        raise BertkitError("give --query TEXT (nearest texts) or --words EXPRESSION (nearest words)")
    folder = Path(args.dir)
    if args.words:
        from bertkit.checkpoint import load_model
        from bertkit.config import read_json
        model_dir = args.model or (read_json(folder / "meta.json")["model"] if (folder / "vectors.npy").is_file()
                                   else args.dir)  # a model folder, or a Hub name
        loaded = load_model(model_dir)
        if loaded.tokenizer is None:
            raise BertkitError(f"{model_dir}: no tokenizer files")
        words = nearest_words(loaded.model, loaded.tokenizer, args.words, args.k)
        print(f"nearest words to {args.words!r} (input embeddings of {model_dir}):")
        for word, score in words:
            print(f"  {score:.4f}  {word}")
    if args.query:
        r = nearest_texts(folder, args.query, args.k, ivf=True if args.ivf else None, model=args.model)
        for note in r["notes"]:
            print(f"note: {note}", file=sys.stderr)
        for query, hits in zip(args.query, r["results"]):
            print(f"query: {query}")
            for h in hits:
                label = f"  [{h['label']}]" if "label" in h else ""
                print(f"  {h['score']:.4f}  #{h['row']}{label}  {h['text']}")
        t = r["timings"]
        print(f"{t['rows']:,} rows, {t['index']} index: load {t['load_s'] * 1000:.0f} ms, index {t['index_s'] * 1000:.1f} "
              f"ms, embed queries {t['embed_queries_s'] * 1000:.1f} ms, search {t['search_s'] * 1000:.2f} ms")
