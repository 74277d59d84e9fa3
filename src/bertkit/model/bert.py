"""The BERT encoder (Devlin et al., 2019), in one file.

Shapes: B batch, T tokens, H heads, D head dim (C / H), C hidden, I intermediate (feed-forward), V vocab.

Embeddings (word + position + segment, LayerNorm, dropout) feed a stack of post-LN blocks:
    x = LayerNorm(x + Dropout(Attention(x)))
    x = LayerNorm(x + Dropout(MLP(x)))
and the pooler maps the [CLS] vector through Linear + tanh. Numerically this is the same network as
Hugging Face's `BertModel` (tests/test_parity.py proves it); the one structural difference is a fused
query/key/value projection, which `convert.py` splits and joins.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.config import BertConfig
from bertkit.model.padding import Packing, first_rows, pad, packing, unpad


class EncoderOutput(NamedTuple):
    hidden: torch.Tensor  # (B, T, C) last layer
    pooled: torch.Tensor | None  # (B, C) tanh(Linear([CLS])), None when the model has no pooler
    hidden_states: list[torch.Tensor] | None  # num_layers + 1 tensors (B, T, C): embeddings, then each block
    attentions: list[torch.Tensor] | None  # num_layers tensors (B, H, T, T), any backend (plain ops then)


def activation(name: str):
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return F.relu


# config.hidden_act -> oneDNN's post-op (attr, algorithm): erf GELU is "gelu"/"none"
_ONEDNN_ACT = {None: ("none", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), "relu": ("relu", "")}
_ONEDNN = torch.backends.mkldnn.is_available()


def linear_kernel(device: torch.device, dtype: torch.dtype, quantised: bool = False, traced: bool = False) -> str:
    """How `dense` runs a layer's Linear products when no gradient is needed: "onednn" (oneDNN's linear with the
    activation as its post-op: no separate pass for GELU, and oneDNN's GEMM rather than the MKL one F.linear calls,
    much slower in fp32 on AMD CPUs; measured in docs/design.md) for plain Linear layers on a CPU in fp32 or bf16;
    else "plain" (F.linear, then the activation): GPUs, int8's quantised layers, and a model that torch.compile
    (which fuses on its own) or an ONNX export will trace."""
    runs = _ONEDNN and device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
    return "onednn" if runs and not quantised and not traced else "plain"


def dense(layer: nn.Module, x: torch.Tensor, act: str | None = None, kernel: str = "plain") -> torch.Tensor:
    """layer(x), then the activation `act` names (config.hidden_act; None: none), by the calling layer's `kernel`
    (linear_kernel, chosen by choose_execution). The two kernels agree to float rounding (tests/test_model.py)."""
    # Checked on every call, as they change between calls to the same prepared model: grad mode (an inference
    # model is differentiated too, by explanations' gradients, and oneDNN's linear has no backward) and bf16
    # autocast (a distillation teacher runs both in and out of it; under it, autocast's bf16 products apply).
    if kernel == "onednn" and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu"):
        attr, algorithm = _ONEDNN_ACT[act]
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, attr, [], algorithm)
    y = layer(x)
    return y if act is None else activation(act)(y)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, like F.dropout, with a faster random source on CPU.

    torch's CPU generator (mt19937, one number at a time) makes F.dropout a large share of a CPU training step
    (docs/design.md). Here the mask comes from 16-bit words of numpy's SFC64 generator, seeded by one draw from
    torch's generator, so torch.manual_seed and a saved torch RNG state still fix every mask. An element is dropped
    with probability round(p * 65536) / 65536 (within 8e-6 of p) and the rest are scaled by the inverse of the
    exact keep rate, so the expectation is unchanged.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p, x.dtype)
    return (x * keep).mul_(scale)


_ONE_BITS = {torch.bfloat16: 0x3F80, torch.float16: 0x3C00}  # 1.0 as the 16-bit pattern of each half type


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, float]:
    """(keep, scale) for `dropout` on CPU: a tensor of `shape` and `dtype` holding exactly 1 where an element is
    kept and 0 where it is dropped, and the factor for the kept ones.

    A 0/1 tensor of the data's own dtype, applied by multiplication, because torch's boolean kernels on CPU
    (comparison to bool, masked_fill, bool -> bf16) are not vectorised, and numpy makes the mask faster than
    torch's comparison (docs/design.md). The scale is applied separately, so kept values are scaled by the exact
    factor rather than by a rounded bf16 copy of it (which would bias the expectation by up to 0.4%)."""
    threshold = round(p * 65536)  # drop a 16-bit word below this (as unsigned)
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (1,)))
    words = np.random.Generator(np.random.SFC64(seed)).bit_generator.random_raw(-(-n // 4))
    kept = words.view(np.uint16)[:n] >= threshold  # (n,) bool, numpy's vectorised compare
    if dtype in _ONE_BITS:  # build the 16-bit pattern of 1.0 or 0 and reinterpret it: no float conversion pass
        keep = torch.from_numpy(np.multiply(kept, np.uint16(_ONE_BITS[dtype]), dtype=np.uint16)).view(dtype)
    else:
        keep = torch.from_numpy(kept.astype(np.float32)).to(dtype)
    return keep.view(shape), 65536 / (65536 - threshold)


class Dropout(nn.Dropout):
    """nn.Dropout with bertkit's faster CPU dropout (same state dict, same repr)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # (T,) broadcast over the batch
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)  # (B, T, C)
        return self.dropout(self.norm(x))


def attention_kernels(config: BertConfig, device: torch.device, dtype: torch.dtype, training: bool = False,
                      autocast_bf16: bool = False, dropout_p: float | None = None) -> tuple[str | None, str]:
    """(packed, padded): how a layer attends on packed real tokens ("per_sequence", "flash_varlen", or None: in
    the padded layout), and in the padded layout ("sdpa" or "plain": softmax(q k^T) v by three ops, which also
    give the probabilities). On a CPU the plain ops beat F.scaled_dot_product_attention in bf16 and with dropout
    (it falls back to the same ops with torch's slow dropout); training under bf16 autocast attends padded,
    where batched bf16 products beat the per-sequence fp32 ones (docs/design.md). dropout_p: the layer's attention
    dropout when a run changed it (default: the config's)."""
    cpu = device.type == "cpu"
    half = autocast_bf16 or dtype in (torch.bfloat16, torch.float16)
    dropout = training and (config.attention_dropout if dropout_p is None else dropout_p) > 0
    packed = None
    if config.unpad and cpu and not (training and autocast_bf16):
        packed = "per_sequence"
    elif config.unpad and not cpu and _flash_varlen is not None and half and not dropout:
        packed = "flash_varlen"
    plain = config.attention_backend == "eager" or cpu and (half or dropout)
    return packed, "plain" if plain else "sdpa"


def choose_execution(model: nn.Module, *, training: bool = False, autocast_bf16: bool = False,
                     unpad: bool | None = None, padded: str | None = None, traced: bool = False) -> nn.Module:
    """The one place that decides how a model runs: whether its layers skip padding (config.unpad, saved with the
    model), the attention kernels of every layer (attention_kernels) and how its Linear layers run
    (linear_kernel), from where its weights are, their dtype, whether they are quantised, and whether it will
    train (under bf16 autocast) or be traced. Called where a model is made ready: the training loop (for its steps
    and its evaluations), for_inference, the recipes (unpad=True), compiled inference and the ONNX export
    (unpad=False, traced=True; the export also asks for the plain ops: padded="plain"). A config is replaced,
    never changed in place, so a model sharing it elsewhere keeps its own. Returns the model."""
    for bert in [m for m in model.modules() if isinstance(m, Bert)]:
        if unpad is not None and bert.config.unpad != unpad:
            old, new = bert.config, replace(bert.config, unpad=unpad)
            for m in model.modules():
                if getattr(m, "config", None) is old:
                    m.config = new
        weight = bert.embeddings.word.weight
        for layer in bert.modules():
            if isinstance(layer, Attention):
                kernels = attention_kernels(bert.config, weight.device, weight.dtype, training, autocast_bf16,
                                            layer.dropout_p)
                layer.packed_kernel, layer.padded_kernel = kernels[0], padded or kernels[1]
            if isinstance(layer, (Attention, MLP)):
                quantised = any(type(m) is not nn.Linear for m in layer.children())  # int8: torch.ao's Linear
                layer.linear_kernel = linear_kernel(weight.device, weight.dtype, quantised, traced)
    return model


class Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.dropout_p = config.attention_dropout
        # the kernels, decided by choose_execution (here: for inference on a CPU in fp32, until it is called)
        self.packed_kernel, self.padded_kernel = attention_kernels(config, torch.device("cpu"), torch.float32)
        self.linear_kernel = linear_kernel(torch.device("cpu"), torch.float32)  # and for its Linear layers
        # One matmul for q, k and v: fewer kernel launches and a larger, faster GEMM.
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, need_probs: bool = False,
                packed: Packing | None = None, first_only: bool = False):
        """x (B, T, C), or (N, C) real tokens packed as `packed` says; mask (B, 1, 1, T) bool, True where a key may
        be attended, or None for no padding. first_only: only position 0 ([CLS]) queries; the output is (B, C).

        Returns the attention output shaped like x and, when asked, the probabilities (B, H, T, T): a layer asked
        for them attends in the padded layout, the only one that has them whole.
        """
        H, D = self.num_heads, self.head_dim
        C = H * D
        qkv = dense(self.qkv, x, kernel=self.linear_kernel)  # (B, T, 3C) or (N, 3C)
        if packed is not None and packed.starts is not None and self.packed_kernel and not need_probs:
            if self.packed_kernel == "per_sequence":
                y = self._attend_per_sequence(qkv.view(-1, 3, H, D), packed, first_only)
            else:  # flash attention on the packed tokens (GPU): no padding anywhere
                y = _flash_varlen(*qkv.view(-1, 3, H, D).unbind(1), packed, first_only)  # q, k, v each (N, H, D)
            y = dense(self.proj, y.reshape(-1, C), kernel=self.linear_kernel)
            return y, None  # (N, C), or (B, C) when first_only
        if packed is not None:  # attend in the padded layout: scatter in, attend, gather out
            B, T = packed.shape
            qkv = pad(qkv, packed).view(B, T, -1)  # (B, T, 3C)
        else:
            B, T = x.shape[:2]
        q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
        if first_only:
            q = q[:, :, :1]  # (B, H, 1, D)
        # one query on a CPU: the plain product (B*H*T work), as SDPA's CPU kernel splits a lone query's keys
        # among the threads, so its sums, and a prediction's last digits, would change with the thread count
        plain = first_only and q.device.type == "cpu"
        y, probs = self._attend(q, k, v, mask, need_probs, plain=plain)  # (B, H, T or 1, D)
        if first_only:
            return dense(self.proj, y.reshape(B, C), kernel=self.linear_kernel), probs if need_probs else None
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        if packed is not None:
            y = unpad(y, packed)  # (N, C)
        return dense(self.proj, y, kernel=self.linear_kernel), probs

    def _attend_per_sequence(self, qkv: torch.Tensor, packed: Packing, first_only: bool) -> torch.Tensor:
        """qkv (N, 3, H, D) packed -> (N, H, D), or (B, H, D) when first_only: one sequence at a time, so no
        query or key is ever padding. CPU only: the loop's overhead is small against the work.

        The products run in fp32 whatever the model's precision: in bf16 every new sequence length compiles a
        oneDNN primitive, which the capped primitive cache (see bertkit/__init__.py) evicts again; fp32 never
        compiles (docs/design.md)."""
        ys = []
        with torch.autocast("cpu", enabled=False):
            for s, n in zip(packed.starts, packed.lengths):
                # each sequence's q, k, v as dense (H, n, D) blocks: CPU bmm on strided slices is slower
                q, k, v = qkv[s:s + n].float().permute(1, 2, 0, 3).contiguous()  # each (H, n, D)
                y, _ = self._attend(q[:, :1] if first_only else q, k, v, None, plain=True)
                ys.append(y)  # (H, n or 1, D)
        return torch.cat(ys, dim=1).transpose(0, 1).to(qkv.dtype)  # (N or B, H, D)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                need_probs: bool = False, plain: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(q k^T / sqrt(D)) v with dropout: q (..., Tq, D), k and v (..., T, D) -> (..., Tq, D), and the
        probabilities (..., Tq, T) when computed by the plain ops (always when `plain`)."""
        dropout_p = self.dropout_p if self.training else 0.0
        if self.padded_kernel == "sdpa" and not need_probs and not plain:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
        # scaling q (Tq*D values) rather than the scores (Tq*T) also hands the product a contiguous operand
        scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # (..., Tq, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)  # (..., Tq, T)
        if dropout_p > 0 and q.device.type == "cpu":  # scale v (T*D values) rather than the probs (Tq*T)
            keep, scale = keep_mask(probs.shape, dropout_p, probs.dtype)
            return (probs * keep) @ (v * scale), probs
        return dropout(probs, dropout_p, self.training) @ v, probs


def _flash_varlen_fn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10
        return None

    def attend(q, k, v, packed: Packing, first_only: bool) -> torch.Tensor:
        """q, k, v (N, H, D) bf16/fp16 on a GPU -> (N, H, D), or (B, H, D) when first_only."""
        cu = packed.cu_seqlens.to(device=q.device, dtype=torch.int32)
        longest = max(packed.lengths)
        if first_only:
            q = q.index_select(0, cu[:-1])  # (B, H, D): each sequence's [CLS] query
            cu_q = torch.arange(len(packed.lengths) + 1, device=q.device, dtype=torch.int32)
            return varlen_attn(q, k, v, cu_q, cu, 1, longest)
        return varlen_attn(q, k, v, cu, cu, longest, longest)

    return attend


_flash_varlen = _flash_varlen_fn()


class MLP(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)  # C -> I
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)  # I -> C
        self.act = config.hidden_act
        self.linear_kernel = linear_kernel(torch.device("cpu"), torch.float32)  # decided by choose_execution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense(self.down, dense(self.up, x, self.act, self.linear_kernel), kernel=self.linear_kernel)


class Block(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = Attention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, need_probs: bool = False,
                packed: Packing | None = None, first: torch.Tensor | None = None):
        """first (B,): rows of x holding each sequence's position 0; given, only those rows come out, (B, C)."""
        a, probs = self.attn(x, mask, need_probs, packed, first_only=first is not None)
        if first is not None:
            x = x.reshape(-1, x.shape[-1]).index_select(0, first)  # (B, C)
        x = self.attn_norm(x + self.dropout(a))  # post-LN, as in the paper
        x = self.mlp_norm(x + self.dropout(self.mlp(x)))
        return x, probs


class Bert(nn.Module):
    """The encoder: token ids in, contextual vectors (and the pooled [CLS] vector) out."""

    def __init__(self, config: BertConfig, pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if pooler else None

    def _apply(self, fn, recurse=True):
        # .to(), .cuda(), .half(): weights moved or cast where oneDNN cannot run (a GPU, fp16) take the plain ops
        # (nn.RNNBase redoes its weight layout here too); only choose_execution turns oneDNN on again
        super()._apply(fn, recurse)
        weight = self.embeddings.word.weight
        if linear_kernel(weight.device, weight.dtype) == "plain":
            for layer in self.modules():
                if isinstance(layer, (Attention, MLP)):
                    layer.linear_kernel = "plain"
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        cls_only: bool = False,
    ) -> EncoderOutput:
        """input_ids (B, T); attention_mask (B, T), 1 for real tokens and 0 for padding; token_type_ids (B, T).

        cls_only: the caller reads position 0 ([CLS]) only, as a pooled head does, so the last layer computes
        just that position (its keys and values still come from every token): the same pooled output for about
        one layer less work. hidden is then (B, 1, C).

        output_hidden_states / output_attentions: every layer's output / attention probabilities too, from the
        same (unpadded, when config.unpad) execution; hidden states are zero at padding, as `hidden` is.
        """
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {T} tokens is longer than max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool().view(B, 1, 1, T)  # (B, 1, 1, T) broadcast over heads and queries
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        packed = None
        if self.config.unpad and mask is not None:
            # Every layer but attention works per token: run them on the N real tokens only.
            packed = packing(attention_mask)
            x = unpad(x, packed)  # (N, C)
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        first = None
        if cls_only and not (output_attentions or output_hidden_states) and (
                attention_mask is None or bool(attention_mask[:, 0].all())):
            # rows of x at position 0: b * T in the (B, T) layout, or where sequence b starts among packed tokens
            first = first_rows(packed) if packed is not None else torch.arange(B, device=x.device) * T
        for i, block in enumerate(self.blocks):
            last = first if i == len(self.blocks) - 1 else None
            x, probs = block(x, mask, output_attentions, packed, last)
            if hidden_states is not None:
                hidden_states.append(x)
            if attentions is not None:
                attentions.append(probs)
        if first is not None:
            x = x.unsqueeze(1)  # (B, 1, C)
        elif packed is not None:
            x = pad(x, packed)  # (B, T, C), zeros at padding
        if hidden_states is not None and packed is not None:
            hidden_states = [pad(h, packed) for h in hidden_states]  # each (B, T, C), zeros at padding
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, C)
        return EncoderOutput(x, pooled, hidden_states, attentions)


@torch.no_grad()
def init_weights(module: nn.Module, std: float) -> None:
    """BERT's init: normal(0, std) for every matrix, zero biases, unit LayerNorms, a zero [PAD] row."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, std)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
