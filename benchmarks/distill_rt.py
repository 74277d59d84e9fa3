"""Distillation: a fine-tuned all-MiniLM-L6-v2 teacher into a 3-layer student on rt-polarity, against the same
student trained on the labels alone; prints the ratios issue 16 sets targets on.

    bertkit data get rt-polarity
    python benchmarks/distill_rt.py --data data/rt-polarity                          # fine-tunes the teacher first
    python benchmarks/distill_rt.py --data data/rt-polarity --teacher runs/mine/model --teacher-seconds 295
    python benchmarks/distill_rt.py --data data/rt-polarity --bf16 --augment 4 --augment-mlm runs/mini/model

DATA holds train.csv, dev.csv and test.csv (columns text,label). Steps, one after the other in this process:
1. the teacher: all-MiniLM-L6-v2 (from the catalog, or --model) fine-tuned by bertkit's recipe (lr 5e-5, batch 32,
   3 epochs, max length 128, seed 0, the best dev epoch kept), unless --teacher gives one;
2. `distill`: a student of the teacher's width with --student-layers layers copied from it (every k-th), soft
   targets at T=2 plus the labels at weight 0.5 (the defaults), --epochs epochs at --lr, with --control: the same
   student trained on the labels alone with the same recipe;
3. throughput: teacher and student on the test texts as they come (mixed lengths), bertkit's inference
   (length-sorted batches of 64, every layer on real tokens), fp32 and int8, the median of --repeats passes.
Prints test accuracy of teacher, student and control, the student's accuracy gap to the teacher, its tokens/s
ratio to the teacher at the same precision, and distill time / teacher fine-tune time: the distillation's own
time (augmentation, teacher cache, training with its dev evaluations: metrics.json "seconds") against the wall
time of the teacher's fine-tuning in step 1 (or --teacher-seconds).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--model", type=Path, help="the BERT folder the teacher is fine-tuned from (default: "
                    "all-MiniLM-L6-v2 from the catalog)")
    ap.add_argument("--teacher", type=Path, help="a fine-tuned teacher to take instead of fine-tuning one")
    ap.add_argument("--teacher-seconds", type=float, help="with --teacher: its fine-tuning wall time")
    ap.add_argument("--student-layers", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the training (CPU with bf16 instructions)")
    ap.add_argument("--augment", type=int, default=0)
    ap.add_argument("--augment-mlm", help="the masked LM that proposes words for --augment")
    ap.add_argument("--cache-teacher", action="store_true")
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
    files = [args.data / f"{name}.csv" for name in ("train", "dev", "test")]
    teacher, teacher_seconds = args.teacher, args.teacher_seconds
    if teacher is None:
        from bertkit.data.catalog import minilm_l6
        start = time.perf_counter()
        finetune(args.model or minilm_l6(), work / "teacher", FinetuneConfig(reading=Reading(max_length=128),
                                                                             batch_size=32, epochs=3.0, seed=0),
                 {"lr": 5e-5, "bf16": args.bf16}, *files, progress=False)
        teacher, teacher_seconds = work / "teacher" / "model", time.perf_counter() - start
    cfg = DistillConfig(student="teacher", student_layers=args.student_layers, augment=args.augment,
                        augment_mlm=args.augment_mlm, cache_teacher=args.cache_teacher, control=not args.no_control,
                        finetune=FinetuneConfig(batch_size=args.batch_size, epochs=args.epochs, seed=0))
    results = distill(teacher, work / "student", cfg, {"lr": args.lr, "bf16": args.bf16}, *files, progress=False)

    import csv
    with open(files[2], newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    speed = {(name, p): tokens_per_second(folder, texts, p, args.repeats)
             for name, folder in (("teacher", teacher), ("student", work / "student" / "model"))
             for p in ("fp32", "int8")}

    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{torch.get_num_threads()} threads"
    print(f"{args.data.name}: teacher {teacher}; student {args.student_layers} layers copied from it, lr {args.lr}, "
          f"batch {args.batch_size}, {args.epochs:g} epochs, {'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"augment {args.augment}, {where}; runs in {work}")
    print("| model | test accuracy | macro-F1 |")
    print("|---|---|---|")
    rows = {"teacher": results["teacher"]["test"], "student": results["test"]}
    if "control" in results:
        rows["control (labels alone)"] = results["control"]["test"]
    for name, m in rows.items():
        print(f"| {name} | {m['accuracy']:.2%} | {m['macro_f1']:.4f} |")
    gap = 100 * (results["teacher"]["test"]["accuracy"] - results["test"]["accuracy"])
    print(f"student accuracy gap to the teacher: {gap:.2f} points")
    if "control" in results:
        over = 100 * (results["test"]["accuracy"] - results["control"]["test"]["accuracy"])
        print(f"student over control: {over:+.2f} points")
    for p in ("fp32", "int8"):
        print(f"tokens/s {p}: teacher {speed['teacher', p]:,.0f}, student {speed['student', p]:,.0f}, "
              f"student / teacher {speed['student', p] / speed['teacher', p]:.2f}")
    if teacher_seconds:
        print(f"distill time / teacher fine-tune time: {results['seconds']:.0f} s / {teacher_seconds:.0f} s = "
              f"{results['seconds'] / teacher_seconds:.2f}")
    print(json.dumps({"report_ratios": results["report"]["ratios"]}))


if __name__ == "__main__":
    main()
