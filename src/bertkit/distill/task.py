"""What distillation trains on and how: its options (`DistillConfig`), the trainer's Task (`DistillTask`: batches
of the training set, augmented rows included, and the weighted losses), and the teacher's logits computed once.

Shapes: B batch, T tokens, L labels, M tagged tokens (a tagger's words), N real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.data.labelled import collate, global_batches
from bertkit.distill.student import LAYER_MAPS, SHAPES
from bertkit.encoding.inputs import Encoded
from bertkit.errors import BertkitError
from bertkit.folders import atomic_file
from bertkit.finetune import FinetuneConfig
from bertkit.inference.batches import forward
from bertkit.objectives import (IGNORE_INDEX, attention_loss, classification_loss, hidden_state_loss,
                                soft_target_loss)
from bertkit.options import at_least, between, check_fields
from bertkit.trainer import Step

CACHE = "teacher_logits.safetensors"
RECIPES = {
    # DistilBERT (Sanh et al. 2019): every other layer copied, soft targets + labels + the hidden states
    "distilbert": {"soft_weight": 1.0, "hard_weight": 0.5, "hidden_weight": 1.0, "attention_weight": 0.0,
                   "layer_map": "uniform", "intermediate_epochs": 0.0},
    # TinyBERT (Jiao et al. 2020): hidden states and attention first, then the soft targets alone at T = 1, on
    # augmented texts (the paper makes 20 variants a text; here the task's default, TASK_DEFAULTS)
    "tinybert": {"soft_weight": 1.0, "hard_weight": 0.0, "hidden_weight": 1.0, "attention_weight": 1.0,
                 "temperature": 1.0, "intermediate_epochs": 1.0, "layer_map": "uniform"},
    # MiniLM (Wang et al. 2020): the last layer's attention distributions, with the soft targets and labels
    "minilm": {"soft_weight": 1.0, "hard_weight": 0.5, "hidden_weight": 0.0, "attention_weight": 1.0,
               "layer_map": "uniform", "intermediate_epochs": 0.0},
}
"""The anchors' recipes by name (`--recipe`): the DistillConfig fields each sets; options given beside win."""
TASK_DEFAULTS = {"classification": {"augment": 4}, "ner": {"augment": 0}}
"""Defaults that depend on the teacher's task (docs/distillation.md, the study): augmentation for classification;
NER has none."""


@dataclass
class DistillConfig:
    recipe: str | None = None
    """Start from a published recipe: tinybert, distilbert or minilm (docs/distillation.md says what each sets);
    any option given beside it wins. Unset: bertkit's own default."""
    student: str = "teacher"
    """The student: teacher (the teacher's width with fewer layers, copied from it), a preset (tiny, mini, small,
    medium, base, large: its width, heads and feed-forward with the teacher's vocabulary; copied from the teacher
    when the widths match), or a model directory with the teacher's tokenizer (any width)."""
    student_layers: int | None = field(default=None, metadata=at_least(1))
    """Layers of a student made from `teacher` or a preset; default half the teacher's, or the preset's."""
    temperature: float = field(default=2.0, metadata=at_least(0.0, open=True))
    """T of the soft targets: softmax(logits / T) (sigmoid for multi-label); higher shows more of the teacher's
    view of the wrong labels."""
    soft_weight: float = field(default=1.0, metadata=at_least(0.0))
    """Weight of the soft-target loss, T^2 * KL(teacher || student) at temperature T."""
    hard_weight: float = field(default=0.5, metadata=at_least(0.0))
    """Weight of the usual loss on the data's labels (augmented texts have none)."""
    hidden_weight: float = field(default=0.0, metadata=at_least(0.0))
    """Weight of the hidden-state loss: MSE between student and teacher layers (mapped uniformly; through a learned
    projection when the widths differ). Runs the teacher every step."""
    attention_weight: float = field(default=0.0, metadata=at_least(0.0))
    """Weight of the attention loss: KL between the last layers' attention distributions (MiniLM). Runs the
    teacher every step."""
    layer_map: str = "uniform"
    """Which teacher layer each student layer copies and matches: uniform (student layer i of Ls is teacher layer
    i * Lt // Ls: every k-th) or last (the teacher's top Ls layers)."""
    intermediate_epochs: float = field(default=0.0, metadata=at_least(0.0))
    """Two steps (TinyBERT): the first epochs train on the hidden-state and attention losses alone, the rest on the
    soft and hard targets alone. 0: every loss at every step."""
    cache_teacher: bool | None = None
    """Compute the teacher's logits for the training set once and keep them in the run folder, so that every
    step runs the student only (logit losses only: the hidden-state and attention losses need the teacher).
    Default: on when no loss needs the teacher's layers (the same losses, in less time)."""
    augment: int | None = field(default=None, metadata=at_least(0))
    """Variants of each training text (TinyBERT's augmentation): words replaced by a masked LM's proposals,
    labelled by the teacher; classification only. Epochs then count passes over the augmented set. Default: 4
    for classification, 0 for NER."""
    augment_rate: float = field(default=0.2, metadata=between(0.0, 1.0, low_open=True))
    """Share of a text's words each variant replaces."""
    augment_mlm: str | None = None
    """The masked LM that proposes words (a model directory with an MLM head; any vocabulary); default the
    teacher's own MLM head, when its folder has one, else one made here from the teacher's encoder."""
    mlm_steps: int = field(default=300, metadata=at_least(1))
    """Steps of the masked-LM run that makes a proposer for --augment from the teacher's encoder and the training
    texts, when neither --augment-mlm nor the teacher has one (made once, cached)."""
    general_text: str | None = None
    """General distillation first (TinyBERT): a text file (one text per line) on which the student learns the
    teacher encoder's hidden states and attention before the task; made once per teacher, text and student,
    cached."""
    general_teacher: str | None = None
    """The encoder the general distillation learns from: a pre-trained model with the teacher's tokenizer (the one
    the teacher was fine-tuned from, as TinyBERT does: one general student serves every task fine-tuned from it);
    default the teacher's own encoder."""
    general_steps: int = field(default=1000, metadata=at_least(1))
    """Steps (batches of --batch-size texts) of the general distillation."""
    control: bool = False
    """Also train the same student on the labels alone, with the same recipe, as the report's control row."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """How the student trains and reads (batch size, epochs, max length, ...), as fine-tuning does; task and problem
    type are the teacher's, and the teacher's reading settings apply unless given."""

    def __post_init__(self) -> None:
        if isinstance(self.finetune, dict):  # from a saved recipe
            self.finetune = FinetuneConfig(**self.finetune)
        check_fields(self)
        if self.recipe is not None and self.recipe not in RECIPES:
            raise BertkitError(f"recipe must be one of {', '.join(RECIPES)}, not {self.recipe!r}")
        teacher_losses = self.soft_weight or self.hidden_weight or self.attention_weight
        if not (teacher_losses or self.hard_weight):
            raise BertkitError("every loss weight is 0; give the soft, hard, hidden-state or attention loss a weight")
        if self.cache_teacher and (self.hidden_weight or self.attention_weight):
            raise BertkitError("--cache-teacher keeps the teacher's logits only, and the hidden-state and attention "
                               "losses need its layers every step: drop --cache-teacher or set --hidden-weight 0 "
                               "and --attention-weight 0")
        if self.augment and not teacher_losses:
            raise BertkitError("augmented texts have no labels: they teach through the soft-target, hidden-state or "
                               "attention loss, so give one of them a weight (or drop --augment)")
        if self.layer_map not in LAYER_MAPS:
            raise BertkitError(f"layer_map must be one of {', '.join(LAYER_MAPS)}, not {self.layer_map!r}")
        if self.intermediate_epochs and not (self.hidden_weight or self.attention_weight):
            raise BertkitError("--intermediate-epochs trains the hidden-state and attention losses first: give "
                               "--hidden-weight or --attention-weight a weight")
        if self.intermediate_epochs and not (self.soft_weight or self.hard_weight):
            raise BertkitError("--intermediate-epochs is followed by the soft and hard targets: give one a weight")
        if self.intermediate_epochs >= self.finetune.epochs:
            raise BertkitError(f"--intermediate-epochs {self.intermediate_epochs:g} leaves no epoch of the "
                               f"{self.finetune.epochs:g} for the soft and hard targets")
        if self.student_layers is not None and self.student not in SHAPES:
            raise BertkitError(f"--student-layers sets the depth of a student made here ({', '.join(SHAPES)}); a "
                               "student from a folder keeps its own")

    def for_task(self, task: str) -> DistillConfig:
        """The options left unset filled in for the teacher's task (TASK_DEFAULTS), and the teacher's logits cached
        when no loss needs its layers."""
        if self.augment and task == "ner":
            raise BertkitError("--augment makes variants of texts for classification; NER augmentation is not "
                               "supported")
        augment = TASK_DEFAULTS[task]["augment"] if self.augment is None else self.augment
        if augment and not (self.soft_weight or self.hidden_weight or self.attention_weight):
            augment = 0 if self.augment is None else augment  # labels alone: the variants could teach nothing
        layers = bool(self.hidden_weight or self.attention_weight)
        cache = (not layers) if self.cache_teacher is None else self.cache_teacher
        return replace(self, augment=augment, cache_teacher=cache)

    @classmethod
    def from_recipe(cls, recipe: str | None = None, **given) -> DistillConfig:
        """The options of a named recipe (RECIPES), then those `given` on top; no recipe: the defaults."""
        if recipe is not None and recipe not in RECIPES:
            raise BertkitError(f"recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
        return cls(recipe=recipe, **{**RECIPES.get(recipe, {}), **given})


class DistillTask:
    """The trainer's Task for distillation: the training set (augmented rows included) in length-grouped batches as
    fine-tuning draws them, each with the teacher's cached logits when there are, and the weighted losses. Like
    fine-tuning's, each loss is a sum divided by a count over the global batch: texts (labels x texts for
    multi-label; tagged tokens for a tagger) for the soft targets, the labelled ones for the hard labels, real
    tokens for the hidden-state and attention losses."""

    def __init__(self, train: list[Encoded], cfg: DistillConfig, pad_id: int, num_labels: int, evaluate_fn,
                 cached: list[torch.Tensor] | None = None):
        ft = cfg.finetune
        if len(train) < ft.batch_size:
            what = "sentences" if ft.task == "ner" else "training examples"
            raise BertkitError(f"{len(train)} {what}, fewer than the batch size {ft.batch_size}: a step needs a "
                               f"full batch; lower --batch-size to {len(train)} or less, or give more data")
        self.train, self.cfg, self.pad_id, self.num_labels = train, cfg, pad_id, num_labels
        self.evaluate_fn, self.cached = evaluate_fn, cached

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train) // self.cfg.finetune.batch_size)

    def steps(self, state: dict | None, rank: int, world: int):
        ft = self.cfg.finetune
        lengths = [len(x.ids) for x in self.train]
        for rows, micro, after in global_batches(lengths, ft.batch_size, ft.accum, ft.seed, ft.group_by_length,
                                                 state, rank, world):
            counts = self._counts([self.train[i] for i in rows])
            scales = torch.tensor([world / max(1, n) for n in counts])  # soft, hard, per token
            # where the batch starts, in epochs: the two-step schedule's first step trains the layers alone
            start = after["epoch"] + (after["index"] - ft.batch_size) / len(self.train)
            intermediate = torch.tensor(start < self.cfg.intermediate_epochs)
            yield Step([self._batch(part, scales, intermediate) for part in micro], sum(lengths[i] for i in rows),
                       after)

    def _counts(self, rows: list[Encoded]) -> tuple[int, int, int]:
        """What the global batch's summed soft, hard and per-token losses are divided by."""
        ft = self.cfg.finetune
        tokens = sum(len(x.ids) for x in rows)
        if ft.task == "ner":
            tagged = sum(sum(t != IGNORE_INDEX for t in x.target) for x in rows)
            return tagged, tagged, tokens
        per_row = self.num_labels if ft.problem_type == "multi_label" else 1
        return len(rows) * per_row, sum(x.target is not None for x in rows) * per_row, tokens

    def _batch(self, part: list[int], scales: torch.Tensor, intermediate: torch.Tensor) -> dict[str, torch.Tensor]:
        ft = self.cfg.finetune
        batch = collate([self.train[i] for i in part], self.pad_id, ft.task, ft.problem_type)
        if self.cached is not None:
            logits = [self.cached[i] for i in part]  # each (L,), or (T_i, L) for a tagger
            if ft.task == "ner":
                B, T = batch["input_ids"].shape
                padded = torch.zeros(B, T, self.num_labels)
                for row, x in enumerate(logits):
                    padded[row, :len(x)] = x
                batch["teacher_logits"] = padded  # (B, T, L)
            else:
                batch["teacher_logits"] = torch.stack(logits)  # (B, L)
        batch["scales"], batch["intermediate"] = scales, intermediate
        return batch

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        cfg, ft = self.cfg, self.cfg.finetune
        # two steps: the layers' losses alone, then the targets' alone; one step: all of them
        intermediate = bool(cfg.intermediate_epochs) and bool(batch["intermediate"])
        targets, layers = not intermediate, intermediate or not cfg.intermediate_epochs
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch.get("teacher_logits"),
                    layers=layers)
        soft_scale, hard_scale, token_scale = batch["scales"]
        # a batch of augmented texts alone has no labels (collate leaves them out): its hard loss is 0
        student, teacher, labels = out.student, out.teacher, batch.get("labels")
        if ft.task == "ner":  # a tagger learns at its tagged positions: each word's first sub-token
            tagged = labels != IGNORE_INDEX  # (B, T)
            student, labels = student[tagged], labels[tagged]  # (M, L), (M,)
            teacher = teacher[tagged] if teacher is not None else None
        problem = "single_label" if ft.task == "ner" else ft.problem_type
        terms = {}
        if targets and cfg.soft_weight:
            terms["soft"] = cfg.soft_weight * soft_scale * soft_target_loss(student, teacher, cfg.temperature, problem)
        if targets and cfg.hard_weight and labels is None:
            terms["hard"] = student.sum() * 0.0  # logged as 0, in the graph like the other terms
        elif targets and cfg.hard_weight:
            if problem == "multi_label":  # unlabelled (augmented) rows hold IGNORE_INDEX
                labelled = labels[:, 0] != IGNORE_INDEX
                student, labels = student[labelled], labels[labelled]
            hard = classification_loss(student, labels, problem, reduction="sum")
            terms["hard"] = cfg.hard_weight * hard_scale * hard
        if out.hidden:
            width = out.hidden[0][1].shape[-1]
            mse = sum(hidden_state_loss(s, t) for s, t in out.hidden) / (len(out.hidden) * width)  # per element
            terms["hidden"] = cfg.hidden_weight * token_scale * mse
        if out.attention:
            s, t = out.attention
            heads = s.shape[1] if s.shape[1] == t.shape[1] else 1
            kl = attention_loss(s, t, batch["attention_mask"].bool()) / heads  # per query
            terms["attention"] = cfg.attention_weight * token_scale * kl
        loss = sum(terms.values())
        if intermediate:  # the head takes no part; a zero term keeps it in the graph, as DDP wants every parameter
            loss = loss + 0.0 * out.student.sum()
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.evaluate_fn(model.saved_model)


def teacher_logits(teacher: nn.Module, items: list[Encoded], pad_id: int, batch_size: int, bf16: bool,
                   path: Path, reuse: bool) -> list[torch.Tensor]:
    """The teacher's logits for every training item, each (L,) or (T_i, L) for a tagger: computed once, as a
    training step computes them (eval mode, bf16 autocast when training uses it), and kept in `path`
    (safetensors: the rows of every item one after the other, and each item's row count). With `reuse` (a resumed
    run), the file an earlier start wrote is read instead, when it holds these items."""
    per_token = teacher.task == "token_classification"
    if reuse and path.is_file():
        saved = load_file(str(path))
        rows = saved["rows"].tolist()
        if rows == [len(x.ids) if per_token else 1 for x in items]:
            parts = saved["logits"].split(rows)
            return list(parts) if per_token else [p[0] for p in parts]
    device = next(teacher.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = forward(teacher, items, pad_id, batch_size)
    with atomic_file(path) as tmp:
        save_file({"logits": torch.cat([x.reshape(-1, x.shape[-1]) for x in logits]).contiguous(),
                   "rows": torch.tensor([x.shape[0] if per_token else 1 for x in logits])}, str(tmp))
    return logits
