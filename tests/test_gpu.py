"""The CUDA paths: fp32 and bf16 parity with transformers on the GPU, fused SDPA kernels, unpadded attention,
a bf16 training step. Skipped where there is no GPU (CI); run on a GPU machine with `python -m pytest
tests/test_gpu.py`."""

import pytest
import torch
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel

from bertkit import BertConfig, build_model
from bertkit.convert import config_to_hf, state_to_hf
from bertkit.model.precision import for_inference
from conftest import random_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """No TF32 in matmuls, so fp32 means fp32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _pair(config: BertConfig):
    torch.manual_seed(0)
    ours = build_model(config, "encoder").to(CUDA).eval()
    hf_config = transformers.BertConfig(**{k: v for k, v in config_to_hf(config, "encoder").items()
                                           if k != "architectures"})
    hf_config._attn_implementation = "sdpa"
    theirs = transformers.BertModel(hf_config).to(CUDA).eval()
    theirs.load_state_dict(state_to_hf(ours.state_dict(), config, "encoder"), strict=False)
    return ours, theirs


def _batch(vocab: int, B: int = 8, T: int = 64):
    return [t.to(CUDA) for t in random_batch(vocab, B=B, T=T, seed=3)]


@pytest.mark.parametrize("unpad", [False, True])
def test_fp32_parity_with_transformers_on_gpu(unpad):
    config = BertConfig.preset("mini", vocab_size=1000, unpad=unpad)
    ours, theirs = _pair(config)
    ids, mask, types = _batch(config.vocab_size)
    with torch.no_grad():
        a = ours(ids, mask, types)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    assert float((a.hidden[real] - b.last_hidden_state[real]).abs().max()) <= 1e-4
    assert float((a.pooled - b.pooler_output).abs().max()) <= 1e-4


def test_bf16_autocast_and_bf16_weights_stay_close_to_fp32():
    config = BertConfig.preset("mini", vocab_size=1000, unpad=True)
    ours, theirs = _pair(config)
    ids, mask, types = _batch(config.vocab_size)
    real = mask.bool()
    with torch.no_grad():
        ref = ours(ids, mask, types).hidden[real]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            auto = ours(ids, mask, types).hidden[real].float()
            hf_auto = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[real].float()
        weights = for_inference(ours, "bf16")(ids, mask, types).hidden[real].float()
    scale = float(ref.abs().max())
    for got in (auto, weights):
        assert float((got - ref).abs().max()) <= 0.05 * scale
    # bertkit's bf16 error is no worse than transformers' own under the same autocast
    assert float((auto - ref).abs().max()) <= 1.5 * float((hf_auto - ref).abs().max()) + 1e-3


@pytest.mark.parametrize("backend", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
def test_fused_sdpa_kernels_run_and_match_eager(backend):
    """With no padding mask (unpadded, per sequence) the flash kernel can run; the padded path uses the
    memory-efficient kernel. Either way the output equals the eager path's."""
    config = BertConfig.preset("mini", vocab_size=1000, unpad=True)
    ours = build_model(config, "encoder").to(CUDA).eval()
    eager = build_model(config.replace(attention_backend="eager"), "encoder").to(CUDA).eval()
    eager.load_state_dict(ours.state_dict())
    ids, mask, types = _batch(config.vocab_size)
    real = mask.bool()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        want = eager(ids, mask, types).hidden[real].float()
        with sdpa_kernel(backend):
            got = ours(ids, mask, types).hidden[real].float()
    assert float((got - want).abs().max()) <= 0.03 * float(want.abs().max())


def test_unpadded_equals_padded_on_gpu():
    config = BertConfig.preset("mini", vocab_size=1000)
    torch.manual_seed(0)
    padded = build_model(config, "sequence_classification", 3).to(CUDA).eval()
    unpadded = build_model(config.replace(unpad=True), "sequence_classification", 3).to(CUDA).eval()
    unpadded.load_state_dict(padded.state_dict())
    ids, mask, types = _batch(config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(unpadded(ids, mask, types), padded(ids, mask, types), atol=1e-5, rtol=0)


def test_bf16_training_steps_on_gpu_reduce_the_loss():
    from bertkit.objectives import classification_loss
    config = BertConfig.preset("mini", vocab_size=1000, unpad=True)
    torch.manual_seed(0)
    model = build_model(config, "sequence_classification", 2).to(CUDA).train()
    ids, mask, types = _batch(config.vocab_size, B=16)
    labels = (ids[:, 1] % 2).long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = classification_loss(model(ids, mask, types).float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 < losses[0], losses
