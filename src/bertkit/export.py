"""`bertkit export --onnx`: a model directory as an ONNX graph that ONNX Runtime runs and fuses.

The folder written holds `model.onnx` (fp32; with `optimize`, ONNX Runtime's BERT fusions already applied:
Attention, SkipLayerNorm, BiasGelu, ...), optionally `model.int8.onnx` (dynamic int8 quantisation of the
MatMuls), the tokenizer files, the source's Hugging Face `config.json` (labels in id2label), and `bertkit.json`
(task, bertkit's config extras, reading settings, and the graph's inputs, outputs and opset under "onnx"), so
nothing else is needed to serve it and Hugging Face tools that open an ONNX folder find what they look for.
Inputs, named as in transformers: input_ids, attention_mask, token_type_ids, each (batch, sequence) int64, both
axes dynamic.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import CONFIG, EXTRAS, bertkit_meta, hf_config, load_model
from bertkit.errors import BertkitError
from bertkit.folders import write_atomically
from bertkit.hub import hub_origin, resolve_model
from bertkit.heads import HEADS
from bertkit.model.bert import choose_execution

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]  # transformers' names, which optimum feeds
ONNX_FORMAT = "bertkit-onnx/1"


class _Tensors(nn.Module):
    """The model's outputs as a flat tuple of tensors, as the ONNX exporter wants them."""

    def __init__(self, model: nn.Module, masks: dict):
        super().__init__()
        self.model = model
        self.masks = masks

    def forward(self, input_ids, attention_mask, token_type_ids):
        # BERT's additive mask (B, 1, 1, T), built from the input the way onnxruntime's optimiser looks for it
        self.masks["additive"] = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        out = self.model(input_ids, attention_mask, token_type_ids)
        if self.model.task == "encoder":
            return out.hidden, out.pooled
        return out


class _SplitAttention(nn.Module):
    """Export-only attention: separate q, k and v projections, matmul, scale, additive mask, softmax, matmul -- the
    pattern onnxruntime's BERT optimiser fuses into one Attention node (bertkit's fused qkv projection does not
    match it). Same numbers as the Attention it wraps, which still serves the [CLS]-only last layer."""

    def __init__(self, attn: nn.Module, masks: dict):
        super().__init__()
        self.attn = attn
        self.masks = masks
        C = attn.qkv.in_features
        self.q, self.k, self.v = (nn.Linear(C, C) for _ in range(3))
        with torch.no_grad():
            for i, part in enumerate((self.q, self.k, self.v)):
                part.weight.copy_(attn.qkv.weight[i * C:(i + 1) * C])
                part.bias.copy_(attn.qkv.bias[i * C:(i + 1) * C])

    def forward(self, x, mask, need_probs=False, packed=None, first_only=False):
        if first_only:
            return self.attn(x, mask, need_probs, packed, first_only)
        H, D = self.attn.num_heads, self.attn.head_dim

        def heads(t):  # (B, T, C) -> (B, H, T, D)
            return t.view(t.size()[:-1] + (H, D)).permute(0, 2, 1, 3)

        scores = heads(self.q(x)) @ heads(self.k(x)).transpose(-1, -2) / math.sqrt(D)  # (B, H, T, T)
        y = (scores + self.masks["additive"]).softmax(-1) @ heads(self.v(x))  # (B, H, T, D)
        y = y.permute(0, 2, 1, 3)
        return self.attn.proj(y.reshape(y.size()[:-2] + (H * D,))), None  # (B, T, C)


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise BertkitError(f"ONNX export needs {module.split('.')[0]}: pip install 'bertkit[onnx]'") from None


def export_onnx(model_dir: str | Path, out: str | Path, *, optimize: bool = True, int8: bool = False,
                opset: int = 17) -> Path:
    """Write an ONNX model folder for the bertkit or Hugging Face BERT model in model_dir; returns out."""
    _require("onnx")
    ort = _require("onnxruntime")
    out, model_dir = Path(out), resolve_model(model_dir)
    if out.resolve() == model_dir.resolve():
        raise BertkitError("write the ONNX export to another folder than the model's")
    loaded = load_model(model_dir)
    model = loaded.model.eval()
    # the model as saved, before the export-only changes below
    hf = hf_config(model, loaded.labels)
    meta = bertkit_meta(model, loaded.reading) | {"format": ONNX_FORMAT}
    origin = hub_origin(model_dir)
    if origin is not None:  # a Hub model: its name and commit, as a model card's base_model and base_model_revision
        meta["base_model"] = origin
    # The graph runs padded batches: no unpadding (data-dependent shapes), the attention mask always applied.
    # plain matmul-softmax-matmul: a smaller graph than SDPA's decomposition
    choose_execution(model, unpad=False, padded="plain", traced=True)
    masks: dict = {}
    for block in model.bert.blocks:
        block.attn = _SplitAttention(block.attn, masks)
    C, H = model.config.hidden_size, model.config.num_heads
    names = list(HEADS[model.task].outputs)
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]).clamp(max=model.config.vocab_size - 1)
    mask = (torch.arange(5) < torch.tensor([[5], [3]])).long()
    types = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    axes = {n: {0: "batch", 1: "sequence"} for n in INPUTS}
    axes |= {n: ({0: "batch"} if n in ("pooler_output", "seq_relationship_logits") or
                 model.task == "sequence_classification" else {0: "batch", 1: "sequence"}) for n in names}

    def write(tmp: Path) -> None:
        raw = tmp / "model.raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about the Python-side checks it folds
            torch.onnx.export(_Tensors(model, masks), (ids, mask, types), str(raw), dynamo=False, input_names=INPUTS,
                              output_names=names, dynamic_axes=axes, opset_version=opset)
        if optimize:
            from onnxruntime.transformers.optimizer import optimize_model
            fused = optimize_model(str(raw), model_type="bert", num_heads=H, hidden_size=C, opt_level=1)
            fused.save_model_to_file(str(tmp / "model.onnx"))
            raw.unlink()
        else:
            raw.rename(tmp / "model.onnx")
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            onnx = _require("onnx")  # fused nodes carry no inferred type: say the weights' one
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # the quantiser advises its pre-processing step on the root logger
            try:
                quantize_dynamic(str(tmp / "model.onnx"), str(tmp / "model.int8.onnx"), weight_type=QuantType.QInt8,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            finally:
                root.setLevel(level)
        onnx_meta = {"onnx": {"inputs": INPUTS, "outputs": names, "opset": opset, "onnxruntime": ort.__version__}}
        (tmp / CONFIG).write_text(json.dumps(hf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / EXTRAS).write_text(json.dumps(meta | onnx_meta, indent=2, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
        if loaded.tokenizer is not None:
            loaded.tokenizer.save(tmp)

    write_atomically(out, write)
    return out


def onnx_session(folder: str | Path, int8: bool = False):
    """An onnxruntime.InferenceSession on an exported folder (CPU)."""
    ort = _require("onnxruntime")
    path = Path(folder) / ("model.int8.onnx" if int8 else "model.onnx")
    if not path.is_file():
        raise BertkitError(f"{path}: no such file (export with bertkit export --onnx{' --int8' if int8 else ''})")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
