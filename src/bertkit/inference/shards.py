"""Batch inference on several processes: torchrun's, on one machine or many, or `--workers N` (which starts them
as torchrun would). predict, embed and evaluate share this one path.

The input is cut into chunks of a fixed number of rows (chunk k holds rows k*size .. (k+1)*size), whatever the
number of processes; the chunks not done yet are dealt to the processes in turn. Every process reads every row
(reading is cheap beside the model, and a bad row is then reported alike by all) and runs the model on its own
chunks only. predict and embed write a part file per chunk into the output's side folder, named by its rows
(`000000004096-000000008192.jsonl`), whole or not at all; when every process is done, process 0 joins the parts
in row order into the output and removes the folder. A job killed part-way (any process, any machine), run again
with the same command on any number of processes, does only the chunks that have no part: every row is written
once. The folder's manifest.json records what the run reads (model, input, options) and its chunk size; a rerun
that reads otherwise is refused. evaluate writes no parts: process 0 gathers the scored chunks and computes the
metrics from them in row order, as one process does.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from bertkit.errors import BertkitError
from bertkit.folders import atomic_file
from bertkit.hardware import join, rank, world

T = TypeVar("T")

WAIT = datetime.timedelta(hours=12)
"""How long a process waits at the end for the others' last chunks. Long on purpose: the chunks are dealt
evenly, so this only bites on a very uneven job; a process that dies is noticed at once (its sockets close)."""
MANIFEST = "manifest.json"


class Job:
    """This process's place among the processes of a run: rank, world, and the few exchanges between them (over
    gloo, on the CPU, whatever device the model runs on). One process alone is a job of one that exchanges
    nothing."""

    def __init__(self):
        self.rank, self.world = rank(), world()
        join("gloo", WAIT)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, make: Callable[[], T]) -> T:
        """make() run by process 0, its value given to all. A BertkitError there ends every process: process 0
        says why, the others exit with the same status quietly (one line, not one per process)."""
        if self.world == 1:
            return make()
        box: list = [None]
        if self.main:
            try:
                box[0] = ("ok", make())
            except BertkitError as e:
                box[0] = ("error", str(e))
                self._call(lambda: _dist().broadcast_object_list(box, src=0))
                raise
        self._call(lambda: _dist().broadcast_object_list(box, src=0))
        kind, value = box[0]
        if kind == "error":
            raise SystemExit(2)
        return value

    def gather(self, value: T) -> list[T] | None:
        """Every process's value, in rank order, on process 0 (None on the others)."""
        if self.world == 1:
            return [value]
        out = [None] * self.world if self.main else None
        self._call(lambda: _dist().gather_object(value, out, dst=0))
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self._call(lambda: _dist().barrier())

    @staticmethod
    def _call(exchange: Callable[[], object]) -> None:
        try:
            exchange()
        except RuntimeError as e:  # gloo: a peer's connection closed or timed out
            raise BertkitError(f"another process of this job stopped ({str(e).splitlines()[0]}); its error is "
                               "above or in its log. Run the same command again: it continues from the chunks "
                               "written") from None


def _dist():
    import torch.distributed as dist
    return dist


def deal(rows: Iterable, size: int, job: Job, done: Iterable[int] = ()) -> Iterator[tuple[int, list]]:
    """(first row, rows) of each chunk that is this process's: chunks of `size` rows, those whose first row is in
    `done` skipped, the others dealt to the processes in turn."""
    from bertkit.inference.stream import chunks
    done, pending = set(done), 0
    for k, part in enumerate(chunks(rows, size)):
        first = k * size
        if first in done:
            continue
        if pending % job.world == job.rank:
            yield first, part
        pending += 1


def part_name(first: int, end: int) -> str:
    """A part's name: its rows, first to end (exclusive), zero-padded so that names sort in row order."""
    return f"{first:012d}-{end:012d}"


class Parts:
    """The side folder where the processes of a run write one part per chunk, and what it holds.

    run: what the run reads (model, input, options); recorded with its fingerprint and the chunk size. A
    folder left by a run that read otherwise is refused (restart=False) or emptied (restart=True); fresh=True
    empties it anyway. `size` is the chunk size in force: the recorded one when the run continues.
    marker: the suffix of the file written last in a part (its presence makes the part complete)."""

    def __init__(self, folder: str | Path, run: dict, job: Job, *, size: int, marker: str = ".jsonl",
                 fresh: bool = False, restart: bool = False, refusal: str = "", names: dict | None = None):
        self.folder, self.job, self.marker = Path(folder), job, marker
        record = {"fingerprint": _fingerprint(run), **run, "chunk_rows": size}
        self.size, self.done = job.share(lambda: self._open(record, fresh, restart, refusal, names or {}))
        self.rows_done = sum(end - first for first, end in self.done.items())

    def _open(self, record: dict, fresh: bool, restart: bool, refusal: str, names: dict) -> tuple[int, dict]:
        manifest = self.folder / MANIFEST
        if self.folder.is_dir() and not fresh:
            try:
                recorded = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                recorded = None  # killed before its manifest was written: nothing of it to keep
            if isinstance(recorded, dict):
                if recorded.get("fingerprint") == record["fingerprint"]:
                    return int(recorded["chunk_rows"]), self._complete()
                if not restart:
                    raise BertkitError(f"{self.folder}: holds the parts of an unfinished run that differs in: "
                                       f"{_changed(record, recorded, names)}; {refusal}")
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.mkdir(parents=True)
            with atomic_file(manifest) as tmp:
                tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as e:
            raise BertkitError(f"{self.folder}: cannot write there ({e.strerror})") from None
        return record["chunk_rows"], {}

    def _complete(self) -> dict[int, int]:
        """{first row: end} of the complete parts; what a kill cut (a part without its marker, a temporary file)
        is removed."""
        done = {}
        for path in self.folder.iterdir():
            stem, _, _ = path.name.partition(".")
            first, sep, end = stem.partition("-")
            if path.name.startswith(".") or not (sep and first.isdigit() and end.isdigit()):
                if path.name.startswith(".") and ".tmp-" in path.name:
                    path.unlink(missing_ok=True)  # atomic_file's temporary, left by a kill
                continue
            if (self.folder / (stem + self.marker)).is_file():
                done[int(first)] = int(end)
            else:
                path.unlink(missing_ok=True)
        return done

    def deal(self, rows: Iterable) -> Iterator[tuple[int, list]]:
        """(first row, rows) of each chunk this process is to write; `self.rows` counts the input's rows read."""
        self.rows = 0

        def counted():
            for row in rows:
                self.rows += 1
                yield row
        return deal(counted(), self.size, self.job, self.done)

    def path(self, first: int, end: int, suffix: str) -> Path:
        return self.folder / (part_name(first, end) + suffix)

    def complete(self) -> list[tuple[int, int]] | None:
        """Wait for every process to be done; then, on process 0, the (first, end) of every part in row order,
        checked to cover the input's rows once (None on the others)."""
        self.job.barrier()
        if not self.job.main:
            return None
        parts = sorted(self._complete().items())
        at = 0
        for first, end in parts:
            if first != at:
                raise BertkitError(f"{self.folder}: rows {at}..{first - 1} have no part; run the same command "
                                   "again to write them")
            at = end
        if at != self.rows:
            raise BertkitError(f"{self.folder}: the parts hold {at} rows, the input {self.rows}; was the input "
                               "changed during the run? Give --overwrite to start again")
        return parts

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _changed(record: dict, recorded: dict, names: dict) -> str:
    """What differs between two runs' records, named for the user: `options (max_length, top_k)`."""
    out = []
    for k in sorted((set(record) | set(recorded)) - {"fingerprint", "chunk_rows"}):
        a, b = record.get(k), recorded.get(k)
        if a != b:
            inner = sorted(x for x in set(a) | set(b) if a.get(x) != b.get(x)) if isinstance(a, dict) and \
                isinstance(b, dict) else []
            out.append(names.get(k, k) + (f" ({', '.join(inner)})" if inner else ""))
    return ", ".join(out) or "version of bertkit"


def _fingerprint(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_part(path: Path, text: str) -> None:
    """A part's text, whole or not at all, and on disk (synced) before its name appears."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def join_parts(parts: Parts, spans: list[tuple[int, int]], suffix: str, output: Path) -> None:
    """The parts' files of one suffix, in row order, as one file, written whole or not at all."""
    with atomic_file(output) as tmp, open(tmp, "wb") as out:
        for first, end in spans:
            with open(parts.path(first, end, suffix), "rb") as f:
                shutil.copyfileobj(f, out)


def parts_folder(output: str | Path) -> Path:
    """Where the processes of a predict run write their parts: `OUT.parts/` beside the output file."""
    output = Path(output)
    return output.with_name(output.name + ".parts")


def predict_parts(rows: Iterable, predict: Callable[[list], list[dict]], output: str | Path, run: dict, *,
                  overwrite: bool, total: int | None = None, progress: bool = True) -> Job:
    """`stream`'s work shared by the processes of a job: one JSON line per row, in the input's order, in output,
    written by process 0 once every chunk has its part (see the module's doc). overwrite: a previous output, or
    the parts of another run, are replaced. Returns the job, for the caller to gather what it counted."""
    import time

    from bertkit.inference.stream import chunk_rows, close_bar, progress_bar
    output, job = Path(output), Job()
    folder = parts_folder(output)

    def check() -> None:
        if output.is_dir():
            raise BertkitError(f"--output {output}: is a folder, not a file")
        if output.exists() and not folder.is_dir() and not overwrite:
            raise BertkitError(f"--output {output} exists; give --overwrite to replace it")
    job.share(check)
    parts = Parts(folder, run, job, size=chunk_rows(), fresh=overwrite, names={"input": "input (or its size, time)"},
                  refusal="give the same model, input and options to continue it, or --overwrite to start again")
    bar, start = None, time.time()
    for first, part in parts.deal(rows):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predict(part))
        write_part(parts.path(first, first + len(part), ".jsonl"), lines)
        if bar is None:
            left = None if total is None else max(0, total - parts.rows_done) // job.world
            bar = progress_bar("predict", left, start, progress and job.main)
        bar.update(len(part))
    close_bar(bar)
    spans = parts.complete()
    if spans is not None:
        try:
            join_parts(parts, spans, ".jsonl", output)
        except OSError as e:
            raise BertkitError(f"--output {output}: cannot write ({e.strerror}); the parts are kept in {folder}: "
                               "make room, then run the same command again") from None
        parts.remove()
    return job
