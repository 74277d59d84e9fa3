"""`bertkit evaluate`: score a fine-tuned model directory on a labelled file with the task's metrics, reading the
file as the model was trained to (its saved reading settings), so a run's own test file gives the run's score."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bertkit.data import tasks as T
from bertkit.data.labelled import encode_classification, encode_tagged
from bertkit.encoding.inputs import Encoded, truncation_note
from bertkit.errors import BertkitError
from bertkit.evaluate.metrics import plot_confusion
from bertkit.evaluate.scores import Scores, score
from bertkit.inference import pipeline
from bertkit.inference.batches import forward
from bertkit.inference.shards import Job, deal
from bertkit.inference.stream import chunk_rows, close_bar, progress_bar
from bertkit.heads import HEADS

def evaluate_file(model_dir: str | Path, path: str | Path, out: str | Path | None = None,
                  columns: dict | None = None, precision: str = "fp32", compile: bool = False,
                  batch_size: int = 64, progress: bool = False, **reading) -> dict:
    """Metrics of a classifier (CSV/TSV/JSON lines), tagger (CoNLL/JSON lines) or QA model (SQuAD JSON) on a
    labelled file. precision: fp32, bf16 or int8, to measure what a faster model costs. reading: settings that
    override the saved ones (max_length, window_stride, ...; see bertkit.inference.Reading). Classification and NER
    files are read a chunk at a time (memory bounded by the chunk); "truncated" counts the inputs cut at max_length,
    and a note on stderr says so. progress: a rows bar on stderr. Under torchrun (or --workers) each process scores
    its share of the chunks and process 0 computes the metrics from them all, as one process would; every process
    returns them, process 0 alone writes `out`."""
    predictor = pipeline(model_dir, precision=precision, compile=compile, **reading)
    model, tok, labels, r = predictor.model, predictor.tokenizer, predictor.labels, predictor.reading
    task = HEADS[model.task].kind
    if task is None:
        raise BertkitError(f"{model_dir} holds a {model.task} model; evaluate scores fine-tuned classifiers, "
                           "taggers and question-answering models")
    problem_type = getattr(model, "problem_type", "single_label")
    job = Job()  # one process, or the processes of a torchrun job (or --workers): each scores its chunks
    bar, start = None, time.time()
    if task == "qa":  # a SQuAD file is one JSON document: read whole; its windows are forwarded a chunk at a time
        from bertkit.inference.qa import make_windows
        examples = T.read_squad(path)
        windows = make_windows(tok, examples, r.max_length, r.doc_stride)
        items = [Encoded(w.ids, w.type_ids) for w in windows]
        mine = []
        for first, part in deal(items, chunk_rows(), job):
            mine.append((first, forward(model, part, tok.pad_id, batch_size)))
            if bar is None:
                bar = progress_bar("evaluate", None, start, progress and job.main)
            bar.update(len(part))
        close_bar(bar)
        every = job.gather(mine)
        if every is not None:
            logits = [x for _, chunk in sorted((c for m in every for c in m), key=lambda c: c[0]) for x in chunk]
            results = score(items, logits, task, problem_type, labels, r, (examples, windows))
    else:  # a chunk at a time: memory bounded by the chunk, whatever the file's size
        rows = (T.iter_tagged(path) if task == "ner" else
                T.iter_examples(path, problem_type=problem_type, **(columns or {})))
        mine = []
        for first, part in deal(rows, chunk_rows(), job):
            items, context = _encode(part, task, problem_type, tok, labels, r, path)
            scores = Scores(task, problem_type, labels, r)
            scores.add(items, forward(model, items, tok.pad_id, batch_size), context)
            mine.append((first, scores, sum(it.unread_words is not None for it in items), len(part)))
            if bar is None:
                bar = progress_bar("evaluate", None, start, progress and job.main)
            bar.update(len(part))
        close_bar(bar)
        every = job.gather(mine)
        if every is not None:  # process 0: the chunks in row order, as one process scores them
            scores, cut, total = Scores(task, problem_type, labels, r), 0, 0
            for _, chunk, chunk_cut, n in sorted((c for m in every for c in m), key=lambda c: c[0]):
                scores.merge(chunk)
                cut, total = cut + chunk_cut, total + n
            results = {**scores.result(), "truncated": cut}
            note = truncation_note([(cut, total, "sentences" if task == "ner" else "texts")], r.max_length,
                                   windows=task == "classification" and not (columns or {}).get("pair_column"))
            if note:
                print(f"note: {note}", file=sys.stderr)
    results = job.share(lambda: results)
    if out is not None and job.main:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if "confusion_matrix" in results:
            plot_confusion(results["confusion_matrix"], labels, out / "confusion.png", title=Path(path).name)
    return results


def _encode(part: list, task: str, problem_type: str, tok, labels: list[str], r, path) -> tuple[list[Encoded], object]:
    """A chunk of examples (or tagged sentences) as items with targets, and what scoring needs besides; a label or
    tag the model does not know is an error naming its line."""
    if task == "ner":
        known = set(labels)
        for s in part:
            unseen = [t for t in s.tags if t not in known]
            if unseen:
                raise BertkitError(f"{path}:{s.line}: tag {unseen[0]!r} is not one the model knows")
        return encode_tagged(tok, part, labels, r.max_length), part
    if problem_type != "regression":
        T.check_labels(part, labels, path)
    return encode_classification(tok, part, labels, problem_type, r.max_length, r.window_stride), None
