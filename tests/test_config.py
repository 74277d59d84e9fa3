import pytest

from bertkit import BertConfig, BertkitError
from bertkit.config import PRESETS


@pytest.mark.parametrize("name,layers,hidden,heads", [
    ("tiny", 2, 128, 2), ("mini", 4, 256, 4), ("small", 4, 512, 8), ("medium", 8, 512, 8),
    ("base", 12, 768, 12), ("large", 24, 1024, 16)])
def test_presets(name, layers, hidden, heads):
    c = BertConfig.preset(name)
    assert (c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size) == (layers, hidden, heads, 4 * hidden)
    assert set(PRESETS) == {"tiny", "mini", "small", "medium", "base", "large"}


def test_preset_overrides_and_round_trip():
    c = BertConfig.preset("mini", vocab_size=8000, attention_backend="eager")
    assert c.vocab_size == 8000 and c.head_dim == 64
    assert BertConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("kwargs,message", [
    ({"hidden_size": 100, "num_heads": 3}, "not divisible"),
    ({"num_layers": 0}, "num_layers must be a positive integer"),
    ({"hidden_dropout": 1.5}, "hidden_dropout"),
    ({"hidden_act": "swish"}, "hidden_act"),
    ({"attention_backend": "flash"}, "attention_backend"),
    ({"vocab_size": 10, "pad_token_id": 10}, "pad_token_id"),
])
def test_invalid_configs_are_one_line_errors(kwargs, message):
    with pytest.raises(BertkitError, match=message) as e:
        BertConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_unknown_field_and_preset():
    with pytest.raises(BertkitError, match="unknown field"):
        BertConfig.from_dict({"hidden_sz": 3})
    with pytest.raises(BertkitError, match="unknown preset"):
        BertConfig.preset("huge")
