"""The inference layer: a model reads as it was trained to (settings saved with it), one entry point for every
task, and evaluation through it reproduces a run's own test scores exactly."""

import json
import random

import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, pipeline, save_model
from bertkit.cli import main
from bertkit.inference import Embedder, FillMask, QuestionAnswerer, TextClassifier, TokenTagger

WORDS = ["the", "film", "was", "a", "story", "plot", "acting", "quite", "really", "cast", "and", "with"]


def review(rng: random.Random, positive: bool, n: int) -> str:
    words = rng.choices(WORDS, k=n) + [rng.choice(["great", "superb"] if positive else ["awful", "dull"])]
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model fine-tuned with max length 32 and windows over long reviews."""
    d = tmp_path_factory.mktemp("inference")
    rng = random.Random(0)
    for name, n in (("train", 96), ("dev", 24), ("test", 24)):
        rows = [(review(rng, i % 2 == 0, rng.randint(5, 60)), "pos" if i % 2 == 0 else "neg") for i in range(n)]
        (d / f"{name}.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    tok = Tokenizer.train(WORDS + ["great", "superb", "awful", "dull"] * 3, vocab_size=60, min_frequency=1,
                          show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    save_model(d / "base", build_model(config, "encoder"), tok)
    assert main(["finetune", str(d / "base"), "--train", str(d / "train.csv"), "--dev", str(d / "dev.csv"),
                 "--test", str(d / "test.csv"), "--out", str(d / "run"), "--max-length", "32", "--window-stride", "8",
                 "--epochs", "3", "--lr", "3e-3", "--batch-size", "16", "-q"]) == 0
    return d


def test_the_model_remembers_how_it_reads(run):
    clf = pipeline(run / "run" / "model")
    assert isinstance(clf, TextClassifier)
    assert clf.reading.max_length == 32 and clf.reading.window_stride == 8 and clf.notes == []
    long = review(random.Random(5), True, 90)
    assert len(clf.tokenizer.encode(long, truncation=None).ids) > 32  # read as windows, not truncated
    assert clf([long])[0]["label"] in ("pos", "neg")


def test_evaluate_reproduces_the_runs_test_metrics_exactly(run, capsys):
    saved = json.loads((run / "run" / "metrics.json").read_text())["test"]
    assert main(["evaluate", str(run / "run" / "model"), "--input", str(run / "test.csv"), "--out",
                 str(run / "eval")]) == 0
    assert json.loads((run / "eval" / "metrics.json").read_text()) == saved
    from bertkit.evaluate.runner import evaluate_file
    assert evaluate_file(run / "run" / "model", run / "test.csv") == saved
    # the predictor gives the same predictions the metrics were computed from
    texts = [line.rsplit(",", 1)[0] for line in (run / "test.csv").read_text().splitlines()[1:]]
    predicted = [r["label"] for r in TextClassifier.load(run / "run" / "model")(texts)]
    gold = [line.rsplit(",", 1)[1] for line in (run / "test.csv").read_text().splitlines()[1:]]
    assert sum(p == g for p, g in zip(predicted, gold)) / len(gold) == pytest.approx(saved["accuracy"])
    # reading otherwise is possible, and said
    capsys.readouterr()
    assert main(["evaluate", str(run / "run" / "model"), "--input", str(run / "test.csv"), "--window-stride",
                 "0"]) == 0
    other = TextClassifier.load(run / "run" / "model", window_stride=0)
    assert other.notes == ["reading with window_stride 0, not the 8 this model was saved with"]


def test_predict_reads_windows_like_the_run(run, capsys):
    long = review(random.Random(7), False, 90)
    assert main(["predict", str(run / "run" / "model"), "--text", long]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = TextClassifier.load(run / "run" / "model")([long])[0]
    assert out["label"] == expected["label"] and out["probs"] == expected["probs"]


def test_question_answering_and_fill_mask_predict(tmp_path, capsys):
    tok = Tokenizer.train(["alice lives in paris", "where does bob live", "the capital is oslo"], vocab_size=50,
                          min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    save_model(tmp_path / "qa", build_model(config, "question_answering"), tok)
    save_model(tmp_path / "mlm", build_model(config, "masked_lm"), tok)
    assert isinstance(pipeline(tmp_path / "qa"), QuestionAnswerer)
    assert isinstance(pipeline(tmp_path / "mlm"), FillMask)
    context = "alice lives in paris"
    assert main(["predict", str(tmp_path / "qa"), "--question", "where does alice live", "--context", context]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"question", "answer", "score", "start", "end"}
    assert answer["answer"] == "" or context[answer["start"]:answer["end"]] == answer["answer"]
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "where does bob live", "context": context}) + "\n")
    assert main(["predict", str(tmp_path / "qa"), "--input", str(tmp_path / "q.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["question"] == "where does bob live"

    assert main(["predict", str(tmp_path / "mlm"), "--text", "alice lives in [MASK]", "--top-k", "3"]) == 0
    fills = json.loads(capsys.readouterr().out)["fills"]
    assert len(fills) == 3 and fills[0]["score"] >= fills[1]["score"] >= fills[2]["score"]
    probs = FillMask.load(tmp_path / "mlm")(["alice lives in [MASK]"], top_k=tok.vocab_size)[0]
    assert sum(f["score"] for f in probs) == pytest.approx(1.0, abs=1e-4)
    assert probs[0]["sequence"] == f"alice lives in {probs[0]['token']}"
    assert main(["predict", str(tmp_path / "mlm"), "--text", "no mask here"]) == 2
    assert "no [MASK]" in capsys.readouterr().err


def test_tagger_entities_carry_scores_and_offsets(tmp_path):
    tok = Tokenizer.train(["alice smith flew to oslo"], vocab_size=40, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    model = build_model(config, "token_classification", 3)
    with torch.no_grad():  # every token tagged B-PER, so every word is an entity of its own
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    save_model(tmp_path / "ner", model, tok, labels=["O", "B-PER", "I-PER"])
    tagger = pipeline(tmp_path / "ner")
    assert isinstance(tagger, TokenTagger)
    text = "alice smith flew"
    entities = tagger([text])[0]["entities"]
    assert [e["word"] for e in entities] == ["alice", "smith", "flew"]
    expected = torch.tensor([0.0, 5.0, 0.0]).softmax(-1)[1].item()
    assert all(e["entity"] == "PER" and e["score"] == pytest.approx(expected, abs=1e-5) for e in entities)
    assert all(text[e["start"]:e["end"]] == e["word"] for e in entities)


def test_sentence_transformers_settings_are_read(minilm_dir):
    emb = Embedder.load(minilm_dir)
    assert (emb.reading.max_length, emb.reading.pooling, emb.reading.normalize) == (256, "mean", True)
    vectors = pipeline(minilm_dir).encode(["a witty film", "a dull film"])
    assert vectors.shape == (2, 384)
    assert torch.tensor(vectors).norm(dim=-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
