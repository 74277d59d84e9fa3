"""Losses, one per task head, and distillation's (a student learning from a teacher's outputs). Labels equal to
IGNORE_INDEX take no part in a loss.

Shapes: B batch, T tokens, V vocab, L labels, N rows (texts, or tokens of a tagger), C hidden, H heads.
reduction="sum" is what the recipes use: they divide by the global batch's count of targets themselves, so
accumulation and several processes give the same gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""Label of a position that has no target: unmasked tokens in MLM, sub-tokens after the first in NER."""


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """logits (B, T, V) or (N, V); labels (B, T) or (N,) with IGNORE_INDEX where nothing was masked."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


def nsp_loss(logits: torch.Tensor, is_random_next: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """logits (B, 2); is_random_next (B,): 0 when B really follows A, 1 when it was drawn at random."""
    return F.cross_entropy(logits.float(), is_random_next, reduction=reduction)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str = "single_label",
                        class_weights: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """logits (B, L). labels: (B,) class ids for single_label; (B, L) 0/1 for multi_label;
    (B,) or (B, L) real targets for regression."""
    logits = logits.float()
    if problem_type == "single_label":
        return F.cross_entropy(logits, labels, weight=class_weights, ignore_index=IGNORE_INDEX, reduction=reduction)
    if problem_type == "multi_label":
        return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=class_weights,
                                                  reduction=reduction)
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1) if labels.dim() == 1 else logits, labels.float(), reduction=reduction)
    raise ValueError(f"unknown problem_type {problem_type!r}")


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                              class_weights: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """logits (B, T, L); labels (B, T), IGNORE_INDEX on special tokens, padding and non-first sub-tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           weight=class_weights, ignore_index=IGNORE_INDEX, reduction=reduction)


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
              end_positions: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """start/end logits (B, T); positions (B,). Unanswerable windows point at [CLS] (position 0).
    Mean of the start and end cross-entropies, as in the BERT paper's SQuAD recipe."""
    T = start_logits.shape[1]
    start = start_positions.clamp(0, T - 1)
    end = end_positions.clamp(0, T - 1)
    return (F.cross_entropy(start_logits.float(), start, reduction=reduction)
            + F.cross_entropy(end_logits.float(), end, reduction=reduction)) / 2


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     problem_type: str = "single_label", reduction: str = "sum") -> torch.Tensor:
    """Distillation's soft-target loss (Hinton et al., 2015) on logits (N, L) of the same rows, scaled by T^2 so that
    its gradients keep their size whatever the temperature T:

        single_label: T^2 * KL(softmax(teacher / T) || softmax(student / T)), per row
        multi_label:  T^2 * BCE(sigmoid(student / T), target sigmoid(teacher / T)), per row and label

    The teacher takes no gradient."""
    s, t = student.float() / temperature, teacher.detach().float() / temperature
    if problem_type == "multi_label":
        loss = F.binary_cross_entropy_with_logits(s, t.sigmoid(), reduction=reduction)
    elif problem_type == "single_label":
        per_row = F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="none").sum(-1)  # (N,)
        loss = per_row.sum() if reduction == "sum" else per_row.mean()
    else:
        raise ValueError(f"soft targets are for single_label or multi_label logits, not {problem_type!r}")
    return loss * temperature ** 2


def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Squared error between a student's hidden states (already projected to the teacher's width) and the
    teacher's, (N, C) each for N real tokens (TinyBERT's hidden-state loss)."""
    return F.mse_loss(student.float(), teacher.detach().float(), reduction=reduction)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of attention distributions over the keys (MiniLM's attention loss), summed over heads
    and the real queries. Probabilities (B, H, T, T), zero on padded keys; queries (B, T) bool, True at real
    tokens. A student with other than the teacher's number of heads is compared on the mean over heads."""
    s, t = student.float(), teacher.detach().float()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)  # (B, 1, T, T)
    # 0 * log 0 is 0 for the teacher; a student probability of exactly 0 (underflow) is floored
    kl = (torch.xlogy(t, t) - t * s.clamp_min(1e-30).log()).sum(-1)  # (B, H, T)
    return (kl * queries[:, None, :]).sum()
