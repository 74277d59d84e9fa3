"""An explanation on disk: a self-contained HTML page (words highlighted per method, images inlined), PNG heat
maps and scores.json."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from bertkit.interpret.attention import rollout
from bertkit.plots import plt

METHOD_NAMES = {"ig": "integrated gradients", "gxi": "gradient x input", "saliency": "saliency (|gradient|)",
                "occlusion": "occlusion", "lime": "LIME surrogate", "attention": "attention rollout",
                "random": "random order (baseline)"}
LABELLED_WORDS = 60  # up to this many words, heat maps name each word on the axis


def highlight(text: str, words, scores: list[float]) -> str:
    """HTML of `text` with each word's background coloured by its score (green for the target, red against),
    its opacity scaled by the largest |score| of this method; the score shows on hover. Text after the last
    word (truncated away) is greyed."""
    scale = max((abs(s) for s in scores), default=0.0) or 1.0
    out, at = [], 0
    for w, s in sorted(zip(words, scores), key=lambda ws: ws[0].start):
        out.append(html.escape(text[at:w.start]))
        rgb = "0,150,0" if s >= 0 else "210,0,0"
        out.append(f'<span style="background:rgba({rgb},{0.85 * abs(s) / scale:.3f})" title="{s:+.4g}">'
                   f"{html.escape(w.text)}</span>")
        at = w.end
    rest = text[at:]
    out.append(f'<span class="cut">{html.escape(rest)}</span>' if rest.strip() else html.escape(rest))
    return "".join(out)


def plot_word_scores(e, png: Path) -> Path:
    """Methods x words, each row scaled by its largest |score| (the colour says sign and relative weight)."""
    names = list(e.word_scores)
    rows = np.array([np.asarray(e.word_scores[n]) / (np.abs(e.word_scores[n]).max() or 1.0) for n in names])
    n = len(e.words)
    labelled = n <= LABELLED_WORDS
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.35 * n + 2), 24.0), 0.5 * len(names) + (2.2 if labelled else 1.4)))
    ax.imshow(rows, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(names)), names)
    if labelled:
        ax.set_xticks(range(n), [w.text for w in e.words], rotation=60, ha="right", fontsize=8)
    else:
        ax.set_xlabel(f"word (of {n})")
    ax.set_title(f"word scores for {e.target!r}\ngreen: for, red: against; each row scaled to its largest |score|",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def plot_attention(attention, tokens: list[str], rolled, png: Path) -> Path:
    """A grid of every layer's and head's attention map (rows layers, columns heads), and below it the rollout's
    [CLS] row as bars: how much of each input token reaches [CLS] through all the layers."""
    L, H, T, _ = attention.shape
    size = 1.6 if T > 40 else 2.4
    fig = plt.figure(figsize=(size * H + 0.5, size * L + 3.2))
    grid = fig.add_gridspec(L + 1, H, height_ratios=[1.0] * L + [1.3])
    for l in range(L):
        for h in range(H):
            ax = fig.add_subplot(grid[l, h])
            ax.imshow(attention[l, h].numpy(), cmap="viridis", vmin=0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if l == 0:
                ax.set_title(f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(f"layer {l}", fontsize=8)
    ax = fig.add_subplot(grid[L, :])
    flow = rolled[0].numpy()  # (T,) row of [CLS]
    ax.bar(range(T), flow, color="#8c2d04")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylabel("rollout to [CLS]", fontsize=8)
    if T <= LABELLED_WORDS:
        ax.set_xticks(range(T), tokens, rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xlabel(f"token (of {T})", fontsize=8)
    fig.suptitle(f"attention per layer and head ({T} tokens; row: query, column: key)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png


def _img(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{png.name}" src="data:image/png;base64,{data}">'


def _faithfulness_table(faith: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(METHOD_NAMES.get(k, k))}</td><td>{v['aopc_deletion']:.4f}</td>"
                   f"<td>{v['aopc_insertion']:.4f}</td><td>{' '.join(f'{p:.3f}' for p in v['deletion'])}</td></tr>"
                   for k, v in faith.items())
    return ("<table><tr><th>method</th><th>deletion AOPC</th><th>insertion AOPC</th>"
            "<th>deletion curve (0..K words masked)</th></tr>" + rows + "</table>")


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.text{line-height:1.9;border:1px solid #ddd;padding:.6em;border-radius:4px;white-space:pre-wrap}
.cut{color:#aaa}.note{background:#fff6d6;padding:.4em .6em}img{max-width:100%}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:90%}"""


def write_report(e, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(e.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    images = [plot_word_scores(e, out / "explanation.png")]
    if e.attention is not None:
        images.append(plot_attention(e.attention, e.tokens, rollout(e.attention), out / "attention.png"))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>bertkit explanation</title>"
             f"<style>{STYLE}</style></head><body><h1>Why {html.escape(e.target)}?</h1>"]
    outputs = ", ".join(f"{html.escape(k)} {v:.4f}" for k, v in e.outputs.items())
    parts.append(f"<p>Model output: {outputs}. Scores explain the output for <b>{html.escape(e.target)}</b>.</p>")
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in e.notes]
    for name, scores in e.word_scores.items():
        seq = [[(w, s) for w, s in zip(e.words, scores) if w.sequence == k] for k in (0, 1)]
        body = highlight(e.text, [w for w, _ in seq[0]], [s for _, s in seq[0]])
        if e.pair is not None:
            body += "\n<b>[pair]</b> " + highlight(e.pair, [w for w, _ in seq[1]], [s for _, s in seq[1]])
        parts.append(f"<h3>{html.escape(METHOD_NAMES.get(name, name))}</h3><div class='text'>{body}</div>")
    if e.completeness:
        c = e.completeness
        parts.append(f"<p>Integrated gradients, {c['steps']} steps: attributions sum to {c['sum']:.5f}; "
                     f"f(input) - f(reference) = {c['delta']:.5f}; completeness error {c['error']:.2e}.</p>")
    if e.lime_fit:
        parts.append(f"<p>LIME surrogate: {e.lime_fit['samples']} samples, weighted R² {e.lime_fit['r2']:.3f}.</p>")
    if e.faithfulness:
        parts.append("<h2>Faithfulness</h2><p>Mask the top-k words of each method's ranking: the bigger the drop "
                     "(deletion) or the rise from all masked (insertion), the more faithful the explanation; "
                     "random order is the floor.</p>" + _faithfulness_table(e.faithfulness))
    parts += [f"<h2>{'Word scores' if i == 0 else 'Attention'}</h2>{_img(p)}" for i, p in enumerate(images)]
    parts.append("</body></html>")
    (out / "explanation.html").write_text("\n".join(parts), encoding="utf-8")
    return out
