"""Attack and bias results on disk: JSON for machines, Markdown tables (TextAttack's and CheckList's layout), an
HTML page with every edit highlighted, a PNG chart."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

HTML_EXAMPLES = 200
"""Attacked texts shown per recipe in attack.html (adversarial.jsonl holds them all)."""
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:90%}
.ex{border:1px solid #ddd;border-radius:4px;padding:.5em .7em;margin:.6em 0;line-height:1.8}
.meta{color:#555;font-size:85%}del{background:#fdd;color:#900}ins{background:#dfd;color:#060;text-decoration:none}
.successful{border-left:4px solid #c00}.failed{border-left:4px solid #999}"""

ROWS = [("Number of successful attacks:", "successful", "{}"), ("Number of failed attacks:", "failed", "{}"),
        ("Number of skipped attacks:", "skipped", "{}"), ("Original accuracy:", "clean_accuracy", "{:.2%}"),
        ("Accuracy under attack:", "accuracy_under_attack", "{:.2%}"),
        ("Attack success rate:", "success_rate", "{:.2%}"),
        ("Average perturbed word %:", "perturbed_word_pct", "{:.2f}%"),
        ("Average num. words per input:", "words_per_input", "{:.2f}"), ("Avg num queries:", "avg_queries", "{:.2f}")]
"""TextAttack's summary table, row by row: (label, summary key, format)."""


def attack_tables(summary: dict[str, dict]) -> str:
    """Markdown: one line per recipe side by side, then TextAttack's table for each."""
    lines = ["| recipe | clean accuracy | accuracy under attack | attack success rate | words perturbed | "
             "avg queries | seconds |", "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['clean_accuracy']:.2%} | {s['accuracy_under_attack']:.2%} | "
                     f"{s['success_rate']:.2%} | {s['perturbed_word_pct']:.2f}% | {s['avg_queries']:.1f} | "
                     f"{s['seconds']:.1f} |")
    for name, s in summary.items():
        lines += ["", f"### {name}", "", "| Attack Results | |", "|---|---|"]
        lines += [f"| {label} | {fmt.format(s[key])} |" for label, key, fmt in ROWS]
    return "\n".join(lines)


def outcome_record(o, labels: list[str]) -> dict:
    """One line of adversarial.jsonl."""
    def reading(p):
        return {"label": labels[int(np.argmax(p))], "probs": {n: round(float(x), 6) for n, x in zip(labels, p)}}
    t = o.target
    return {"recipe": o.recipe, "row": t.index, "result": o.result, "label": labels[t.gold],
            "original": t.pieces.text, "perturbed": o.perturbed.text, "before": reading(t.before),
            "after": reading(o.after), "words_changed": [[t.pieces.words[i], o.perturbed.words[i]] for i in o.changed],
            "words": t.words, "queries": o.queries}


def highlighted(o) -> str:
    """The perturbed text as HTML, each changed word shown as <del>was</del><ins>is</ins>."""
    before, after = o.target.pieces.parts, o.perturbed.parts
    out = []
    for k, (a, b) in enumerate(zip(before, after)):
        if k % 2 == 0 or a == b:
            out.append(html.escape(b))
        else:
            out.append(f"<del>{html.escape(a)}</del><ins>{html.escape(b)}</ins>")
    return "".join(out)


def write_attack_report(run, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    summary = run.summary
    (out / "attack.json").write_text(json.dumps(
        {"model": run.model, "labels": run.labels, "config": vars(run.config), "notes": run.notes,
         "summary": summary}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "attack.md").write_text(f"# Attacks on {run.model}\n\n{attack_tables(summary)}\n", encoding="utf-8")
    with open(out / "adversarial.jsonl", "w", encoding="utf-8") as f:
        for outcomes in run.outcomes.values():
            for o in outcomes:
                if o.result != "skipped":
                    f.write(json.dumps(outcome_record(o, run.labels), ensure_ascii=False) + "\n")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>bertkit attacks</title><style>{STYLE}</style>"
             f"</head><body><h1>Attacks on {html.escape(run.model)}</h1>",
             "<table><tr><th>recipe</th><th>clean accuracy</th><th>accuracy under attack</th><th>success rate</th>"
             "<th>words perturbed</th><th>avg queries</th></tr>"]
    parts += [f"<tr><td>{html.escape(name)}</td><td>{s['clean_accuracy']:.2%}</td><td>{s['accuracy_under_attack']:.2%}"
              f"</td><td>{s['success_rate']:.2%}</td><td>{s['perturbed_word_pct']:.2f}%</td>"
              f"<td>{s['avg_queries']:.1f}</td></tr>" for name, s in summary.items()]
    parts.append("</table><p>Struck out in red: the original word; in green: what the attack put there.</p>")
    for name, outcomes in run.outcomes.items():
        attacked = sorted((o for o in outcomes if o.result != "skipped"), key=lambda o: o.result != "successful")
        parts.append(f"<h2>{html.escape(name)}</h2><p class='meta'>{len(attacked)} attacked texts"
                     + (f", the first {HTML_EXAMPLES} shown (successful first)" if len(attacked) > HTML_EXAMPLES
                        else "") + "</p>")
        for o in attacked[:HTML_EXAMPLES]:
            r = outcome_record(o, run.labels)
            b, a = r["before"], r["after"]
            parts.append(f"<div class='ex {o.result}'><div>{highlighted(o)}</div><div class='meta'>{o.result}: gold "
                         f"{html.escape(r['label'])}; before {html.escape(b['label'])} "
                         f"{b['probs'][b['label']]:.3f} &rarr; after {html.escape(a['label'])} "
                         f"{a['probs'][a['label']]:.3f}; {o.queries} queries</div></div>")
    parts.append("</body></html>")
    (out / "attack.html").write_text("\n".join(parts), encoding="utf-8")
    return out


# ---- bias ----------------------------------------------------------------------------------------------------

def invariance_tables(result: dict) -> str:
    """Markdown: CheckList's summary (a test case fails when any counterpart changes the prediction), then per
    category and group the flip rate and probability shifts, then the worst examples."""
    lines = [f"# Invariance of {result['model']} ({result['lang']})", "",
             "| test | cases | failed | failure rate | pairs | flipped | mean shift | max shift |",
             "|---|---|---|---|---|---|---|---|"]
    for t in result["tests"]:
        lines.append(f"| INV: swap {t['category']} ({t['source']}) | {t['cases']} | {t['failed']} | "
                     f"{t['failure_rate']:.1%} | {t['pairs']} | {t['flip_rate']:.1%} | {t['mean_shift']:.4f} | "
                     f"{t['max_shift']:.4f} |")
    lines += ["", "## By group (the group swapped in)", "",
              "| category | group | pairs | flipped | mean shift | max shift |", "|---|---|---|---|---|---|"]
    for g in result["groups"]:
        lines.append(f"| {g['category']} | {g['group']} | {g['pairs']} | {g['flip_rate']:.1%} | "
                     f"{g['mean_shift']:.4f} | {g['max_shift']:.4f} |")
    lines += ["", "## Largest shifts", "", "| category | original | counterpart | before | after | shift |",
              "|---|---|---|---|---|---|"]
    for w in result["worst"]:
        lines.append(f"| {w['category']} | {_cell(w['original'])} | {_cell(w['counterpart'])} | {w['before']} | "
                     f"{w['after']} | {w['shift']:.4f} |")
    return "\n".join(lines)


def crows_tables(result: dict) -> str:
    lines = [f"# Stereotype preference of {result['model']} ({result['lang']})", "",
             "Share of minimal pairs where the model gives the stereotyping sentence the higher pseudo-log-likelihood "
             "(50 = no preference; ties count half). Unscorable pairs (the words that differ are [UNK] on both "
             "sides, or nothing is shared) are left out of the share.", "",
             "| category | pairs | unscorable | prefers the stereotype |", "|---|---|---|---|"]
    for name, c in result["categories"].items():
        lines.append(f"| {name} | {c['pairs']} | {c['unscorable']} | {_pct(c['stereo_pct'])} |")
    lines.append(f"| **all** | {result['pairs']} | {result['unscorable']} | **{_pct(result['stereo_pct'])}** |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plot_invariance(result: dict, png: Path) -> Path:
    """Bars: the flip rate of each test (left), the mean probability shift of each group (right)."""
    from bertkit.plots import plt  # matplotlib only when a chart is drawn: the command line starts faster
    tests, groups = result["tests"], result["groups"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.4 * max(len(tests), len(groups), 3) + 1.5))
    names = [f"{t['category']} ({t['source']})" for t in tests]
    left.barh(range(len(tests)), [100 * t["flip_rate"] for t in tests], color="#c44e52")
    left.set_yticks(range(len(tests)), names, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("% of swaps that flip the prediction")
    right.barh(range(len(groups)), [g["mean_shift"] for g in groups], color="#4c72b0")
    right.set_yticks(range(len(groups)), [f"{g['category']}: {g['group']}" for g in groups], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("mean |probability shift| when swapped in")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"invariance tests: {Path(result['model']).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_crows(result: dict, png: Path) -> Path:
    """Bars per category of the stereotype preference, with the 50% line of no preference."""
    from bertkit.plots import plt
    names = list(result["categories"]) + ["all"]
    shares = [result["categories"][n]["stereo_pct"] for n in names[:-1]] + [result["stereo_pct"]]
    values = [0.0 if v is None else v for v in shares]  # a category with no scorable pair: an empty bar, "n/a"
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.4))
    bars = ax.barh(range(len(names)), values, color=["#4c72b0"] * (len(names) - 1) + ["#222"])
    ax.axvline(50, color="#c44e52", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.bar_label(bars, labels=[_pct(v) for v in shares], padding=3)
    ax.set_xlabel("% of pairs where the stereotyping sentence is preferred (50 = none)")
    ax.set_title(f"stereotype preference: {Path(result['model']).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def write_bias_report(result: dict, out: Path) -> Path:
    """bias.json, bias.md and bias.png, for either kind of result (invariance or CrowS-style)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bias.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    crows = result["kind"] == "crows"
    (out / "bias.md").write_text((crows_tables(result) if crows else invariance_tables(result)) + "\n",
                                 encoding="utf-8")
    (plot_crows if crows else plot_invariance)(result, out / "bias.png")
    return out
