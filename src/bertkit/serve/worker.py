"""The model side of the server, no web framework: served models and the worker thread that batches requests.

One thread owns torch and runs every model, so requests never compete for cores and the event loop only waits.
The batcher takes a request from a bounded queue, keeps taking for up to `max_wait_ms` (only under load: when other
requests are queued or the last batch merged several; a lone client never waits) or until the queued inputs fill
`max_batch_tokens`, then cuts the inputs of all these requests, per model and kind, into length-sorted
batches of at most `max_batch_tokens` padded tokens (rows x the longest row). A request larger than one batch is
split over several; its outputs are put back together in order before its future resolves.

A job whose client left (`Job.cancel()`) is skipped: before it is measured and before each batch of its inputs, so
clients that send large requests and hang up cost the next request at most the batch already running.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bertkit.errors import BertkitError
from bertkit.hardware import adjust
from bertkit.inference import KINDS, Embedder, Predictor, QuestionAnswerer, TextClassifier, pipeline
from bertkit.options import at_least, check_fields

log = logging.getLogger("bertkit.serve")


@dataclass
class Limits:
    """How much the server takes on. Defaults: a 16k-token batch (64 texts of 256 tokens) keeps a batch's
    activations small on any CPU while amortising per-call overhead; 5 ms of waiting costs a lone request little
    and lets concurrent ones meet in one batch."""

    max_batch_tokens: int = field(default=16384, metadata=at_least(8))
    """Padded tokens (rows x the longest row) in one model batch."""
    max_wait_ms: float = field(default=5.0, metadata=at_least(0.0))
    """How long the batcher waits for more requests, under load only."""
    max_queue: int = field(default=512, metadata=at_least(1))
    """Requests waiting for the model; one more is answered 429."""
    max_inputs: int = field(default=32, metadata=at_least(1))
    """Inputs in one request; more is answered 413."""
    max_payload_mb: float = field(default=2.0, metadata=at_least(0.0, open=True))
    """Request body size (/predict, /embed, /similar); more is answered 413."""
    explain_payload_kb: float = field(default=64.0, metadata=at_least(0.0, open=True))
    """Request body size of /explain; more is answered 413."""
    explain_max_words: int = field(default=1000, metadata=at_least(1))
    """Words (text and pair) /explain takes; more is answered 413."""
    explain_timeout_s: float = field(default=30.0, metadata=at_least(0.0, open=True))
    """Time an /explain may take, waiting included; then it is stopped and answered 503."""
    grace_s: float = field(default=30.0, metadata=at_least(0.0))
    """On SIGTERM: how long requests in flight may finish; those still unanswered then get 503."""
    threads: int | None = field(default=None, metadata=at_least(1))
    """Torch threads (`bertkit serve --threads`); None: OMP_NUM_THREADS when set, else the CPUs other processes
    leave free, re-decided as they come and go (bertkit.hardware.Adaptive). Decided once, by
    bertkit.hardware.use_threads when the command starts (in Python, call it before create_app); the model thread
    follows that decision through `adjust()` before each batch, never decides again."""

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Served:
    """A model directory loaded once for serving, under a name."""

    name: str
    folder: Path
    predictor: Predictor

    @property
    def kind(self) -> str:
        """The transformers pipeline name of what it does (text-classification, ...)."""
        return next(k for k, cls in KINDS.items() if type(self.predictor) is cls)

    def embedder(self) -> Embedder:
        """The model as a sentence encoder, sharing its weights (any model can embed)."""
        p = self.predictor
        return p if isinstance(p, Embedder) else Embedder(p.model, p.tokenizer, p.labels, p.reading)

    def info(self) -> dict:
        p = self.predictor
        return {"name": self.name, "task": self.kind, "folder": str(self.folder),
                "labels": p.labels if self.kind in ("text-classification", "token-classification") else [],
                "problem_type": getattr(p, "problem_type", None) if isinstance(p, TextClassifier) else None,
                "reading": p.reading.to_dict(), "windows": windowed(p), "notes": p.notes}


def load_served(specs: list[str], precision: str = "fp32") -> dict[str, Served]:
    """NAME=DIR or DIR (named after its folder) -> loaded models, in the order given (the first is the default)."""
    out: dict[str, Served] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep:
            name, folder = Path(spec).resolve().name, spec
        if not name or not folder:
            raise BertkitError(f"{spec!r}: give a model directory, or NAME=DIR")
        if name in out:
            raise BertkitError(f"two models named {name!r}; name them: NAME=DIR")
        p = pipeline(folder, precision=precision)
        out[name] = Served(name, Path(folder), p)
    return out


def windowed(p: Predictor) -> bool:
    """Whether a long input is read whole, as windows (else: a limit on its length)."""
    return isinstance(p, QuestionAnswerer) or (isinstance(p, TextClassifier) and p.reading.window_stride > 0)


class TooLong(BertkitError):
    """An input longer than its model reads, refused (the model reads no windows and truncation was not asked)."""

    def __init__(self, index: int, tokens: int, limit: int, model: str):
        super().__init__(f"input {index} has {tokens} tokens; model {model!r} reads at most {limit} tokens "
                         "(max_length) and does not read windows; shorten it")
        self.tokens, self.limit = tokens, limit


class Overloaded(Exception):
    """The queue is full."""


class Stopped(Exception):
    """The worker is shutting down."""


@dataclass
class Job:
    """One request for the worker. Batchable work: `op` on `inputs` (one tuple per input, e.g. (text, pair)) of
    `served`; any other work: `call`, run alone in the worker thread."""

    served: Served | None = None
    op: str = ""
    inputs: list[tuple] = field(default_factory=list)
    options: tuple = ()
    call: Callable | None = None
    future: Future = field(default_factory=Future)
    results: list = field(default_factory=list)
    left: int = 0
    units: list = field(default_factory=list)
    tokens: int = 0
    """Tokens the model reads of its inputs (once measured): the usage an OpenAI client is told."""
    gone: bool = False
    """Its client left: nothing more of it is run."""

    def cancel(self) -> None:
        """The client left: a job still queued is never taken, a running one loses the batches not yet run."""
        self.gone = True
        self.future.cancel()

    def deliver(self, i: int, value) -> None:
        self.results[i] = value
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(self.results)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass
class Unit:
    """One input of a job as the batcher sees it: rows (windows) of up to `width` tokens."""

    job: Job
    index: int
    rows: int
    width: int


_STOP = object()


class ModelWorker:
    """The thread that owns torch. submit() a Job from any thread; its future resolves with one output per input
    (or the call's result), or fails with BertkitError (the input's fault) or any other exception (the model's)."""

    def __init__(self, limits: Limits, on_batch: Callable[[int, int], None] | None = None):
        self.limits = limits
        self.on_batch = on_batch or (lambda inputs, tokens: None)
        self.queue: queue.Queue = queue.Queue(maxsize=limits.max_queue)
        self.thread = threading.Thread(target=self._run, name="bertkit-model", daemon=True)
        self.stats = {"batches": 0, "inputs": 0, "merged_batches": 0, "largest_batch": 0, "dropped": 0}
        """Batches run, inputs run, batches holding inputs of more than one request, most inputs in a batch,
        inputs dropped because their client left."""
        self.idle = threading.Event()
        """Set while the thread waits for work: other work on the model (explain) goes between batches."""
        self._stopping = False

    def start(self) -> ModelWorker:
        self.thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self._stopping

    def depth(self) -> int:
        return self.queue.qsize()

    def submit(self, job: Job) -> Future:
        if self._stopping:
            raise Stopped("the server is shutting down")
        job.left = len(job.inputs)
        job.results = [None] * job.left
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self.limits.max_queue} requests are waiting; retry shortly") from None
        return job.future

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued job, then end the thread."""
        self._stopping = True
        if self.thread.is_alive():
            self.queue.put(_STOP)
            self.thread.join(timeout)

    # ---- the thread --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        wait, last = self.limits.max_wait_ms / 1000, 0
        while True:
            if self.queue.empty():
                self.idle.set()
            first = self.queue.get()
            self.idle.clear()
            if first is _STOP:
                return
            jobs: list[Job] = []
            tokens, stop = self._take(first, jobs), False
            # wait for company only under load (others queued now, or last time): a lone client pays no wait
            deadline = time.monotonic() + (wait if last > 1 or self.queue.qsize() else 0.0)
            while tokens < self.limits.max_batch_tokens:
                try:
                    job = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                tokens += self._take(job, jobs)
            try:
                adjust()  # threads follow the CPUs other processes leave free
                self._process(jobs)
            except BaseException as e:  # noqa: BLE001 - a bug here must cost these requests, not the server
                log.exception("batching failed")
                for job in jobs:
                    job.fail(as_exception(e))
            last = len(jobs)
            if stop:
                return

    def _take(self, job: Job, jobs: list[Job]) -> int:
        """Accept a job (unless its client left): check its inputs, measure them. Returns its padded tokens."""
        if job.gone or not job.future.set_running_or_notify_cancel():
            self.stats["dropped"] += len(job.inputs)
            return 0
        if job.call is not None:
            jobs.append(job)
            return 0
        try:
            job.units = self._measure(job)
        except BaseException as e:  # noqa: BLE001 - the job fails, the worker goes on (a Rust panic included)
            job.fail(as_exception(e))
            return 0
        jobs.append(job)
        return sum(u.rows * u.width for u in job.units)

    def _measure(self, job: Job) -> list[Unit]:
        """Rows and width of each input; an input too long for a model that does not read windows is refused."""
        p = job.served.predictor
        L = p.reading.max_length
        tok = p.tokenizer
        if job.op == "qa":
            stride = p.reading.doc_stride
            encs = tok.encode_all([q for q, _ in job.inputs], [c for _, c in job.inputs], truncation=None)
        else:
            pairs = [x[1] for x in job.inputs] if job.op == "classify" and job.inputs[0][1] is not None else None
            encs = tok.encode_all([x[0] for x in job.inputs], pairs, truncation=None)
            stride = p.reading.window_stride if windowed(p) and pairs is None else None
        truncate = dict(job.options).get("truncate", False)  # asked for (TEI's truncate): read the first L tokens
        units = []
        for i, e in enumerate(encs):
            n = len(e.ids)
            if n > L and stride is None and not truncate:
                raise TooLong(i, n, L, job.served.name)
            rows = 1 if n <= L or stride is None else 1 + -(-(n - L) // max(1, L - 3 - stride))
            units.append(Unit(job, i, rows, min(n, L)))
        job.tokens = sum(u.width * u.rows for u in units)
        return units

    def _process(self, jobs: list[Job]) -> None:
        groups: dict[tuple, list[Unit]] = {}
        for job in jobs:
            if job.call is not None:
                if job.gone:
                    continue
                try:
                    job.future.set_result(job.call())
                except BaseException as e:  # noqa: BLE001
                    job.fail(as_exception(e))
                continue
            key = (job.served.name, job.op, job.options, job.op == "classify" and job.inputs[0][1] is not None)
            groups.setdefault(key, []).extend(job.units)
        budget = self.limits.max_batch_tokens
        for units in groups.values():
            units.sort(key=lambda u: u.width)
            batch: list[Unit] = []
            for u in units:
                rows = sum(b.rows for b in batch) + u.rows
                if batch and rows * u.width > budget:
                    self._run_batch(batch)
                    batch = []
                batch.append(u)
            self._run_batch(batch)

    def _run_batch(self, batch: list[Unit]) -> None:
        jobs = list({id(u.job): u.job for u in batch}.values())
        # a job that failed in an earlier batch is over; one whose client left is dropped
        live = [u for u in batch if not u.job.future.done() and not u.job.gone]
        self.stats["dropped"] += sum(u.job.gone for u in batch)
        if not live:
            return
        try:
            outputs = run_op(live[0].job, [u.job.inputs[u.index] for u in live])
        except BaseException as e:  # noqa: BLE001 - tokenizers' Rust panics are BaseExceptions
            e = as_exception(e)
            if len(jobs) > 1:  # one request's fault must not fail the others: run them one by one
                for job in jobs:
                    self._run_batch([u for u in live if u.job is job])
                return
            if not isinstance(e, BertkitError):
                log.exception("model %s failed", live[0].job.served.name)
            live[0].job.fail(e)
            return
        rows = sum(u.rows for u in live)
        self.stats["batches"] += 1
        self.stats["inputs"] += len(live)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
        self.stats["merged_batches"] += len({id(u.job) for u in live}) > 1
        self.on_batch(len(live), rows * max(u.width for u in live))
        for u, out in zip(live, outputs):
            u.job.deliver(u.index, out)


def as_exception(e: BaseException) -> Exception:
    """An error a future can carry to its request: a Rust panic in tokenizers (pyo3's PanicException is no
    Exception) would otherwise end the model thread and leave every later request waiting."""
    return e if isinstance(e, Exception) else RuntimeError(f"{type(e).__name__}: {e}")


def run_op(job: Job, inputs: list[tuple]) -> list:
    """One batch of a job's kind through its predictor: one output per input, as `pipeline(...)` gives it."""
    p, n, options = job.served.predictor, len(inputs), dict(job.options)
    if job.op == "classify":
        pairs = [x[1] for x in inputs] if inputs[0][1] is not None else None
        if options.get("logits"):  # the TEI routes score from logits (raw_scores, sigmoid for one output)
            return p.logits([x[0] for x in inputs], pairs, batch_size=n).tolist()
        return p([x[0] for x in inputs], pairs, batch_size=n)
    if job.op == "tag":
        return p([x[0] for x in inputs], batch_size=n)
    if job.op == "qa":
        return p([q for q, _ in inputs], [c for _, c in inputs], batch_size=n)
    if job.op == "fill":
        return p([x[0] for x in inputs], top_k=options["top_k"])
    if job.op == "embed":
        embedder = job.served.embedder()
        if "normalize" in options and options["normalize"] != embedder.reading.normalize:  # TEI's normalize
            embedder = copy.copy(embedder)  # the same weights and modules, read otherwise
            embedder.reading = replace(embedder.reading, normalize=options["normalize"])
        return embedder.encode([x[0] for x in inputs], batch_size=n).tolist()
    raise ValueError(f"unknown op {job.op!r}")
