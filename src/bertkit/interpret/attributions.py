"""Gradient attributions over the input (word) embeddings: integrated gradients, gradient x input, saliency.

Shapes: S interpolation steps in one batch, T tokens, C hidden.

The model is run on embeddings we choose by a forward hook on the word-embedding table, so position and segment
embeddings stay as they are and the model file needs no extra input. Parameters are frozen while we
differentiate, so no parameter gradient (440 MB for a base model) is ever allocated.

Integrated gradients (Sundararajan et al., 2017): attr_t = (x_t - x'_t) . integral_0^1 grad f(x' + a (x - x')) da,
summed over C. The integral uses Gauss-Legendre nodes (exact for polynomials of degree 2*steps - 1; Captum's
default too), evaluated `batch_size` nodes at a time, so memory is one batch of `batch_size` forward passes, not
`steps` of them. Completeness says sum_t attr_t = f(x) - f(x'); the gap is reported as the check that the integral
converged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from bertkit.interpret.scoring import Scorer


@contextlib.contextmanager
def word_embeddings_replaced(model: nn.Module, embeds: list) -> Iterator[None]:
    """While active, the word-embedding lookup returns embeds[0] (B, T, C) instead of looking ids up (the ids
    passed to the model then only fix the shape). A list, so the caller can swap the tensor between calls."""
    handle = model.bert.embeddings.word.register_forward_hook(lambda module, args, out: embeds[0])
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters need no gradient inside (restored after), and dropout is off."""
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(training)


def baseline_ids(ids: list[int], keep: tuple[int, ...], pad_id: int) -> list[int]:
    """The reference input: every token not in `keep` ([CLS], [SEP]) replaced by [PAD] (the usual BERT baseline:
    the same length and structure, no content)."""
    return [i if i in keep else pad_id for i in ids]


def _embed(model: nn.Module, ids: list[int]) -> torch.Tensor:
    """Word embeddings (T, C) of ids."""
    table = model.bert.embeddings.word.weight
    return table[torch.tensor(ids, device=table.device)].detach().float()


def integrated_gradients(scorer: Scorer, ids: list[int], reference: list[int], steps: int = 50,
                         batch_size: int = 10) -> tuple[np.ndarray, dict]:
    """Per-token IG attributions (T,) of scorer's target score, and the completeness check
    {"sum": sum of attributions, "delta": f(x) - f(reference), "error": |sum - delta|, "steps": steps}."""
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    model = scorer.model
    x, x0 = _embed(model, ids), _embed(model, reference)  # (T, C) each
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor((nodes + 1) / 2, dtype=torch.float32)  # in (0, 1)
    weights = torch.tensor(weights / 2, dtype=torch.float32)  # sum to 1
    device = x.device
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    total = torch.zeros_like(x)  # (T, C): sum over nodes of weight * gradient
    holder = [None]
    with frozen(model), word_embeddings_replaced(model, holder):
        for start in range(0, steps, batch_size):
            a = alphas[start:start + batch_size].to(device).view(-1, 1, 1)  # (S, 1, 1)
            w = weights[start:start + batch_size].to(device).view(-1, 1, 1)
            e = (x0 + a * (x - x0)).requires_grad_(True)  # (S, T, C)
            holder[0] = e
            with torch.enable_grad():
                out = scorer.output(scorer.logits(ids_t.expand(e.shape[0], -1)))  # (S,)
                (grad,) = torch.autograd.grad(out.sum(), e)  # (S, T, C): each node's own gradient
            total += (w * grad).sum(0)
            del e, out, grad
        holder[0] = torch.stack([x, x0])  # f(x) and f(reference), for the check
        with torch.no_grad():
            fx, fx0 = scorer.output(scorer.logits(ids_t.expand(2, -1))).tolist()
    attr = ((x - x0) * total).sum(-1).double().cpu().numpy()  # (T,)
    s = float(attr.sum())
    return attr, {"sum": s, "delta": fx - fx0, "error": abs(s - (fx - fx0)), "steps": steps,
                  "f_input": fx, "f_reference": fx0}


def gradient_attributions(scorer: Scorer, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(gradient x input, saliency), each per token (T,): grad . x summed over C (signed, a first-order Taylor
    estimate of each token's contribution) and the L2 norm of the gradient (unsigned: how sensitive)."""
    model = scorer.model
    x = _embed(model, ids).unsqueeze(0).requires_grad_(True)  # (1, T, C)
    ids_t = torch.tensor([ids], dtype=torch.long, device=x.device)
    with frozen(model), word_embeddings_replaced(model, [x]), torch.enable_grad():
        out = scorer.output(scorer.logits(ids_t))
        (grad,) = torch.autograd.grad(out.sum(), x)  # (1, T, C)
    gxi = (grad * x).sum(-1)[0].detach().double().cpu().numpy()
    saliency = grad.norm(dim=-1)[0].double().cpu().numpy()
    return gxi, saliency
