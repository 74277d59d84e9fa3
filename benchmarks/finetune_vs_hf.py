"""Fine-tuning: bertkit vs Hugging Face `Trainer`, same checkpoint, same hyperparameters, one run; plus TF-IDF.

    pip install -e ".[bench]"        # transformers, accelerate (the Trainer needs it), onnxruntime
    python benchmarks/finetune_vs_hf.py --data ../shared/data/classify/rt_polarity
    python benchmarks/finetune_vs_hf.py --data ../shared/data/classify/wiki_topics --max-length 256
    python benchmarks/finetune_vs_hf.py --data ../shared/data/classify/rt_polarity --bf16   # both in bf16
    python benchmarks/finetune_vs_hf.py --data ../shared/data/classify/rt_polarity --epochs 0.25 --busy-neighbour

DATA holds train.csv, dev.csv and test.csv (columns text,label). Both fine-tune all-MiniLM-L6-v2 (from the
catalog) with lr 5e-5, batch 32, 3 epochs, 6% warmup, weight decay 0.01, max length 128, seed 0, evaluating on
dev every epoch and keeping the best epoch; each library does it the way its own documentation recommends
(Trainer: dynamic padding with DataCollatorWithPadding; bertkit: its defaults, which group batches by length).
Prints test accuracy, macro-F1 and wall time per method, and the wall-time ratio as the last line. Each library
runs in a fresh Python process of its own (one after the other), so neither inherits the other's allocator
state, thread pools or caches (bertkit's trainer changes glibc's malloc settings process-wide, for one).
Each library sets its threads as its command line would: bertkit as `bertkit finetune` does (adaptive, or
--threads), the Trainer with torch's default (--threads pins both). --busy-neighbour runs each child beside a
busy loop in another process taking one core, as a neighbour's job would.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def run_bertkit(model_dir: Path, data: Path, out: Path, args) -> dict:
    from bertkit.finetune import FinetuneConfig, finetune
    from bertkit.hardware import use_threads
    from bertkit.inference import Reading
    use_threads(args.threads, adapt=True)  # as `bertkit finetune` does
    cfg = FinetuneConfig(reading=Reading(max_length=args.max_length), batch_size=args.batch_size, epochs=args.epochs,
                         seed=0)
    t0 = time.perf_counter()
    results = finetune(model_dir, out, cfg, {"lr": args.lr, "warmup": 0.06, "weight_decay": 0.01,
                                            "best_metric": "accuracy", "bf16": args.bf16},
                       data / "train.csv", data / "dev.csv", data / "test.csv", progress=False)
    return {"accuracy": results["test"]["accuracy"], "macro_f1": results["test"]["macro_f1"],
            "seconds": time.perf_counter() - t0}


def run_hf(model_dir: Path, data: Path, out: Path, args) -> dict:
    import torch
    import transformers
    from transformers import (AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    texts, labels = {}, {}
    for split in ("train", "dev", "test"):
        texts[split], labels[split] = read(data / f"{split}.csv")
    names = sorted(set(labels["train"]))
    index = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(str(model_dir))

    class Dataset(torch.utils.data.Dataset):
        def __init__(self, split):
            self.enc = tok(texts[split], truncation=True, max_length=args.max_length)
            self.y = [index[y] for y in labels[split]]

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {**{k: v[i] for k, v in self.enc.items()}, "labels": self.y[i]}

    sets = {split: Dataset(split) for split in texts}
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=len(names))

    def accuracy(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    import inspect
    # transformers 5 folded warmup_ratio into warmup_steps (a float below 1 is a ratio)
    warmup = ({"warmup_ratio": 0.06} if "warmup_ratio" in inspect.signature(TrainingArguments).parameters
              else {"warmup_steps": 0.06})
    targs = TrainingArguments(output_dir=str(out), learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
                              per_device_eval_batch_size=64, num_train_epochs=args.epochs, **warmup,
                              weight_decay=0.01, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
                              load_best_model_at_end=True, metric_for_best_model="accuracy", seed=0,
                              report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                              bf16=args.bf16)
    trainer = Trainer(model=model, args=targs, train_dataset=sets["train"], eval_dataset=sets["dev"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy)
    trainer.train()
    pred = trainer.predict(sets["test"]).predictions.argmax(-1)
    y = np.array(sets["test"].y)
    from bertkit.evaluate.metrics import classification_metrics
    m = classification_metrics(y.tolist(), pred.tolist(), names)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--model", type=Path, help="a BERT folder (default: all-MiniLM-L6-v2 from the catalog)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for both (on a CPU with bf16 instructions)")
    ap.add_argument("--threads", type=int, help="torch threads for both (default: each library's own choice)")
    ap.add_argument("--busy-neighbour", action="store_true", help="run each library beside a busy loop in another "
                    "process taking one core, as a neighbour's job would")
    ap.add_argument("--only", choices=["bertkit", "hf"], help=argparse.SUPPRESS)  # one library, in a child process
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        from bertkit.data.catalog import minilm_l6
        from bertkit.hardware import busy_neighbour
        run = run_bertkit if args.only == "bertkit" else run_hf
        with busy_neighbour() if args.busy_neighbour else contextlib.nullcontext():
            result = run(args.model or minilm_l6(), args.data, args.work / args.only, args)
        print("RESULT " + json.dumps(result))
        return
    import torch

    from bertkit.baseline import run_baseline
    from bertkit.data.catalog import minilm_l6
    from bertkit.hardware import describe, summary
    print(summary(describe()), flush=True)
    model_dir = args.model or minilm_l6()
    work = Path(tempfile.mkdtemp(prefix="bertkit-ft-bench-"))
    rows = {}
    t0 = time.perf_counter()
    base = run_baseline(work / "tfidf", args.data / "train.csv", args.data / "dev.csv", args.data / "test.csv")
    rows["TF-IDF + logistic regression"] = {"accuracy": base["test"]["accuracy"], "macro_f1": base["test"]["macro_f1"],
                                            "seconds": time.perf_counter() - t0}
    for name, only in (("bertkit finetune", "bertkit"), ("transformers Trainer", "hf")):
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", only, "--work", str(work),
                                "--model", str(model_dir)], stdout=subprocess.PIPE, text=True, check=True)
        rows[name] = json.loads(child.stdout.rsplit("RESULT ", 1)[1])
    threads = f"{args.threads} threads" if args.threads else "each library's default threads"
    print(f"{args.data.name}: all-MiniLM-L6-v2, lr {args.lr}, batch {args.batch_size}, {args.epochs:g} epochs, "
          f"max length {args.max_length}, {'bf16 autocast' if args.bf16 else 'fp32'}, best dev epoch kept, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else threads}"
          f"{', with a busy neighbour' if args.busy_neighbour else ''}")
    print("| method | test accuracy | macro-F1 | wall time (s) |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['accuracy']:.2%} | {r['macro_f1']:.4f} | {r['seconds']:.0f} |")
    bk, hf = rows["bertkit finetune"], rows["transformers Trainer"]
    print(f"accuracy difference (bertkit - HF): {100 * (bk['accuracy'] - hf['accuracy']):+.2f} points")
    print(f"bertkit / transformers wall time: {bk['seconds'] / hf['seconds']:.2f}")


if __name__ == "__main__":
    main()
