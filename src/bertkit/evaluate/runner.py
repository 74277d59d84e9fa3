"""`bertkit evaluate`: score a fine-tuned model directory on a labelled file with the task's metrics."""

from __future__ import annotations

import json
from pathlib import Path

from bertkit.checkpoint import load_model
from bertkit.errors import BertkitError
from bertkit.evaluate.metrics import plot_confusion
from bertkit.finetune import FinetuneConfig, encode_classification, encode_tagged, predict_logits, score


def evaluate_file(model_dir: str | Path, path: str | Path, out: str | Path | None = None,
                  columns: dict | None = None, max_length: int = 512, precision: str = "fp32",
                  compile: bool = False) -> dict:
    """precision: fp32, bf16 or int8 (see bertkit.model.precision), to measure what a faster model costs."""
    from bertkit.data import tasks as T
    from bertkit.model.precision import for_inference
    loaded = load_model(model_dir)
    model, tok, labels = for_inference(loaded.model, precision, compile), loaded.tokenizer, loaded.labels
    if model.task not in ("sequence_classification", "token_classification"):
        raise BertkitError(f"{model_dir} holds a {model.task} model; evaluate scores fine-tuned classifiers and taggers")
    if tok is None:
        raise BertkitError(f"{model_dir} has no tokenizer files")
    max_length = min(max_length, model.config.max_position_embeddings)
    if model.task == "token_classification":
        cfg = FinetuneConfig(task="ner")
        sentences = T.read_tagged(path)
        known = set(labels or [])
        for s in sentences:
            unseen = [t for t in s.tags if t not in known]
            if unseen:
                raise BertkitError(f"{path}:{s.line}: tag {unseen[0]!r} is not one the model knows")
        items = encode_tagged(tok, sentences, labels, max_length)
    else:
        cfg = FinetuneConfig(task="classification", problem_type=model.problem_type)
        examples = T.read_examples(path, problem_type=model.problem_type, **(columns or {}))
        if model.problem_type != "regression":
            T.check_labels(examples, labels, path)
        items = encode_classification(tok, examples, labels or [], model.problem_type, max_length)
        sentences = None
    logits = predict_logits(model, items, tok.pad_id, cfg.task, 64, cfg.problem_type)
    results = score(items, logits, cfg, labels, sentences)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if "confusion_matrix" in results:
            plot_confusion(results["confusion_matrix"], labels, out / "confusion.png", title=Path(path).name)
    return results
