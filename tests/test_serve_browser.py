"""`bertkit serve` as a user meets it: a real server process on a free loopback port, its page driven in Debian's
Chromium through Playwright, and a graceful stop on SIGTERM."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, save_model

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)),
                shutil.which("chromium"))
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium at /usr/bin/chromium "
                                    "(apt-get install chromium; .ci/run installs it)")
WORDS = ["a", "really", "superb", "dull", "film", "plot", "alice", "smith", "lives", "in", "paris"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`bertkit serve` of a tiny classifier and a tagger that calls every word B-PER, on a free port."""
    d = tmp_path_factory.mktemp("browser")
    tok = Tokenizer.train(WORDS * 3, vocab_size=50, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    save_model(d / "sentiment", build_model(config, "sequence_classification", 2), tok, labels=["negative", "positive"])
    tagger = build_model(config, "token_classification", 3)
    with torch.no_grad():
        tagger.classifier.weight.zero_()
        tagger.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    save_model(d / "ner", tagger, tok, labels=["O", "B-PER", "I-PER"])
    qa = build_model(config, "question_answering")
    with torch.no_grad():  # every span scores the same as "no answer": the answer is a tie-break, but one
        qa.qa.weight.zero_()
        qa.qa.bias.zero_()
    save_model(d / "qa", qa, tok)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bertkit.cli", "serve", str(d / "sentiment"), str(d / "ner"),
                             str(d / "qa"),
                             "--port", str(port), "--threads", "1"], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(url + "/health", timeout=1)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"bertkit serve did not start: {proc.stderr.read()}")
        time.sleep(0.2)
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@needs_chromium
def test_the_page_in_chromium(server, tmp_path):
    pytest.importorskip("playwright", reason="playwright is in the test extra: pip install -e '.[test]'")
    from playwright.sync_api import expect, sync_playwright
    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 800}, accept_downloads=True)
        page.goto(url)
        expect(page.locator("#status")).to_have_text("3 models ready")
        expect(page.get_by_label("Question")).to_be_hidden()  # fields follow the model's task
        page.get_by_label("Text", exact=True).fill("a really superb film")
        page.get_by_label("Text", exact=True).press("Enter")  # the keyboard submits
        expect(page.locator(".bar")).to_have_count(2, timeout=30_000)
        expect(page.locator("#status")).to_have_text("done (sentiment)")
        widths = page.locator(".bar > span").evaluate_all("els => els.map(e => parseFloat(e.style.width))")
        assert sum(widths) == pytest.approx(100, abs=0.5)
        # bars carry no hue of the word colouring (blue for the label, red against): grey, the predicted one darker
        fills = page.locator(".bar > span").evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
        assert len(set(fills)) == 2 and not {"rgb(9, 105, 218)", "rgb(207, 34, 46)"} & set(fills)
        words = page.locator(".words").first.locator(".word")
        expect(words).to_have_count(4)
        colours = words.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
        assert any(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in colours)
        expect(page.get_by_role("heading", name="Attention rollout")).to_be_visible()
        page.screenshot(path=str(tmp_path / "classifier.png"), full_page=True)

        with page.expect_download() as download:
            page.get_by_role("button", name="Download as standalone HTML").click()
        html = open(download.value.path(), encoding="utf-8").read()
        assert "<style>" in html and "class=\"bars\"" in html and "<script" not in html

        page.get_by_label("Attribution").select_option("occlusion")  # the method switch
        page.get_by_role("button", name="Analyse").click()
        expect(page.get_by_role("heading", name="Words by occlusion for", exact=False)).to_be_visible()

        page.set_viewport_size({"width": 360, "height": 740})  # a phone
        page.get_by_label("Model").select_option("ner")
        page.get_by_label("Text", exact=True).fill("alice smith lives in paris")
        page.get_by_label("Text", exact=True).press("Enter")
        expect(page.locator("mark.entity").first).to_be_visible(timeout=30_000)
        expect(page.get_by_label("Attribution")).to_be_hidden()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing wider than the screen
        page.screenshot(path=str(tmp_path / "ner-narrow.png"), full_page=True)

        page.get_by_label("Model").select_option("qa")
        page.get_by_label("Question").fill("where does alice live")
        page.get_by_label("Context").fill("alice smith lives in paris")
        page.get_by_label("Question").press("Enter")  # Enter in a field submits the form
        answer = page.locator("mark.answer")
        expect(answer).to_have_count(1, timeout=30_000)
        assert answer.inner_text() in "alice smith lives in paris"
        page.screenshot(path=str(tmp_path / "qa-narrow.png"), full_page=True)
        browser.close()


def test_sigterm_finishes_in_flight_requests(server):
    """Last in this file: it stops the server. A slow request in flight when SIGTERM arrives still gets its 200,
    and the process exits cleanly."""
    url, proc = server
    body = {"text": "a really superb film " * 4, "steps": 500, "methods": ["ig", "lime", "occlusion"],
            "faithfulness": True}
    got = []

    def slow():
        status, answer = call(url + "/explain", body)
        got.append((status, len(answer.get("words", [])), time.monotonic()))

    threads = [threading.Thread(target=slow) for _ in range(6)]  # one worker: they run one after another
    for t in threads:
        t.start()
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    for t in threads:
        t.join(60)
    assert [(status, words) for status, words, _ in got] == [(200, 16)] * 6
    assert max(done for _, _, done in got) > signalled  # some were in flight when the signal came
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    with pytest.raises(OSError):  # no longer listening
        call(url + "/health", timeout=2)
