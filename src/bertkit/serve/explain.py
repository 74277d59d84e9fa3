"""/explain beside the model worker: its own thread, its own copy of the model, one forward at a time, and only
while the model worker has nothing to do.

An explanation is hundreds of forward and backward passes (integrated gradients: `steps` per window, and a long
text on a windowed model has many windows); run as one job on the model thread it held every /predict behind it
(14 s seen). Here it runs on a thread of its own. A forward pre-hook on the copy's encoder is the slice boundary:
before each forward (one IG step batch, one occlusion batch, ...) it waits until the model worker is idle, and it
stops the explanation when its time limit has passed or its client has left. /predict therefore waits for at most
one explain slice. The copy exists because explaining changes the module it runs on (a hook replacing the word
embeddings, requires_grad flags) and a batch of /predict must never see that; it costs the model's weights once
more in memory, made at the first /explain of that model.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from bertkit.errors import BertkitError
from bertkit.inference import TextClassifier
from bertkit.serve.worker import Job, ModelWorker, log


class OverBudget(Exception):
    """The explanation ran past its time limit."""


class Left(Exception):
    """The explanation's client left."""


class Explainer:
    """Runs explain jobs (Job.call takes the predictor to explain with) one at a time on their own thread."""

    def __init__(self, worker: ModelWorker, timeout_s: float):
        self.worker, self.timeout_s = worker, timeout_s
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bertkit-explain")
        self.copies: dict[str, TextClassifier] = {}
        self._job: Job | None = None
        self._deadline = 0.0

    def submit(self, job: Job) -> Future:
        """Queue a job; its time limit counts from now (waiting behind another explanation included)."""
        deadline = time.monotonic() + self.timeout_s
        self.pool.submit(self._run, job, deadline)
        return job.future

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, deadline: float) -> None:
        if job.gone or not job.future.set_running_or_notify_cancel():
            return
        try:
            if time.monotonic() > deadline:
                raise OverBudget()
            predictor = self._copy(job)
            self._job, self._deadline = job, deadline
            job.future.set_result(job.call(predictor))
        except Exception as e:  # noqa: BLE001 - the job fails, the thread goes on
            if not isinstance(e, (BertkitError, OverBudget, Left)):
                log.exception("explaining with %s failed", job.served.name)
            job.fail(e)
        finally:
            self._job = None

    def _copy(self, job: Job) -> TextClassifier:
        """The served classifier with its own model and tokenizer (the tokenizer keeps per-call settings). An int8
        model is explained with the fp32 weights it was quantised from: its quantised layers carry no gradients."""
        name = job.served.name
        if name not in self.copies:
            p = copy.copy(job.served.predictor)
            if any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in p.model.modules()):
                p = TextClassifier.load(job.served.folder, device="cpu")  # int8 runs on CPU only
            else:
                p.model, p.tokenizer = copy.deepcopy(p.model), copy.deepcopy(p.tokenizer)
            p.model.bert.register_forward_pre_hook(self._between_slices)
            self.copies[name] = p
        return self.copies[name]

    def _between_slices(self, module, args) -> None:
        """Before each forward of an explanation: stop it if over time or abandoned; else let /predict go first."""
        job = self._job
        if job is None:
            return
        if job.gone:
            raise Left()
        if not self.worker.idle.wait(max(0.0, self._deadline - time.monotonic())) or \
                time.monotonic() > self._deadline:
            raise OverBudget()


def explain_answer(predictor: TextClassifier, text: str, pair: str | None, *, methods: list[str],
                   target: str | None, faithfulness: bool, steps: int) -> dict:
    """The /explain answer: words, their scores per method, the outputs (runs on the explain thread)."""
    from bertkit.interpret import explain
    from bertkit.interpret.explain import parse_methods
    methods = parse_methods(methods)
    e = explain(predictor, text, pair, target=target, methods=methods, faithfulness=faithfulness, steps=steps)
    out = {"words": [{"text": w.text, "start": w.start, "end": w.end, "sequence": w.sequence} for w in e.words],
           "word_scores": {k: v for k, v in e.word_scores.items() if k != "attention"},
           "outputs": e.outputs, "target": e.target, "notes": e.notes}
    if "attention" in methods:
        out["rollout"] = e.word_scores["attention"]
    if e.faithfulness:
        out["faithfulness"] = e.faithfulness
    return out
