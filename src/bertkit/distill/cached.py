"""What distillation makes once and keeps ($BERTKIT_DISTILL_CACHE, default ~/.cache/bertkit/distill):
the masked LM that proposes words for augmentation when neither the user nor the teacher has one, and the student
after general distillation. Each lives in a folder named by a digest of what made it (the teacher's weights, the
texts, the options): the same inputs find it again, other inputs make their own. An interrupted making resumes from
its last checkpoint.

Shapes: N real tokens, C hidden.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import Loaded, load_masked_lm, load_model, weights_file
from bertkit.data.fetch import cache_dir
from bertkit.distill.student import Distiller, check_same_tokens, layer_map
from bertkit.distill.task import DistillConfig, DistillTask
from bertkit.encoding.inputs import encode_texts
from bertkit.errors import BertkitError
from bertkit.finetune import TRAIN_DEFAULTS
from bertkit.folders import file_digest
from bertkit.hub import resolve_model
from bertkit.model.bert import choose_execution
from bertkit.tokenizer import Tokenizer
from bertkit.trainer import TrainConfig, checkpoints, train

MLM_LR = 1e-4
"""Learning rate of the short masked-LM run (the encoder is trained already; the new head learns fast)."""


def made_masked_lm(teacher_dir: Path, texts: list[str], tokenizer: Tokenizer, steps: int, max_length: int,
                   bf16: bool, progress: bool) -> Loaded:
    """A masked LM for augmentation made from the teacher's encoder: `steps` steps of masked-LM training (a new
    MLM head, every weight trained) on the training texts, as `bertkit pretrain --init TEACHER --no-nsp` does."""
    from bertkit.data.corpus import prepare
    from bertkit.pretrain import PretrainConfig, pretrain
    key = _key("mlm", file_digest(weights_file(teacher_dir)), _texts_digest(texts), steps, max_length, bf16)
    folder = made_dir() / f"mlm-{key}"
    if not (folder / "model").is_dir():
        if progress:
            print(f"augmentation: the teacher has no masked-LM head; making one from its encoder ({steps} steps "
                  f"on the training texts), kept in {folder}")
        corpus = folder / "corpus"
        if not (corpus / "meta.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            text_file = folder / "texts.txt"
            text_file.write_text("".join(" ".join(t.split()) + "\n\n" for t in texts if t.strip()), encoding="utf-8")
            prepare([text_file], tokenizer, corpus, heldout_percent=2.0, progress=progress)
        cfg = PretrainConfig(max_len=max_length, nsp=False, batch_size=32)
        train_cfg = TrainConfig(lr=MLM_LR, max_steps=steps, bf16=bf16, eval_every=steps, save_every=max(1, steps // 3),
                                warmup=0.06)
        pretrain(corpus, folder / "run", None, cfg, train_cfg, init=teacher_dir,
                 resume=bool(checkpoints(folder / "run")), progress=progress)
        _keep_model(folder)
    return load_masked_lm(folder / "model", "augmentation needs one")


def general_distillation(student: nn.Module, teacher: nn.Module, tokenizer: Tokenizer, teacher_dir: Path,
                         cfg: DistillConfig, train_kwargs: dict, progress: bool) -> str:
    """General distillation (TinyBERT's first stage): the student's encoder learns the hidden states and attention of
    cfg.general_teacher's encoder (default the teacher's own) on cfg.general_text, task-agnostic text (no labels, no
    logits), for cfg.general_steps steps of cfg.finetune.batch_size texts. A student of the general teacher's shape
    starts from its layers (as layer_map says). Trains `student`'s encoder in place, or loads what an earlier run
    made: the result depends on the general teacher, the text and the student, not on the task, so one general
    student serves every task. Returns a line saying what was done and where it is kept."""
    text_file = Path(cfg.general_text)
    if not text_file.is_file():
        raise BertkitError(f"--general-text {text_file}: no such file")
    source_dir = resolve_model(cfg.general_teacher) if cfg.general_teacher else teacher_dir
    source, name = teacher, "the teacher"
    if cfg.general_teacher:  # its encoder, under a head of the teacher's shape (drawn new; no loss reads it)
        loaded = load_model(source_dir, task=teacher.task, num_labels=teacher.num_labels,
                            problem_type=getattr(teacher, "problem_type", None))
        check_same_tokens(loaded.tokenizer, tokenizer, source_dir, teacher_dir)
        source = choose_execution(loaded.model.to(next(teacher.parameters()).device), unpad=True)
        name = str(cfg.general_teacher)
    ft = cfg.finetune
    mapping = layer_map(student.config.num_layers, source.config.num_layers, cfg.layer_map)
    key = _key("general", file_digest(weights_file(source_dir)), file_digest(text_file),
               json.dumps(student.config.to_dict(), sort_keys=True), cfg.student, cfg.layer_map, cfg.general_steps,
               ft.batch_size, ft.reading.max_length, ft.seed, train_kwargs.get("lr"), bool(train_kwargs.get("bf16")))
    folder = made_dir() / f"general-{key}"
    if not (folder / "model").is_dir():
        texts = [line.strip() for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(texts) < ft.batch_size:
            raise BertkitError(f"--general-text {text_file}: {len(texts)} texts, fewer than a batch ({ft.batch_size})")
        if progress:
            print(f"general distillation from {name}: {cfg.general_steps} steps on {len(texts):,} texts "
                  f"of {text_file}, kept in {folder}")
        if source is not teacher and _same_shape(student.config, source.config):
            _copy_encoder(student, source, mapping)
        items = encode_texts(tokenizer, texts, None, ft.reading.max_length)
        # no labels, no logits: the task's loss reads the layers only (whatever the teacher's task)
        layers_only = replace(cfg, soft_weight=0.0, hard_weight=0.0, hidden_weight=1.0, attention_weight=1.0,
                              intermediate_epochs=0.0, augment=0, cache_teacher=False, control=False,
                              finetune=replace(ft, task="classification", problem_type="single_label"))
        task = DistillTask(items, layers_only, tokenizer.pad_id, teacher.num_labels, lambda model: {})
        run = {**TRAIN_DEFAULTS, "save_every": max(1, cfg.general_steps // 4), "eval_every": cfg.general_steps,
               **{k: v for k, v in train_kwargs.items() if k in ("lr", "bf16", "warmup", "weight_decay", "log_every")},
               "max_steps": cfg.general_steps, "seed": ft.seed, "best_metric": None, "patience": 0}
        train(Distiller(student, source, mapping, attention=True), task, TrainConfig(**run), folder / "run",
              tokenizer=tokenizer, reading=ft.reading.to_dict(), resume=bool(checkpoints(folder / "run")),
              progress_bar=progress)
        _keep_model(folder)
    general = load_model(folder / "model").model
    student.bert.embeddings.load_state_dict(general.bert.embeddings.state_dict())
    student.bert.blocks.load_state_dict(general.bert.blocks.state_dict())  # the task teacher's pooler and head stay
    return f"general distillation from {name} on {text_file.name} ({cfg.general_steps} steps, kept in {folder})"


def _same_shape(a, b) -> bool:
    return (a.hidden_size, a.num_heads, a.intermediate_size) == (b.hidden_size, b.num_heads, b.intermediate_size)


@torch.no_grad()
def _copy_encoder(student: nn.Module, source: nn.Module, mapping: list[tuple[int, int]]) -> None:
    """The general teacher's embeddings and mapped layers into a student of its width."""
    student.bert.embeddings.load_state_dict(source.bert.embeddings.state_dict())
    for i, j in mapping[1:]:
        student.bert.blocks[i - 1].load_state_dict(source.bert.blocks[j - 1].state_dict())


def made_dir() -> Path:
    """Where the made models are kept: $BERTKIT_DISTILL_CACHE, else the distill folder of bertkit's cache."""
    return Path(os.environ.get("BERTKIT_DISTILL_CACHE") or cache_dir() / "distill")


def _keep_model(folder: Path) -> None:
    """The finished run's model becomes folder/model; its checkpoints (optimiser state) go: nothing resumes it."""
    (folder / "run" / "model").rename(folder / "model")
    for name in ("checkpoints", "best"):
        shutil.rmtree(folder / "run" / name, ignore_errors=True)


def _texts_digest(texts: list[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def _key(*parts) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode("utf-8")).hexdigest()[:16]
