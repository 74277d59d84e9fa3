"""bertkit vs Hugging Face `transformers` on tiny random models: every head, both directions, both backends."""

import pytest
import torch
import transformers

from bertkit import build_model
from bertkit.convert import ARCHITECTURES, TASK_TO_ARCH, config_to_hf, state_from_hf, state_to_hf
from conftest import random_batch

TOL = 1e-5


def hf_model(config, task, attn="sdpa"):
    hf = config_to_hf(config, task, num_labels=3, problem_type="single_label")
    hf_config = transformers.BertConfig(**{k: v for k, v in hf.items() if k != "architectures"})
    hf_config._attn_implementation = attn
    return getattr(transformers, TASK_TO_ARCH[task])(hf_config).eval()


def outputs_hf(model, task, ids, mask, types):
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return {
        "encoder": lambda: [out.last_hidden_state, out.pooler_output],
        "pretraining": lambda: [out.prediction_logits, out.seq_relationship_logits],
        "question_answering": lambda: [out.start_logits, out.end_logits],
    }.get(task, lambda: [out.logits])()


def outputs_bertkit(model, ids, mask, types):
    out = model(ids, mask, types)
    if model.task == "encoder":
        return [out.hidden, out.pooled]
    return list(out) if isinstance(out, tuple) else [out]


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("task", list(ARCHITECTURES.values()))
def test_bertkit_weights_into_transformers(tiny_config, task, attn):
    torch.manual_seed(1)
    config = tiny_config.replace(attention_backend=attn)
    ours = build_model(config, task, 3).eval()
    theirs = hf_model(config, task, attn)
    result = theirs.load_state_dict(state_to_hf(ours.state_dict(), config, task), strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result
    ids, mask, types = random_batch(config.vocab_size)
    with torch.no_grad():
        d = max_diff(outputs_bertkit(ours, ids, mask, types), outputs_hf(theirs, task, ids, mask, types))
    assert d <= TOL, d


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
@pytest.mark.parametrize("task", list(ARCHITECTURES.values()))
def test_transformers_weights_into_bertkit(tiny_config, task, act):
    torch.manual_seed(2)
    theirs_config = config_to_hf(tiny_config, task, 3)
    theirs_config["hidden_act"] = act
    hf_config = transformers.BertConfig(**{k: v for k, v in theirs_config.items() if k != "architectures"})
    theirs = getattr(transformers, TASK_TO_ARCH[task])(hf_config).eval()
    # randomise LayerNorms and biases too, which HF initialises to constants
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    from bertkit.convert import config_from_hf
    config = config_from_hf(theirs_config | {"hidden_act": act})
    ours = build_model(config, task, 3).eval()
    state, unused = state_from_hf(theirs.state_dict(), config, task)
    ours.load_state_dict(state, strict=True)
    assert unused == []
    ids, mask, types = random_batch(config.vocab_size, seed=5)
    with torch.no_grad():
        d = max_diff(outputs_bertkit(ours, ids, mask, types), outputs_hf(theirs, task, ids, mask, types))
    assert d <= TOL, d


def test_tf_era_names_and_prefixes_are_understood(tiny_config):
    torch.manual_seed(3)
    ours = build_model(tiny_config, "encoder").eval()
    hf_state = state_to_hf(ours.state_dict(), tiny_config, "encoder")
    legacy = {}
    for k, v in hf_state.items():  # old checkpoints: 'bert.' prefix, LayerNorm.gamma/beta, position_ids buffer
        k = "bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[k] = v
    legacy["bert.embeddings.position_ids"] = torch.arange(64)[None]
    state, unused = state_from_hf(legacy, tiny_config, "encoder")
    assert unused == []
    for k, v in ours.state_dict().items():
        assert torch.equal(state[k], v), k
