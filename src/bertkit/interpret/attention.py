"""Attention maps per layer and head, and attention rollout across layers.

Shapes: L layers, H heads, T tokens.

Raw attention is not an explanation by itself (Jain & Wallace, 2019): it says where a head looks, not what
changed the output. Rollout (Abnar & Zuidema, 2020) follows attention through the layers, counting the residual
connection as half of each step, which tracks how much of each input token reaches [CLS]; the faithfulness curves
(faithfulness.py) say how far to trust it on a given model.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def attention_maps(model: nn.Module, ids: list[int], type_ids: list[int]) -> torch.Tensor:
    """Attention probabilities (L, H, T, T) of one input; row t is where query t looks."""
    device = next(model.parameters()).device
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    types = torch.tensor([type_ids], dtype=torch.long, device=device)
    model.eval()
    out = model.bert(ids_t, None, types, output_attentions=True)  # probabilities come back whatever the backend
    return torch.stack([a[0] for a in out.attentions]).float().cpu()  # (L, H, T, T)


def rollout(maps: torch.Tensor) -> torch.Tensor:
    """(L, H, T, T) -> (T, T): heads averaged, the identity added for the residual path, rows renormalised, the
    layers multiplied from the first up. Row 0 is how much each token flows into [CLS]."""
    T = maps.shape[-1]
    flow = torch.eye(T, dtype=torch.float64)
    for layer in maps.double():
        a = 0.5 * layer.mean(0) + 0.5 * torch.eye(T, dtype=torch.float64)  # (T, T)
        a = a / a.sum(-1, keepdim=True)
        flow = a @ flow
    return flow.float()
