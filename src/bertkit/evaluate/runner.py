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
from bertkit.inference.stream import chunk_rows, chunks, close_bar, progress_bar
from bertkit.heads import HEADS

def evaluate_file(model_dir: str | Path, path: str | Path, out: str | Path | None = None,
                  columns: dict | None = None, precision: str = "fp32", compile: bool = False,
                  batch_size: int = 64, progress: bool = False, **reading) -> dict:
    """Metrics of a classifier (CSV/TSV/JSON lines), tagger (CoNLL/JSON lines) or QA model (SQuAD JSON) on a
    labelled file. precision: fp32, bf16 or int8, to measure what a faster model costs. reading: settings that
    override the saved ones (max_length, window_stride, ...; see bertkit.inference.Reading). Classification and NER
    files are read a chunk at a time (memory bounded by the chunk); "truncated" counts the inputs cut at max_length,
    and a note on stderr says so. progress: a rows bar on stderr."""
    predictor = pipeline(model_dir, precision=precision, compile=compile, **reading)
    model, tok, labels, r = predictor.model, predictor.tokenizer, predictor.labels, predictor.reading
    task = HEADS[model.task].kind
    if task is None:
        raise BertkitError(f"{model_dir} holds a {model.task} model; evaluate scores fine-tuned classifiers, "
                           "taggers and question-answering models")
    problem_type = getattr(model, "problem_type", "single_label")
    if task == "qa":  # a SQuAD file is one JSON document: read whole
        from bertkit.inference.qa import make_windows
        examples = T.read_squad(path)
        windows = make_windows(tok, examples, r.max_length, r.doc_stride)
        items = [Encoded(w.ids, w.type_ids) for w in windows]
        results = score(items, forward(model, items, tok.pad_id, batch_size), task, problem_type, labels, r,
                        (examples, windows))
    else:  # a chunk at a time: memory bounded by the chunk, whatever the file's size
        scores, cut, total = Scores(task, problem_type, labels, r), 0, 0
        rows = (T.iter_tagged(path) if task == "ner" else
                T.iter_examples(path, problem_type=problem_type, **(columns or {})))
        bar, start = None, time.time()
        for part in chunks(rows, chunk_rows()):
            items, context = _encode(part, task, problem_type, tok, labels, r, path)
            scores.add(items, forward(model, items, tok.pad_id, batch_size), context)
            cut += sum(it.unread_words is not None for it in items)
            total += len(part)
            if bar is None:
                bar = progress_bar("evaluate", None, start, progress)
            bar.update(len(part))
        close_bar(bar)
        results = {**scores.result(), "truncated": cut}
        note = truncation_note([(cut, total, "sentences" if task == "ner" else "texts")], r.max_length,
                               windows=task == "classification" and not (columns or {}).get("pair_column"))
        if note:
            print(f"note: {note}", file=sys.stderr)
    if out is not None:
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
