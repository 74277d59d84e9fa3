"""Fine-tuning end to end on a tiny model: finetune -> evaluate -> predict, NER, baseline, exact helpers."""

import json
import random

import numpy as np
import pytest
import torch

from bertkit import BertConfig, BertkitError, Tokenizer, build_model, save_model
from bertkit.cli import main
from bertkit.data.labelled import align_tags, length_grouped_order
from bertkit.inference.tokens import word_tags
from bertkit.objectives import IGNORE_INDEX

GOOD = ["great", "wonderful", "excellent", "moving", "brilliant", "delightful"]
BAD = ["terrible", "awful", "boring", "dull", "clumsy", "tedious"]
FILLER = ["the", "film", "was", "a", "story", "acting", "plot", "really", "quite", "and", "with", "cast"]
NAMES = ["Alice", "Bob", "Carol", "Dmitri", "Erin"]
PLACES = ["Paris", "Oslo", "Lima", "Kyoto"]


def review(rng: random.Random, positive: bool) -> str:
    words = rng.sample(FILLER, 5) + [rng.choice(GOOD if positive else BAD)]
    rng.shuffle(words)
    return " ".join(words)


def write_csv(path, rows):
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    rng = random.Random(0)
    files = {}
    for name, n in (("train", 320), ("dev", 60), ("test", 60)):
        rows = [(review(rng, i % 2 == 0), "pos" if i % 2 == 0 else "neg") for i in range(n)]
        files[name] = write_csv(d / f"{name}.csv", rows)
    sentences = []
    for i in range(300):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.2:
                tokens += [rng.choice(NAMES), "Smith"]
                tags += ["B-PER", "I-PER"]
            elif r < 0.35:
                tokens.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        sentences.append((tokens, tags))
    for name, part in (("ner_train", sentences[:240]), ("ner_dev", sentences[240:270]), ("ner_test", sentences[270:])):
        (d / f"{name}.conll").write_text("\n\n".join("\n".join(f"{t} {g}" for t, g in zip(*s)) for s in part) + "\n")
        files[name] = d / f"{name}.conll"
    texts = [line.split(",")[0] for line in files["train"].read_text().splitlines()[1:]]
    texts += [" ".join(s[0]) for s in sentences]
    tok = Tokenizer.train(texts, vocab_size=200, min_frequency=1, lowercase=False, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    save_model(d / "base", build_model(config, "encoder"), tok)
    files["model"] = d / "base"
    return files


def finetune_args(data, out, *extra):
    return ["finetune", str(data["model"]), "--train", str(data["train"]), "--dev", str(data["dev"]), "--test",
            str(data["test"]), "--out", str(out), "--epochs", "4", "--lr", "3e-3", "--batch-size", "16", "-q", *extra]


def test_classification_end_to_end_and_reproducible(data, tmp_path, capsys):
    assert main(finetune_args(data, tmp_path / "a")) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["labels"] == ["neg", "pos"]
    assert metrics["test"]["accuracy"] > 0.9, metrics["test"]
    for name in ("model", "curves.png", "confusion.png", "metrics.jsonl"):
        assert (tmp_path / "a" / name).exists()
    assert main(finetune_args(data, tmp_path / "b")) == 0  # same seed -> the same numbers
    again = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert again["test"] == metrics["test"]
    capsys.readouterr()

    assert main(["evaluate", str(tmp_path / "a" / "model"), "--input", str(data["test"]),
                 "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["accuracy"] == metrics["test"]["accuracy"]
    assert evaluated["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    capsys.readouterr()

    assert main(["predict", str(tmp_path / "a" / "model"), "--text", "the plot was brilliant",
                 "--text", "a dull and tedious film"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["label"] for x in lines] == ["pos", "neg"]
    from bertkit.inference import TextClassifier
    clf = TextClassifier.load(tmp_path / "a" / "model", max_length=16, window_stride=4)
    long_text = " ".join(review(random.Random(3), True) for _ in range(10))  # longer than 16 tokens
    assert clf.predict([long_text])[0]["label"] == "pos"
    assert all(abs(sum(x["probs"].values()) - 1) < 1e-4 for x in lines)


def test_ner_end_to_end_with_character_spans(data, tmp_path, capsys):
    args = ["finetune", str(data["model"]), "--task", "ner", "--train", str(data["ner_train"]), "--dev",
            str(data["ner_dev"]), "--test", str(data["ner_test"]), "--out", str(tmp_path / "ner"), "--epochs", "6",
            "--lr", "3e-3", "--batch-size", "16", "-q"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "ner" / "metrics.json").read_text())
    assert metrics["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert metrics["test"]["f1"] > 0.8, metrics["test"]
    capsys.readouterr()
    text = "Carol Smith flew to Oslo with the cast"
    assert main(["predict", str(tmp_path / "ner" / "model"), "--text", text]) == 0
    entities = json.loads(capsys.readouterr().out)["entities"]
    assert {(e["entity"], e["word"]) for e in entities} == {("PER", "Carol Smith"), ("LOC", "Oslo")}
    assert all(text[e["start"]:e["end"]] == e["word"] and 0 < e["score"] <= 1 for e in entities)


def test_baseline(data, tmp_path, capsys):
    assert main(["baseline", "--train", str(data["train"]), "--dev", str(data["dev"]), "--test", str(data["test"]),
                 "--out", str(tmp_path / "bl")]) == 0
    metrics = json.loads((tmp_path / "bl" / "metrics.json").read_text())
    assert metrics["method"].startswith("TF-IDF (word") and metrics["test"]["accuracy"] > 0.9


def test_ner_baseline(data, tmp_path):
    from bertkit.baseline import token_features
    assert token_features(["Ann", "Smith", "ran"], 0) == [
        "w=ann", "w-1=<s>", "w+1=smith", "w-2=<s>", "w+2=ran", "b-1=<s>|Ann", "b+1=Ann|Smith", "pre3=Ann", "suf3=Ann",
        "title=True", "upper=False", "digit=False"]
    assert main(["baseline", "--task", "ner", "--train", str(data["ner_train"]), "--dev", str(data["ner_dev"]),
                 "--test", str(data["ner_test"]), "--out", str(tmp_path / "bl")]) == 0
    metrics = json.loads((tmp_path / "bl" / "metrics.json").read_text())
    # names and places come from closed lists, so a window tagger gets every entity right
    assert metrics["test"]["f1"] == 1.0 and set(metrics["test"]["per_type"]) == {"LOC", "PER"}


def test_bad_task_files(data, tmp_path, capsys):
    bad_dev = write_csv(tmp_path / "dev.csv", [("a great film", "pos"), ("an odd film", "meh")])
    assert main(["finetune", str(data["model"]), "--train", str(data["train"]), "--dev", str(bad_dev),
                 "--out", str(tmp_path / "x"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "dev.csv:3: label 'meh' never appears in the training data" in err and err.count("\n") == 1
    (tmp_path / "cols.csv").write_text("review,sentiment\nfine,pos\n")
    assert main(["finetune", str(data["model"]), "--train", str(tmp_path / "cols.csv"), "--out",
                 str(tmp_path / "y"), "-q"]) == 2
    assert "no column 'text'" in capsys.readouterr().err
    assert main(["finetune", str(data["model"]), "--task", "ner", "--train", str(data["ner_train"]), "--out",
                 str(tmp_path / "z"), "-q"]) == 2
    assert "ner needs --dev (and --test) files" in capsys.readouterr().err


def test_align_tags_exact():
    # [CLS] Wash ##ing ##ton went [SEP]: the word's tag on its first piece only
    assert align_tags([None, 0, 0, 0, 1, None], [3, 0]) == [IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX, 0, IGNORE_INDEX]
    logits = torch.full((6, 3), -1.0)
    logits[1, 1] = logits[2, 0] = logits[4, 2] = 5.0  # piece 2 disagrees: ignored
    assert [t for t, _ in word_tags([None, 0, 0, 0, 1, None], logits, ["O", "B-PER", "I-PER"], 3)] == ["B-PER", "I-PER", "O"]
    logits[1, 1], logits[1, 0], logits[4, 1] = -1.0, 5.0, 0.0  # I-PER after O: read as the next best, B-PER
    assert [t for t, _ in word_tags([None, 0, 0, 0, 1, None], logits, ["O", "B-PER", "I-PER"], 3)] == ["O", "B-PER", "O"]


def test_length_grouped_order_is_a_permutation_of_similar_lengths():
    lengths = [random.Random(i).randint(5, 200) for i in range(1000)]
    order = length_grouped_order(lengths, 10, np.random.default_rng(0), group=True)
    assert sorted(order) == list(range(1000))
    spread = np.mean([np.ptp([lengths[i] for i in order[k:k + 10]]) for k in range(0, 1000, 10)])
    plain = length_grouped_order(lengths, 10, np.random.default_rng(0), group=False)
    spread_plain = np.mean([np.ptp([lengths[i] for i in plain[k:k + 10]]) for k in range(0, 1000, 10)])
    assert spread < 0.2 * spread_plain  # padding waste falls accordingly
    assert order != length_grouped_order(lengths, 10, np.random.default_rng(1), group=True)


def test_predictor_refuses_wrong_models(data):
    from bertkit.inference import TextClassifier
    with pytest.raises(BertkitError, match="not a text classifier"):
        TextClassifier.load(data["model"])


def squad_file(path, rng, n, impossible=0.0):
    data = []
    for i in range(n):
        name, place = rng.choice(NAMES), rng.choice(PLACES)
        filler = " ".join(rng.sample(FILLER, 4))
        context = f"{filler} . {name} lives in {place} . {' '.join(rng.sample(FILLER, 3))} ."
        ask = rng.choice([n for n in NAMES if n != name]) if rng.random() < impossible else name
        qa = {"id": f"q{i}", "question": f"where does {ask} live ?"}
        if ask == name:
            qa["answers"] = [{"text": place, "answer_start": context.index(f"in {place}") + 3}]
        else:
            qa["answers"], qa["is_impossible"] = [], True
        data.append({"paragraphs": [{"context": context, "qas": [qa]}]})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def test_question_answering_end_to_end(tmp_path, capsys):
    rng = random.Random(0)
    files = {name: squad_file(tmp_path / f"{name}.json", rng, n) for name, n in (("train", 300), ("dev", 40),
                                                                                   ("test", 40))}
    texts = [p["context"] + " " + p["qas"][0]["question"] for f in files.values()
             for d in json.loads(f.read_text())["data"] for p in d["paragraphs"]]
    tok = Tokenizer.train(texts, vocab_size=120, min_frequency=1, lowercase=False, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    save_model(tmp_path / "base", build_model(config, "encoder"), tok)
    assert main(["finetune", str(tmp_path / "base"), "--task", "qa", "--train", str(files["train"]), "--dev",
                 str(files["dev"]), "--test", str(files["test"]), "--out", str(tmp_path / "qa"), "--max-length", "32",
                 "--doc-stride", "8", "--epochs", "8", "--lr", "3e-3", "--batch-size", "16", "-q"]) == 0
    metrics = json.loads((tmp_path / "qa" / "metrics.json").read_text())
    assert metrics["test"]["exact_match"] > 80, metrics["test"]  # contexts span several windows of 32 tokens


def test_pool_windows_exact():
    from bertkit.encoding.inputs import Encoded
    from bertkit.inference.batches import pool_windows
    items = [Encoded([1], [0], 0, doc=0), Encoded([1], [0], 0, doc=0), Encoded([1], [0], 1, doc=1)]
    logits = [torch.tensor([1.0, 3.0]), torch.tensor([3.0, -1.0]), torch.tensor([0.0, 2.0])]
    docs, mean = pool_windows(items, logits, "mean")
    assert [d.target for d in docs] == [0, 1]
    assert [x.tolist() for x in mean] == [[2.0, 1.0], [0.0, 2.0]]
    _, mx = pool_windows(items, logits, "max")
    assert [x.tolist() for x in mx] == [[3.0, 3.0], [0.0, 2.0]]


def test_long_documents_become_windows(data, tmp_path):
    from bertkit.data.tasks import Example
    from bertkit.data.labelled import encode_classification
    tok = Tokenizer.load(data["model"])
    long_text = " ".join(review(random.Random(1), True) for _ in range(12))  # ~70 words
    items = encode_classification(tok, [Example(long_text, label="pos"), Example("short and dull", label="neg")],
                                  ["neg", "pos"], "single_label", max_length=16, window_stride=4)
    first = [it for it in items if it.doc == 0]
    assert len(first) > 4 and all(len(it.ids) <= 16 and it.target == 1 for it in first)
    assert [it.doc for it in items].count(1) == 1
    windows = [tok.decode(it.ids) for it in first]
    covered = " ".join(windows).split()
    assert set(long_text.split()) <= set(covered)  # every word lands in some window


def test_inference_precisions_agree_with_fp32(data, tmp_path, capsys):
    """evaluate / predict --precision bf16 and int8 give (nearly) the fp32 predictions; a bad precision is one line."""
    from bertkit.model.precision import for_inference
    from bertkit.inference import TextClassifier
    assert main(finetune_args(data, tmp_path / "run")) == 0
    model_dir = tmp_path / "run" / "model"
    capsys.readouterr()
    accuracy = {}
    for precision in ("fp32", "bf16", "int8"):
        assert main(["evaluate", str(model_dir), "--input", str(data["test"]), "--precision", precision]) == 0
        accuracy[precision] = json.loads(capsys.readouterr().out)["accuracy"]
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.05 and abs(accuracy["int8"] - accuracy["fp32"]) <= 0.05
    texts = [review(random.Random(i), i % 2 == 0) for i in range(20)]
    fp32 = TextClassifier.load(model_dir).predict(texts)
    for precision in ("bf16", "int8"):
        other = TextClassifier.load(model_dir, precision=precision).predict(texts)
        for a, b in zip(fp32, other):
            assert abs(a["probs"]["pos"] - b["probs"]["pos"]) < 0.05
    model = TextClassifier.load(model_dir).model
    assert for_inference(model, "fp32") is model  # fp32 is the model itself; the others are copies
    assert next(for_inference(model, "bf16").parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32
    assert main(["predict", str(model_dir), "--text", "great film", "--precision", "fp16"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(BertkitError, match="precision must be one of"):
        for_inference(model, "fp16")
    # the compiled, shape-stable model predicts the same (fp32: to float rounding)
    compiled = TextClassifier.load(model_dir, compile=True).predict(texts)
    for a, b in zip(fp32, compiled):
        assert a["label"] == b["label"] and abs(a["probs"]["pos"] - b["probs"]["pos"]) < 1e-5
    assert main(["predict", str(model_dir), "--text", "great film", "--precision", "int8", "--compile"]) == 2
    assert "not int8" in capsys.readouterr().err
