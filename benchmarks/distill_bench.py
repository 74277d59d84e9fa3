"""Distillation, end to end in one process: fine-tune the teacher (timed), distil a student with a recipe, train the
control, and report on the test split: the student's gap to the teacher, its margin over the control, its tokens/s
against the teacher's, and the distillation's time against the teacher's fine-tuning.

    bertkit data get rt-polarity
    python benchmarks/distill_bench.py --data data/rt-polarity --bf16                       # distill's defaults
    python benchmarks/distill_bench.py --data data/wiki-topics --bf16 --options '{"temperature": 1}'
    python benchmarks/distill_bench.py --data data/pd --task ner --model data/zh-small --bf16 --max-length 256 \
        --teacher-lr 2e-4 --teacher-batch-size 16 --teacher-epochs 1 --lr 2e-4 --batch-size 16

DATA holds train, dev and test files (train.csv/dev.csv/test.csv; train.conll/... with --task ner). Steps, one after
the other in this process, seed 0:
1. the teacher: --model (default all-MiniLM-L6-v2 from the catalog) fine-tuned by `finetune` (--teacher-lr,
   --teacher-batch-size, --teacher-epochs, --max-length, the best dev epoch kept), its wall time measured; or
   --teacher with --teacher-seconds, a teacher fine-tuned before (its time is then not of this run);
2. `distill`: a student of the teacher's width with --student-layers layers, distill's default recipe (or --recipe),
   with --options (DistillConfig fields as JSON) on top, --epochs at --lr; --control: the same student, the same
   start, on the labels alone;
3. throughput on the test texts as they come (mixed lengths), bertkit's inference (length-sorted batches of 64,
   every layer on real tokens), fp32 and int8, the median of --repeats passes each.
The distillation's time is metrics.json's "seconds" (augmentation, the teacher's cached logits, training with its
dev evaluations) plus "mlm_seconds", the masked LM made for augmentation when the teacher has none (0 when an
earlier run made it). A general distillation (--options
general_text) is made once and cached: its time is not counted, and is printed apart when this run made it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def tokens_per_second(model_dir: Path, texts: list[str], precision: str, repeats: int) -> float:
    """Median real tokens/s of bertkit's batched inference over the texts, after a warm-up pass."""
    from bertkit import load_model
    from bertkit.encoding.inputs import encode_texts
    from bertkit.inference import Reading, forward
    from bertkit.model.precision import for_inference
    loaded = load_model(model_dir)
    reading = Reading.from_dict(loaded.reading).for_model(loaded.model.config)
    items = encode_texts(loaded.tokenizer, texts, None, reading.max_length)
    model = for_inference(loaded.model, precision)
    tokens = sum(len(x.ids) for x in items)
    forward(model, items, loaded.tokenizer.pad_id, 64)
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(model, items, loaded.tokenizer.pad_id, 64)
        speeds.append(tokens / (time.perf_counter() - start))
    return statistics.median(speeds)


def test_texts(path: Path, task: str) -> list[str]:
    """The test split's texts as inference reads them: a CSV's text column, or a CoNLL file's sentences (a
    Chinese sentence's characters joined without spaces, as the tagger reads words)."""
    if task == "ner":
        from bertkit.data.tasks import read_tagged
        return [" ".join(s.tokens) for s in read_tagged(path)]
    import csv
    with open(path, newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--task", default="classification", choices=["classification", "ner"])
    ap.add_argument("--model", type=Path, help="the BERT folder the teacher is fine-tuned from (default: "
                    "all-MiniLM-L6-v2 from the catalog)")
    ap.add_argument("--teacher", type=Path, help="a fine-tuned teacher to take instead of fine-tuning one")
    ap.add_argument("--teacher-seconds", type=float, help="with --teacher: its fine-tuning wall time")
    ap.add_argument("--teacher-lr", type=float, default=5e-5)
    ap.add_argument("--teacher-batch-size", type=int, default=32)
    ap.add_argument("--teacher-epochs", type=float, default=3.0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--recipe", choices=["tinybert", "distilbert", "minilm"])
    ap.add_argument("--options", default="{}", help="DistillConfig fields as JSON, on top of the recipe")
    ap.add_argument("--student-layers", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the training (CPU with bf16 instructions)")
    ap.add_argument("--no-control", action="store_true", help="skip the control student (labels alone)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per model and precision (median)")
    ap.add_argument("--out", type=Path, help="where the runs go (default: a temporary folder)")
    args = ap.parse_args()
    from bertkit.hardware import describe, summary
    print(summary(describe("cuda" if torch.cuda.is_available() else "cpu")), flush=True)

    from bertkit.distill import DistillConfig, distill
    from bertkit.finetune import FinetuneConfig, finetune
    from bertkit.inference import Reading
    work = args.out or Path(tempfile.mkdtemp(prefix="bertkit-distill-bench-"))
    ext = "conll" if args.task == "ner" else "csv"
    files = [args.data / f"{name}.{ext}" for name in ("train", "dev", "test")]
    teacher, teacher_seconds = args.teacher, args.teacher_seconds
    if teacher is None:
        from bertkit.data.catalog import minilm_l6
        start = time.perf_counter()
        finetune(args.model or minilm_l6(), work / "teacher",
                 FinetuneConfig(task=args.task, reading=Reading(max_length=args.max_length),
                                batch_size=args.teacher_batch_size, epochs=args.teacher_epochs, seed=0),
                 {"lr": args.teacher_lr, "bf16": args.bf16}, *files, progress=False)
        teacher, teacher_seconds = work / "teacher" / "model", time.perf_counter() - start
        print(f"teacher fine-tuned in {teacher_seconds:.0f} s", flush=True)
    options = json.loads(args.options)
    cfg = DistillConfig.from_recipe(args.recipe, student="teacher", student_layers=args.student_layers,
                                    control=not args.no_control, **options,
                                    finetune=FinetuneConfig(batch_size=args.batch_size, epochs=args.epochs, seed=0))
    results = distill(teacher, work / "student", cfg, {"lr": args.lr, "bf16": args.bf16}, *files, progress=False)

    texts = test_texts(files[2], args.task)
    speed = {(name, p): tokens_per_second(folder, texts, p, args.repeats)
             for name, folder in (("teacher", teacher), ("student", work / "student" / "model"))
             for p in ("fp32", "int8")}

    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{torch.get_num_threads()} threads"
    print(f"{args.data.name}: teacher {teacher}; student {args.student_layers} layers, recipe {args.recipe or 'default'} "
          f"{json.dumps(options)}, lr {args.lr}, batch {args.batch_size}, {args.epochs:g} epochs, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, {where}; runs in {work}")
    print(f"student init: {results['student_init']}")
    first = "f1" if args.task == "ner" else "accuracy"
    second = "token_accuracy" if args.task == "ner" else "macro_f1"
    print(f"| model | test {first} | {second} |")
    print("|---|---|---|")
    rows = {"teacher": results["teacher"]["test"], "student": results["test"]}
    if "control" in results:
        rows["control (labels alone)"] = results["control"]["test"]
    for name, m in rows.items():
        print(f"| {name} | {m[first]:.2%} | {m.get(second, float('nan')):.4f} |")
    gap = 100 * (results["teacher"]["test"][first] - results["test"][first])
    print(f"student gap to the teacher: {gap:.2f} points")
    if "control" in results:
        over = 100 * (results["test"][first] - results["control"]["test"][first])
        print(f"student over control: {over:+.2f} points")
    for p in ("fp32", "int8"):
        print(f"tokens/s {p}: teacher {speed['teacher', p]:,.0f}, student {speed['student', p]:,.0f}, "
              f"student / teacher {speed['student', p] / speed['teacher', p]:.2f}")
    seconds = results["seconds"] + results.get("mlm_seconds", 0.0)  # the masked LM made for augmentation counts
    if teacher_seconds:
        print(f"distill time / teacher fine-tune time: {seconds:.0f} s / {teacher_seconds:.0f} s = "
              f"{seconds / teacher_seconds:.2f}" + (f" (of which {results['mlm_seconds']:.0f} s making the masked LM)"
                                                    if results.get("mlm_seconds") else ""))
    if results.get("general_seconds"):
        print(f"(this run also made the general distillation: {results['general_seconds']:.0f} s, not in the "
              f"distillation's time; cached for later runs)")
    print(json.dumps({"report_ratios": results["report"]["ratios"]}))


if __name__ == "__main__":
    main()
