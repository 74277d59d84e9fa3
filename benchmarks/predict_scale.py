"""`bertkit predict` on one process against the same command on N processes (`--workers N`): wall time, the outputs
compared byte for byte, and each process's peak memory.

    bertkit data get minilm-l6
    bertkit convert data/minilm-l6 /tmp/minilm-clf --task sequence_classification
    python benchmarks/predict_scale.py /tmp/minilm-clf                    # 1,000,000 rows, 1 process vs 2
    python benchmarks/predict_scale.py /tmp/minilm-clf --rows 100000 --workers 2

Writes --rows short rows (5 to 15 words, seed 0, as benchmarks/predict_memory.py) to a temporary CSV, then runs, as
subprocesses, `bertkit predict MODEL --input CSV --output OUT` alone (torch's threads: every CPU) and with
`--workers N` (each process the CPUs / N), one after the other, each timed from start to exit (model loading and
the final join of the parts included). Samples every process of each run's tree (psutil) every 50 ms for its
resident memory. Prints the CPU, the two wall times and their ratio (one process's time / N processes'), whether the
outputs are byte-identical (sha256), and the largest peak of any single process.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from predict_memory import cpu_name, write_rows  # noqa: E402


def run(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, the largest resident memory of any one process of the command's tree)."""
    import psutil
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"predict failed ({proc.returncode}): {err.strip()[-2000:]}")
    return wall, max(peaks.values(), default=0)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model folder `bertkit predict` reads (a classifier: all-MiniLM-L6-v2 converted)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="predict-scale-"))
    try:
        data = tmp / "rows.csv"
        write_rows(data, args.rows)
        base = [sys.executable, "-m", "bertkit.cli", "predict", args.model, "--input", str(data), "--batch-size",
                str(args.batch_size), "-q"]
        one, one_peak = run(base + ["--output", str(tmp / "one.jsonl")])
        many, many_peak = run(base + ["--output", str(tmp / "many.jsonl"), "--workers", str(args.workers)])
        same = digest(tmp / "one.jsonl") == digest(tmp / "many.jsonl")
        print(f"cpu: {cpu_name()}; model: {args.model}; rows: {args.rows:,}")
        print(f"1 process: {one:.1f} s ({args.rows / one:,.0f} rows/s), peak {one_peak / 2**20:,.0f} MiB")
        print(f"{args.workers} processes: {many:.1f} s ({args.rows / many:,.0f} rows/s), peak of one process "
              f"{many_peak / 2**20:,.0f} MiB")
        print(f"speed, {args.workers} processes / 1: {one / many:.2f}x; outputs byte-identical: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
