import pytest

from bertkit import BertConfig, build_model
from bertkit.optim import lr_factor, make_optimizer, param_groups


def test_no_weight_decay_on_biases_and_layernorms():
    model = build_model(BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2), "pretraining")
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in model.named_parameters() if p.ndim == 1}
    assert all(".bias" in n or "norm" in n for n in (names[id(p)] for p in no_decay["params"]))
    assert "bert.embeddings.word.weight" in {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    opt = make_optimizer(model, 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("progress,schedule,expected", [
    (0.0, "linear", 0.0), (0.05, "linear", 0.5), (0.1, "linear", 1.0), (0.55, "linear", 0.5), (1.0, "linear", 0.0),
    (0.55, "cosine", 0.5), (0.325, "cosine", 0.5 + 0.5 * 2 ** -0.5), (1.0, "cosine", 0.0), (0.7, "constant", 1.0),
    (1.5, "linear", 0.0),
])
def test_lr_factor_exact_values(progress, schedule, expected):
    assert lr_factor(progress, warmup=0.1, schedule=schedule) == pytest.approx(expected, abs=1e-12)
