"""PNG plots of training runs (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of a metrics.jsonl."""
    train, evals = [], []
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if any(k.startswith("eval_") for k in r):
            evals.append(r)
        elif "loss" in r:
            train.append(r)
    return train, evals


def plot_training(metrics: Path, png: Path) -> Path | None:
    """Loss curves on the left (training losses, held-out loss), held-out accuracies on the right."""
    train, evals = read_metrics(metrics)
    if not train and not evals:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in train]
    for key, label in (("loss", "train loss"), ("mlm_loss", "train MLM loss"), ("nsp_loss", "train NSP loss")):
        if train and key in train[0]:
            left.plot(steps, [r[key] for r in train], label=label, lw=1)
    if evals and "eval_mlm_loss" in evals[0]:
        left.plot([r["step"] for r in evals], [r["eval_mlm_loss"] for r in evals], "o-", label="held-out MLM loss")
    if evals and "eval_loss" in evals[0]:
        left.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="dev loss")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend()
    left.grid(alpha=0.3)
    acc_keys = sorted({k for r in evals for k in r if k.startswith("eval_") and ("accuracy" in k or k.endswith("f1"))})
    for key in acc_keys:
        pts = [(r["step"], r[key]) for r in evals if key in r]
        right.plot(*zip(*pts), "o-", label=key.removeprefix("eval_").replace("_", " "))
    right.set_xlabel("step")
    right.set_ylabel("held-out score")
    right.set_ylim(0, 1)
    if acc_keys:
        right.legend()
    right.grid(alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_comparison(scores: dict[str, float], png: Path, title: str = "") -> Path:
    """Horizontal bars, one per method, labelled with the score in percent."""
    names = list(scores)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(names) + 1.2))
    bars = ax.barh(range(len(names)), [scores[n] for n in names], color="#4c72b0")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.bar_label(bars, labels=[f"{scores[n]:.1%}" for n in names], padding=3)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_points(xy, labels: list[str], png: Path, title: str = "") -> Path:
    """A 2-D scatter (t-SNE of embeddings, say), a colour per label."""
    fig, ax = plt.subplots(figsize=(7, 6))
    names = sorted(set(labels))
    colours = plt.cm.tab10 if len(names) <= 10 else plt.cm.tab20
    for i, name in enumerate(names[:20]):  # beyond 20 labels colours stop meaning anything
        pts = [p for p, y in zip(xy, labels) if y == name]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, alpha=0.7, color=colours(i), label=name)
    if len(names) > 20:
        pts = [p for p, y in zip(xy, labels) if y not in names[:20]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, alpha=0.5, color="grey", label="(other labels)")
    ax.legend(markerscale=3, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
