"""`bertkit demo`: the whole pipeline on embedded defaults."""

from __future__ import annotations

import argparse

from bertkit.cli.common import add_overwrite, add_threads, claimed
from bertkit.options import POSITIVE


def register(verbs) -> None:
    d = verbs.add_parser("demo", help="the whole pipeline (vocabulary, pre-training, fine-tuning, "
                         "distillation, report) on real data with built-in defaults")
    d.add_argument("--lang", default="en", choices=["en", "zh"],
                   help="en: rt-polarity sentiment; zh: zh-reviews sentiment and People's Daily NER")
    d.add_argument("--budget", type=POSITIVE, default=10.0, help="pre-training minutes (default 10)")
    d.add_argument("--smoke", action="store_true", help="the same path on slices with tiny sizes (under 2 minutes)")
    d.add_argument("--out", help="run folder (default runs/demo-LANG)")
    d.add_argument("--model", help="a BERT folder to use instead of the catalog's pretrained model (all-MiniLM-L6-v2; "
                   "m3e-small for --lang zh)")
    add_overwrite(d)
    add_threads(d)
    d.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> None:
    from bertkit.demo import run_demo
    out = args.out or f"runs/demo-{args.lang}{'-smoke' if args.smoke else ''}"
    # marked as the demo's from the start: an interrupted demo is continued by the same command
    with claimed(out, "demo", overwrite=args.overwrite, inputs=filter(None, [args.model])):
        run_demo(out, lang=args.lang, budget_minutes=args.budget, smoke=args.smoke, minilm_dir=args.model)
