"""`bertkit serve` in process (FastAPI's TestClient): every endpoint and error code, batching across requests, a
request split over batches, and outputs equal to pipeline(...) on the same inputs."""

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from bertkit import BertConfig, Tokenizer, build_model, pipeline, save_model  # noqa: E402
from bertkit.cli import main  # noqa: E402
from bertkit.embeddings import embed_file  # noqa: E402
from bertkit.serve import Limits, load_served  # noqa: E402
from bertkit.serve.app import create_app, load_index  # noqa: E402
from bertkit.serve.worker import Job  # noqa: E402

WORDS = ["the", "film", "was", "a", "story", "plot", "acting", "quite", "really", "cast", "and", "with", "great",
         "superb", "awful", "dull", "alice", "lives", "in", "paris", "where", "does", "bob", "live"]


def texts(n: int, seed: int = 0, longest: int = 20) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, longest))) for _ in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny random models of every kind: a classifier reading windows, one that does not, a tagger, QA, fill-mask,
    an encoder and an embeddings index of it."""
    d = tmp_path_factory.mktemp("serve")
    tok = Tokenizer.train(WORDS * 3, vocab_size=80, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    save_model(d / "sentiment", build_model(config, "sequence_classification", 2), tok, labels=["neg", "pos"],
               reading={"max_length": 24, "window_stride": 6})
    save_model(d / "short", build_model(config, "sequence_classification", 2), tok, labels=["no", "yes"],
               reading={"max_length": 16})
    save_model(d / "ner", build_model(config, "token_classification", 3), tok, labels=["O", "B-PER", "I-PER"])
    save_model(d / "qa", build_model(config, "question_answering"), tok)
    save_model(d / "mlm", build_model(config, "masked_lm"), tok)
    save_model(d / "encoder", build_model(config, "encoder"), tok)
    (d / "texts.txt").write_text("\n".join(texts(30, seed=1)) + "\n")
    embed_file(d / "encoder", d / "texts.txt", d / "emb", tsne=False, progress=False)
    return d


@pytest.fixture(scope="module")
def served(folders):
    return load_served([str(folders / n) for n in ("sentiment", "short", "ner", "qa", "mlm", "encoder")])


def client(served, folders=None, **limits):
    index = load_index(folders / "emb", served) if folders else None
    return TestClient(create_app(served, Limits(**{"threads": 1, **limits}), index))


def test_every_endpoint_gives_what_pipeline_gives(served, folders):
    xs = texts(12, seed=3, longest=40)  # some longer than 24 tokens: read as windows
    with client(served, folders) as c:
        r = c.post("/predict", json={"inputs": xs})
        assert r.status_code == 200 and r.json()["model"] == "sentiment"
        expected = pipeline(folders / "sentiment")(xs)
        for got, want in zip(r.json()["predictions"], expected):
            assert got["label"] == want["label"] and got["probs"] == pytest.approx(want["probs"], abs=1e-5)
        single = c.post("/predict", json={"model": "sentiment", "inputs": "a dull plot", "pairs": ["a film"]}).json()
        assert single["predictions"][0]["probs"] == pytest.approx(
            pipeline(folders / "sentiment")(["a dull plot"], ["a film"])[0]["probs"], abs=1e-5)

        ner = c.post("/predict", json={"model": "ner", "inputs": ["alice lives in paris"]}).json()["predictions"][0]
        assert ner == pipeline(folders / "ner")(["alice lives in paris"])[0]
        assert all("alice lives in paris"[e["start"]:e["end"]] == e["word"] and 0 <= e["score"] <= 1
                   for e in ner["entities"])
        qa = c.post("/predict", json={"model": "qa", "questions": ["where does alice live"],
                                      "contexts": ["alice lives in paris"]}).json()["predictions"][0]
        assert qa == pipeline(folders / "qa")(["where does alice live"], ["alice lives in paris"])[0]
        fills = c.post("/predict", json={"model": "mlm", "inputs": ["alice lives in [MASK]"], "top_k": 3}).json()
        assert len(fills["predictions"][0]) == 3

        r = c.post("/embed", json={"model": "encoder", "inputs": texts(3, longest=10)})
        assert r.status_code == 200, r.text
        vectors = r.json()["embeddings"]
        assert torch.tensor(vectors) == pytest.approx(torch.tensor(pipeline(folders / "encoder").encode(texts(3, longest=10))),
                                                      abs=1e-5)
        query = (folders / "texts.txt").read_text().splitlines()[4]
        hits = c.post("/similar", json={"query": query, "k": 3}).json()["results"][0]
        assert len(hits) == 3 and hits[0]["row"] == 4 and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)

        e = c.post("/explain", json={"text": "a really superb film", "methods": ["ig", "attention"]}).json()
        assert [w["text"] for w in e["words"]] == ["a", "really", "superb", "film"]
        assert len(e["word_scores"]["ig"]) == 4 and len(e["rollout"]) == 4
        assert e["target"] in ("neg", "pos") and sum(e["outputs"].values()) == pytest.approx(1.0)
        assert set(c.post("/explain", json={"text": "dull", "faithfulness": True}).json()["faithfulness"]) >= {"ig"}

        assert c.get("/health").json() == {"status": "ok"}
        info = c.get("/info").json()
        assert [m["name"] for m in info["models"]] == ["sentiment", "short", "ner", "qa", "mlm", "encoder"]
        assert info["models"][0]["reading"]["window_stride"] == 6 and info["models"][0]["labels"] == ["neg", "pos"]
        assert info["limits"]["max_inputs"] == 32
        metrics = c.get("/metrics").text
        assert 'bertkit_requests_total{endpoint="/predict",status="200"}' in metrics
        assert "bertkit_batch_inputs_bucket" in metrics and "bertkit_queue_depth" in metrics
        assert "/predict" in c.get("/openapi.json").json()["paths"] and c.get("/docs").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()


def check_error(r, status: int, error_type: str, *words: str):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type
    assert all(w in body["error"] for w in words), body["error"]
    assert "Traceback" not in r.text


def test_an_int8_model_is_explained_as_its_fp32_weights_explain_it(folders):
    """int8 layers carry no gradients: /explain of a model served in int8 answers as the fp32 model does."""
    answers = []
    for precision in ("fp32", "int8"):
        with client(load_served([str(folders / "sentiment")], precision)) as c:
            r = c.post("/explain", json={"text": "a really superb film", "methods": ["ig", "attention"]})
            assert r.status_code == 200, r.text
            answers.append(r.json())
    assert answers[1] == answers[0]


def test_error_codes(served, monkeypatch):
    with client(served, max_inputs=4, max_payload_mb=0.001, max_queue=1) as c:
        check_error(c.post("/predict", json={"inputs": ["a " * 600]}), 413, "payload_too_large", "1,048")
        chunked = iter([b'{"inputs": ["', b"a " * 600, b'"]}'])  # no Content-Length
        check_error(c.post("/predict", content=chunked, headers={"content-type": "application/json"}), 413,
                    "payload_too_large", "over the limit of 1,048")
        check_error(c.post("/predict", json={"inputs": ["a"] * 5}), 413, "too_many_inputs", "at most 4")
        check_error(c.post("/predict", json={"inputs": []}), 422, "empty")
        check_error(c.post("/predict", json={"inputs": ["ok", "  "]}), 422, "empty", "inputs[1]")
        check_error(c.post("/predict", content=b"{not json", headers={"content-type": "application/json"}), 422,
                    "validation")
        check_error(c.post("/predict", json={"inputs": ["a"], "colour": "red"}), 422, "validation", "colour")
        check_error(c.post("/predict", json={"inputs": [3]}), 422, "validation")
        check_error(c.post("/predict", json={"model": "nope", "inputs": ["a"]}), 422, "validation", "sentiment")
        check_error(c.post("/predict", json={"model": "short", "inputs": ["film " * 30]}), 422, "validation",
                    "at most 16 tokens")
        assert c.post("/predict", json={"inputs": ["film " * 30]}).status_code == 200  # windows: any length
        check_error(c.post("/explain", json={"model": "ner", "text": "a"}), 422, "validation", "text classifier")
        check_error(c.post("/explain", json={"text": "a", "methods": ["magic"]}), 422, "validation", "magic")
        check_error(c.post("/similar", json={"query": "a"}), 422, "validation", "--index")
        check_error(c.get("/nowhere"), 404, "not_found")

        # a full queue: the worker busy on one job, one more waiting
        started, release = threading.Event(), threading.Event()
        worker = c.app.state.worker
        worker.submit(Job(call=lambda: (started.set(), release.wait())))
        assert started.wait(timeout=30)  # the worker is inside the job, past the batcher's wait for more
        waiting = worker.submit(Job(call=lambda: None))
        r = c.post("/predict", json={"inputs": ["a"]})
        check_error(r, 429, "overloaded")
        assert r.headers["retry-after"] == "1"
        release.set()
        waiting.result(timeout=30)  # the queue is empty again before the next request

        # a model error: 500 without details, and the server keeps serving
        import bertkit.serve.worker as worker_module
        real = worker_module.run_op
        monkeypatch.setattr(worker_module, "run_op", lambda job, inputs: 1 / 0 if inputs[0][0] == "boom" else
                            real(job, inputs))
        check_error(c.post("/predict", json={"inputs": ["boom"]}), 500, "backend")
        assert c.post("/predict", json={"inputs": ["fine"]}).status_code == 200

        c.app.state.draining = True  # what SIGTERM sets: in-flight requests finish, new ones are refused
        check_error(c.post("/predict", json={"inputs": ["a"]}), 503, "unavailable")
        assert c.get("/health").status_code == 503
        c.app.state.draining = False
        metrics = c.get("/metrics").text
        for status in (413, 422, 429, 500, 503):
            assert f'status="{status}"' in metrics


def test_concurrent_requests_share_batches(served, folders):
    xs = texts(16, seed=5)
    with client(served, max_wait_ms=200) as c:
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda x: c.post("/predict", json={"inputs": [x]}).json()["predictions"][0], xs))
        stats = c.app.state.worker.stats
        assert stats["merged_batches"] >= 1 and stats["largest_batch"] > 1
        assert stats["batches"] < len(xs)
        hist = c.get("/metrics").text
        assert 'bertkit_batch_inputs_bucket{le="1.0"} ' + str(stats["batches"]) not in hist  # some batch held > 1
    expected = pipeline(folders / "sentiment")(xs)
    assert [g["probs"] for g in got] == [pytest.approx(e["probs"], abs=1e-5) for e in expected]


def test_a_large_request_is_split_over_batches_in_order(served, folders):
    xs = texts(32, seed=7, longest=30)
    with client(served, max_batch_tokens=64) as c:
        r = c.post("/predict", json={"inputs": xs})
        assert r.status_code == 200
        assert c.app.state.worker.stats["batches"] >= 8
    expected = pipeline(folders / "sentiment")(xs)
    assert [p["probs"] for p in r.json()["predictions"]] == [pytest.approx(e["probs"], abs=1e-5) for e in expected]


def test_two_hundred_mixed_requests_at_once(served, folders):
    """Good and bad requests concurrently: each good one answered correctly, each bad one its 4xx, /health up."""
    pool_texts = texts(40, seed=11)
    expected = {t: p["label"] for t, p in zip(pool_texts, pipeline(folders / "sentiment")(pool_texts))}
    rng = random.Random(0)
    bad = [({"inputs": []}, 422), ({"inputs": ["a"] * 9}, 413), ({"inputs": "x", "oops": 1}, 422),
           ({"model": "short", "inputs": "film " * 30}, 422), ({"model": "zzz", "inputs": "a"}, 422)]
    requests = []
    for i in range(200):
        if i % 4 == 0:
            requests.append(rng.choice(bad))
        else:
            requests.append(({"inputs": rng.sample(pool_texts, rng.randint(1, 8))}, 200))
    health = []
    with client(served, max_inputs=8, max_wait_ms=2) as c:
        def send(item):
            body, status = item
            r = c.post("/predict", json=body)
            health.append(c.get("/health").status_code)
            assert r.status_code == status, (body, r.text)
            if status == 200:
                assert [p["label"] for p in r.json()["predictions"]] == [expected[t] for t in body["inputs"]]
            else:
                assert set(r.json()) == {"error", "error_type"}
            return r.status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(send, requests))
    assert codes.count(200) == 150 and set(health) == {200}


def test_cli_mistakes_are_one_line(tmp_path, folders, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["serve", str(folders / "sentiment"), "--max-batch-tokens", "0"]) == 2
    assert main(["serve", str(folders / "sentiment"), "--port", "70000"]) == 2
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", str(folders / "sentiment"), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "in use" in err and all(line.startswith("bertkit: error:") for line in err.strip().splitlines())
    assert main(["serve", f"a={folders / 'sentiment'}", f"a={folders / 'short'}"]) == 2
    assert "two models named" in capsys.readouterr().err
    assert main(["serve", str(folders / "sentiment"), "--api-key", " ", "--port", "0"]) == 2
    assert capsys.readouterr().err == "bertkit: error: --api-key is empty\n"


def test_a_job_whose_client_left_never_reaches_the_model(served):
    """Cancelled while queued: never taken; cancelled while its first batches run: the rest are skipped."""
    from bertkit.serve import ModelWorker
    worker = ModelWorker(Limits(threads=1, max_batch_tokens=64)).start()
    started, release = threading.Event(), threading.Event()
    worker.submit(Job(call=lambda: (started.set(), release.wait())))
    assert started.wait(timeout=30)
    m = served["sentiment"]
    queued = Job(m, "classify", [(x, None) for x in texts(8, seed=1)])
    worker.submit(queued)
    queued.cancel()
    ran = []
    running = Job(m, "classify", [(x, None) for x in texts(32, seed=2, longest=30)])
    import bertkit.serve.worker as worker_module
    real = worker_module.run_op

    def run_op(job, inputs):  # the client hangs up during the first batch of this job
        ran.append(len(inputs))
        if job is running:
            running.cancel()
        return real(job, inputs)

    try:
        worker_module.run_op = run_op
        future = worker.submit(running)
        release.set()
        worker.submit(Job(call=lambda: None)).result(timeout=30)  # everything before it is done
    finally:
        worker_module.run_op = real
    assert queued.future.cancelled() and len(ran) == 1 and not future.done()
    assert worker.stats["dropped"] == 8 + 32 - ran[0] and worker.stats["inputs"] == ran[0]
    worker.stop()


def test_a_request_cancelled_at_the_end_of_the_grace_period_is_answered_503_json():
    """uvicorn cancels what is left after --grace-s and would send a plain-text 500; the guard answers 503 JSON."""
    import asyncio
    import json
    from types import SimpleNamespace

    from bertkit.serve.app import Guard
    from bertkit.serve.metrics import Metrics
    sent = []

    async def app(scope, receive, send):
        await asyncio.sleep(60)  # a request waiting for the model

    async def send(message):
        sent.append(message)

    async def scenario():
        guard = Guard(app, SimpleNamespace(draining=False), Metrics(), {}, (1000, "--max-payload-mb"))
        task = asyncio.create_task(guard({"type": "http", "path": "/predict", "headers": []}, None, send))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    asyncio.run(scenario())
    assert sent[0]["status"] == 503 and (b"content-type", b"application/json") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error_type"] == "unavailable"


def test_qa_second_question_longer_than_the_first(served):
    """A question longer than the last one was a 500 (the tokenizer kept the last call's truncation)."""
    with client(served) as c:
        for q in ("where", "where does alice live " * 5, "where does alice live " * 30):
            r = c.post("/predict", json={"model": "qa", "questions": [q], "contexts": ["alice lives in paris"]})
            assert r.status_code in (200, 422), r.text  # 422: a question filling the 64-token model
            assert r.status_code == 200 or "no room for windows" in r.json()["error"]
