"""`bertkit serve` as a real process on 127.0.0.1, called by clients that already exist, unmodified:
huggingface_hub's InferenceClient (TEI's routes) and openai's client (/v1/embeddings). Their outputs equal
bertkit's own pipeline(); a wrong key gets 401; TEI's answers to a text too long, in its statuses and words."""

import base64

import numpy as np
import pytest
import torch
from torch.testing import assert_close

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from bertkit import pipeline  # noqa: E402
from test_serve import folders, texts  # noqa: E402, F401 - folders: the tiny models fixture
from test_serve_fuzz import LONG, start  # noqa: E402

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def server(folders):
    """An encoder (the default: POST / embeds) and a classifier reading windows, behind an API key."""
    proc, url = start([str(folders / "encoder"), str(folders / "sentiment"), str(folders / "short"),
                       "--api-key", KEY, "--cors-origin", "https://app.example"])
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub refuses every URL, loopback included, in offline mode; these calls go to 127.0.0.1 only."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_inference_client_feature_extraction_and_text_classification(server, folders, online):
    from huggingface_hub import InferenceClient
    xs = texts(3, seed=5)
    encoder = pipeline(folders / "encoder")
    client = InferenceClient(base_url=server, api_key=KEY)  # POST /: the default model is the encoder
    got = client.feature_extraction(xs[0])
    assert got.shape == (1, 16)
    assert_close(torch.from_numpy(got), torch.from_numpy(encoder.encode(xs[:1])), rtol=1e-5, atol=1e-5)

    classifier = pipeline(folders / "sentiment")
    long = " ".join(texts(1, seed=6, longest=60))  # longer than 24 tokens: read as windows, as pipeline() does
    for x in (xs[1], long):
        got = InferenceClient(base_url=f"{server}/models/sentiment", api_key=KEY).text_classification(x)
        want = classifier([x])[0]["probs"]
        assert [g.label for g in got] == sorted(want, key=want.get, reverse=True)
        assert_close(torch.tensor([g.score for g in got]), torch.tensor([want[g.label] for g in got]), rtol=0,
                     atol=2e-6)  # pipeline() rounds to 6 digits


def test_openai_client_embeddings(server, folders):
    import openai
    xs = texts(4, seed=7)
    want = torch.from_numpy(pipeline(folders / "encoder").encode(xs))
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)
    for fmt in (openai.NOT_GIVEN, "float"):  # the client asks for base64 unless told otherwise
        r = client.embeddings.create(input=xs, model="encoder", encoding_format=fmt)
        assert r.model == "encoder" and [d.index for d in r.data] == [0, 1, 2, 3]
        assert_close(torch.tensor([d.embedding for d in r.data]), want, rtol=1e-5, atol=1e-6)
        assert r.usage.prompt_tokens == r.usage.total_tokens == sum(
            len(e.ids) for e in pipeline(folders / "encoder").tokenizer.encode_all(xs))
    raw = httpx.post(f"{server}/v1/embeddings", json={"input": xs[0], "encoding_format": "base64"}, headers=auth())
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert_close(torch.from_numpy(vector.copy()), want[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong").embeddings.create(input=xs, model="encoder")


def test_api_key_and_cors(server):
    for headers in ({}, auth("wrong"), {"Authorization": KEY}):
        r = httpx.post(f"{server}/embed", json={"inputs": "a film"}, headers=headers)
        assert r.status_code == 401 and r.json()["error_type"] == "unauthorized", r.text
    assert httpx.get(f"{server}/info").status_code == 401 and httpx.get(f"{server}/metrics").status_code == 401
    assert httpx.get(f"{server}/health").status_code == 200  # probes carry no key
    r = httpx.get(f"{server}/info", headers={**auth(), "Origin": "https://app.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    info = r.json()
    assert info["model_id"] == "encoder" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 64 and info["max_client_batch_size"] == 32 and len(info["models"]) == 3
    other = httpx.get(f"{server}/info", headers={**auth(), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_tei_bodies_and_errors(server, folders):
    def post(path, body):
        return httpx.post(f"{server}{path}", json=body, headers=auth(), timeout=30)

    # truncate false (TEI's default) and a text over max_length: TEI's 422 and words; truncate true reads the start
    encoder = pipeline(folders / "encoder")
    n = len(encoder.tokenizer.encode_all([LONG], truncation=None)[0].ids)
    r = post("/embed", {"inputs": LONG, "truncate": False})
    assert r.status_code == 422 and r.json() == {
        "error": f"Input validation error: `inputs` must have less than 64 tokens. Given: {n}",
        "error_type": "validation"}
    cut = post("/embed", {"inputs": LONG, "truncate": True}).json()
    assert_close(torch.tensor(cut), torch.from_numpy(pipeline(folders / "encoder").encode([LONG])), rtol=1e-5,
                 atol=1e-6)
    assert post("/predict", {"inputs": LONG, "truncate": False}).status_code == 200  # a classifier reading windows
    assert post("/embed", {"inputs": [], "normalize": True}).status_code == 400  # TEI: empty is 400

    raw = torch.tensor(post("/embed", {"inputs": ["a dull film"], "normalize": False}).json())
    assert abs(raw.norm() - 1) > 1e-3  # not scaled to unit length; scaled, it is pipeline()'s vector
    assert_close(raw / raw.norm(), torch.from_numpy(encoder.encode(["a dull film"])), rtol=1e-5, atol=1e-6)

    batch = post("/predict", {"inputs": [["a dull film"], ["a superb plot", "the cast"]], "raw_scores": True})
    assert batch.status_code == 422  # texts and pairs in one batch
    pairs = post("/predict", {"inputs": [["a dull film", "the plot"], ["a superb plot", "the cast"]],
                              "raw_scores": True}).json()
    logits = pipeline(folders / "sentiment").logits(["a dull film", "a superb plot"], ["the plot", "the cast"])
    for got, row in zip(pairs, logits.tolist()):
        assert got == sorted(got, key=lambda p: -p["score"])
        assert_close(torch.tensor([{p["label"]: p["score"] for p in got}[n] for n in ("neg", "pos")]),
                     torch.tensor(row))

    # bertkit's own bodies on the shared routes are answered as before
    assert set(post("/predict", {"inputs": ["a dull film"], "model": "sentiment"}).json()) == {"model",
                                                                                              "predictions"}
    assert set(post("/embed", {"inputs": ["a dull film"]}).json()) == {"model", "embeddings"}

    # /rerank with an encoder served (no cross-encoder): cosine similarity, sorted
    xs = ["a dull film", "alice lives in paris", "the plot"]
    ranks = post("/rerank", {"query": "a dull plot", "texts": xs, "return_text": True}).json()
    v = encoder.encode(["a dull plot", *xs])
    assert [r["index"] for r in ranks] == sorted(range(3), key=lambda i: -float(v[0] @ v[i + 1]))
    assert_close(torch.tensor([r["score"] for r in ranks]), torch.tensor([float(v[0] @ v[r["index"] + 1])
                                                                          for r in ranks]), rtol=1e-5, atol=1e-5)
    assert [r["text"] for r in ranks] == [xs[r["index"]] for r in ranks]

    tokens = post("/tokenize", {"inputs": "alice lives in paris"}).json()[0]
    assert tokens[0]["special"] and tokens[-1]["special"] and tokens[0]["start"] is None
    assert [t["id"] for t in tokens] == encoder.tokenizer.encode("alice lives in paris").ids
    assert "".join(t["text"] for t in tokens[1:-1]).replace(" ", "") == "alicelivesinparis"
