"""Explanations on a tiny model: IG completeness, occlusion of an ignored word, exact word aggregation, masking
through word ids, faithfulness curves on a known function, rollout, a 600-token report, CLI errors."""

import json
import random

import numpy as np
import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, load_model, save_model
from bertkit.cli import main
from bertkit.encoding.inputs import Word, words_of
from bertkit.interpret import evaluate, explain, format_table
from bertkit.interpret.attention import attention_maps, rollout
from bertkit.interpret.attributions import baseline_ids, integrated_gradients
from bertkit.interpret.faithfulness import curves, ranking
from bertkit.interpret.perturbation import occlusion
from bertkit.interpret.scoring import Scorer
from bertkit.interpret.words import mask_words, word_scores
from bertkit.tokenizer import Encoding

VOCAB = "the film was a great wonderful terrible boring story acting plot really quite and with cast".split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random classifier (weights larger than BERT's init, so outputs move) with a trained tokenizer."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice(VOCAB) for _ in range(8)) for _ in range(200)] + ["unbelievable"] * 3
    tok = Tokenizer.train(texts, vocab_size=90, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48,
                        max_position_embeddings=512, initializer_range=0.3)
    folder = tmp_path_factory.mktemp("explain") / "model"
    save_model(folder, build_model(config, "sequence_classification", 2), tok, ["neg", "pos"])
    return folder


def test_integrated_gradients_completeness_and_batching(model_dir):
    loaded = load_model(model_dir)
    tok = loaded.tokenizer
    enc = tok.encode("the acting was wonderful and the plot quite boring")
    scorer = Scorer(loaded.model, enc.type_ids, target=1)
    ref = baseline_ids(enc.ids, (tok.cls_id, tok.sep_id), tok.pad_id)
    attr, check = integrated_gradients(scorer, enc.ids, ref, steps=50, batch_size=7)
    assert abs(check["delta"]) > 1e-3, check  # a real difference to explain
    assert check["error"] < 2e-3 * max(1.0, abs(check["delta"])), check
    assert check["sum"] == pytest.approx(attr.sum())
    # The step batch bounds memory and changes nothing else.
    attr1, _ = integrated_gradients(scorer, enc.ids, ref, steps=50, batch_size=50)
    np.testing.assert_allclose(attr, attr1, atol=1e-6)
    assert attr[0] == 0 and attr[-1] == 0  # [CLS]/[SEP] are the same in input and reference


def test_occlusion_of_a_word_the_model_cannot_see_is_zero(model_dir):
    loaded = load_model(model_dir)
    tok, model = loaded.tokenizer, loaded.model
    text = "the film was really boring"
    enc = tok.encode(text)
    words = words_of(enc, text)
    really = [w.text for w in words].index("really")
    with torch.no_grad():  # "really" now embeds exactly as [MASK]: masking it cannot change anything
        table = model.bert.embeddings.word.weight
        for pos in words[really].tokens:
            table[enc.ids[pos]] = table[tok.mask_id]
    scores = occlusion(Scorer(model, enc.type_ids, 1), enc.ids, words, tok.mask_id)
    assert abs(scores[really]) < 1e-6
    assert np.abs(np.delete(scores, really)).max() > 1e-3  # the other words do matter


def test_word_aggregation_is_exact_on_a_hand_made_case():
    # [CLS] un ##believ ##able film , [SEP] ok [SEP]: text "unbelievable film," and pair "ok"
    enc = Encoding(ids=[2, 10, 11, 12, 13, 14, 3, 15, 3], type_ids=[0] * 7 + [1] * 2,
                   tokens=["[CLS]", "un", "##believ", "##able", "film", ",", "[SEP]", "ok", "[SEP]"],
                   offsets=[(0, 0), (0, 2), (2, 8), (8, 12), (13, 17), (17, 18), (0, 0), (0, 2), (0, 0)],
                   word_ids=[None, 0, 0, 0, 1, 2, None, 0, None],
                   sequence_ids=[None, 0, 0, 0, 0, 0, None, 1, None], attention_mask=[1] * 9)
    words = words_of(enc, "unbelievable film,", "ok")
    assert [(w.text, w.sequence, w.tokens) for w in words] == [
        ("unbelievable", 0, (1, 2, 3)), ("film", 0, (4,)), (",", 0, (5,)), ("ok", 1, (7,))]
    tokens = [100.0, 0.5, 0.25, -0.125, 2.0, -1.0, 100.0, 3.0, 100.0]
    assert word_scores(tokens, words) == [0.625, 2.0, -1.0, 3.0]
    assert mask_words(enc.ids, words, [0, 3], mask_id=4) == [2, 4, 4, 4, 13, 14, 3, 4, 3]


def test_masking_goes_through_the_tokenizer(model_dir):
    tok = load_model(model_dir).tokenizer
    text = "unbelievable film"
    enc = tok.encode(text)
    words = words_of(enc, text)
    assert words[0].text == "unbelievable" and len(words[0].tokens) > 1  # a word of several sub-tokens
    masked = mask_words(enc.ids, words, [0], tok.mask_id)
    assert len(masked) == len(enc.ids)
    assert [i for i, (a, b) in enumerate(zip(enc.ids, masked)) if a != b] == list(words[0].tokens)


class Additive:
    """A stand-in scorer: f = the sum of the weights of the words left unmasked (mask id 4)."""

    def __init__(self, words, weights):
        self.words, self.weights = words, weights

    def __call__(self, variants):
        return np.array([sum(w for word, w in zip(self.words, self.weights) if v[word.tokens[0]] != 4)
                         for v in variants])


def test_deletion_and_insertion_curves_exact():
    words = [Word(0, i, i + 1, "abcd"[i], (i + 1,)) for i in range(4)]
    weights = [0.1, 0.4, -0.2, 0.3]
    ids = [2, 10, 11, 12, 13, 3]
    true_order = ranking(weights)
    assert true_order == [1, 3, 0, 2]
    out = curves(Additive(words, weights), ids, words, {"true": [true_order], "reverse": [true_order[::-1]]},
                 mask_id=4, max_words=3)
    np.testing.assert_allclose(out["true"]["deletion"], [0.6, 0.2, -0.1, -0.2])
    np.testing.assert_allclose(out["true"]["insertion"], [0.0, 0.4, 0.7, 0.8])
    assert out["true"]["aopc_deletion"] == pytest.approx((0.4 + 0.7 + 0.8) / 3)
    assert out["true"]["aopc_insertion"] == pytest.approx((0.4 + 0.7 + 0.8) / 3)
    assert out["reverse"]["aopc_deletion"] < 0 < out["true"]["aopc_deletion"]


def test_attention_maps_and_rollout(model_dir):
    loaded = load_model(model_dir)
    enc = loaded.tokenizer.encode("the plot was great")
    maps = attention_maps(loaded.model, enc.ids, enc.type_ids)
    T = len(enc.ids)
    assert maps.shape == (2, 2, T, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, T))
    flow = rollout(maps)
    torch.testing.assert_close(flow.sum(-1), torch.ones(T))
    eye = torch.eye(T).expand(3, 2, T, T)  # attending only to oneself: nothing flows anywhere else
    torch.testing.assert_close(rollout(eye), torch.eye(T))


def test_explain_pair_all_methods_and_files(model_dir, tmp_path):
    e = explain(model_dir, "the acting was wonderful", "a boring plot", target="neg", steps=20, lime_samples=60)
    assert e.target == "neg" and list(e.word_scores) == ["ig", "gxi", "saliency", "occlusion", "lime", "attention"]
    assert {w.sequence for w in e.words} == {0, 1}
    assert all(len(s) == len(e.words) for s in e.word_scores.values())
    assert set(e.faithfulness) == set(e.word_scores) | {"random"}
    out = e.save(tmp_path / "x")
    page = (out / "explanation.html").read_text()
    assert "[pair]" in page and "data:image/png;base64," in page and "Faithfulness" in page
    scores = json.loads((out / "scores.json").read_text())
    assert scores["target"] == "neg" and scores["completeness"]["steps"] == 20
    assert (out / "explanation.png").stat().st_size > 0 and (out / "attention.png").stat().st_size > 0


def test_a_600_token_text_renders(model_dir, tmp_path):
    """Longer than the model reads: windows cover every word, or truncation (this model's saved way) greys the rest."""
    rng = random.Random(1)
    text = " ".join(rng.choice(VOCAB) for _ in range(600))
    loaded = load_model(model_dir)
    all_words = words_of(loaded.tokenizer.encode(text, truncation=None), text)
    e = explain(loaded, text, methods="ig,occlusion,attention", steps=8, max_words=5, window_stride=128)
    assert e.notes and "windows" in e.notes[0]
    assert [w.text for w in e.words] == [w.text for w in all_words]  # every word of the text, once
    assert all(len(s) == len(all_words) for s in e.word_scores.values())
    assert e.completeness["windows"] >= 2 and e.completeness["error"] < 0.05  # the worst window, 8 steps
    page = e.save(tmp_path / "long") / "explanation.html"
    assert 'class="cut"' not in page.read_text()
    cut = explain(loaded, text, methods="ig,occlusion,attention", steps=8, max_words=5, window_stride=0)
    assert cut.notes and "truncated" in cut.notes[0]
    assert len(cut.tokens) == 512 and sum(len(w.tokens) for w in cut.words) == 510  # every token but [CLS]/[SEP]
    page = cut.save(tmp_path / "cut") / "explanation.html"
    assert 'class="cut"' in page.read_text()  # the part the model did not read, greyed
    # a window's scores are that window's own explanation: the first word's occlusion score equals the first
    # window's, where only that window holds it
    first = explain(loaded, text, methods="occlusion", steps=8, max_words=5, window_stride=0,
                    target=e.target, faithfulness=False)
    assert e.word_scores["occlusion"][0] == pytest.approx(first.word_scores["occlusion"][0])


def test_evaluate_reports_each_method_and_random(model_dir, tmp_path, capsys):
    result = evaluate(model_dir, ["the film was great", "a boring plot and cast"], methods=["occlusion", "gxi"],
                      progress=False, lime_samples=20)
    assert result["n"] == 2 and set(result["methods"]) == {"occlusion", "gxi", "random"}
    assert "random order" in format_table(result)
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"{' '.join(VOCAB[i:i + 5])},pos\n" for i in range(6)))
    assert main(["explain", str(model_dir), "--evaluate", str(data), "--limit", "3", "--method", "occlusion,lime",
                 "--lime-samples", "20", "--out", str(tmp_path / "ev"), "-q"]) == 0
    assert "| occlusion |" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "faithfulness.json").read_text())["n"] == 3


@pytest.mark.parametrize("args, message", [
    (["--text", "   "], "the text to explain is empty"),
    (["--text", "great", "--target", "maybe"], "unknown target label 'maybe'"),
    (["--text", "great", "--method", "ig,shap"], "unknown method(s) shap"),
    ([], "give --text"),
])
def test_cli_errors_are_one_line(model_dir, tmp_path, capsys, args, message):
    assert main(["explain", str(model_dir), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_missing_model_and_wrong_task(tmp_path, model_dir, capsys):
    assert main(["explain", str(tmp_path / "nope"), "--text", "hi"]) == 2
    assert "no such model directory" in capsys.readouterr().err
    loaded = load_model(model_dir)
    save_model(tmp_path / "enc", build_model(loaded.model.config, "encoder"), loaded.tokenizer)
    assert main(["explain", str(tmp_path / "enc"), "--text", "hi"]) == 2
    assert "sequence-classification" in capsys.readouterr().err


def test_cli_explain_writes_the_page(model_dir, tmp_path, capsys):
    assert main(["explain", str(model_dir), "--text", "the film was great!", "--method", "ig,occlusion",
                 "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "completeness error" in out and "deletion AOPC" in out
    written = {p.name for p in (tmp_path / "cli").iterdir()}
    assert written == {"explanation.html", "explanation.png", "scores.json", ".bertkit-output"}
