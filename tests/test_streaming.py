"""Batch inference over files of any size (predict and evaluate read, predict and write a chunk at a time; a killed
predict resumes) and truncation that is never silent (finetune, predict, evaluate; model cards without local paths)."""

import json
import random
from pathlib import Path

import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, save_model
from bertkit.cli import main
from bertkit.data import tasks as T
from bertkit.data.labelled import encode_classification, encode_tagged
from bertkit.evaluate.runner import evaluate_file
from bertkit.evaluate.scores import score
from bertkit.inference import TextClassifier, pipeline
from bertkit.inference.batches import forward
from bertkit.inference.stream import CHUNK_ENV

WORDS = ["good", "bad", "film", "plot", "great", "dull", "story", "actor", "fine", "poor", "the", "a", "was"]
MAX = 16  # tokens the tiny models read: texts of 2..30 words, so some are cut


def _texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS, k=rng.randint(2, 30))), "pos" if i % 2 else "neg") for i in range(n)]


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("stream")
    rows = _texts(50)
    (d / "in.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    (d / "in.txt").write_text("".join(f"{t}\n" for t, _ in rows), encoding="utf-8")
    rng = random.Random(1)
    (d / "in.conll").write_text("".join("".join(f"{x} {rng.choice(['O', 'B-X', 'I-X'])}\n" for x in t.split()) + "\n"
                                        for t, _ in rows), encoding="utf-8")
    tok = Tokenizer.train([t for t, _ in rows], vocab_size=60, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    reading = {"max_length": MAX}
    return {"dir": d, "rows": rows, "tok": tok,
            "clf": save_model(d / "clf", build_model(config, "sequence_classification", 2), tok,
                              labels=["neg", "pos"], reading=reading),
            "windows": save_model(d / "windows", build_model(config, "sequence_classification", 2), tok,
                                  labels=["neg", "pos"], reading={**reading, "window_stride": 4}),
            "ner": save_model(d / "ner", build_model(config, "token_classification", 3), tok,
                              labels=["B-X", "I-X", "O"], reading=reading),
            "encoder": save_model(d / "encoder", build_model(config, "encoder"), tok)}


def _predict(args, capsys, chunk: int, monkeypatch) -> tuple[list[dict], str]:
    monkeypatch.setenv(CHUNK_ENV, str(chunk))
    assert main([str(a) for a in ["predict", *args, "-q"]]) == 0
    out, err = capsys.readouterr()
    return [json.loads(x) for x in out.splitlines()], err


def test_streamed_predict_equals_one_chunk(w, capsys, monkeypatch):
    d = w["dir"]
    for model, data in ((w["clf"], d / "in.csv"), (w["windows"], d / "in.csv"), (w["ner"], d / "in.txt")):
        whole, _ = _predict([model, "--input", data], capsys, 10_000, monkeypatch)
        streamed, _ = _predict([model, "--input", data], capsys, 7, monkeypatch)
        assert len(whole) == 50 and streamed == whole
    texts = [t for t, _ in w["rows"]]
    assert [r["text"] for r in streamed] == texts


def test_killed_predict_resumes_to_the_uninterrupted_output(w, tmp_path, capsys, monkeypatch):
    d = w["dir"]
    full, partial = tmp_path / "full.jsonl", tmp_path / "out.jsonl"
    args = ["predict", w["clf"], "--input", d / "in.csv", "-q"]
    monkeypatch.setenv(CHUNK_ENV, "7")
    assert main([str(a) for a in args + ["--output", full]]) == 0
    original, calls = TextClassifier.__call__, []

    def dies_at_chunk_4(self, *a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill would: after 3 complete chunks
        return original(self, *a, **k)

    monkeypatch.setattr(TextClassifier, "__call__", dies_at_chunk_4)
    assert main([str(a) for a in args + ["--output", partial]]) == 130
    monkeypatch.setattr(TextClassifier, "__call__", original)
    assert len(partial.read_text().splitlines()) == 21
    with open(partial, "a") as f:
        f.write('{"text": "a line cut by the k')  # the kill came mid-write
    capsys.readouterr()
    assert main([str(a) for a in args + ["--output", partial]]) == 2  # no --resume: never appended to or replaced
    assert "--resume" in capsys.readouterr().err
    assert main([str(a) for a in args + ["--output", partial, "--resume"]]) == 0
    assert partial.read_bytes() == full.read_bytes()
    assert not (tmp_path / "out.jsonl.resume.json").exists()
    assert main([str(a) for a in args + ["--output", partial, "--resume"]]) == 2  # finished: nothing to resume
    assert "no unfinished run" in capsys.readouterr().err


def test_resume_refuses_another_input(w, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv(CHUNK_ENV, "7")
    monkeypatch.setattr(TextClassifier, "__call__", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["predict", str(w["clf"]), "--input", str(w["dir"] / "in.csv"), "--output", str(out), "-q"]) == 130
    other = tmp_path / "other.csv"
    other.write_text("text\nanother text\n")
    capsys.readouterr()
    assert main(["predict", str(w["clf"]), "--input", str(other), "--output", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertkit: error: --resume:") and "input" in err and err.count("\n") == 1


def test_streamed_evaluate_equals_the_in_memory_scores(w, monkeypatch, capsys):
    d = w["dir"]
    monkeypatch.setenv(CHUNK_ENV, "7")
    for model, path, task in ((w["clf"], d / "in.csv", "classification"), (w["windows"], d / "in.csv",
                                                                             "classification"),
                              (w["ner"], d / "in.conll", "ner")):
        streamed = evaluate_file(model, path)
        p = pipeline(model)
        if task == "ner":
            context = T.read_tagged(path)
            items = encode_tagged(p.tokenizer, context, p.labels, MAX)
        else:
            context = None
            items = encode_classification(p.tokenizer, T.read_examples(path), p.labels, "single_label", MAX,
                                          p.reading.window_stride)
        whole = score(items, forward(p.model, items, p.tokenizer.pad_id), task, "single_label", p.labels,
                      p.reading, context)
        cut = streamed.pop("truncated")
        assert cut == (0 if model == w["windows"] else sum(it.unread_words is not None for it in items)) and (
            model == w["windows"] or cut > 0)
        assert streamed == whole  # exactly: the same logits, gathered a chunk at a time


def test_truncation_is_said_per_text_and_in_a_note(w, capsys, monkeypatch):
    long_text = " ".join(["good"] * 20)  # 20 one-token words: 14 read at max_length 16 ([CLS], [SEP])
    assert w["tok"].encode(long_text, truncation=None).ids.count(w["tok"].token_to_id("good")) == 20
    for model in (w["clf"], w["ner"]):
        out, err = _predict([model, "--text", long_text, "--text", "good film"], capsys, 7, monkeypatch)
        assert out[0]["truncated"] == {"words_not_read": 6} and "truncated" not in out[1]
        assert "note: 1 of 2 texts is longer than max_length 16 tokens and was cut" in err
        assert ("--window-stride" in err) == (model == w["clf"])
    out, err = _predict([w["windows"], "--text", long_text], capsys, 7, monkeypatch)
    assert "truncated" not in out[0] and "longer than" not in err  # windows read it all
    capsys.readouterr()
    evaluate_file(w["clf"], w["dir"] / "in.csv")
    assert "texts are longer than max_length 16 tokens and were cut" in capsys.readouterr().err


def test_finetune_counts_cut_examples_and_its_card_has_no_local_path(w, tmp_path, capsys):
    d, tok = w["dir"], w["tok"]
    out = tmp_path / "run"
    assert main(["finetune", str(w["encoder"]), "--train", str(d / "in.csv"), "--dev", str(d / "in.csv"), "--out",
                 str(out), "--max-length", str(MAX), "--batch-size", "16", "--epochs", "1", "-q"]) == 0
    stdout = capsys.readouterr().out
    cut = sum(len(tok.encode(t, truncation=None).ids) > MAX for t, _ in w["rows"])
    assert 0 < cut < 50
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["truncated"]["train"] == metrics["truncated"]["dev"] == cut
    assert f"{cut} of 50 train examples, {cut} of 50 dev examples are longer than max_length 16" in stdout
    card = (out / "model" / "README.md").read_text()
    assert str(tmp_path) not in card and str(d) not in card and "/" not in card.split("## Data")[1].split("##")[0]
    assert "- train: `in.csv (" in card and "sha1 " in card


def test_a_bad_line_in_a_later_chunk_names_its_line_after_the_rows_before_it(w, tmp_path, capsys, monkeypatch):
    rows = [t for t, _ in w["rows"][:30]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows) + '{"text": 3}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv(CHUNK_ENV, "7")
    assert main(["predict", str(w["clf"]), "--input", str(bad), "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"bertkit: error: {bad}:31: field 'text' is a number, not a string\n"
    assert [json.loads(x)["text"] for x in out.read_text().splitlines()] == rows[:28]  # 4 complete chunks
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["predict", str(w["ner"]), "--input", str(empty), "--output", str(tmp_path / "e.jsonl")]) == 2
    assert "no texts in this file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.txt", "out.jsonl", "out.jsonl.resume.json"]
