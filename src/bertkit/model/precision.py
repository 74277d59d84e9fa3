"""Inference precision: the same model in fp32, bf16 or int8.

- fp32: as trained.
- bf16: weights and activations in bfloat16 (no autocast, so no casts at run time). Twice fp32's matmul speed
  on a CPU with bf16 instructions (AVX512-BF16, AMX) and on GPUs; logits move by about 1e-2.
- int8: every Linear layer dynamically quantised (torch.ao: int8 weights with a scale per output channel,
  activations quantised per batch as they come), CPU only; the embeddings, LayerNorms and attention stay fp32.
  Per-channel weight scales matter: per-tensor ones cost 0.57 points of accuracy on rt-polarity and 0.44 on
  wiki-topics (fine-tuned all-MiniLM-L6-v2), per-channel ones none (docs/speed.md, measured).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from bertkit.errors import BertkitError
from bertkit.model.bert import choose_execution

PRECISIONS = ("fp32", "bf16", "int8")


def for_inference(model: nn.Module, precision: str = "fp32", compile: bool = False,
                  batch_size: int = 64) -> nn.Module:
    """An eval-mode model in `precision` (a copy for bf16 and int8; the given model is left as it is).

    compile: torch.compile it on a bounded set of shapes (bertkit.model.compiled.ShapeStable, batches of
    `batch_size` rows, lengths in steps of 32): fp32 and bf16 only."""
    if precision not in PRECISIONS:
        raise BertkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if compile:
        if precision == "int8":
            raise BertkitError("--compile works with fp32 and bf16, not int8")
        from bertkit.model.compiled import ShapeStable
        return ShapeStable(for_inference(model, precision), batch_size=batch_size, copy_model=precision == "fp32")
    model.eval()
    if precision == "fp32":
        return choose_execution(model)
    device = next(model.parameters()).device
    if precision == "bf16":
        return choose_execution(copy.deepcopy(model).to(torch.bfloat16).eval())
    if device.type != "cpu":
        raise BertkitError("int8 inference runs on CPU only; use bf16 on a GPU")
    if "x86" not in torch.backends.quantized.supported_engines and "fbgemm" not in torch.backends.quantized.supported_engines:
        raise BertkitError("this torch build has no x86 int8 engine; use fp32 or bf16")
    with warnings.catch_warnings():  # torch.ao's quantised tensors are deprecated in favour of torchao, still here
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        return choose_execution(quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8).eval())
