"""Adversarial training on the word embeddings (Miyato et al., 2017; Madry et al., 2018, as used for BERT by
FreeLB and its kin): the loss is also taken with the word-embedding output pushed a small step uphill, and the two
losses are added, so the model learns to keep its answer in a ball around each input.

Shapes: B batch, T tokens, C hidden.

- fgm: one step, r = eps * g / ||g||, g the gradient of the loss with respect to the word embeddings (B, T, C) and
  the norm taken over each example's (T, C).
- pgd: `steps` steps of size 2.5 * eps / steps (Madry's rule) along the normalised gradient, each projected back
  into the ball ||r|| <= eps; pgd with one step is fgm.

Only the word embeddings move (positions and segments do not), through a forward hook that exists only inside
`losses`, so evaluation and inference never see a perturbation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

METHODS = ("fgm", "pgd")


def per_example_norm(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, 1, 1): the L2 norm of each example's slice."""
    return x.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1)


def project(r: torch.Tensor, eps: float) -> torch.Tensor:
    """r scaled into the ball of radius eps, example by example (inside it: unchanged)."""
    return r * (eps / per_example_norm(r)).clamp(max=1.0)


def losses(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], method: str, eps: float,
           steps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean loss, adversarial loss), both differentiable; train on their sum. loss_of(model) runs the model on
    the batch and returns its loss. model may be wrapped in DistributedDataParallel: the clean pass goes through
    the wrapper, the adversarial ones through the module inside, and one backward of the sum reaches every
    weight once."""
    if method not in METHODS:
        raise ValueError(f"unknown adversarial method {method!r}")
    core = getattr(model, "module", model)
    state: dict = {"shift": None, "out": None}

    def hook(module, args, out):
        state["out"] = out
        return out if state["shift"] is None else out + state["shift"]

    handle = core.bert.embeddings.word.register_forward_hook(hook)
    try:
        clean = loss_of(model)
        (grad,) = torch.autograd.grad(clean, state["out"], retain_graph=True)  # (B, T, C)
        size = eps if method == "fgm" else 2.5 * eps / steps
        r = project(size * grad / per_example_norm(grad), eps)
        for _ in range(steps - 1 if method == "pgd" else 0):
            r = r.detach().requires_grad_(True)
            state["shift"] = r
            (grad,) = torch.autograd.grad(loss_of(core), r)
            r = project(r.detach() + size * grad / per_example_norm(grad), eps)
        state["shift"] = r.detach()
        adversarial = loss_of(core)
    finally:
        handle.remove()
    return clean, adversarial
