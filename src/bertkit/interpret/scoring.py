"""The number an explanation explains: the model's output for one label of one classification input.

single_label: the label's softmax probability; multi_label: its sigmoid; regression: the value itself. Every
method (gradients, perturbations, faithfulness curves) scores this same quantity, so their numbers compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bertkit.checkpoint import require_finite


@dataclass
class Scorer:
    """Scores token-id variants of one input. Variants keep the input's length (words are masked, never
    deleted), so a batch needs no padding."""

    model: nn.Module
    type_ids: list[int]
    target: int
    batch_size: int = 64

    def output(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, L) -> the target's score (B,)."""
        kind = getattr(self.model, "problem_type", "single_label")
        if kind == "single_label":
            return logits.float().softmax(-1)[:, self.target]
        if kind == "multi_label":
            return logits.float()[:, self.target].sigmoid()
        return logits.float()[:, self.target]

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) of this input's length -> logits (B, L)."""
        types = torch.tensor(self.type_ids, dtype=torch.long, device=ids.device).expand(ids.shape[0], -1)
        logits = self.model(ids, None, types)
        require_finite(self.model, logits.detach())
        return logits

    @torch.no_grad()
    def __call__(self, variants: list[list[int]]) -> np.ndarray:
        """The target's score for each variant (N,), batched."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(variants), self.batch_size):
            ids = torch.tensor(variants[start:start + self.batch_size], dtype=torch.long, device=device)
            out.append(self.output(self.logits(ids)).cpu())
        return torch.cat(out).double().numpy() if out else np.zeros(0)
