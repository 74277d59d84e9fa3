"""The distillation recipe: a fine-tuned teacher (classifier or tagger) teaches a smaller student on the one
training loop, and the run ends with a report comparing them.

Steps: load the teacher and check it (a classifier or tagger with label names), the data (its labels must be the
teacher's) and the student (made from the teacher or a preset, or loaded, sharing the teacher's vocabulary);
optionally augment the training texts and cache the teacher's logits; train `Distiller` with `DistillTask` through
trainer.train (bf16 autocast, checkpoints, exact --resume, the best dev model kept); optionally train the control
(the same student on the labels alone); score everything on dev and test and write the report.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import Loaded, load_masked_lm, load_model
from bertkit.config import DEFAULT_MAX_LENGTH, BertConfig
from bertkit.data.augment import Variant, augment_texts, read_variants, write_variants
from bertkit.data.tasks import Example, load_task_data
from bertkit.distill.cached import general_distillation, made_masked_lm
from bertkit.distill.report import write_report
from bertkit.distill.student import SHAPES, Distiller, layer_map, load_student, make_student
from bertkit.distill.task import CACHE, DistillConfig, DistillTask, teacher_logits
from bertkit.errors import BertkitError
from bertkit.finetune import default_metric, encode_split, scorer, train_epochs
from bertkit.hardware import resolve_device
from bertkit.heads import HEAD_FOR_KIND, HEADS
from bertkit.hub import hub_origin, is_hub_name, resolve_model
from bertkit.inference.batches import check_segments
from bertkit.inference.reading import Reading
from bertkit.model.bert import choose_execution
from bertkit.tokenizer import Tokenizer
from bertkit.runs import finish_run, fingerprints, kept_model, start_run, train_options
from bertkit.trainer import checkpoints

TASKS = {task: HEADS[task].kind for task in ("sequence_classification", "token_classification")}
"""The teachers distillation takes (saved head -> recipe task)."""
AUGMENTED = "augmented.jsonl"
MLM_MAX_LENGTH = 128
"""Most tokens per instance of the masked-LM run that makes a proposer for augmentation (see mlm_length)."""


def distill(teacher_dir: str | Path, out: str | Path, cfg: DistillConfig, train_cfg_kwargs: dict, train_file,
            dev_file=None, test_file=None, columns: dict | None = None, *, resume: bool = False,
            force: bool = False, progress: bool = True) -> dict:
    """Distil a fine-tuned classifier or tagger into a student; returns (and writes into `out`) the metrics:
    out/model (the student, a model directory), metrics.json, report.json and report.md, and with cfg.control the
    control run in out/control. train_cfg_kwargs: TrainConfig options (lr, bf16, ...; fine-tuning's defaults).

    resume: continue the run in `out` from its last checkpoint; the data and options must be those it was started
    with, unless force (see runs.check_recipe)."""

    out = Path(out)
    teacher_dir = resolve_model(teacher_dir)  # a Hugging Face Hub name: its snapshot in the HF cache
    if cfg.student not in SHAPES and is_hub_name(cfg.student):
        try:
            cfg = replace(cfg, student=str(resolve_model(cfg.student)))
        except BertkitError as e:  # "minii": more likely a preset misspelt than a Hub model
            raise BertkitError(f"--student {cfg.student!r}: neither teacher, a preset ({', '.join(SHAPES[1:])}) nor a "
                               f"model folder; as a Hugging Face Hub name: {e}") from None
    origins = {"teacher": hub_origin(teacher_dir), "student": hub_origin(cfg.student)}
    loaded = load_model(teacher_dir)
    teacher, tok, labels = _check_teacher(loaded, teacher_dir)
    ft = replace(cfg.finetune, task=TASKS[teacher.task], problem_type=getattr(teacher, "problem_type", "single_label"),
                 reading=_reading(cfg.finetune.reading, loaded.reading, teacher.config, teacher_dir))
    cfg = replace(cfg, finetune=ft).for_task(ft.task)
    train_kwargs = train_options(train_cfg_kwargs, default_metric(ft))
    splits, data_labels = load_task_data(ft.task, train_file, dev_file, test_file, columns, ft.problem_type)
    unknown = [x for x in data_labels if x not in labels]
    if unknown:
        raise BertkitError(f"{train_file}: label {unknown[0]!r} is not one of the teacher's labels "
                           f"({', '.join(labels[:20])}); distil on data labelled as the teacher was trained")

    torch.manual_seed(ft.seed)  # the student's new weights and the projection
    student, init = _student(cfg, teacher, tok, teacher_dir)
    ft.reading.for_model(student.config, cfg.student)  # a student that cannot read as far is an error now
    layer_map(student.config.num_layers, teacher.config.num_layers, cfg.layer_map)  # one it has: checked now
    device = resolve_device()  # the process's (--device), as the trainer's
    choose_execution(teacher.to(device), unpad=True)  # where it runs; on real tokens only too (not saved)
    if progress:
        print(f"student: {student.config.num_layers} layers x {student.config.hidden_size} wide; {init}")
        for note in loaded.notes:
            print(f"note: teacher: {note}")
    made = {}  # seconds spent making what is cached for later runs (0: found made)
    if cfg.general_text:
        started = time.perf_counter()
        init += "; then " + general_distillation(student, teacher, tok, teacher_dir, cfg, train_kwargs, progress)
        made["general_seconds"] = time.perf_counter() - started
    mlm = None
    if cfg.augment and not (resume and (out / AUGMENTED).is_file()):
        texts = [t for e in splits["train"] for t in (e.text, e.pair) if t]
        started = time.perf_counter()
        mlm = _masked_lm(cfg, teacher_dir, texts, tok, bool(train_kwargs.get("bf16")), progress)
        made["mlm_seconds"] = time.perf_counter() - started
    control_student = copy.deepcopy(student) if cfg.control else None  # the same start as the student

    files = fingerprints({"train": train_file, "dev": dev_file, "test": test_file})
    start_run(out, "distill_config.json", {"teacher": str(teacher_dir.resolve()), "student": _where(cfg.student),
                                           "data": files, "columns": columns or {}, "distill": asdict(cfg),
                                           "train": train_kwargs}, hub=origins, resume=resume, force=force)

    encoded = {name: encode_split(tok, part, ft.task, ft.problem_type, labels, ft.reading)
               for name, part in splits.items()}
    for items, _ in encoded.values():
        check_segments(student, items)  # the student has the teacher's token types
    train_items = list(encoded["train"][0])
    started = time.perf_counter()
    variants = []
    bf16 = bool(train_kwargs.get("bf16"))
    if cfg.augment:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # as the training runs
            variants = _augment(splits["train"], cfg, mlm, out / AUGMENTED, ft.reading, device)
        augmented = [Example(v.text, splits["train"][v.source].pair) for v in variants]
        train_items += encode_split(tok, augmented, ft.task, ft.problem_type, labels, ft.reading)[0]
    cached = None
    if cfg.cache_teacher:
        cached = teacher_logits(teacher, train_items, tok.pad_id, ft.eval_batch_size, bf16, out / CACHE, resume)

    scores = scorer(encoded, tok.pad_id, ft, labels)
    hidden = layer_map(student.config.num_layers, teacher.config.num_layers, cfg.layer_map) if cfg.hidden_weight else []
    needed = cfg.soft_weight or cfg.hidden_weight or cfg.attention_weight  # else the labels alone teach
    model = Distiller(student, teacher if needed else None, hidden, attention=bool(cfg.attention_weight))
    task = DistillTask(train_items, cfg, tok.pad_id, len(labels), lambda m: scores(m, "dev"), cached)
    train_epochs(model, task, ft, train_kwargs, out, tok, labels, resume=resume, progress=progress)
    seconds = time.perf_counter() - started

    results = {"task": ft.task, "problem_type": ft.problem_type, "labels": labels, "student_init": init,
               "train_examples": len(encoded["train"][0]), "augmented_examples": len(variants),
               "reading": ft.reading.to_dict(), "seconds": round(seconds, 1),
               **{k: round(v, 1) for k, v in made.items()}}
    best = kept_model(out)
    for name in ("dev", "test"):
        if encoded[name][0]:
            results[name] = scores(best, name)
    results["teacher"] = {name: scores(teacher, name) for name in ("dev", "test") if encoded[name][0]}
    control = None
    if control_student is not None:  # the same student on the labels alone: no teacher, no augmented texts
        hard_only = replace(cfg, soft_weight=0.0, hard_weight=1.0, hidden_weight=0.0, attention_weight=0.0,
                            augment=0, cache_teacher=False)
        started = time.perf_counter()
        task = DistillTask(encoded["train"][0], hard_only, tok.pad_id, len(labels), lambda m: scores(m, "dev"))
        train_epochs(Distiller(control_student, None), task, ft, train_kwargs, out / "control", tok, labels,
                     resume=resume and bool(checkpoints(out / "control")), progress=progress)
        control = kept_model(out / "control")
        results["control"] = {name: scores(control, name) for name in ("dev", "test") if encoded[name][0]}
        results["control"]["seconds"] = round(time.perf_counter() - started, 1)
    finish_run(out, task=HEAD_FOR_KIND[ft.task], results=results, labels=labels, reading=ft.reading.to_dict(),
               data={"distilled from": str(teacher_dir), **files}, base=origins["teacher"])

    split = "test" if encoded["test"][0] else "dev"
    results["report"] = write_report(out, {"teacher": (teacher, teacher_dir), "student": (best, out / "model"),
                                           **({"control": (control, out / "control" / "model")} if control else {})},
                                     encoded[split], split, ft, labels, tok.pad_id, results)
    return results


def _student(cfg: DistillConfig, teacher: nn.Module, tok: Tokenizer, teacher_dir: Path) -> tuple[nn.Module, str]:
    """The student cfg.student names (made from the teacher or a preset, or loaded), and how it was initialised."""
    if cfg.student in SHAPES:
        return make_student(teacher, cfg.student, cfg.student_layers, cfg.layer_map)
    if Path(cfg.student).is_dir():
        return load_student(cfg.student, teacher, tok, teacher_dir)
    raise BertkitError(f"--student {cfg.student!r}: neither teacher, a preset ({', '.join(SHAPES[1:])}) nor a "
                       "model directory")


def _check_teacher(loaded: Loaded, where: Path) -> tuple[nn.Module, Tokenizer, list[str]]:
    """(model, tokenizer, labels) of a teacher fit to distil: a fine-tuned classifier (single- or multi-label) or
    tagger, with its tokenizer."""
    model = loaded.model
    if model.task not in TASKS:
        raise BertkitError(f"{where} holds a {model.task} model, not a fine-tuned classifier or tagger; distil a "
                           "model made by `bertkit finetune` (text classification or NER)")
    if getattr(model, "problem_type", "single_label") == "regression":
        raise BertkitError(f"{where} is a regression model; distillation covers single- and multi-label "
                           "classification and NER")
    if loaded.tokenizer is None:
        raise BertkitError(f"{where} has no tokenizer files")
    labels = loaded.labels or [f"LABEL_{i}" for i in range(model.num_labels)]
    return model, loaded.tokenizer, labels


def _reading(given: Reading, saved: dict, config: BertConfig, where: Path) -> Reading:
    """How the student reads: each setting as given where it is not the default, else as the teacher was saved
    to read, completed for the teacher (whose positions bound the student's)."""
    default, teacher = Reading(), Reading.from_dict(saved or {}, where / "bertkit.json")
    merged = {f.name: getattr(given if getattr(given, f.name) != getattr(default, f.name) else teacher, f.name)
              for f in fields(Reading)}
    return Reading(**merged).for_model(config, where, DEFAULT_MAX_LENGTH)


def _where(student: str) -> str:
    return student if student in SHAPES else str(Path(student).resolve())


def _masked_lm(cfg: DistillConfig, teacher_dir: Path, texts: list[str], tok: Tokenizer, bf16: bool,
               progress: bool) -> Loaded:
    """The masked LM that proposes words for --augment: --augment-mlm's, else the teacher folder's own MLM head,
    else one made from the teacher's encoder on the training texts (cached)."""
    need = "augmentation proposes words with one: give --augment-mlm a BERT that has one (a pre-trained model)"
    mlm = load_masked_lm(cfg.augment_mlm or teacher_dir, need, required=bool(cfg.augment_mlm))
    if mlm is None:
        length = mlm_length(texts, tok, min(cfg.finetune.reading.max_length, MLM_MAX_LENGTH))
        mlm = made_masked_lm(teacher_dir, texts, tok, cfg.mlm_steps, length, bf16, progress)
    return mlm


def mlm_length(texts: list[str], tok: Tokenizer, most: int) -> int:
    """Tokens per instance of the made masked LM's run: room for 95% of the training texts whole, in steps of 32,
    from 32 to `most`. Short texts (reviews, tweets) make short instances: the same steps, a fraction of the work."""
    sample = texts[::max(1, len(texts) // 20_000)]
    lengths = tok.encode_batch(sample, max_length=most)["attention_mask"].sum(-1).float()
    return max(32, min(most, 32 * math.ceil(float(lengths.quantile(0.95)) / 32)))


def _augment(examples: list[Example], cfg: DistillConfig, mlm: Loaded | None, path: Path, reading: Reading,
             device: torch.device) -> list[Variant]:
    """The augmented variants of the training texts, made by `mlm` and written to `path` for a user to read; read
    back from there when a resumed run finds it (mlm None)."""
    if mlm is None:
        return read_variants(path)
    mlm.model.to(device)
    length = min(reading.max_length, mlm.model.config.max_position_embeddings)
    variants = augment_texts([e.text for e in examples], mlm.model, mlm.tokenizer, cfg.augment, cfg.augment_rate,
                             cfg.finetune.seed, length)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_variants(path, variants, [e.pair for e in examples])
    return variants
