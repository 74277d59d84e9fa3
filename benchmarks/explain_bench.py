"""Explain and inspect, measured: IG memory, faithfulness of each method, embedding search latency.

    python benchmarks/explain_bench.py ig --preset base --tokens 512 --steps 50 --batch-sizes 1,5,10,25
    python benchmarks/explain_bench.py aopc --model runs/sentiment/model --data data/rt-polarity/test.csv --n 100
    python benchmarks/explain_bench.py index --model runs/sentiment/model --data data/rt-polarity/train.csv
    (each takes --out FILE.json; tiny settings for a smoke run: ig --preset tiny --tokens 64 --steps 10)

ig: integrated gradients on one input of --tokens random ids through a randomly initialised classifier of the
    preset's size (memory does not depend on the weights' values), for each internal step batch, each in a fresh
    process: seconds, and the peak resident memory above what the process held with the model loaded (Linux
    VmHWM, reset after loading through /proc/self/clear_refs). Memory should grow with the step batch, not with
    --steps.
aopc: every method on --n texts of a labelled file (a seeded sample), each explained for its predicted label:
    mean deletion and insertion AOPC (top 1..--max-words words masked) against random rankings.
index: embed every text of the file (mean pooling), build the exact and the IVF index, then --queries queries
    (texts of the file, so each has a known nearest neighbour): median milliseconds to embed a query and to search,
    and IVF's recall@10 against the exact index.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def ig_child(args) -> dict:
    """One measurement in this (fresh) process."""
    from bertkit import BertConfig, build_model
    from bertkit.interpret.attributions import baseline_ids, integrated_gradients
    from bertkit.interpret.scoring import Scorer
    torch.manual_seed(0)
    config = BertConfig.preset(args.preset, max_position_embeddings=max(512, args.tokens))
    model = build_model(config, "sequence_classification", 2).eval()
    g = torch.Generator().manual_seed(0)
    ids = [2] + torch.randint(5, config.vocab_size, (args.tokens - 2,), generator=g).tolist() + [3]
    loaded_kb = _rss_kb("VmRSS")
    try:  # reset the peak (VmHWM) to the current RSS, so the peak measures IG alone
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    start = time.perf_counter()
    _, check = integrated_gradients(Scorer(model, [0] * len(ids), 1), ids, baseline_ids(ids, (2, 3), 0),
                                    steps=args.steps, batch_size=args.batch)
    seconds = time.perf_counter() - start
    return {"batch": args.batch, "seconds": seconds, "model_rss_mb": loaded_kb / 1024,
            "peak_above_model_mb": (_rss_kb("VmHWM") - loaded_kb) / 1024, "completeness_error": check["error"]}


def bench_ig(args) -> dict:
    rows = []
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        cmd = [sys.executable, __file__, "ig-child", "--preset", args.preset, "--tokens", str(args.tokens),
               "--steps", str(args.steps), "--batch", str(b)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"step batch {b:>3}: {r['seconds']:7.1f} s, peak {r['peak_above_model_mb']:8.0f} MB above the model "
              f"({r['model_rss_mb']:.0f} MB), completeness error {r['completeness_error']:.1e}", flush=True)
    return {"preset": args.preset, "tokens": args.tokens, "steps": args.steps, "threads": torch.get_num_threads(),
            "rows": rows}


def _sample(path: str, n: int, seed: int = 0):
    from bertkit.embeddings import read_texts
    texts, labels = read_texts(path)
    picked = sorted(random.Random(seed).sample(range(len(texts)), min(n, len(texts))))
    return [texts[i] for i in picked]


def bench_aopc(args) -> dict:
    from bertkit.interpret import evaluate, format_table
    texts = _sample(args.data, args.n, args.seed)
    start = time.perf_counter()
    result = evaluate(args.model, texts, methods=args.methods, max_words=args.max_words, steps=args.steps,
                      lime_samples=args.lime_samples, seed=args.seed)
    result["seconds"] = time.perf_counter() - start
    print(format_table(result))
    print(f"{result['seconds']:.0f} s for {len(texts)} texts")
    return result


def bench_index(args) -> dict:
    from bertkit.checkpoint import load_model
    from bertkit.embeddings import VectorIndex, read_texts
    from bertkit.inference import embed_texts
    texts, _ = read_texts(args.data)
    loaded = load_model(args.model)
    start = time.perf_counter()
    vectors = embed_texts(loaded.model, loaded.tokenizer, texts, pooling="mean")
    embed_s = time.perf_counter() - start
    timings = {"rows": len(texts), "dim": vectors.shape[1], "embed_all_s": embed_s}
    queries = random.Random(args.seed).sample(range(len(texts)), min(args.queries, len(texts)))
    for name, kwargs in (("exact", {}), ("ivf", {"ivf": True, "nprobe": args.nprobe})):
        start = time.perf_counter()
        index = VectorIndex(vectors, **kwargs)
        timings[f"{name}_index_s"] = time.perf_counter() - start
        embed_ms, search_ms, hits = [], [], []
        for i in queries:
            t0 = time.perf_counter()
            q = embed_texts(loaded.model, loaded.tokenizer, [texts[i]], progress=False)
            t1 = time.perf_counter()
            _, ids = index.search(q, 10)
            t2 = time.perf_counter()
            embed_ms.append((t1 - t0) * 1000)
            search_ms.append((t2 - t1) * 1000)
            hits.append(ids[0].tolist())
        timings[f"{name}_embed_query_ms"] = statistics.median(embed_ms)
        timings[f"{name}_search_ms"] = statistics.median(search_ms)
        timings[f"{name}_self_found"] = sum(i in h[:1] for i, h in zip(queries, hits)) / len(queries)
        if name == "exact":
            exact_hits = hits
        else:
            timings["ivf_recall_at_10"] = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(hits, exact_hits))
    print(f"{len(texts):,} texts embedded in {embed_s:.1f} s")
    for name in ("exact", "ivf"):
        print(f"{name:>5}: index {timings[f'{name}_index_s'] * 1000:8.1f} ms; per query (median of {len(queries)}): "
              f"embed {timings[f'{name}_embed_query_ms']:.2f} ms, search {timings[f'{name}_search_ms']:.3f} ms; "
              f"query found itself first {timings[f'{name}_self_found']:.0%}")
    print(f"IVF recall@10 against exact: {timings['ivf_recall_at_10']:.3f}")
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    ig = sub.add_parser("ig")
    child = sub.add_parser("ig-child")
    for p in (ig, child):
        p.add_argument("--preset", default="base")
        p.add_argument("--tokens", type=int, default=512)
        p.add_argument("--steps", type=int, default=50)
    ig.add_argument("--batch-sizes", default="1,5,10,25")
    child.add_argument("--batch", type=int, required=True)
    ao = sub.add_parser("aopc")
    ao.add_argument("--n", type=int, default=100)
    ao.add_argument("--methods", default="ig,gxi,saliency,occlusion,lime,attention")
    ao.add_argument("--max-words", type=int, default=10)
    ao.add_argument("--steps", type=int, default=50)
    ao.add_argument("--lime-samples", type=int, default=300)
    ix = sub.add_parser("index")
    ix.add_argument("--queries", type=int, default=100)
    ix.add_argument("--nprobe", type=int, default=8)
    for p in (ao, ix):
        p.add_argument("--model", required=True)
        p.add_argument("--data", required=True)
        p.add_argument("--seed", type=int, default=0)
    for p in (ig, ao, ix):
        p.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args()
    if args.what == "ig-child":
        print(json.dumps(ig_child(args)))
        return
    from bertkit.hardware import describe, summary
    machine = describe()
    print(summary(machine), flush=True)
    result = {"ig": bench_ig, "aopc": bench_aopc, "index": bench_index}[args.what](args)
    result["machine"] = {**machine, "date": time.strftime("%Y-%m-%d")}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
