import math

import pytest
import torch

from bertkit import build_model
from bertkit.model.bert import choose_execution
from bertkit.model.heads import TASKS
from bertkit.objectives import (
    IGNORE_INDEX, classification_loss, mlm_loss, nsp_loss, span_loss, token_classification_loss,
)
from conftest import random_batch


def _outputs(model, ids, mask, types):
    out = model(ids, mask, types)
    if model.task == "encoder":
        return [out.hidden, out.pooled]
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("task", list(TASKS))
def test_eager_equals_sdpa(tiny_config, task):
    torch.manual_seed(0)
    sdpa = build_model(tiny_config, task, 3).eval()
    eager = build_model(tiny_config.replace(attention_backend="eager"), task, 3).eval()
    eager.load_state_dict(sdpa.state_dict())
    ids, mask, types = random_batch(tiny_config.vocab_size)
    with torch.no_grad():
        for a, b in zip(_outputs(sdpa, ids, mask, types), _outputs(eager, ids, mask, types)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_padded_batch_equals_each_sequence_alone(tiny_config, backend):
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(attention_backend=backend), "encoder").eval()
    ids, mask, types = random_batch(tiny_config.vocab_size, B=5, T=16, seed=3)
    with torch.no_grad():
        batch = model(ids, mask, types)
        for i in range(len(ids)):
            n = int(mask[i].sum())
            alone = model(ids[i:i + 1, :n], None, types[i:i + 1, :n])
            torch.testing.assert_close(batch.hidden[i, :n], alone.hidden[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(batch.pooled[i], alone.pooled[0], atol=1e-5, rtol=0)


def test_attention_probabilities_and_hidden_states(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(attention_backend="eager"), "encoder").eval()
    ids, mask, types = random_batch(tiny_config.vocab_size, B=3, T=10)
    with torch.no_grad():
        out = model(ids, mask, types, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == tiny_config.num_layers
    assert len(out.hidden_states) == tiny_config.num_layers + 1
    torch.testing.assert_close(out.hidden_states[-1], out.hidden)
    for probs in out.attentions:
        assert probs.shape == (3, tiny_config.num_heads, 10, 10)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, tiny_config.num_heads, 10))
        # no probability mass on padded keys
        assert float(probs.masked_select(~mask.bool()[:, None, None, :].expand_as(probs)).abs().max()) == 0.0


def test_too_long_input_is_refused(tiny_config):
    model = build_model(tiny_config, "encoder")
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model(torch.ones(1, tiny_config.max_position_embeddings + 1, dtype=torch.long))


def test_mlm_decoder_is_tied_and_pad_row_starts_at_zero(tiny_config):
    model = build_model(tiny_config, "pretraining")
    names = [n for n, _ in model.named_parameters()]
    assert not any("decoder" in n for n in names)  # the decoder *is* the word-embedding matrix
    assert float(model.bert.embeddings.word.weight[tiny_config.pad_token_id].detach().abs().sum()) == 0.0
    std = float(model.bert.blocks[0].mlp.up.weight.detach().std())
    assert abs(std - tiny_config.initializer_range) < 0.003


def test_losses_exact_values():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # (1, 2, 3)
    labels = torch.tensor([[0, IGNORE_INDEX]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert mlm_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    assert token_classification_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    assert nsp_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item() == pytest.approx(math.log(2))
    assert classification_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(math.log(2))
    ml = classification_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1, 0]]), "multi_label")
    assert ml.item() == pytest.approx(math.log(2))
    reg = classification_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0]), "regression")
    assert reg.item() == pytest.approx((1 + 4) / 2)
    start = torch.tensor([[0.0, 5.0, 0.0]])
    end = torch.tensor([[0.0, 0.0, 5.0]])
    expected_span = -math.log(math.exp(5) / (math.exp(5) + 2))
    assert span_loss(start, end, torch.tensor([1]), torch.tensor([2])).item() == pytest.approx(expected_span, abs=1e-6)


def test_one_backward_step_reduces_mlm_loss(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(hidden_dropout=0.0, attention_dropout=0.0), "masked_lm")
    ids, mask, types = random_batch(tiny_config.vocab_size, B=4, T=12)
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE_INDEX))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(3):
        loss = mlm_loss(model(ids, mask, types), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(tiny_config.vocab_size), rel=0.05)  # starts at chance
    assert losses[2] < losses[0]


@pytest.mark.parametrize("task", ["pretraining", "sequence_classification", "token_classification"])
def test_unpadded_execution_equals_padded(tiny_config, task):
    torch.manual_seed(0)
    padded = build_model(tiny_config.replace(hidden_dropout=0.0, attention_dropout=0.0), task, 3)
    unpadded = build_model(tiny_config.replace(hidden_dropout=0.0, attention_dropout=0.0, unpad=True), task, 3)
    unpadded.load_state_dict(padded.state_dict())
    ids, mask, types = random_batch(tiny_config.vocab_size, B=5, T=16, seed=7)
    real = mask.bool()
    outs = []
    for model in (padded, unpadded):
        out = model(ids, mask, types)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((o[real] if o.dim() == 3 else o).square().mean() for o in out)
        loss.backward()
        outs.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, ga), (b, gb) = outs
    for x, y in zip(a, b):
        if x.dim() == 3:  # per-token outputs: equal at real tokens, zero-input padding is not compared
            torch.testing.assert_close(x[real], y[real], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("padding", [True, False])
def test_cls_only_last_layer_equals_full_encoder(tiny_config, unpad, backend, padding):
    # A pooled head reads position 0 only, so the last layer computes just that row: same outputs and gradients.
    torch.manual_seed(0)
    config = tiny_config.replace(hidden_dropout=0.0, attention_dropout=0.0, unpad=unpad, attention_backend=backend)
    model = build_model(config, "encoder")
    ids, mask, types = random_batch(config.vocab_size, B=5, T=16, seed=3)
    if not padding:
        mask = torch.ones_like(mask)
    results = []
    for cls_only in (False, True):
        model.zero_grad()
        out = model(ids, mask, types, cls_only=cls_only)
        (out.pooled.square().sum() + out.hidden[:, 0].sum()).backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (full, g_full), (cls, g_cls) = results
    assert cls.hidden.shape == (5, 1, config.hidden_size)
    torch.testing.assert_close(cls.hidden[:, 0], full.hidden[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(cls.pooled, full.pooled, atol=1e-6, rtol=0)
    assert g_full.keys() == g_cls.keys()
    for n in g_full:
        torch.testing.assert_close(g_cls[n], g_full[n], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("padding", [True, False])
def test_a_classifier_gives_the_same_bits_on_one_thread_and_two(tiny_config, padding):
    """Every process of a scaled-out predict runs fewer threads than one process alone: their outputs must not
    differ in the last digit. The [CLS]-only last layer's lone query is where torch's SDPA kernel would differ."""
    torch.manual_seed(0)
    config = tiny_config.replace(hidden_size=384, num_heads=12, intermediate_size=512, num_layers=2)
    model = choose_execution(build_model(config, "sequence_classification", num_labels=2).eval())
    ids, mask, types = random_batch(config.vocab_size, B=64, T=24, seed=3)
    if not padding:
        mask = torch.ones_like(mask)
    threads = torch.get_num_threads()
    try:
        logits = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                logits.append(model(ids, mask, types))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(logits[0], logits[1])


def test_fast_cpu_dropout_statistics_and_gradient():
    """bertkit's CPU dropout: drop rate p (to 8e-6) over 2M elements, kept values scaled to keep the mean, the
    gradient masked and scaled the same way, masks fixed by torch's seed."""
    from bertkit.model.bert import dropout, keep_mask
    p = 0.1
    x = torch.ones(2000, 1000, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, p, True)
    dropped = (y == 0).double().mean().item()
    n = x.numel()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n), dropped  # 5 sigma = 0.0011
    scale = 65536 / (65536 - round(p * 65536))
    values = y.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(scale, rel=1e-7)]
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)  # unbiased: E[y] = x
    y.backward(torch.full_like(y, 2.0))
    torch.testing.assert_close(x.grad, 2.0 * y.detach(), atol=0, rtol=0)
    torch.manual_seed(3)
    again = dropout(torch.ones(2000, 1000), p, True)
    assert torch.equal(again, y.detach())
    assert not torch.equal(dropout(torch.ones(2000, 1000), p, True), y.detach())  # the next draw differs
    # half-precision masks are the same draw, built from 16-bit patterns: exactly 0 or 1
    for dtype in (torch.bfloat16, torch.float16):
        torch.manual_seed(3)
        keep, s = keep_mask((2000, 1000), p, dtype)
        assert keep.dtype == dtype and s == scale and torch.equal(keep.float(), (y.detach() != 0).float())
    # bf16 keeps its dtype; eval and p = 0 are the identity; p = 1 drops everything
    assert dropout(torch.ones(7, 5, dtype=torch.bfloat16), p, True).dtype == torch.bfloat16
    z = torch.randn(3, 4)
    assert dropout(z, p, False) is z and dropout(z, 0.0, True) is z
    assert dropout(z, 1.0, True).abs().sum() == 0


def test_dropout_is_independent_across_positions():
    """Neighbouring 16-bit words come from one 64-bit draw: their masks must still be uncorrelated."""
    from bertkit.model.bert import dropout
    torch.manual_seed(0)
    kept = (dropout(torch.ones(1_000_000), 0.5, True) != 0).double()
    a, b = kept[0::2], kept[1::2]  # pairs inside one word
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(corr) < 5 / math.sqrt(a.numel()), corr


def _mask(lengths, T):
    return (torch.arange(T) < torch.tensor(lengths).unsqueeze(1)).long()


@pytest.mark.parametrize("lengths,T", [([1], 1), ([1, 5, 3], 5), ([7], 9), ([64, 2, 64], 64), ([3, 1, 1, 2], 4)])
@pytest.mark.parametrize("varlen", [True, False])
def test_unpadded_edge_cases_equal_each_sequence_alone(tiny_config, lengths, T, varlen):
    """One token, one sequence, the maximum length: the unpadded encoder (attention per sequence or in the padded
    layout) gives each sequence what it gets alone, with no padding at all (fp32, 1e-5)."""
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(unpad=True), "encoder").eval()
    for block in model.bert.blocks:
        block.attn.packed_kernel = "per_sequence" if varlen else None
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, tiny_config.vocab_size, (len(lengths), T), generator=g)
    types = torch.randint(0, 2, ids.shape, generator=g)
    mask = _mask(lengths, T)
    with torch.no_grad():
        out = model(ids, mask, types)
        for b, n in enumerate(lengths):
            alone = model(ids[b:b + 1, :n], None, types[b:b + 1, :n])
            torch.testing.assert_close(out.hidden[b, :n], alone.hidden[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.pooled[b], alone.pooled[0], atol=1e-5, rtol=0)
            assert not out.hidden[b, n:].any()  # zeros at padding


def test_per_sequence_attention_equals_padded_layout_in_training(tiny_config):
    """Both ways of attending over packed tokens give the same loss and gradients (fp32, hidden dropout on: same
    seed, same masks; attention dropout draws masks of other shapes). Under bf16 autocast training takes the padded
    layout, which is faster there."""
    config = tiny_config.replace(unpad=True, attention_dropout=0.0)
    ids, mask, types = random_batch(config.vocab_size, B=5, T=16, seed=7)
    results = []
    for varlen in (True, False):
        torch.manual_seed(0)
        model = build_model(config, "token_classification", 3).train()
        for block in model.bert.blocks:
            block.attn.packed_kernel = "per_sequence" if varlen else None
        torch.manual_seed(1)
        loss = model(ids, mask, types)[mask.bool()].square().mean()
        loss.backward()
        results.append((float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (la, ga), (lb, gb) = results
    assert la == pytest.approx(lb, abs=1e-6)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=1e-4)


def test_sparse_mlm_loss_equals_dense(tiny_config):
    """Decoding only the masked positions gives the dense decoder's MLM loss and the same gradients."""
    config = tiny_config.replace(unpad=True, hidden_dropout=0.0, attention_dropout=0.0)
    ids, mask, types = random_batch(config.vocab_size, B=4, T=12, seed=2)
    g = torch.Generator().manual_seed(0)
    masked = (torch.rand(ids.shape, generator=g) < 0.3) & mask.bool()
    labels = torch.where(masked, ids, torch.full_like(ids, IGNORE_INDEX))
    results = []
    for sparse in (True, False):
        torch.manual_seed(0)
        model = build_model(config, "masked_lm")
        logits = model(ids, mask, types, mlm_mask=masked if sparse else None)
        loss = mlm_loss(logits, labels[masked] if sparse else labels)
        loss.backward()
        results.append((float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (ls, gs), (ld, gd) = results
    assert logits.shape == (*ids.shape, config.vocab_size)  # the dense run decoded every position
    assert ls == pytest.approx(ld, abs=1e-6)
    for n in gs:
        torch.testing.assert_close(gs[n], gd[n], atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("act", [None, "gelu", "gelu_tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_onednn_path_equals_plain_ops(act, dtype):
    """The "onednn" kernel without gradients runs oneDNN's linear with the activation as a post-op (the bit-exact
    same call is the reference); with gradients, or under bf16 autocast, the plain ops, whose gradient flows. The two
    agree to float rounding."""
    from bertkit.model.bert import activation, dense
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 96).to(dtype)
    x = torch.randn(2, 7, 48, dtype=dtype)
    plain = layer(x) if act is None else activation(act)(layer(x))
    assert plain.requires_grad  # grad mode: the plain ops
    torch.testing.assert_close(dense(layer, x, act, "onednn"), plain, atol=0, rtol=0)
    with torch.no_grad():
        fast = dense(layer, x, act, "onednn")
        onednn = torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias,
                                                    "none" if act is None else act.split("_")[0],
                                                    [], {"gelu": "none", "gelu_tanh": "tanh"}.get(act, ""))
        torch.testing.assert_close(dense(layer, x, act, "plain"), plain.detach(), atol=0, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's bf16 products, as F.linear gives them
            y = layer(x)
            torch.testing.assert_close(dense(layer, x, act, "onednn"), y if act is None else activation(act)(y),
                                       atol=0, rtol=0)
    torch.testing.assert_close(fast, onednn, atol=0, rtol=0)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fast.float(), plain.detach().float(), atol=tolerance, rtol=tolerance)


def test_one_table_of_head_names():
    """bertkit.heads names every head the model package builds, and each kind a recipe trains maps back."""
    from bertkit.heads import HEAD_FOR_KIND, HEADS
    assert set(HEADS) == set(TASKS)
    assert HEAD_FOR_KIND == {"classification": "sequence_classification", "ner": "token_classification",
                             "qa": "question_answering"}


@pytest.mark.parametrize("device,dtype,training,autocast,unpad,backend,expected", [
    ("cpu", torch.float32, False, False, True, "sdpa", ("per_sequence", "sdpa")),  # CPU inference
    ("cpu", torch.bfloat16, False, False, True, "sdpa", ("per_sequence", "plain")),
    ("cpu", torch.float32, True, False, True, "sdpa", ("per_sequence", "plain")),  # dropout 0.1 in training
    ("cpu", torch.float32, True, True, True, "sdpa", (None, "plain")),  # bf16 autocast training attends padded
    ("cpu", torch.float32, False, True, True, "sdpa", ("per_sequence", "plain")),  # its evaluations do not
    ("cpu", torch.float32, False, False, False, "sdpa", (None, "sdpa")),
    ("cpu", torch.float32, False, False, False, "eager", (None, "plain")),
    ("cuda", torch.float32, False, False, True, "sdpa", (None, "sdpa")),  # flash wants half precision
    ("cuda", torch.float32, True, True, True, "sdpa", (None, "sdpa")),  # and no dropout
])
def test_attention_kernels_decided_from_the_run(tiny_config, device, dtype, training, autocast, unpad, backend,
                                                 expected):
    from bertkit.model.bert import _flash_varlen, attention_kernels
    config = tiny_config.replace(unpad=unpad, attention_backend=backend, attention_dropout=0.1)
    assert attention_kernels(config, torch.device(device), dtype, training, autocast) == expected
    if _flash_varlen is not None:  # torch >= 2.10: a GPU in bf16 with no attention dropout runs flash on packed tokens
        config = config.replace(attention_dropout=0.0, unpad=True)
        assert attention_kernels(config, torch.device("cuda"), torch.bfloat16)[0] == "flash_varlen"


@pytest.mark.parametrize("device,dtype,quantised,traced,expected", [
    ("cpu", torch.float32, False, False, "onednn"),  # CPU inference (and training's evaluations)
    ("cpu", torch.bfloat16, False, False, "onednn"),
    ("cpu", torch.float16, False, False, "plain"),
    ("cpu", torch.float32, True, False, "plain"),  # int8: torch.ao's quantised Linear layers
    ("cpu", torch.float32, False, True, "plain"),  # torch.compile, ONNX export
    ("cuda", torch.float32, False, False, "plain"),
    ("cuda", torch.bfloat16, False, False, "plain"),
])
def test_linear_kernel_decided_from_the_run(device, dtype, quantised, traced, expected):
    from bertkit.model.bert import linear_kernel
    if expected == "onednn" and not torch.backends.mkldnn.is_available():
        expected = "plain"
    assert linear_kernel(torch.device(device), dtype, quantised, traced) == expected


def test_choose_execution_sets_every_layer_and_never_changes_a_shared_config(tiny_config):
    from bertkit.model.bert import MLP, Attention, choose_execution
    from bertkit.model.precision import for_inference
    shared = tiny_config.replace(unpad=False)
    model, other = build_model(shared, "sequence_classification", 2), build_model(shared, "encoder")
    choose_execution(model, training=True, autocast_bf16=True, unpad=True)
    assert model.config.unpad and model.bert.config is model.config and not shared.unpad and other.config is shared
    kernels = {(m.packed_kernel, m.padded_kernel) for m in model.modules() if isinstance(m, Attention)}
    assert kernels == {(None, "plain")}
    choose_execution(model)  # ready for inference on the CPU
    assert {(m.packed_kernel, m.padded_kernel) for m in model.modules() if isinstance(m, Attention)} == {
        ("per_sequence", "sdpa")}

    def linear(m):
        return {layer.linear_kernel for layer in m.modules() if isinstance(layer, (Attention, MLP))}
    fast = "onednn" if torch.backends.mkldnn.is_available() else "plain"
    assert linear(model) == {fast}
    assert linear(choose_execution(model, traced=True)) == {"plain"}
    assert linear(for_inference(model, "bf16")) == {fast} and linear(for_inference(model, "int8")) == {"plain"}
    # weights cast or moved after choose_execution to where oneDNN cannot run (fp16, a GPU): the plain ops; cast
    # back, still those, until choose_execution is called again
    assert linear(model.to(torch.float16)) == {"plain"}
    assert linear(model.float()) == {"plain"} and linear(choose_execution(model)) == {fast}
    assert linear(model.to("meta")) == {"plain"}
    assert linear(build_model(shared, "encoder").to(torch.bfloat16)) == {fast}


def test_only_choose_execution_sets_unpadding_and_kernels():
    """Nothing outside model/bert.py flips config.unpad (in place or by replace) or sets a layer's kernels
    (attention or Linear); a new config may still be built with unpad=True."""
    import re
    from pathlib import Path
    import bertkit
    src = Path(bertkit.__file__).parent
    flips = r"\.unpad\s*=[^=]|replace\([^)]*\bunpad=|(packed|padded|linear)_kernel\s*=[^=]|\.varlen\s*="
    offenders = [f"{p.relative_to(src)}:{n}" for p in src.rglob("*.py") if p.name != "bert.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(flips, line)]
    assert not offenders, offenders
