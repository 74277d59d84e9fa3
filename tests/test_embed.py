"""Embeddings: layer and pooling choices, exact search equal to brute force, IVF, files, word arithmetic."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertkit import BertConfig, Tokenizer, build_model, load_model, save_model
from bertkit.cli import main
from bertkit.inference import embed_texts
from bertkit.embeddings import VectorIndex, knn_classify, nearest_words, similar

TEXTS = ["the film was great", "a wonderful story", "really boring plot", "terrible acting and cast",
         "quite a great cast", "the plot was boring", "a story with a great cast", "boring and terrible"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = Tokenizer.train(TEXTS * 3, vocab_size=150, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48,
                        max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("embed") / "model"
    save_model(folder, build_model(config, "encoder"), tok)
    return folder


def test_pooling_and_layers(model_dir):
    loaded = load_model(model_dir)
    m, tok = loaded.model, loaded.tokenizer
    last = embed_texts(m, tok, TEXTS, progress=False)
    torch.testing.assert_close(embed_texts(m, tok, TEXTS, layer=-1, progress=False), last)
    torch.testing.assert_close(embed_texts(m, tok, TEXTS, layer=2, progress=False), last)
    assert not torch.allclose(embed_texts(m, tok, TEXTS, pooling="cls", progress=False), last)
    # layer 0 is the embedding output: check one text by hand
    enc = tok.encode(TEXTS[2])
    with torch.no_grad():
        x = m.bert.embeddings(torch.tensor([enc.ids]), torch.tensor([enc.type_ids]))[0]  # (T, C)
    torch.testing.assert_close(embed_texts(m, tok, TEXTS, layer=0, progress=False)[2], F.normalize(x.mean(0), dim=0))


def test_exact_search_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    vectors, queries = torch.randn(500, 16, generator=g), torch.randn(33, 16, generator=g)
    scores, ids = VectorIndex(vectors, batch_size=10).search(queries, k=7)  # 4 query batches
    v = vectors.numpy() / np.linalg.norm(vectors.numpy(), axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    sims = q @ v.T
    ref = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids.numpy(), ref)
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(sims, ref, axis=1), atol=1e-6)
    assert VectorIndex(vectors).search(queries[:2], k=1000)[1].shape == (2, 500)  # k capped at N


def test_ivf_probing_every_list_is_exact():
    g = torch.Generator().manual_seed(1)
    vectors, queries = torch.randn(400, 8, generator=g), torch.randn(20, 8, generator=g)
    exact = VectorIndex(vectors).search(queries, k=5)
    ivf = VectorIndex(vectors, ivf=True, nlist=10, nprobe=10)
    assert len(ivf.lists) == 10 and sum(len(x) for x in ivf.lists) == 400
    for a, b in zip(ivf.search(queries, k=5), exact):
        torch.testing.assert_close(a, b)
    approx = VectorIndex(vectors, ivf=True, nlist=10, nprobe=3).search(queries, k=5)[1]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(approx.tolist(), exact[1].tolist())])
    assert recall > 0.5


def test_knn_classify():
    train = F.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]), dim=-1)
    assert knn_classify(train, ["a", "a", "b", "b"], F.normalize(torch.tensor([[1.0, 0.2], [0.1, 1]]), dim=-1),
                        k=2) == ["a", "b"]


def test_embed_and_similar_files(model_dir, tmp_path, capsys):
    data = tmp_path / "texts.csv"
    data.write_text("text,label\n" + "".join(f"{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "emb"
    assert main(["embed", str(model_dir), "--input", str(data), "--out", str(out), "--layer", "1", "-q"]) == 0
    assert {p.name for p in out.iterdir()} == {"vectors.npy", "index.jsonl", "meta.json", "tsne.png", ".bertkit-output"}
    vectors = np.load(out / "vectors.npy")
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert records[3] == {"row": 3, "text": TEXTS[3], "label": "pos"}
    r = similar(out, [TEXTS[5], TEXTS[0]], k=3)
    assert [hits[0]["row"] for hits in r["results"]] == [5, 0]  # each text is its own nearest neighbour
    assert r["results"][0][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert main(["similar", str(out), "--query", TEXTS[1], "--k", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"#1  [pos]  {TEXTS[1]}" in printed and "search" in printed
    txt = tmp_path / "plain.txt"
    txt.write_text("\n".join(TEXTS[:3]) + "\n\n")
    assert main(["embed", str(model_dir), "--input", str(txt), "--out", str(tmp_path / "e2"), "-q"]) == 0
    assert not (tmp_path / "e2" / "tsne.png").exists()  # no labels, no plot


def test_word_arithmetic_over_the_input_embeddings(model_dir):
    loaded = load_model(model_dir)
    m, tok = loaded.model, loaded.tokenizer
    table = m.bert.embeddings.word.weight
    row = {w: tok.token_to_id(w) for w in ("great", "film", "plot", "story")}
    assert None not in row.values()
    with torch.no_grad():  # make "story" exactly great - film + plot (normalised terms), scaled
        n = {w: F.normalize(table[row[w]], dim=0) for w in ("great", "film", "plot")}
        table[row["story"]] = 3.0 * (n["great"] - n["film"] + n["plot"])
    best, score = nearest_words(m, tok, "great - film + plot", k=3)[0]
    assert best == "story" and score == pytest.approx(1.0, abs=1e-5)
    assert all(w not in ("great", "film", "plot") for w, _ in nearest_words(m, tok, "great - film + plot", k=10))


@pytest.mark.parametrize("args, message", [
    (["similar", "{model}", "--query", "x"], "not an embeddings directory"),
    (["similar", "{model}", "--words", "qqqqzzz"], "is not in the vocabulary"),
    (["similar", "{model}"], "give --query"),
    (["embed", "{model}", "--input", "{missing}", "--out", "{tmp}/o"], "missing.csv"),
    (["embed", "{model}", "--input", "{data}", "--out", "{tmp}/o", "--layer", "9"], "layer 9 does not exist"),
])
def test_errors_are_one_line(model_dir, tmp_path, capsys, args, message):
    data = tmp_path / "d.csv"
    data.write_text("text\nhello\n")
    fill = {"model": str(model_dir), "missing": str(tmp_path / "missing.csv"), "tmp": str(tmp_path), "data": str(data)}
    assert main([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
