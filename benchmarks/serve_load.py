"""Serving load: `bertkit serve` against the server a user would otherwise write, closed loop, on 127.0.0.1.

    pip install -e ".[bench,serve]"
    python benchmarks/serve_load.py --model runs/minilm-rt/model              # all-MiniLM-L6-v2 on rt-polarity
    python benchmarks/serve_load.py --model M --threads 1,2,4 --precisions fp32   # a --threads sweep

Each server runs as its own process on a free loopback port, loaded with the same model directory:
- bertkit: `bertkit serve MODEL --precision P [--threads T]` (dynamic batching across requests);
- baseline: FastAPI + transformers `pipeline("text-classification")` called once per request (a plain `def`
  handler, so FastAPI's thread pool runs requests side by side), the few lines most users would write.
For each concurrency C, C client threads each send one review (rt-polarity's test split, in order, cycling) per
request and send the next as soon as the answer arrives (closed loop), until --requests answers or --seconds pass.
Reported: requests/s, p50/p95/p99 latency, and for bertkit the mean inputs per model batch (from /metrics).
The last line: bertkit/baseline requests/s at concurrency 32 and both p99s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # never anything else: this measures a server, it does not load a network

BASELINE = '''
import sys
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline
import uvicorn

clf = pipeline("text-classification", model=sys.argv[1], top_k=None)
app = FastAPI()

class Body(BaseModel):
    inputs: str | list[str]

@app.get("/health")
def health():
    return {"status": "ok"}

@app.post("/predict")
def predict(body: Body):
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    return {"predictions": clf(texts, truncation=True)}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, timeout: float = 300) -> subprocess.Popen:
    # stderr into a file, not a pipe nobody reads while the server runs (a full pipe would block the server)
    log = tempfile.NamedTemporaryFile("w+", prefix="serve-load-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log = log.name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server failed to start: {' '.join(cmd)}\n{Path(log.name).read_text()}")
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not answer /health within {timeout:.0f} s: {' '.join(cmd)}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    notes = [line for line in Path(proc.log).read_text().splitlines() if "note:" in line]
    for line in notes:  # what the server said it chose (threads, ...) while it ran
        print(f"  server {line.strip()}", file=sys.stderr)
    Path(proc.log).unlink()


def load(port: int, texts: list[str], concurrency: int, requests: int, seconds: float) -> dict:
    """Closed loop: `concurrency` threads, one request in flight each. Latencies in ms of the 200 answers."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    sent = [0]
    stop_at = time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        while True:
            with lock:
                if sent[0] >= requests or time.monotonic() > stop_at:
                    return
                i = sent[0]
                sent[0] += 1
            body = json.dumps({"inputs": [texts[i % len(texts)]]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=120)
                ok = False
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if ok:
                    latencies.append(ms)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {"rps": len(latencies) / wall, "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)), "ok": len(latencies), "errors": errors[0]}


def batch_totals(port: int) -> tuple[float, float]:
    """(inputs, batches) run so far, from bertkit's /metrics."""
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    total = re.search(r"^bertkit_batch_inputs_sum ([\d.e+-]+)$", text, re.M)
    count = re.search(r"^bertkit_batch_inputs_count ([\d.e+-]+)$", text, re.M)
    return (float(total.group(1)) if total else 0.0), (float(count.group(1)) if count else 0.0)


def run_server(name: str, cmd: list[str], port: int, texts: list[str], args, batches: bool) -> list[dict]:
    print(f"starting {name} ...", file=sys.stderr, flush=True)
    proc = start(cmd, port)
    rows = []
    try:
        load(port, texts, 4, min(args.requests, 40), args.seconds)  # warm-up, not reported
        for c in args.concurrency:
            before = batch_totals(port) if batches else None
            r = load(port, texts, c, args.requests, args.seconds)
            r.update(server=name, concurrency=c, batch=None)
            if batches:  # this level's batches only
                after = batch_totals(port)
                r["batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            rows.append(r)
            print(f"  {name} c={c}: {r['rps']:.1f} req/s, p99 {r['p99']:.1f} ms", file=sys.stderr, flush=True)
    finally:
        stop(proc)
    return rows


def review_texts(args) -> list[str]:
    if args.texts_file:
        texts = [t for t in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if t.strip()]
    else:
        from bertkit.data.catalog import rt_polarity
        texts = [t for t, _ in rt_polarity()["test"]]
    if not texts:
        raise SystemExit("no texts")
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a text-classification model directory")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level (at most)")
    ap.add_argument("--seconds", type=float, default=60, help="time per concurrency level (at most)")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--threads", default="", help="comma-separated --threads values to sweep (default: the "
                    "server's own default only)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--texts-file", help="a text a line instead of rt-polarity's test reviews")
    args = ap.parse_args()
    from bertkit.hardware import describe, summary
    print(summary(describe()), flush=True)  # measured before any server starts
    texts = review_texts(args)
    rows = []
    for precision in args.precisions.split(","):
        for threads in (args.threads.split(",") if args.threads else [None]):
            port = free_port()
            cmd = [sys.executable, "-m", "bertkit.cli", "serve", args.model, "--port", str(port), "--precision",
                   precision] + (["--threads", threads] if threads else [])
            name = f"bertkit {precision}" + (f" t={threads}" if threads else "")
            rows += run_server(name, cmd, port, texts, args, batches=True)
    if not args.no_baseline:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "baseline_server.py"
            script.write_text(BASELINE, encoding="utf-8")
            port = free_port()
            rows += run_server("fastapi + transformers", [sys.executable, str(script), args.model, str(port)], port,
                               texts, args, batches=False)

    source = args.texts_file or "rt-polarity test reviews"
    print(f"\n{len(texts)} texts ({source}), one per request; closed loop on {HOST}\n")
    print("| server | concurrency | req/s | p50 ms | p95 ms | p99 ms | mean batch | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        batch = f"{r['batch']:.1f}" if r["batch"] else "-"
        print(f"| {r['server']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
              f"{r['p99']:.1f} | {batch} | {r['errors']} |")
    at32 = {r["server"]: r for r in rows if r["concurrency"] == 32}
    ours, base = at32.get("bertkit fp32") or next((r for k, r in at32.items() if k.startswith("bertkit")), None), \
        at32.get("fastapi + transformers")
    if ours and base:
        print(f"\nat concurrency 32: {ours['server']}/baseline requests/s = {ours['rps'] / base['rps']:.2f}x; "
              f"p99 {ours['p99']:.1f} ms vs {base['p99']:.1f} ms")
    else:
        print("\n(no ratio: concurrency 32 or the baseline was not run)")


if __name__ == "__main__":
    main()
