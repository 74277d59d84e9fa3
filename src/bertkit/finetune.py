"""Fine-tuning recipe: sequence classification (single-label, multi-label, regression; single texts or pairs),
token classification (NER) and extractive question answering, on the one training loop in trainer.py.

Batches are length-grouped: examples are shuffled, cut into chunks of 50 batches, sorted by length inside a
chunk, and the batches shuffled again, so a batch holds texts of similar length and little goes to padding
while the order stays random. As in pre-training, `batch_size` is the global batch of one optimiser step and
losses are sums divided by global counts, so accumulation and torchrun give the same gradient.

The model is saved with the reading settings it was trained with (max length, windows, ...), and dev and test
are scored through the inference layer, as `bertkit evaluate` scores them.

Robustness (docs/robustness.md): `adversarial` adds the loss under an FGM or PGD perturbation of the word
embeddings (bertkit.adversarial); `augment_noise` gives training texts a copy with typos.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bertkit import adversarial
from bertkit import objectives
from bertkit.config import DEFAULT_MAX_LENGTH
from bertkit.data.labelled import collate, encode_classification, encode_tagged, global_batches
from bertkit.data.noise import noise_words, noisy
from bertkit.data.pieces import Pieces
from bertkit.data.tasks import load_task_data
from bertkit.encoding.inputs import Encoded, truncation_note
from bertkit.errors import BertkitError
from bertkit.evaluate.scores import score
from bertkit.hardware import rank
from bertkit.heads import HEAD_FOR_KIND
from bertkit.inference.batches import check_segments, forward
from bertkit.inference.reading import Reading
from bertkit.model.bert import choose_execution
from bertkit.model.heads import PROBLEM_TYPES
from bertkit.objectives import IGNORE_INDEX
from bertkit.options import at_least, between, check_fields
from bertkit.runs import finish_run, fingerprints, kept_model, start_run, train_options
from bertkit.tokenizer import Tokenizer
from bertkit.trainer import Step, Task, TrainConfig, train

TASKS = ("classification", "ner", "qa")
TRAIN_DEFAULTS = {"lr": 5e-5, "warmup": 0.06, "weight_decay": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "log_every": 10}
"""The training loop's settings for fine-tuning (BERT's paper and transformers' Trainer), where they differ from
TrainConfig's pre-training defaults."""


@dataclass
class FinetuneConfig:
    task: str = "classification"
    """classification (a label per text or pair), ner (a BIO tag per word) or qa (an answer span, SQuAD)."""
    problem_type: str = "single_label"
    """For classification: single_label, multi_label or regression."""
    reading: Reading = field(default_factory=Reading)
    """How the model reads its input (max length, windows, ...): trained so, and saved with the model."""
    batch_size: int = field(default=32, metadata=at_least(1))
    """Examples (or windows) per optimiser step, all processes and micro-steps together."""
    accum: int = field(default=1, metadata=at_least(1))
    """Micro-steps per optimiser step (gradient accumulation): the same batch in less memory."""
    epochs: float = field(default=3.0, metadata=at_least(0.0, open=True))
    """Passes over the training data (fractions allowed)."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding); off: plain random batches."""
    class_weights: bool = False
    """Weight the loss by inverse class frequency (imbalanced single-label data)."""
    eval_batch_size: int = field(default=64, metadata=at_least(1))
    """Examples per forward pass when scoring dev and test."""
    seed: int = field(default=0, metadata=at_least(0))
    """Fixes the new head's weights, the batch order and dropout: same seed, same metrics."""
    adversarial: str | None = None
    """Adversarial training: also take the loss with the word embeddings pushed uphill, fgm (one step) or pgd
    (adv_steps projected steps), and add it; a step costs about 2x (fgm) or adv_steps + 1 times as much."""
    adv_eps: float = field(default=0.2, metadata=at_least(0.0, open=True))
    """Adversarial training: the perturbation's size, the L2 norm over each example's word embeddings (a word's
    embedding has norm ~1 in BERT-like models; at 1.0 all-MiniLM-L6-v2 learned nothing on rt-polarity, at 0.2 it
    lost 0.08 points: docs/robustness.md)."""
    adv_steps: int = field(default=3, metadata=at_least(1))
    """pgd: gradient steps, each projected back into the adv_eps ball."""
    augment_noise: float = field(default=0.0, metadata=between(0.0, 1.0))
    """Each training text (ner: sentence) also goes in with 1 or 2 random typos, with this probability: a cheap
    defence against natural noise (classification, ner)."""

    def __post_init__(self) -> None:
        if isinstance(self.reading, dict):  # from a config file or a saved recipe
            self.reading = Reading.from_dict(self.reading)
        check_fields(self)
        if self.task not in TASKS:
            raise BertkitError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.problem_type not in PROBLEM_TYPES:
            raise BertkitError(f"problem_type must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        if self.batch_size % self.accum:
            raise BertkitError(f"batch_size {self.batch_size} must be a multiple of accum {self.accum}")
        if self.adversarial not in (None, *adversarial.METHODS):
            raise BertkitError(f"adversarial must be one of {adversarial.METHODS}, got {self.adversarial!r}")
        if self.augment_noise and self.task == "qa":
            raise BertkitError("augment_noise works for classification and ner (typos would move QA answer spans)")


class FinetuneTask:
    """The trainer's Task for fine-tuning: batches, loss, dev-set evaluation."""

    def __init__(self, train: list[Encoded], cfg: FinetuneConfig, pad_id: int, labels: list[str], evaluate_fn):
        self.train, self.cfg, self.pad_id, self.labels = train, cfg, pad_id, labels
        self.evaluate_fn = evaluate_fn
        if len(train) < cfg.batch_size:
            what = {"qa": "question windows", "ner": "sentences"}.get(cfg.task, "training examples")
            raise BertkitError(f"{len(train)} {what}, fewer than the batch size {cfg.batch_size}: a step needs a "
                               f"full batch; lower --batch-size to {len(train)} or less, or give more data")
        self.weights = None
        if cfg.class_weights and cfg.task == "classification" and cfg.problem_type == "single_label":
            counts = np.bincount([x.target for x in train], minlength=len(labels)).astype(np.float64)
            self.weights = torch.tensor(len(train) / (len(labels) * np.maximum(counts, 1)), dtype=torch.float32)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train) // self.cfg.batch_size)

    def steps(self, state: dict | None, rank: int, world: int):
        cfg = self.cfg
        lengths = [len(x.ids) for x in self.train]
        for rows, micro, after in global_batches(lengths, cfg.batch_size, cfg.accum, cfg.seed, cfg.group_by_length,
                                                 state, rank, world):
            norm = self._normaliser([self.train[i] for i in rows])
            batches = []
            for part in micro:
                batch = collate([self.train[i] for i in part], self.pad_id, cfg.task, cfg.problem_type)
                batch["scale"] = torch.tensor(world / norm)
                batches.append(batch)
            yield Step(batches, sum(lengths[i] for i in rows), after)

    def _normaliser(self, rows: list[Encoded]) -> float:
        """What the global batch's summed loss is divided by, so it is a mean over the whole batch."""
        cfg = self.cfg
        if cfg.task == "qa":
            return len(rows)
        if cfg.task == "ner":
            return max(1, sum(sum(t != IGNORE_INDEX for t in x.target) for x in rows))
        if cfg.problem_type == "multi_label":
            return len(rows) * len(self.labels)
        if self.weights is not None:
            return float(sum(self.weights[x.target] for x in rows))
        return len(rows)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        cfg = self.cfg
        if cfg.adversarial is None:
            return self._loss(model, batch), {}
        clean, adv = adversarial.losses(model, lambda m: self._loss(m, batch), cfg.adversarial, cfg.adv_eps,
                                        cfg.adv_steps)
        return clean + adv, {"clean_loss": float(clean.detach()), "adv_loss": float(adv.detach())}

    def _loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["labels"]
        cfg = self.cfg
        if cfg.task == "qa":
            total = objectives.span_loss(*out, labels[:, 0], labels[:, 1], reduction="sum")
        elif cfg.task == "ner":
            total = objectives.token_classification_loss(out, labels, reduction="sum")
        else:
            w = self.weights.to(out.device) if self.weights is not None else None
            total = objectives.classification_loss(out, labels, cfg.problem_type, w, reduction="sum")
        return total * batch["scale"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.evaluate_fn(model)


def noised_copies(examples: list, task: str, p: float, seed: int, tokenizer) -> list:
    """A copy with 1 or 2 random typos (bertkit.data.noise) of each example, with probability p; seeded, so a
    resumed run trains on the same copies. NER sentences keep every word, so tags stay aligned (and a sentence of
    one-character Chinese words gets no copy: none of its typos would keep the tags right)."""
    rng = random.Random(f"{seed}:augment-noise")
    out = []
    for x in examples:
        if rng.random() < p:
            edits = rng.choice((1, 2))
            if task == "ner":
                copy = replace(x, tokens=noise_words(x.tokens, edits, rng))
            else:
                copy = replace(x, text=noisy(Pieces.split(tokenizer, x.text), edits, rng).text)
            if copy != x:  # a text without a word of letters stays as it was
                out.append(copy)
    return out


def encode_split(tokenizer, part, task: str, problem_type: str, labels: list[str], reading: Reading):
    """(items, context) of one split: the encoded examples with targets, and what scoring needs besides
    (the tagged sentences for ner, (examples, windows) for qa)."""
    if task == "qa":
        from bertkit.inference.qa import make_windows
        windows = make_windows(tokenizer, part, reading.max_length, reading.doc_stride)
        return [Encoded(w.ids, w.type_ids, (w.start, w.end)) for w in windows], (part, windows)
    if task == "ner":
        return encode_tagged(tokenizer, part, labels, reading.max_length), part
    return encode_classification(tokenizer, part, labels, problem_type, reading.max_length,
                                 reading.window_stride), None


def finetune(model_dir: str | Path, out: str | Path, cfg: FinetuneConfig, train_cfg_kwargs: dict, train_file,
             dev_file=None, test_file=None, columns: dict | None = None, *, resume: bool = False,
             force: bool = False, progress: bool = True) -> dict:
    """Fine-tune a bertkit or Hugging Face BERT folder; returns (and writes) dev and test metrics.

    resume: continue the run in `out` from its last checkpoint; the data and options must be those it was
    started with, unless force (see runs.check_recipe)."""
    from bertkit.checkpoint import load_model
    from bertkit.hub import hub_origin, resolve_model
    from bertkit.evaluate.metrics import plot_confusion

    out = Path(out)
    model_dir = resolve_model(model_dir)  # a Hugging Face Hub name: its snapshot in the HF cache
    origin = hub_origin(model_dir)
    train_kwargs = train_options(train_cfg_kwargs, default_metric(cfg))
    splits, labels = load_task_data(cfg.task, train_file, dev_file, test_file, columns, cfg.problem_type)
    num_labels = 1 if cfg.problem_type == "regression" and cfg.task == "classification" else len(labels)
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    loaded = load_model(model_dir, task=HEAD_FOR_KIND[cfg.task], num_labels=num_labels if cfg.task != "qa" else None,
                        problem_type=cfg.problem_type if cfg.task == "classification" else None)
    if loaded.tokenizer is None:
        raise BertkitError(f"{model_dir} has no tokenizer files")
    model, tok = loaded.model, loaded.tokenizer
    cfg = replace(cfg, reading=cfg.reading.for_model(model.config, model_dir, DEFAULT_MAX_LENGTH))
    choose_execution(model, unpad=True)  # skip padding in every layer but attention; saved with the model
    if progress:
        for note in loaded.notes:
            print(f"note: {note}")

    noised = noised_copies(splits["train"], cfg.task, cfg.augment_noise, cfg.seed, tok) if cfg.augment_noise else []
    splits["train"] = splits["train"] + noised
    encoded = {name: encode_split(tok, part, cfg.task, cfg.problem_type, labels, cfg.reading)
               for name, part in splits.items()}
    for items, _ in encoded.values():
        check_segments(model, items)  # before a training step reads a segment the model has no row for
    truncated = truncation_counts(encoded, splits, cfg)
    if truncated["note"] and rank() == 0:
        print(f"note: {truncated['note']}")

    scores = scorer(encoded, tok.pad_id, cfg, labels)
    task = FinetuneTask(encoded["train"][0], cfg, tok.pad_id, labels, lambda m: scores(m, "dev"))
    files = fingerprints({"train": train_file, "dev": dev_file, "test": test_file})
    start_run(out, "finetune_config.json", {"model": str(Path(model_dir).resolve()), "data": files,
                                            "columns": columns or {}, "finetune": asdict(cfg), "train": train_kwargs},
              hub={"model": origin}, resume=resume, force=force)
    train_epochs(model, task, cfg, train_kwargs, out, tok, labels if labels and num_labels == len(labels) else None,
                 resume=resume, progress=progress)

    best = kept_model(out)
    results = {"task": cfg.task, "problem_type": cfg.problem_type, "labels": labels,
               "train_examples": len(encoded["train"][0]), "noised_copies": len(noised),
               "dev_examples": len(encoded["dev"][0]),
               "reading": cfg.reading.to_dict(), "truncated": truncated}
    for name in ("dev", "test"):
        if encoded[name][0]:
            results[name] = {**scores(best, name), "truncated": truncated[name]}  # as `evaluate` reports it
    finish_run(out, task=HEAD_FOR_KIND[cfg.task], results=results, labels=labels or None,
               reading=cfg.reading.to_dict(), data=files, base=origin)
    test = results.get("test", {})
    if "confusion_matrix" in test and rank() == 0:
        plot_confusion(test["confusion_matrix"], labels, out / "confusion.png", title="test")
    return results


def scorer(encoded: dict, pad_id: int, cfg: FinetuneConfig, labels: list[str]) -> Callable[[nn.Module, str], dict]:
    """scores(model, split): the model's metrics on one of the encoded splits, read through the inference layer as
    `bertkit evaluate` reads a file."""

    def scores(model: nn.Module, name: str) -> dict:
        items, context = encoded[name]
        logits = forward(model, items, pad_id, cfg.eval_batch_size)
        return score(items, logits, cfg.task, cfg.problem_type, labels, cfg.reading, context)

    return scores


def train_epochs(model: nn.Module, task: Task, cfg: FinetuneConfig, train_kwargs: dict, out: Path, tok: Tokenizer,
                 labels: list[str] | None, *, resume: bool, progress: bool) -> None:
    """trainer.train for cfg.epochs passes over the task's data (task.steps_per_epoch steps each), with
    fine-tuning's defaults under the options given: TRAIN_DEFAULTS, an evaluation and a checkpoint every epoch, the
    model kept by default_metric."""
    steps = max(1, int(round(cfg.epochs * task.steps_per_epoch)))
    defaults = {**TRAIN_DEFAULTS, "eval_every": task.steps_per_epoch, "save_every": task.steps_per_epoch,
                "seed": cfg.seed, "best_metric": default_metric(cfg)}
    train_cfg = TrainConfig(**{**defaults, **train_kwargs, "max_steps": steps})
    train(model, task, train_cfg, out, tokenizer=tok, labels=labels, reading=cfg.reading.to_dict(), resume=resume,
          progress_bar=progress)


def truncation_counts(encoded: dict, splits: dict, cfg: FinetuneConfig) -> dict:
    """Examples cut at max_length per split (windows and QA contexts never are), and the note that says so (None
    when nothing was cut): a run never trains or scores on cut texts without a word."""
    counts = {name: sum(it.unread_words is not None for it in items) for name, (items, _) in encoded.items()}
    what = "sentences" if cfg.task == "ner" else "examples"
    windows = cfg.task == "classification" and not any(getattr(e, "pair", None) is not None for e in splits["train"])
    note = truncation_note([(n, len(splits[name]), f"{name} {what}") for name, n in counts.items()],
                           cfg.reading.max_length, windows)
    return {**counts, "max_length": cfg.reading.max_length, "note": note}


def default_metric(cfg: FinetuneConfig) -> str:
    """The dev metric that picks the model kept: macro-F1, micro-F1 (multi-label), Pearson or entity / SQuAD F1."""
    if cfg.task in ("ner", "qa"):
        return "f1"
    return {"single_label": "macro_f1", "multi_label": "micro_f1", "regression": "pearson"}[cfg.problem_type]
