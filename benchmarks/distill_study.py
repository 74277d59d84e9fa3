"""The distillation study: one change at a time from a base recipe, each scored on the dev split (the test split is
never read here; benchmarks/distill_bench.py reports the chosen recipe on test once).

    python benchmarks/distill_study.py --data data/rt-polarity --teacher runs/teacher/model --out runs/study-rt \
        --general-text data/wiki-leads.txt --general-teacher MINILM_DIR --bf16
    python benchmarks/distill_study.py --data data/pd --task ner --teacher runs/ner/model --out runs/study-ner \
        --general-text data/pd-text.txt --bf16 --only base hidden general

DATA holds train and dev files (train.csv/dev.csv, or train.conll/dev.conll with --task ner). Each variant is one
`distill` run (seed 0) of a student of the teacher's width with --student-layers layers, in OUT/<variant>; its dev
score, the distillation's time (augmentation, teacher cache, training: metrics.json "seconds") and its options go
to OUT/study.jsonl, one line a variant, and the table to OUT/study.md. A variant already in study.jsonl is not run
again (rerun the command after an interruption). A general distillation is made once and cached (bertkit's cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

BASE = {"augment": 2, "cache_teacher": True}
"""The recipe the variants change one thing of: the soft targets at T=2 and the labels at 0.5 (distill's defaults
before the study), two augmented variants a text, the teacher's logits cached."""
LIVE = {"cache_teacher": False}
"""The layer losses need the teacher every step."""
VARIANTS = {
    "base": {},
    "no-augment": {"augment": 0},
    "augment-4": {"augment": 4},
    "augment-8": {"augment": 8},
    "augment-16": {"augment": 16},
    "hidden": {**LIVE, "hidden_weight": 1.0},
    "attention": {**LIVE, "attention_weight": 1.0},
    "hidden+attention": {**LIVE, "hidden_weight": 1.0, "attention_weight": 1.0},
    "two-step": {**LIVE, "hidden_weight": 1.0, "attention_weight": 1.0, "intermediate_epochs": 1.0},
    "last-layers": {"layer_map": "last"},
    "T1": {"temperature": 1.0},
    "T4": {"temperature": 4.0},
    "soft-only": {"hard_weight": 0.0},
    "hard-1": {"hard_weight": 1.0},
    "general": {"general": True},
    "general+augment-4": {"general": True, "augment": 4},
    "general+augment-8": {"general": True, "augment": 8},
}
NER_BASE = {"cache_teacher": True}
"""NER has no augmentation: its base is the soft targets and labels, the teacher's logits cached."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--task", default="classification", choices=["classification", "ner"])
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--student-layers", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--general-text", help="text for the general-distillation variants (one text per line)")
    ap.add_argument("--general-teacher", help="the pre-trained encoder the general distillation learns from "
                    "(default the teacher's own)")
    ap.add_argument("--general-steps", type=int, default=1000)
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), help="these variants (default: all)")
    ap.add_argument("--set", nargs="+", default=[], metavar="NAME=JSON",
                    help="extra variants as DistillConfig options (and epochs, lr) on top of the base, e.g. "
                    "'aug4-T1={\"augment\": 4, \"temperature\": 1}'")
    args = ap.parse_args()

    from bertkit.distill import DistillConfig, distill
    from bertkit.finetune import FinetuneConfig

    ext = "conll" if args.task == "ner" else "csv"
    train, dev = args.data / f"train.{ext}", args.data / f"dev.{ext}"
    base = NER_BASE if args.task == "ner" else BASE
    variants = {name: VARIANTS[name] for name in (args.only or ([] if args.set else VARIANTS))}
    for item in args.set:
        name, _, options = item.partition("=")
        variants[name] = json.loads(options)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "study.jsonl"
    done = {json.loads(line)["variant"] for line in log.read_text().splitlines()} if log.is_file() else set()
    for name, change in variants.items():
        if name in done:
            continue
        options = {**base, **change}
        if options.pop("general", False):
            if not args.general_text:
                print(f"{name}: skipped (no --general-text)")
                continue
            options.update(general_text=args.general_text, general_steps=args.general_steps,
                           general_teacher=args.general_teacher)
        if args.task == "ner" and options.get("augment"):
            print(f"{name}: skipped (no augmentation for NER)")
            continue
        recipe = {k: v for k, v in options.items() if k not in ("epochs", "lr")}
        cfg = DistillConfig(student_layers=args.student_layers, **recipe,
                            finetune=FinetuneConfig(batch_size=args.batch_size, epochs=options.get("epochs", args.epochs)))
        run = args.out / name
        shutil.rmtree(run, ignore_errors=True)  # an interrupted variant starts again
        started = time.perf_counter()
        results = distill(args.teacher, run, cfg, {"lr": options.get("lr", args.lr), "bf16": args.bf16}, train, dev,
                          progress=False)
        wall = time.perf_counter() - started
        metric = "f1" if args.task == "ner" else "accuracy"
        row = {"variant": name, "options": options, "dev": results["dev"][metric],
               "dev_macro_f1": results["dev"].get("macro_f1"), "teacher_dev": results["teacher"]["dev"][metric],
               "seconds": results["seconds"], "wall": round(wall, 1),
               "augmented": results["augmented_examples"], "student_init": results["student_init"]}
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: dev {row['dev']:.4f} (teacher {row['teacher_dev']:.4f}), {row['seconds']:.0f} s", flush=True)
        for folder in ("checkpoints", "best"):  # keep the model and logs, not the training state
            shutil.rmtree(run / folder, ignore_errors=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    lines = ["| variant | options | dev | gap to teacher | distill seconds |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {json.dumps(r['options'])} | {100 * r['dev']:.2f} | "
                     f"{100 * (r['teacher_dev'] - r['dev']):.2f} | {r['seconds']:.0f} |")
    (args.out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
