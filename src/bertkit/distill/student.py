"""The student and what trains it: a smaller model made from the teacher (or given), and `Distiller`, the module
the trainer trains, which runs the student beside the frozen teacher.

Shapes: B batch, T tokens, L labels, N real tokens, C hidden (Cs student, Ct teacher), H heads.

A student from the teacher's shape or a preset takes the teacher's vocabulary, positions and activation; when its
width, heads and feed-forward are the teacher's, it starts as a copy of the teacher (embeddings, pooler, head) with
every k-th layer (DistilBERT's initialisation): student layer i (1-based) is teacher layer i * Lt // Ls, the layer
the hidden-state loss matches it to. Otherwise it starts from BERT's init.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from bertkit.checkpoint import Loaded, load_model
from bertkit.config import PRESETS, BertConfig
from bertkit.errors import BertkitError
from bertkit.model.bert import choose_execution
from bertkit.model.heads import build_model
from bertkit.tokenizer import Tokenizer

SHAPES = ("teacher",) + tuple(PRESETS)
"""Students made here, by name: the teacher's own shape with fewer layers, or a preset's."""


LAYER_MAPS = ("uniform", "last")


def layer_map(student_layers: int, teacher_layers: int, kind: str = "uniform") -> list[tuple[int, int]]:
    """(student, teacher) hidden-state indices a student layer copies and the hidden-state loss matches: 0 is the
    embeddings, i the output of layer i. uniform (TinyBERT, DistilBERT, PKD-skip): student layer i goes with teacher
    layer i * Lt // Ls; last (PKD-last): with teacher layer Lt - Ls + i, the top layers."""
    if kind == "last":
        if student_layers > teacher_layers:
            raise BertkitError(f"layer map last matches the teacher's top layers: a student of at most "
                               f"{teacher_layers} layers, not {student_layers}")
        return [(0, 0)] + [(i, teacher_layers - student_layers + i) for i in range(1, student_layers + 1)]
    return [(i, i * teacher_layers // student_layers) for i in range(student_layers + 1)]


def make_student(teacher: nn.Module, shape: str, layers: int | None = None,
                 mapping: str = "uniform") -> tuple[nn.Module, str]:
    """A new student for `teacher` (a classifier or tagger): shape `teacher` or a preset name; layers default to
    half the teacher's (at least one) or the preset's. Returns the student and how it was initialised. Draws its
    fresh weights from torch's RNG (seed it first)."""
    t = teacher.config
    if shape == "teacher":
        layers = layers or max(1, t.num_layers // 2)
        if layers > t.num_layers:
            raise BertkitError(f"a student of the teacher's shape copies its layers: at most {t.num_layers}, "
                               f"not {layers}")
        config = t.replace(num_layers=layers)
    else:
        config = BertConfig.preset(shape, num_layers=layers or PRESETS[shape][0], vocab_size=t.vocab_size,
                                   max_position_embeddings=t.max_position_embeddings,
                                   type_vocab_size=t.type_vocab_size, pad_token_id=t.pad_token_id,
                                   hidden_act=t.hidden_act, layer_norm_eps=t.layer_norm_eps)
    student = build_model(config, teacher.task, teacher.num_labels, getattr(teacher, "problem_type", "single_label"))
    choose_execution(student, unpad=True)  # on real tokens only, as the teacher
    config = student.config
    same = (config.hidden_size, config.num_heads, config.intermediate_size) == (t.hidden_size, t.num_heads,
                                                                                t.intermediate_size)
    if not same:
        return student, "fresh (BERT's init): another width, heads or feed-forward than the teacher's"
    if config.num_layers > t.num_layers:
        return student, f"fresh (BERT's init): more layers than the teacher's {t.num_layers}"
    copied = copy_teacher(student, teacher, mapping)
    return student, f"copied from the teacher: embeddings, head and teacher layers {copied} (1-based)"


@torch.no_grad()
def copy_teacher(student: nn.Module, teacher: nn.Module, mapping: str = "uniform") -> list[int]:
    """Load the teacher's embeddings, pooler, head and the layers layer_map names into a student of its width;
    returns the teacher layers copied (1-based)."""
    pairs = layer_map(student.config.num_layers, teacher.config.num_layers, mapping)[1:]
    student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
    for i, j in pairs:
        student.bert.blocks[i - 1].load_state_dict(teacher.bert.blocks[j - 1].state_dict())
    if student.bert.pooler is not None:
        student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    return [j for _, j in pairs]


def load_student(folder: str, teacher: nn.Module, teacher_tokenizer: Tokenizer, teacher_dir) -> tuple[nn.Module, str]:
    """A student from a model directory (bertkit or Hugging Face BERT, any width), with the teacher's head: its own
    if it already has one with the teacher's outputs, else a new one. Its tokenizer must be the teacher's."""
    loaded: Loaded = load_model(folder, task=teacher.task, num_labels=teacher.num_labels,
                                problem_type=getattr(teacher, "problem_type", None))
    check_same_tokens(loaded.tokenizer, teacher_tokenizer, folder, teacher_dir)
    choose_execution(loaded.model, unpad=True)
    return loaded.model, f"loaded from {folder}" + (f" ({'; '.join(loaded.notes)})" if loaded.notes else "")


def check_same_tokens(tokenizer: Tokenizer | None, teacher_tokenizer: Tokenizer, where, teacher_dir) -> None:
    """A student reads the teacher's token ids, so both must tokenize alike: one vocabulary, one normalisation."""
    if (tokenizer is None or tokenizer.vocab() != teacher_tokenizer.vocab()
            or tokenizer.normalizer_settings() != teacher_tokenizer.normalizer_settings()):
        raise BertkitError(f"{where} does not share the teacher's vocabulary ({teacher_dir}): the tokens must be the "
                           "same; pick a student with the teacher's tokenizer, or a preset (--student mini), "
                           "which takes it")


class Outputs(NamedTuple):
    """What the distillation losses compare, for one batch."""

    student: torch.Tensor  # logits (B, L) or (B, T, L)
    teacher: torch.Tensor | None  # the teacher's logits, the same shape (None when no loss needs them)
    hidden: list[tuple[torch.Tensor, torch.Tensor]]  # per layer_map pair: student (projected) and teacher, (N, Ct)
    attention: tuple[torch.Tensor, torch.Tensor] | None  # last-layer probabilities (B, H, T, T): student, teacher


class Distiller(nn.Module):
    """What distillation trains: the student, with a projection to the teacher's width for the hidden-state loss
    when the widths differ (TinyBERT's W_h, one for all layers), beside the teacher. The teacher is frozen: eval
    mode always (no dropout), no gradients, so it is neither in the optimiser nor in checkpoints, which hold
    `saved_model`, the student, and the projection (trainer.py)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, hidden_layers: list[tuple[int, int]] = (),
                 attention: bool = False):
        super().__init__()
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval() if teacher is not None else None
        self.hidden_layers = list(hidden_layers)
        self.attention = attention
        Cs, Ct = student.config.hidden_size, teacher.config.hidden_size if teacher is not None else None
        self.project = None
        if self.hidden_layers and Cs != Ct:
            self.project = nn.Linear(Cs, Ct, bias=False)
            nn.init.normal_(self.project.weight, std=student.config.initializer_range)

    @property
    def saved_model(self) -> nn.Module:
        return self.student

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                teacher_logits: torch.Tensor | None = None, layers: bool = True) -> Outputs:
        """Inputs (B, T); teacher_logits: the teacher's, computed once beforehand (--cache-teacher), else the
        teacher runs here (when there is one). layers: False leaves out the hidden states and attention (the
        second of two steps)."""
        hidden, attention = bool(self.hidden_layers) and layers, self.attention and layers
        logits, out = _run(self.student, input_ids, attention_mask, token_type_ids, hidden, attention)
        t_out = None
        if self.teacher is not None and teacher_logits is None:
            with torch.no_grad():
                teacher_logits, t_out = _run(self.teacher, input_ids, attention_mask, token_type_ids, hidden,
                                             attention)
        pairs = []
        if hidden:
            real = attention_mask.bool()  # (B, T)
            for i, j in self.hidden_layers:
                h = out.hidden_states[i][real]  # (N, Cs)
                pairs.append((self.project(h) if self.project is not None else h, t_out.hidden_states[j][real]))
        probs = (out.attentions[-1], t_out.attentions[-1]) if attention else None
        return Outputs(logits, teacher_logits, pairs, probs)


def _run(model: nn.Module, input_ids, attention_mask, token_type_ids, hidden: bool, attention: bool):
    """(logits, encoder output) of a classifier or tagger, on the model's own (unpadded) path; hidden states and
    attention probabilities when asked."""
    out = model.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden,
                     output_attentions=attention, cls_only=model.task == "sequence_classification")
    return model.head(out), out
