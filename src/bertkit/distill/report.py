"""The distillation report: teacher and student (and the control) side by side on the test split (dev without
one), measured in the same run: scores, agreement with the teacher, size, and inference throughput in fp32 and
int8 (fp32 and bf16 on a GPU, where int8 does not run), as report.json and a short report.md.

Throughput is real (non-padding) tokens per second of bertkit's batched inference forward (length-sorted batches
of eval_batch_size, every layer on real tokens only) over the split's texts, after one warm-up batch: the path
`bertkit predict` and `evaluate` take, on this machine's threads. One timed pass per row, so small splits are
noisy; benchmarks/distill_bench.py measures ratios on a large one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from bertkit.checkpoint import weights_bytes
from bertkit.encoding.inputs import Encoded
from bertkit.errors import BertkitError
from bertkit.evaluate.scores import score
from bertkit.inference.batches import forward, pool_windows
from bertkit.inference.tokens import word_tags
from bertkit.model.precision import for_inference

HEADLINE = {"single_label": ("accuracy", "macro_f1"), "multi_label": ("subset_accuracy", "micro_f1"),
            "ner": ("f1", "token_accuracy")}
"""The scores a row shows, by problem type (ner: entity-level F1), the first one compared in the ratios."""


def write_report(out: Path, models: dict[str, tuple[nn.Module, Path]], split_items, split: str, ft,
                 labels: list[str], pad_id: int, results: dict) -> dict:
    """Measure each model ({name: (model, its folder)}, the teacher first) in each precision on the split's
    (items, context); write out/report.json and out/report.md; return the report."""
    items, context = split_items
    device = next(models["teacher"][0].parameters()).device
    precisions = ("fp32", "bf16") if device.type == "cuda" else ("fp32", "int8")
    keys = HEADLINE["ner" if ft.task == "ner" else ft.problem_type]
    rows, notes, reference = [], [], None
    for name, (model, folder) in models.items():
        for precision in precisions:
            try:
                ready = for_inference(model, precision)
            except BertkitError as e:  # no int8 engine in this torch build
                notes.append(f"{name} {precision}: {e}")
                continue
            logits, speed = _timed(ready, items, pad_id, ft.eval_batch_size)
            metrics = score(items, logits, ft.task, ft.problem_type, labels, ft.reading, context)
            decisions = _decisions(items, logits, ft, labels, context)
            reference = reference or decisions  # the teacher's in fp32
            rows.append({"model": name, "precision": precision, **{k: round(metrics[k], 4) for k in keys},
                         "agreement": round(sum(a == b for a, b in zip(decisions, reference)) / len(reference), 4),
                         "tokens_per_s": round(speed), "parameters": sum(p.numel() for p in model.parameters()),
                         "disk_mb": round(weights_bytes(folder) / 1e6, 2)})
    report = {"split": split, "texts": len({it.doc for it in items}) if ft.task != "ner" else len(items),
              "tokens": sum(len(it.ids) for it in items), "device": str(device), "threads": torch.get_num_threads(),
              "metric": keys[0], "rows": rows, "ratios": _ratios(rows, keys[0], results), "notes": notes}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report, keys), encoding="utf-8")
    return report


@torch.no_grad()
def _timed(model: nn.Module, items: list[Encoded], pad_id: int, batch_size: int) -> tuple[list, float]:
    """The model's outputs on items and the real tokens per second of that pass, after a warm-up batch
    (allocations, oneDNN primitives)."""
    forward(model, items[:batch_size], pad_id, batch_size)
    start = time.perf_counter()
    logits = forward(model, items, pad_id, batch_size)
    return logits, sum(len(it.ids) for it in items) / (time.perf_counter() - start)


def _decisions(items: list[Encoded], logits: list, ft, labels: list[str], context) -> list:
    """What a model decides, one entry per decision, to compare with the teacher's: the label of each text
    (single-label), each label's yes/no (multi-label), each word's tag (NER, BIO-decoded as predicted)."""
    if ft.task == "ner":
        return [tag for it, lg, sent in zip(items, logits, context)
                for tag, _ in word_tags(it.word_ids, lg, labels, len(sent.tokens))]
    if ft.reading.window_stride:
        items, logits = pool_windows(items, logits, ft.reading.window_pool)
    stacked = torch.stack(logits)  # (texts, L)
    if ft.problem_type == "multi_label":
        return (stacked.sigmoid() >= ft.reading.threshold).flatten().tolist()
    return stacked.argmax(-1).tolist()


def _ratios(rows: list[dict], metric: str, results: dict) -> dict:
    """Student against teacher: the metric's gap (teacher - student, fp32), throughput at the same precision,
    size; and the training times."""
    at = {(r["model"], r["precision"]): r for r in rows}
    out = {}
    teacher, student = at.get(("teacher", "fp32")), at.get(("student", "fp32"))
    if teacher and student:
        out[f"{metric}_gap"] = round(teacher[metric] - student[metric], 4)
        out["parameters"] = round(student["parameters"] / teacher["parameters"], 3)
        if teacher["disk_mb"]:
            out["disk"] = round(student["disk_mb"] / teacher["disk_mb"], 3)
    for precision in ("fp32", "int8", "bf16"):
        t, s = at.get(("teacher", precision)), at.get(("student", precision))
        if t and s:
            out[f"speedup_{precision}"] = round(s["tokens_per_s"] / max(t["tokens_per_s"], 1), 2)
    control = at.get(("control", "fp32"))
    if control and student:
        out[f"{metric}_over_control"] = round(student[metric] - control[metric], 4)
    out["distill_seconds"] = results.get("seconds")
    if "control" in results:
        out["control_seconds"] = results["control"].get("seconds")
    return out


def _markdown(report: dict, keys: tuple[str, ...]) -> str:
    lines = ["# Distillation report", "",
             f"Measured in this run on the {report['split']} split ({report['texts']} texts, {report['tokens']:,} "
             f"tokens), {report['device']}, {report['threads']} threads. Agreement: the share of decisions equal "
             "to the teacher's in fp32. Throughput: real tokens per second of bertkit's inference, one pass.", "",
             "| model | precision | " + " | ".join(keys) + " | agreement | tokens/s | parameters | disk MB |",
             "|---|---|" + "---|" * (len(keys) + 4)]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['precision']} | " + " | ".join(f"{r[k]:.4f}" for k in keys)
                     + f" | {r['agreement']:.4f} | {r['tokens_per_s']:,} | {r['parameters']:,} | {r['disk_mb']} |")
    lines += ["", "Student against teacher:", ""]
    lines += [f"- {k}: {v}" for k, v in report["ratios"].items() if v is not None]
    lines += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
