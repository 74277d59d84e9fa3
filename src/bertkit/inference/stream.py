"""Batch inference over a file of any size: rows are read, predicted and written a chunk at a time, so memory is
bounded by the chunk (not the file), the first results appear after the first chunk, and a run killed part-way
continues from its last complete output line (`predict --output F --resume`).

Each input row gives exactly one output line, so the output's complete lines say how far a run got; a sidecar
`F.resume.json` records what the run reads (model, input file, options) so a resume never mixes two inputs. It is
removed when the run completes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TextIO

from bertkit.errors import BertkitError

CHUNK_ROWS = 4096
"""Rows read, predicted and written at once. 4,096 short rows of MiniLM take about a second on a laptop core, so the
first lines come quickly, and hold a few MB (tokens, logits): the chunk, not the file, bounds memory."""
CHUNK_ENV = "BERTKIT_CHUNK_ROWS"  # tests set it to small values to cross many chunk boundaries


def chunk_rows() -> int:
    """CHUNK_ROWS, or the value of the environment variable BERTKIT_CHUNK_ROWS."""
    raw = os.environ.get(CHUNK_ENV)
    if raw is None:
        return CHUNK_ROWS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise BertkitError(f"{CHUNK_ENV} must be a positive integer, got {raw!r}")
    return value


def chunks(rows: Iterable, size: int) -> Iterator[list]:
    """Lists of up to size consecutive rows."""
    it = iter(rows)
    while part := list(islice(it, size)):
        yield part


def count_lines(path: str | Path) -> int | None:
    """About how many rows a file holds (its newlines, a last line without one counted): cheap, a byte scan; None
    when it cannot be read (the reader then reports why)."""
    n, last = 0, b"\n"
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                n += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    return n + (last != b"\n")


def sidecar(output: Path) -> Path:
    return output.with_name(output.name + ".resume.json")


def open_output(output: str | Path, run: dict, *, resume: bool, overwrite: bool) -> tuple[TextIO, int]:
    """The output file opened for writing, and how many rows it already holds (resume: its complete lines; a line
    cut by the kill is dropped). run: what this run reads (model, input, options): a resume must match it."""
    output = Path(output)
    if output.is_dir():
        raise BertkitError(f"--output {output}: is a folder, not a file")
    side = sidecar(output)
    done = 0
    if resume and output.exists():
        try:
            recorded = json.loads(side.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BertkitError(f"--resume: {output} has no unfinished run to continue (no {side.name}: that run "
                               "finished, or predict did not write this file)") from None
        except (OSError, ValueError) as e:
            raise BertkitError(f"--resume: cannot read {side} ({e})") from None
        changed = sorted(k for k in set(run) | set(recorded) if run.get(k) != recorded.get(k))
        if changed:
            raise BertkitError(f"--resume: {output} was started with another {', '.join(changed)}; give the same "
                               "input, model and options, or write a new output")
        done = _keep_complete_lines(output)
    elif output.exists() and not overwrite:
        raise BertkitError(f"--output {output} exists; give --resume to continue it, or --overwrite to replace it")
    else:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            side.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
            output.write_bytes(b"")
        except OSError as e:
            raise BertkitError(f"--output {output}: cannot write ({e.strerror})") from None
    return open(output, "a", encoding="utf-8"), done


def _keep_complete_lines(path: Path) -> int:
    """Cut a partial last line (the kill came mid-write) and count the lines left."""
    with open(path, "rb+") as f:
        data_end = f.seek(0, os.SEEK_END)
        n, end, pos = 0, 0, 0
        f.seek(0)
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            i = block.rfind(b"\n")
            if i >= 0:
                end = pos + i + 1
            pos += len(block)
        if end != data_end:
            f.truncate(end)
    return n


def finish_output(output: str | Path) -> None:
    """The run is complete: its resume record goes."""
    sidecar(Path(output)).unlink(missing_ok=True)


def stream(rows: Iterable, predict: Callable[[list], list[dict]], out: TextIO, *, skip: int = 0,
           total: int | None = None, progress: bool = True, size: int | None = None) -> int:
    """Predict rows a chunk at a time and write one JSON line per row to out, flushed (and synced, for a file)
    after each chunk; skip: rows already written (resume). Returns the rows predicted in this call."""
    size = size or chunk_rows()
    rows = iter(rows)
    for _ in islice(rows, skip):  # read (and so checked) but not predicted again
        pass
    bar = None
    written, start = 0, time.time()
    for part in chunks(rows, size):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predict(part))
        out.write(lines)
        out.flush()
        if out is not sys.stdout and hasattr(out, "fileno"):
            os.fsync(out.fileno())  # a complete line on disk is a finished row, for --resume
        written += len(part)
        if bar is None:
            bar = progress_bar("predict", total, start, progress, initial=skip)
        bar.update(len(part))
    close_bar(bar)
    return written


def progress_bar(desc: str, total: int | None, start: float, enabled: bool, initial: int = 0):
    """A rows bar on stderr, made once the first chunk is done (a file refused at its first rows gets one line on
    stderr, no bar), its clock set back to start so rows/s counts the first chunk too."""
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=initial, unit="row", desc=desc, file=sys.stderr, disable=not enabled,
               dynamic_ncols=True)
    bar.start_t = start
    return bar


def close_bar(bar) -> None:
    if bar is not None:
        if bar.total is not None and bar.n != bar.total:
            bar.total = bar.n  # the total was an estimate (blank lines, quoted newlines)
        bar.close()
