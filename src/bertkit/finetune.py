"""Fine-tuning recipe: sequence classification (single-label, multi-label, regression; single texts or pairs)
and token classification (NER), on the one training loop in trainer.py.

Batches are length-grouped: examples are shuffled, cut into chunks of 50 batches, sorted by length inside a
chunk, and the batches shuffled again, so a batch holds texts of similar length and little goes to padding
while the order stays random. As in pre-training, `batch_size` is the global batch of one optimiser step and
losses are divided by global counts, so accumulation and torchrun give the same gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.checkpoint import require_finite
from bertkit.config import reading_length
from bertkit.errors import BertkitError
from bertkit.options import at_least, check_fields
from bertkit.objectives import IGNORE_INDEX
from bertkit.tokenizer import Tokenizer
from bertkit.trainer import Step

TASKS = ("classification", "ner", "qa")
PROBLEM_TYPES = ("single_label", "multi_label", "regression")


@dataclass
class FinetuneConfig:
    task: str = "classification"
    """classification (a label per text or pair), ner (a BIO tag per word) or qa (an answer span, SQuAD)."""
    problem_type: str = "single_label"
    """For classification: single_label, multi_label or regression."""
    max_length: int | None = field(default=None, metadata=at_least(8))
    """Tokens a model reads at once, [CLS] and [SEP] included, at most the model's max_position_embeddings;
    None: config.DEFAULT_MAX_LENGTH, or the model's positions if it has fewer."""
    batch_size: int = field(default=32, metadata=at_least(1))
    accum: int = field(default=1, metadata=at_least(1))
    epochs: float = field(default=3.0, metadata=at_least(0.0, open=True))
    group_by_length: bool = True
    class_weights: bool = False
    """Weight the loss by inverse class frequency (imbalanced single-label data)."""
    eval_batch_size: int = field(default=64, metadata=at_least(1))
    seed: int = field(default=0, metadata=at_least(0))
    doc_stride: int | None = field(default=None, metadata=at_least(0))
    """QA: tokens shared by consecutive windows over a long context; None: a third of max_length (128 at 384, as
    in BERT's SQuAD runs)."""
    max_answer_length: int = field(default=30, metadata=at_least(1))
    """QA: longest answer, in tokens."""
    window_stride: int = field(default=0, metadata=at_least(0))
    """Classification of long documents: texts longer than max_length become windows sharing this many tokens,
    trained with the document's label and predicted by pooling the windows' logits; 0 truncates instead."""
    window_pool: str = "mean"
    """How window logits make a document's: mean or max."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise BertkitError(f"task must be one of {TASKS}, got {self.task!r}")
        check_fields(self)
        if self.problem_type not in PROBLEM_TYPES:
            raise BertkitError(f"problem_type must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        if self.window_pool not in ("mean", "max"):
            raise BertkitError(f"window_pool must be mean or max, got {self.window_pool!r}")
        if self.batch_size % self.accum:
            raise BertkitError(f"batch_size {self.batch_size} must be a multiple of accum {self.accum}")
        if self.max_length is not None and self.doc_stride is not None and self.doc_stride >= self.max_length - 3:
            raise BertkitError(f"doc_stride {self.doc_stride} must be below max_length - 3 ({self.max_length - 3})")
        if self.max_length is not None and self.window_stride >= self.max_length - 2:
            raise BertkitError(f"window_stride {self.window_stride} must be below max_length - 2 "
                               f"({self.max_length - 2}): windows share that many tokens")


@dataclass
class Encoded:
    """One tokenised example: ids and segment ids with [CLS]/[SEP]; target is a class id, a 0/1 vector, a float,
    or per-token tag ids (IGNORE_INDEX on specials and non-first sub-tokens)."""

    ids: list[int]
    type_ids: list[int]
    target: object
    word_ids: list[int | None] | None = None
    doc: int = -1  # the document a window belongs to (long-document classification)


def encode_classification(tokenizer: Tokenizer, examples, labels: list[str], problem_type: str,
                          max_length: int, window_stride: int = 0) -> list[Encoded]:
    texts = [e.text for e in examples]
    pairs = [e.pair or "" for e in examples] if any(e.pair is not None for e in examples) else None
    if window_stride and pairs is None:  # every window of every text, each tagged with its document
        pieces = [(d, w) for d, t in enumerate(texts)
                  for w in tokenizer.encode_windows(t, max_length=max_length, stride=window_stride)]
    else:
        pieces = list(enumerate(tokenizer.encode_all(texts, pairs, max_length=max_length)))
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for d, enc in pieces:
        e = examples[d]
        if e.label is None:
            target = None
        elif problem_type == "single_label":
            target = index[e.label]
        elif problem_type == "multi_label":
            target = [1.0 if name in e.label else 0.0 for name in labels]
        else:
            target = float(e.label)
        out.append(Encoded(enc.ids, enc.type_ids, target, doc=d))
    return out


def pool_windows(items: list[Encoded], logits: list[torch.Tensor], how: str = "mean"):
    """Windows -> documents: one item and one logit vector per document (the mean or max over its windows)."""
    if how not in ("mean", "max"):
        raise BertkitError(f"window pooling must be mean or max, got {how!r}")
    groups: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.doc, []).append(i)
    docs, pooled = [], []
    for d in sorted(groups):
        stack = torch.stack([logits[i] for i in groups[d]])
        pooled.append(stack.mean(0) if how == "mean" else stack.max(0).values)
        docs.append(items[groups[d][0]])
    return docs, pooled


def align_tags(word_ids: list[int | None], word_tags: list[int] | None) -> list[int]:
    """Tag ids per token: the word's tag on its first sub-token, IGNORE_INDEX on later sub-tokens and specials."""
    out, previous = [], None
    for w in word_ids:
        if w is None or w == previous or word_tags is None:
            out.append(IGNORE_INDEX)
        else:
            out.append(word_tags[w])
        previous = w
    return out


def encode_tagged(tokenizer: Tokenizer, sentences, tags: list[str], max_length: int) -> list[Encoded]:
    encodings = tokenizer.encode_all([s.tokens for s in sentences], max_length=max_length, pretokenized=True)
    index = {t: i for i, t in enumerate(tags)}
    out = []
    for s, enc in zip(sentences, encodings):
        word_tags = [index[t] for t in s.tags] if s.tags else None
        out.append(Encoded(enc.ids, enc.type_ids, align_tags(enc.word_ids, word_tags), enc.word_ids))
    return out


def collate(items: list[Encoded], pad_id: int, task: str, problem_type: str) -> dict[str, torch.Tensor]:
    T = -(-max(len(x.ids) for x in items) // 8) * 8  # a multiple of 8: friendlier matmul shapes
    B = len(items)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x.ids)
        ids[i, :n] = torch.tensor(x.ids)
        types[i, :n] = torch.tensor(x.type_ids)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if items[0].target is None:
        return batch
    if task == "qa":
        labels = torch.tensor([x.target for x in items], dtype=torch.long)  # (B, 2) start, end
    elif task == "ner":
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        for i, x in enumerate(items):
            labels[i, :len(x.target)] = torch.tensor(x.target)
    elif problem_type == "single_label":
        labels = torch.tensor([x.target for x in items], dtype=torch.long)
    else:
        labels = torch.tensor([x.target for x in items], dtype=torch.float32)
    batch["labels"] = labels
    return batch


def length_grouped_order(lengths: list[int], batch_size: int, rng: np.random.Generator, group: bool) -> list[int]:
    """A random order in which each run of batch_size indices has similar lengths (when group is set)."""
    order = rng.permutation(len(lengths))
    if not group:
        return order.tolist()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk].tolist(), key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [i for b in (batches[j] for j in rng.permutation(len(batches))) for i in b]


class FinetuneTask:
    """The trainer's Task for fine-tuning: batches, loss, dev-set evaluation."""

    def __init__(self, train: list[Encoded], dev: list[Encoded], cfg: FinetuneConfig, pad_id: int,
                 labels: list[str], evaluate_fn):
        self.train, self.dev, self.cfg, self.pad_id, self.labels = train, dev, cfg, pad_id, labels
        self.evaluate_fn = evaluate_fn
        if len(train) < cfg.batch_size:
            what = {"qa": "question windows", "ner": "sentences"}.get(cfg.task, "training examples")
            raise BertkitError(f"{len(train)} {what}, fewer than the batch size {cfg.batch_size}: a step needs a "
                               f"full batch; lower --batch-size to {len(train)} or less, or give more data")
        self.weights = None
        if cfg.class_weights and cfg.task == "classification" and cfg.problem_type == "single_label":
            counts = np.bincount([x.target for x in train], minlength=len(labels)).astype(np.float64)
            self.weights = torch.tensor(len(train) / (len(labels) * np.maximum(counts, 1)), dtype=torch.float32)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train) // self.cfg.batch_size)

    def steps(self, state: dict | None, rank: int, world: int):
        cfg = self.cfg
        micro_size = cfg.batch_size // cfg.accum
        if micro_size % world:
            raise BertkitError(f"batch_size / accum = {micro_size} does not split evenly over {world} processes")
        per_rank = micro_size // world
        epoch, index = (state["epoch"], state["index"]) if state else (0, 0)
        lengths = [len(x.ids) for x in self.train]
        while True:
            order = length_grouped_order(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]),
                                         cfg.group_by_length)
            while index + cfg.batch_size <= len(order):  # the last, partial batch of an epoch is dropped
                rows = [self.train[i] for i in order[index:index + cfg.batch_size]]
                index += cfg.batch_size
                norm = self._normaliser(rows)
                micro = []
                for m in range(cfg.accum):
                    lo = m * micro_size + rank * per_rank
                    batch = collate(rows[lo:lo + per_rank], self.pad_id, cfg.task, cfg.problem_type)
                    batch["scale"] = torch.tensor(world / norm)
                    micro.append(batch)
                tokens = sum(len(x.ids) for x in rows)
                yield Step(micro, tokens, {"epoch": epoch, "index": index})
            epoch, index = epoch + 1, 0

    def _normaliser(self, rows: list[Encoded]) -> float:
        """What the global batch's summed loss is divided by, so it is a mean over the whole batch."""
        cfg = self.cfg
        if cfg.task == "qa":
            return len(rows)
        if cfg.task == "ner":
            return max(1, sum(sum(t != IGNORE_INDEX for t in x.target) for x in rows))
        if cfg.problem_type == "multi_label":
            return len(rows) * len(self.labels)
        if self.weights is not None:
            return float(sum(self.weights[x.target] for x in rows))
        return len(rows)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels = batch["labels"]
        cfg = self.cfg
        if cfg.task == "qa":  # the mean of the start and end cross-entropies, as in the BERT paper
            start, end = out
            total = (F.cross_entropy(start.float(), labels[:, 0], reduction="sum")
                     + F.cross_entropy(end.float(), labels[:, 1], reduction="sum")) / 2
            return total * batch["scale"], {}
        logits = out.float()
        if cfg.task == "ner":
            total = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=IGNORE_INDEX,
                                    reduction="sum")
        elif cfg.problem_type == "single_label":
            w = self.weights.to(logits.device) if self.weights is not None else None
            total = F.cross_entropy(logits, labels, weight=w, reduction="sum")
        elif cfg.problem_type == "multi_label":
            total = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        else:
            total = F.mse_loss(logits.squeeze(-1), labels, reduction="sum")
        loss = total * batch["scale"]
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.evaluate_fn(model, self.dev)


@torch.no_grad()
def predict_logits(model: nn.Module, items: list[Encoded], pad_id: int, task: str, batch_size: int = 64,
                   problem_type: str = "single_label") -> list[torch.Tensor]:
    """Logits per item, in input order (batched by length, so little time goes to padding)."""
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
    out: list[torch.Tensor | None] = [None] * len(items)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([items[i] for i in idx], pad_id, task, problem_type)
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       batch["token_type_ids"].to(device))
        require_finite(model, *(logits if task == "qa" else [logits]))
        if task == "qa":  # (start, end) per window
            start, end = (x.float().cpu() for x in logits)
            for j, i in enumerate(idx):
                n = len(items[i].ids)
                out[i] = (start[j, :n], end[j, :n])
            continue
        logits = logits.float().cpu()
        for j, i in enumerate(idx):
            out[i] = logits[j, :len(items[i].ids)] if task == "ner" else logits[j]
    return out


def score(items: list[Encoded], logits: list[torch.Tensor], cfg: FinetuneConfig, labels: list[str],
          sentences=None) -> dict:
    """Metrics of predictions against the items' targets (see bertkit.evaluate.metrics)."""
    from bertkit.evaluate import metrics as M
    if cfg.task == "qa":
        from bertkit.qa import decode_answers
        examples, windows = sentences
        allow_null = any(not ex.answers for ex in examples)
        answers = decode_answers(examples, windows, logits, max_answer_length=cfg.max_answer_length,
                                 allow_no_answer=allow_null)
        gold = {ex.id: [t for t, _ in ex.answers] for ex in examples}
        return M.squad_metrics({k: v["text"] for k, v in answers.items()}, gold)
    if cfg.task == "classification" and cfg.window_stride:
        items, logits = pool_windows(items, logits, cfg.window_pool)
    if cfg.task == "ner":
        gold, pred = [], []
        for item, lg, sent in zip(items, logits, sentences):
            tags = predicted_word_tags(item.word_ids, lg, labels, len(sent.tokens))
            gold.append(list(sent.tags))
            pred.append(tags)
        loss = float(sum(F.cross_entropy(lg, torch.tensor(it.target), ignore_index=IGNORE_INDEX, reduction="sum")
                         for it, lg in zip(items, logits)) / max(1, sum(sum(t != IGNORE_INDEX for t in it.target)
                                                                        for it in items)))
        return {"loss": loss, **M.entity_metrics(gold, pred)}
    stacked = torch.stack(logits)
    if cfg.problem_type == "single_label":
        y = torch.tensor([it.target for it in items])
        probs = stacked.softmax(-1)
        result = M.classification_metrics(y.tolist(), stacked.argmax(-1).tolist(), labels, probs.numpy())
        result["loss"] = float(F.cross_entropy(stacked, y))
        return result
    if cfg.problem_type == "multi_label":
        y = torch.tensor([it.target for it in items])
        result = M.multilabel_metrics(y.numpy(), (stacked.sigmoid() > 0.5).int().numpy(), labels)
        result["loss"] = float(F.binary_cross_entropy_with_logits(stacked, y))
        return result
    y = torch.tensor([it.target for it in items])
    result = M.regression_metrics(y.tolist(), stacked.squeeze(-1).tolist())
    result["loss"] = result["mse"]
    return result


def predicted_word_tags(word_ids: list[int | None], logits: torch.Tensor, tags: list[str], n_words: int) -> list[str]:
    """One tag per word from its first sub-token's logits; words cut off by truncation get "O"."""
    out = ["O"] * n_words
    previous = None
    best = logits.argmax(-1).tolist()
    for pos, w in enumerate(word_ids):
        if w is not None and w != previous and w < n_words:
            out[w] = tags[best[pos]]
        previous = w
    return out


def load_task_data(cfg: FinetuneConfig, train_file, dev_file=None, test_file=None, columns: dict | None = None):
    """(splits {train, dev, test} of examples or tagged sentences, labels). Without dev/test files, dev and test
    come out of the train file by the project's deterministic split rule."""
    from bertkit.data import tasks as T
    columns = columns or {}
    if cfg.task == "ner":
        read = T.read_tagged
    elif cfg.task == "qa":
        read = T.read_squad
    else:
        def read(path):
            return T.read_examples(path, problem_type=cfg.problem_type, **columns)
    if dev_file is None and test_file is None:
        if cfg.task in ("ner", "qa"):
            raise BertkitError(f"{cfg.task} needs --dev (and --test) files; they are not split automatically")
        splits = T.split_examples(read(train_file))
        if not splits["dev"] or not splits["train"]:
            empty = "dev" if not splits["dev"] else "train"
            raise BertkitError(f"{train_file}: the automatic split left the {empty} set empty ("
                               f"{sum(map(len, splits.values()))} distinct examples; about 10% go to dev, 10% to "
                               "test); give a --dev file, or more data")
    else:
        splits = {"train": read(train_file), "dev": read(dev_file) if dev_file else [],
                  "test": read(test_file) if test_file else []}
        if not splits["dev"]:
            raise BertkitError("give a --dev file to evaluate on during training (or neither --dev nor --test)")
    if cfg.task == "qa":
        labels = []
    elif cfg.task == "ner":
        labels = T.tag_list(splits["train"])
        known = set(labels)
        for name, path in (("dev", dev_file), ("test", test_file)):
            for sent in splits[name]:
                unseen = [t for t in sent.tags if t not in known]
                if unseen:
                    raise BertkitError(f"{path}:{sent.line}: tag {unseen[0]!r} never appears in the training data")
    else:
        labels = T.label_list(splits["train"], cfg.problem_type)
        for name, path in (("dev", dev_file or train_file), ("test", test_file or train_file)):
            if cfg.problem_type != "regression":
                T.check_labels(splits[name], labels, path)
    return splits, labels


def finetune(model_dir: str | Path, out: str | Path, cfg: FinetuneConfig, train_cfg_kwargs: dict, train_file,
             dev_file=None, test_file=None, columns: dict | None = None, *, resume: bool = False,
             force: bool = False, progress: bool = True) -> dict:
    """Fine-tune a bertkit or Hugging Face BERT folder; returns (and writes) test metrics.

    resume: continue the run in `out` from its last checkpoint; the data and options must be those it was
    started with, unless force (see trainer.check_recipe)."""
    import json
    import os
    from dataclasses import asdict

    from bertkit.checkpoint import load_model
    from bertkit.evaluate.metrics import plot_confusion
    from bertkit.trainer import TrainConfig, check_recipe, file_fingerprint, train

    out = Path(out)
    train_kwargs = {k: v for k, v in train_cfg_kwargs.items() if v is not None}
    TrainConfig(**{"best_metric": _default_metric(cfg), **train_kwargs, "max_steps": 1})  # bad options fail now
    splits, labels = load_task_data(cfg, train_file, dev_file, test_file, columns)
    head = {"ner": "token_classification", "qa": "question_answering"}.get(cfg.task, "sequence_classification")
    num_labels = 1 if cfg.problem_type == "regression" and cfg.task == "classification" else len(labels)
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    loaded = load_model(model_dir, task=head, num_labels=num_labels if cfg.task != "qa" else None,
                        problem_type=cfg.problem_type if cfg.task == "classification" else None)
    if loaded.tokenizer is None:
        raise BertkitError(f"{model_dir} has no tokenizer files")
    model, tok = loaded.model, loaded.tokenizer
    max_length = reading_length(model.config, cfg.max_length, model_dir)
    cfg = replace(cfg, max_length=max_length, doc_stride=max_length // 3 if cfg.doc_stride is None else cfg.doc_stride)
    model.config.unpad = True  # skip padding in every layer but attention; saved with the model, so inference does too
    if progress:
        for note in loaded.notes:
            print(f"note: {note}")

    windows = {}

    def encode(part):
        if cfg.task == "qa":
            from bertkit.qa import make_windows
            ws = make_windows(tok, part, cfg.max_length, cfg.doc_stride)
            windows[id(part)] = ws
            return [Encoded(w.ids, w.type_ids, (w.start, w.end)) for w in ws]
        if cfg.task == "ner":
            return encode_tagged(tok, part, labels, cfg.max_length)
        return encode_classification(tok, part, labels, cfg.problem_type, cfg.max_length, cfg.window_stride)

    enc = {name: encode(part) for name, part in splits.items()}

    def context(name):
        if cfg.task == "qa":
            return splits[name], windows[id(splits[name])]
        return splits[name] if cfg.task == "ner" else None

    def evaluate_fn(m, items):
        logits = predict_logits(m, items, tok.pad_id, cfg.task, cfg.eval_batch_size, cfg.problem_type)
        return score(items, logits, cfg, labels, context("dev"))

    task = FinetuneTask(enc["train"], enc["dev"], cfg, tok.pad_id, labels, evaluate_fn)
    if int(os.environ.get("RANK", "0")) == 0 and (resume or not (out / "checkpoints").is_dir()):
        files = {name: file_fingerprint(path) for name, path in (("train", train_file), ("dev", dev_file),
                                                                  ("test", test_file))}
        recipe = {"model": str(Path(model_dir).resolve()), "data": files, "columns": columns or {},
                  "finetune": asdict(cfg), "train": train_kwargs}
        check_recipe(out, "finetune_config.json", recipe, resume=resume, force=force)
    steps = max(1, int(round(cfg.epochs * task.steps_per_epoch)))
    defaults = {"lr": 5e-5, "warmup": 0.06, "weight_decay": 0.01, "betas": (0.9, 0.999), "eps": 1e-8,
                "eval_every": task.steps_per_epoch, "save_every": task.steps_per_epoch, "log_every": 10,
                "seed": cfg.seed, "best_metric": _default_metric(cfg)}
    train_cfg = TrainConfig(**{**defaults, **train_kwargs, "max_steps": steps})
    train(model, task, train_cfg, out, tokenizer=tok, labels=labels if labels and num_labels == len(labels) else None,
          resume=resume, progress_bar=progress)

    best = load_model(out / "model")
    results = {"task": cfg.task, "problem_type": cfg.problem_type, "labels": labels,
               "train_examples": len(enc["train"]), "dev_examples": len(enc["dev"])}
    for name in ("dev", "test"):
        if enc[name]:
            logits = predict_logits(best.model, enc[name], tok.pad_id, cfg.task, cfg.eval_batch_size, cfg.problem_type)
            results[name] = score(enc[name], logits, cfg, labels, context(name))
    (out / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    test = results.get("test", {})
    if "confusion_matrix" in test:
        plot_confusion(test["confusion_matrix"], labels, out / "confusion.png", title="test")
    from bertkit.plots import plot_training
    plot_training(out / "metrics.jsonl", out / "curves.png")
    return results


def _default_metric(cfg: FinetuneConfig) -> str:
    if cfg.task in ("ner", "qa"):
        return "f1"
    return {"single_label": "macro_f1", "multi_label": "micro_f1", "regression": "pearson"}[cfg.problem_type]
