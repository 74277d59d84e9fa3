"""Memory and latency of `bertkit predict` on a large file: peak RSS, time to the first output line, rows/s.

    bertkit data get minilm-l6                                   # all-MiniLM-L6-v2 (a sentence-transformers folder)
    bertkit convert data/minilm-l6 /tmp/minilm-clf --task sequence_classification
    python benchmarks/predict_memory.py /tmp/minilm-clf                 # 1,000,000 rows
    python benchmarks/predict_memory.py /tmp/minilm-clf --rows 20000    # a quick check

Writes --rows short rows (5 to 15 words, seed 0) to a temporary CSV, runs `bertkit predict MODEL --input CSV
--output OUT.jsonl` as a subprocess (so the numbers are those of the command a user runs, model loading included),
samples its resident memory every 50 ms (psutil if installed, else /proc/PID/status) and takes the kernel's peak
(getrusage of the child: ru_maxrss) at the end, and watches the output file for its first line. Prints the CPU
(lscpu's model name), the rows, peak RSS, time to the first line, wall time and rows/s. Any model folder that
`predict` reads works (the head of a converted encoder is untrained: memory and speed do not depend on its values).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the film was a quiet delight with sharp writing and a cast that never once hit a false note but the plot "
         "dragged badly in its middle hour so i left tired").split()


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\n")
        for _ in range(n):
            f.write(" ".join(rng.choices(WORDS, k=rng.randint(5, 15))) + "\n")


def rss_bytes(pid: int) -> int:
    """The process's resident memory now (0 once it is gone)."""
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # noqa: BLE001  (the process ended between two samples)
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model folder `bertkit predict` reads (a classifier: all-MiniLM-L6-v2 converted)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the generated CSV (default 1,000,000)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, help="torch threads of the predict process")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (input and output)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="predict-memory-"))
    try:
        data, out = tmp / "rows.csv", tmp / "out.jsonl"
        write_rows(data, args.rows)
        cmd = [sys.executable, "-m", "bertkit.cli", "predict", args.model, "--input", str(data), "--output", str(out), "--batch-size",
               str(args.batch_size), "-q"] + (["--threads", str(args.threads)] if args.threads else [])
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_sampled, first_line = 0, None
        while proc.poll() is None:
            peak_sampled = max(peak_sampled, rss_bytes(proc.pid))
            if first_line is None and out.is_file():
                with open(out, "rb") as f:
                    if b"\n" in f.read(1 << 16):
                        first_line = time.perf_counter() - start
            time.sleep(0.05)
        wall = time.perf_counter() - start
        # the kernel's peak for the child (includes any spike between samples); Linux reports kilobytes
        peak_kernel = 0
        try:
            import resource
            peak_kernel = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        except (ImportError, AttributeError):
            pass
        err = proc.stderr.read()
        if proc.returncode != 0:
            sys.exit(f"predict failed ({proc.returncode}): {err.strip()}")
        written = sum(1 for _ in open(out, "rb"))
        if first_line is None:
            first_line = wall
        peak = max(peak_sampled, peak_kernel)
        print(f"cpu: {cpu_name()} ({os.cpu_count()} logical CPUs)")
        print(f"model: {args.model}")
        print(f"rows: {args.rows:,} (written: {written:,})")
        print(f"peak RSS: {peak / 2**20:,.0f} MiB (sampled {peak_sampled / 2**20:,.0f} MiB, "
              f"kernel {peak_kernel / 2**20:,.0f} MiB)")
        print(f"first output line after: {first_line:.1f} s (model loading included)")
        print(f"wall: {wall:.1f} s, {args.rows / wall:,.0f} rows/s")
        notes = [line for line in err.splitlines() if line.startswith("note:")]
        for line in notes:
            print(line)
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
