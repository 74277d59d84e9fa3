"""Training verbs: `pretrain` (MLM + NSP from scratch), `finetune` (a task head on a model), `distill` (a fine-tuned
model into a smaller student), `baseline` (TF-IDF + logistic regression on the same files). Their options are the
fields of the configs they fill."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bertkit.cli.common import add_columns, add_overwrite, add_quiet, add_threads, claimed, columns, headline
from bertkit.cli.options import add_fields, given
from bertkit.errors import BertkitError
from bertkit.folders import claim, mark
from bertkit.options import NON_NEGATIVE_INT

PRETRAIN_FIELDS = ["max_len", "batch_size", "accum", "nsp", "short_seq_prob", "mask_rate", "whole_word",
                   "sparse_mlm", "dropout", "eval_instances", "seed"]
PRETRAIN_TRAIN_FIELDS = ["lr", "weight_decay", "warmup", "schedule", "max_grad_norm", "max_steps", "max_tokens",
                         "budget_minutes", "bf16", "compile", "log_every", "eval_every", "save_every",
                         "keep_checkpoints", "report_to"]
FINETUNE_FIELDS = ["task", "problem_type", "batch_size", "accum", "epochs", "group_by_length", "class_weights",
                   "eval_batch_size", "seed", "adversarial", "adv_eps", "adv_steps", "augment_noise"]
READING_FIELDS = ["max_length", "window_stride", "window_pool", "doc_stride", "max_answer_length", "threshold"]
FINETUNE_TRAIN_FIELDS = ["lr", "warmup", "weight_decay", "bf16", "best_metric", "patience", "eval_every",
                         "report_to"]
DISTILL_FIELDS = ["recipe", "student", "student_layers", "layer_map", "temperature", "soft_weight", "hard_weight",
                  "hidden_weight", "attention_weight", "intermediate_epochs", "cache_teacher", "augment",
                  "augment_rate", "augment_mlm", "mlm_steps", "general_text", "general_teacher", "general_steps",
                  "control"]
DISTILL_FINETUNE_FIELDS = ["batch_size", "accum", "epochs", "group_by_length", "eval_batch_size", "seed"]
DISTILL_READING_FIELDS = ["max_length", "window_stride", "window_pool", "threshold"]
PRETRAIN_FLAGS = {"whole_word": ("--whole-word", "--wwm")}
TRAIN_FLAGS = {"max_steps": "--steps", "max_tokens": "--tokens", "budget_minutes": "--budget",
               "keep_checkpoints": "--keep"}


DEV_HELP = ("dev file (default, classification: without --dev and --test, about 10%% of --train's texts go to dev "
            "and 10%% to test, chosen by a hash of each text)")


def register(verbs) -> None:
    from bertkit.adversarial import METHODS as ADVERSARIAL
    from bertkit.distill import DistillConfig
    from bertkit.distill.student import LAYER_MAPS
    from bertkit.distill.task import RECIPES
    from bertkit.finetune import TASKS, TRAIN_DEFAULTS, FinetuneConfig
    from bertkit.inference.reading import WINDOW_POOLS, Reading
    from bertkit.model.heads import PROBLEM_TYPES
    from bertkit.optim import SCHEDULES
    from bertkit.pretrain import PretrainConfig
    from bertkit.trainer import TrainConfig

    pt = verbs.add_parser("pretrain", help="pre-train BERT (MLM + NSP) on a prepared corpus")
    pt.add_argument("--data", required=True, help="a directory written by `bertkit prepare`")
    pt.add_argument("--out", required=True, help="run directory: checkpoints, metrics.jsonl, curves.png, model/")
    pt.add_argument("--preset", choices=["tiny", "mini", "small", "medium", "base", "large"],
                    help="size of a new model (default mini)")
    pt.add_argument("--model-config", help="a BertConfig json instead of a preset")
    pt.add_argument("--init", metavar="MODEL_DIR", help="continue pre-training this model (domain adaptation) "
                    "instead of starting from new weights; prepare --data with `--tokenizer MODEL_DIR`")
    add_fields(pt, PretrainConfig, PRETRAIN_FIELDS, flags=PRETRAIN_FLAGS)
    add_fields(pt, TrainConfig, PRETRAIN_TRAIN_FIELDS, flags=TRAIN_FLAGS, choices={"schedule": SCHEDULES})
    _add_run_options(pt)
    pt.set_defaults(func=pretrain)

    ft = verbs.add_parser("finetune", help="fine-tune a model on labelled task files")
    ft.add_argument("model", help="a bertkit model directory or a Hugging Face BERT folder")
    ft.add_argument("--train", required=True, help="CSV/TSV/JSON lines (classification), CoNLL/JSON lines (ner) or "
                    "SQuAD JSON (qa); or Parquet/Arrow, a datasets folder or NAME:SPLIT (docs/ecosystem.md)")
    ft.add_argument("--dev", help=DEV_HELP)
    ft.add_argument("--test", help="test file")
    ft.add_argument("--out", required=True, help="run directory: metrics.jsonl, metrics.json, PNGs, model/")
    add_fields(ft, FinetuneConfig, FINETUNE_FIELDS, choices={"task": TASKS, "problem_type": PROBLEM_TYPES,
                                                             "adversarial": ADVERSARIAL})
    add_fields(ft, Reading, READING_FIELDS, choices={"window_pool": WINDOW_POOLS})
    add_fields(ft, TrainConfig, FINETUNE_TRAIN_FIELDS, defaults=TRAIN_DEFAULTS)
    add_columns(ft)
    _add_run_options(ft)
    ft.set_defaults(func=finetune)

    ds = verbs.add_parser("distill", help="distil a fine-tuned classifier or tagger into a smaller, faster student")
    ds.add_argument("teacher", help="a fine-tuned classifier or NER tagger (a finetune run's model/, or a Hugging Face "
                    "one)")
    ds.add_argument("--train", required=True, help="CSV/TSV/JSON lines (classification) or CoNLL/JSON lines (ner), "
                    "labelled as the teacher was trained")
    ds.add_argument("--dev", help=DEV_HELP)
    ds.add_argument("--test", help="test file (the report measures on it, else on dev)")
    ds.add_argument("--out", required=True, help="run directory: model/ (the student), metrics.json, report.md, "
                    "report.json, metrics.jsonl, control/")
    add_fields(ds, DistillConfig, DISTILL_FIELDS, choices={"recipe": tuple(RECIPES), "layer_map": LAYER_MAPS})
    add_fields(ds, FinetuneConfig, DISTILL_FINETUNE_FIELDS)
    add_fields(ds, Reading, DISTILL_READING_FIELDS, choices={"window_pool": WINDOW_POOLS})
    add_fields(ds, TrainConfig, FINETUNE_TRAIN_FIELDS, defaults=TRAIN_DEFAULTS)
    add_columns(ds)
    _add_run_options(ds)
    ds.set_defaults(func=distill)

    bl = verbs.add_parser("baseline", help="TF-IDF + logistic regression on the same task files")
    bl.add_argument("--task", default="classification", choices=["classification", "ner"],
                    help="classification: TF-IDF + logistic regression; ner: a window-feature tagger (default "
                    "classification)")
    bl.add_argument("--train", required=True, help="CSV/TSV/JSON lines (classification) or CoNLL/JSON lines (ner)")
    bl.add_argument("--dev", help=DEV_HELP)
    bl.add_argument("--test", help="test file")
    bl.add_argument("--out", required=True, help="run directory: metrics.json (+ confusion.png)")
    bl.add_argument("--analyzer", default="auto", choices=["auto", "word", "char"],
                    help="word 1-2-grams, or character 1-3-grams (auto: char for Chinese)")
    bl.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="the logistic regression's random state "
                    "(default 0)")
    add_columns(bl)
    add_overwrite(bl)
    bl.set_defaults(func=baseline)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What every training verb takes about its run folder and the cores it runs on."""
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--force", action="store_true", help="with --resume: go on although the data or options differ "
                   "from the run's start")
    add_quiet(p)
    add_overwrite(p)
    add_threads(p)


def pretrain(args: argparse.Namespace) -> None:
    from bertkit.hardware import rank
    if args.init and (args.preset or args.model_config):
        raise BertkitError("--init continues an existing model, whose size is its own: drop --preset/--model-config")
    with claimed(args.out, "pretrain", overwrite=args.overwrite, run=True,
                 inputs=[args.data] + ([args.init] if args.init else [])):
        result = _pretrain(args)
    if rank() == 0:
        started = {k: result.pop(k) for k in ("init", "initialised") if k in result}
        print(json.dumps({"held_out": result, **started, "model": str(Path(args.out) / "model")}, indent=2,
                         ensure_ascii=False))


def _pretrain(args: argparse.Namespace) -> dict:
    from bertkit.config import BertConfig, read_json
    from bertkit.data.corpus import Corpus
    from bertkit.pretrain import PretrainConfig, pretrain as run_pretraining
    from bertkit.trainer import TrainConfig
    cfg = PretrainConfig(**given(args, PretrainConfig, PRETRAIN_FIELDS))
    train_cfg = TrainConfig(**given(args, TrainConfig, PRETRAIN_TRAIN_FIELDS), seed=cfg.seed)
    if args.init:
        model_config = None  # the initial model's own
    elif args.model_config:
        model_config = BertConfig.from_dict(read_json(Path(args.model_config)))
    else:
        vocab = Corpus(args.data).tokenizer.vocab_size
        model_config = BertConfig.preset(args.preset or "mini", vocab_size=vocab, unpad=True,
                                         max_position_embeddings=max(512, cfg.max_len))
    return run_pretraining(args.data, args.out, model_config, cfg, train_cfg, init=args.init, resume=args.resume,
                           force=args.force, progress=not args.quiet)


def finetune(args: argparse.Namespace) -> None:
    from bertkit.checkpoint import weights_bytes
    from bertkit.finetune import FinetuneConfig, finetune as run_finetuning
    from bertkit.hardware import rank
    from bertkit.inference.reading import Reading
    from bertkit.trainer import TrainConfig
    # needs: at least a checkpoint on disk, the weights and Adam's two moments, each their size
    with claimed(args.out, "finetune", overwrite=args.overwrite, inputs=[args.model], run=True,
                 needs=3 * weights_bytes(args.model)):
        cfg = FinetuneConfig(**given(args, FinetuneConfig, FINETUNE_FIELDS),
                             reading=Reading(**given(args, Reading, READING_FIELDS)))
        results = run_finetuning(args.model, args.out, cfg, given(args, TrainConfig, FINETUNE_TRAIN_FIELDS),
                                 args.train, args.dev, args.test,
                                 columns(args) if cfg.task == "classification" else None,
                                 resume=args.resume, force=args.force, progress=not args.quiet)
    if rank() == 0:
        print(json.dumps({k: headline(v) for k, v in results.items() if k in ("dev", "test")}, indent=2))
        print(f"model: {Path(args.out) / 'model'}; all metrics: {Path(args.out) / 'metrics.json'}")


def distill(args: argparse.Namespace) -> None:
    from bertkit.distill import DistillConfig, distill as run_distillation
    from bertkit.finetune import FinetuneConfig
    from bertkit.hardware import rank
    from bertkit.inference.reading import Reading
    from bertkit.trainer import TrainConfig
    models = [p for p in (args.teacher, args.student, args.augment_mlm, args.general_teacher) if p and Path(p).is_dir()]
    with claimed(args.out, "distill", overwrite=args.overwrite, inputs=models, run=True):
        recipe = FinetuneConfig(**given(args, FinetuneConfig, DISTILL_FINETUNE_FIELDS),
                                reading=Reading(**given(args, Reading, DISTILL_READING_FIELDS)))
        cfg = DistillConfig.from_recipe(**given(args, DistillConfig, DISTILL_FIELDS), finetune=recipe)
        results = run_distillation(args.teacher, args.out, cfg, given(args, TrainConfig, FINETUNE_TRAIN_FIELDS),
                                   args.train, args.dev, args.test, columns(args), resume=args.resume,
                                   force=args.force, progress=not args.quiet)
    if rank() == 0:
        shown = {k: headline(v) for k, v in results.items() if k in ("dev", "test")}
        shown["teacher"] = {k: headline(v) for k, v in results["teacher"].items()}
        print(json.dumps({**shown, "student_against_teacher": results["report"]["ratios"]}, indent=2))
        print(f"student: {Path(args.out) / 'model'}; report: {Path(args.out) / 'report.md'}")


def baseline(args: argparse.Namespace) -> None:
    from bertkit.baseline import run_baseline
    claim(args.out, "baseline", overwrite=args.overwrite)
    r = run_baseline(args.out, args.train, args.dev, args.test, columns(args), analyzer=args.analyzer, seed=args.seed,
                     task=args.task)
    mark(args.out, "baseline")
    print(json.dumps({"method": r["method"], **{k: headline(r[k]) for k in ("dev", "test") if k in r}}, indent=2))
