"""`bertkit serve` as a real process on 127.0.0.1, under abuse: clients that hang up, a long /explain beside
/predict, malformed / oversize / odd-unicode bodies, connections cut mid-body and mid-response, SIGTERM under
load. Every answer is JSON with a 4xx for the client's mistakes (never 500), the server stays up, nothing takes
more than a few seconds."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from bertkit import BertConfig, Tokenizer, build_model, save_model  # noqa: E402
from test_serve import WORDS, folders, texts  # noqa: E402, F401 - folders: the tiny models fixture

LONG = " ".join(WORDS * 60)  # 1,440 words


BERTKIT = [sys.executable, "-c", "import sys; from bertkit.cli import main; sys.exit(main())"]  # as installed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    """`bertkit serve ARGS` on a free port; returns once /health answers."""
    port = free_port()
    proc = subprocess.Popen([*BERTKIT, "serve", *args, "--port", str(port), "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start in 60 s")


@pytest.fixture(scope="module")
def served(folders, tmp_path_factory):
    """One server for the whole file (starting one takes seconds): every kind of tiny model, a QA model reading
    128 tokens (room for a 64-token question), an index. The SIGTERM test, last, ends it."""
    qa = tmp_path_factory.mktemp("qa128") / "qa128"
    tok = Tokenizer.load(folders / "qa")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=128)
    save_model(qa, build_model(config, "question_answering"), tok, reading={"max_length": 128})
    models = [str(folders / n) for n in ("sentiment", "short", "ner", "qa", "mlm", "encoder")] + [str(qa)]
    proc, url = start([*models, "--index", str(folders / "emb"), "--explain-timeout-s", "3",
                       "--explain-payload-kb", "16", "--explain-max-words", "2000", "--grace-s", "1"])
    yield proc, url
    proc.kill()
    proc.wait()


@pytest.fixture
def server(served) -> str:
    return served[1]


def post(url: str, path: str, body, timeout: float = 10, client=httpx) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(url + path, content=content, headers={"content-type": "application/json"}, timeout=timeout)


def check_json(r: httpx.Response, *statuses: int) -> dict:
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.text[:300]
    body = r.json()
    if r.status_code >= 400:
        assert set(body) == {"error", "error_type"} and "Traceback" not in body["error"]
    return body


def raw_request(url: str, path: str, body: bytes) -> socket.socket:
    host, port = url.rsplit("/", 1)[1].split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return s


def test_clients_that_hang_up_cost_the_next_request_nothing(server):
    """20 clients each send 32 long texts (hundreds of windows each) and close: without dropping their work the
    next request waited for all of it."""
    before = httpx.get(server + "/info").json()["batching"]
    body = json.dumps({"inputs": [LONG] * 32}).encode()
    sockets = [raw_request(server, "/predict", body) for _ in range(20)]
    time.sleep(0.5)  # every request read and queued
    for s in sockets:
        s.close()
    time.sleep(0.3)  # the handlers see the hang-ups (they look every 0.1 s)
    t = time.perf_counter()
    check_json(post(server, "/predict", {"inputs": ["a dull plot"]}), 200)
    assert time.perf_counter() - t < 1.0
    after = httpx.get(server + "/info").json()["batching"]
    assert after["dropped"] - before["dropped"] >= 32 * 18  # at most the batch running at the time was read


def test_predict_is_answered_while_a_long_explain_runs(server):
    check_json(post(server, "/explain", {"text": "a really superb film"}, timeout=30), 200)  # imports done
    words = " ".join(WORDS * 40)  # 960 words: about 60 windows of the windowed classifier
    with ThreadPoolExecutor(1) as pool:
        t0 = time.perf_counter()
        explaining = pool.submit(post, server, "/explain", {"text": words, "methods": ["ig", "occlusion", "lime"],
                                                            "steps": 200, "faithfulness": True})
        time.sleep(0.5)
        waits = []
        for x in texts(5, seed=4):
            t = time.perf_counter()
            check_json(post(server, "/predict", {"inputs": [x]}), 200)
            waits.append(time.perf_counter() - t)
        assert not explaining.done()  # it was running all along
        r = explaining.result()
        assert time.perf_counter() - t0 < 5  # stopped at its 3 s limit
    assert max(waits) < 1.0, waits
    assert check_json(r, 503)["error_type"] == "timeout" and "--explain-timeout-s" in r.json()["error"]
    check_json(post(server, "/explain", {"text": "a really superb film"}), 200)  # the next one runs normally


def test_explain_budget_and_body_caps(server):
    r = post(server, "/explain", {"text": "film " * 2001})
    assert check_json(r, 413)["error_type"] == "too_long" and "2,001 words" in r.json()["error"]
    r = post(server, "/explain", {"text": "film " * 4000})  # 20 kB: over the /explain cap, fine elsewhere
    assert check_json(r, 413)["error_type"] == "payload_too_large" and "--explain-payload-kb" in r.json()["error"]
    check_json(post(server, "/predict", {"inputs": ["film " * 4000]}), 200)
    r = post(server, "/predict", b'{"inputs": ["' + b"a " * 1_100_000 + b'"]}')  # 2.2 MB
    assert check_json(r, 413)["error_type"] == "payload_too_large"


def test_a_longer_second_question_is_answered(server):
    """The tokenizer kept the truncation of the last QA call: a longer question next was a 500."""
    ctx = "alice lives in paris and bob lives in paris"
    for q in ("where", "where does alice live " * 16):  # the second: 64 tokens, cut to the first 64
        answer = check_json(post(server, "/predict", {"model": "qa128", "questions": [q], "contexts": [ctx]}), 200)
        assert set(answer["predictions"][0]) == {"answer", "score", "start", "end"}


BAD_BODIES = [
    b"", b"{", b"[]", b"null", b"42", b'"text"', b"{not json}", b'{"inputs": ["a"]',  # malformed
    b"\xff\xfe\x00binary", b'{"inputs": "\xff"}',  # not UTF-8
    {"inputs": 3}, {"inputs": [1, 2]}, {"inputs": {"a": 1}}, {"inputs": [["a"]]}, {"inputs": None},  # wrong types
    {"inputs": []}, {"inputs": [""]}, {"inputs": ["   "]}, {}, {"model": 1, "inputs": "a"},  # empty
    {"inputs": "a", "top_k": 0}, {"inputs": "a", "top_k": "x"}, {"inputs": "a", "top_k": 1e30},
    {"inputs": "a", "a": {"b": [{"c": [None] * 50}]}}, {"inputs": [[[[[]]]]]},  # nested garbage
    {"questions": ["q"], "contexts": ["c", "d"]}, {"text": None}, {"text": ["a"]}, {"query": 5},
    {"text": "a", "methods": "ig"}, {"text": "a", "steps": -1}, {"text": "a", "target": "no-such-label"},
    {"inputs": "a", "truncate": "x"}, {"inputs": "a", "normalize": 3}, {"inputs": "a", "dimensions": 0},  # TEI's
    {"inputs": "a", "dimensions": 10_000}, {"inputs": [["a", "b", "c"]], "raw_scores": True}, {"inputs": [[]]},
    {"inputs": "a", "truncation_direction": "left"}, {"inputs": "a", "prompt_name": "query"},
    {"query": "a", "texts": []}, {"query": "", "texts": ["a"]}, {"query": "a", "texts": "a"},
    {"input": []}, {"input": "a", "encoding_format": "hex"}, {"input": [1, 2]}, {"input": "a", "model": 3},  # OpenAI's
    {"inputs": "a", "parameters": {"top_k": "x"}}, {"inputs": "a", "parameters": {"top_k": 0}},
    {"inputs": "a", "parameters": 5},
]
ODD_TEXTS = ["\\ud800 lone", "a\x00b", "\u202eevil\u202c film", "\U0001F600" * 10_000, "\ufeff", "\u0301" * 50,
             "a\u2028b", "\x1b[31mred", "\uffff", "עברית film"]
ROUTES = ["/predict", "/embed", "/similar", "/explain", "/", "/rerank", "/tokenize", "/v1/embeddings"]


def test_fuzz_bad_bodies_and_odd_unicode(server):
    t0 = time.perf_counter()
    cases = [(route, body) for route in ROUTES for body in BAD_BODIES]
    for text in ODD_TEXTS:
        lone = text.startswith("\\ud800")  # a lone surrogate, escaped as JSON allows
        raw = (lambda key: ('{"%s": "%s"}' % (key, text)).encode()) if lone else None
        cases += [("/predict", raw("inputs") if lone else {"inputs": [text]}),
                  ("/predict", raw("inputs") if lone else {"model": "short", "inputs": text}),
                  ("/predict", {"model": "ner", "inputs": [text]}), ("/predict", {"model": "mlm", "inputs": [text]}),
                  ("/predict", {"model": "qa", "questions": [text], "contexts": [text]}),
                  ("/embed", raw("inputs") if lone else {"inputs": text}),
                  ("/similar", {"query": text}), ("/explain", raw("text") if lone else {"text": text[:300]})]
    keep_alive = httpx.Client()
    for route, body in cases:
        t = time.perf_counter()
        r = post(server, route, body, client=keep_alive)
        check_json(r, 200, 400, 413, 422)
        assert time.perf_counter() - t < 5, (route, body if isinstance(body, bytes) else str(body)[:80])
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    assert time.perf_counter() - t0 < 60


def test_connections_cut_mid_body_and_mid_response(server):
    for path in ROUTES:
        s = raw_request(server, path, b"")  # promises no body ...
        s.close()
        host, port = server.rsplit("/", 1)[1].split(":")
        s = socket.create_connection((host, int(port)))  # ... and one cut in the middle of its body
        s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n{\"inputs\": [\"a")
        s.close()
        s = raw_request(server, path, json.dumps({"inputs": texts(32, seed=9), "query": "a", "text": "a b"}).encode())
        s.recv(10)  # the answer has started: hang up in the middle of it
        s.close()
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    check_json(post(server, "/predict", {"inputs": ["still here"]}), 200)


def test_sigterm_under_load_answers_json(served):
    """Requests in flight when SIGTERM comes may finish (200) within the grace period (1 s here); those still
    waiting then get 503 JSON, never a plain-text 500; the process ends soon after. Last: it ends the server."""
    proc, url = served
    body = {"inputs": [" ".join(WORDS * 20)] * 32}  # about 1,000 windows: tens of ms of work each
    answers, lock = [], threading.Lock()

    def client():
        try:
            r = post(url, "/predict", body, timeout=20)
            with lock:
                answers.append((r.status_code, r.headers.get("content-type", ""), r.text[:200]))
        except httpx.TransportError:  # the server closed before accepting it
            pass

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # all sent, a few answered, most queued
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=20)
    assert proc.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
    assert time.perf_counter() - t0 < 10
    statuses = {s for s, _, _ in answers}
    assert statuses <= {200, 503} and 503 in statuses, answers
    assert all(ct.startswith("application/json") for _, ct, _ in answers), answers
    assert all(json.loads(text)["error_type"] == "unavailable" for s, _, text in answers if s == 503)
