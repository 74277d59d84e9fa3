"""A model directory's README.md: a Hugging Face model card saying what the model does and how to open it.

YAML front matter for the Hub (library_name, tags, pipeline_tag), then the task, labels, reading settings, data
files and metrics when known, and how to load the folder in bertkit and in `transformers`. Pure text from the
facts given; checkpoint.write_model_card gathers them from a folder and writes the file.
"""

from __future__ import annotations

import re
from pathlib import PureWindowsPath

from bertkit.heads import HEADS

WHAT = {  # task -> (title, what it computes)
    "encoder": ("A BERT encoder", "token vectors, and a sentence vector from its pooler"),
    "pretraining": ("A pre-trained BERT", "masked-word and next-sentence predictions (its pre-training heads)"),
    "masked_lm": ("A BERT masked language model", "a prediction of each masked word"),
    "sequence_classification": ("A BERT text classifier", "a prediction per text or text pair"),
    "token_classification": ("A BERT token tagger", "a tag per word (named entities, for example)"),
    "question_answering": ("A BERT extractive question answerer", "the span of a context that answers a question"),
}
PROBLEMS = {
    "single_label_classification": "single-label (softmax over the labels: one label per text)",
    "multi_label_classification": "multi-label (a sigmoid per label: any number of labels per text)",
    "regression": "regression (a real value per output)",
}
DIR = "path/to/this/folder"


def model_card(task: str, *, labels: list[str] | None = None, reading: dict | None = None,
               data: dict | None = None, metrics: dict | None = None, hf_config: dict | None = None,
               base: dict | None = None) -> str:
    """The README.md text. data: {split or role: file or fingerprint}, shown by file name and hash; metrics: {name: value} or {split: {name: value}}
    (numbers only are shown); hf_config: the folder's config.json, for the model's size and problem type; base: the
    Hugging Face Hub model it was trained from, {"name", "revision"} (hub.hub_origin), as the Hub's `base_model`."""
    hf = hf_config or {}
    pipeline = HEADS[task].pipeline
    front = [f"base_model: {base['name']}", f"base_model_revision: {base['revision']}"] if base else []
    lines = ["---", "library_name: bertkit", f"pipeline_tag: {pipeline}", *front, "tags:", "- bertkit", "- bert",
             f"- {pipeline}", "---", "", f"# {WHAT[task][0]}", ""]
    lines += [f"It computes {WHAT[task][1]} (bertkit task `{task}`). {_size(hf)}Saved by bertkit as a Hugging Face "
              "BERT folder: `transformers` opens it as it is, and `bertkit.json` holds what only bertkit reads.", ""]
    if base:
        lines += [f"Trained from [{base['name']}](https://huggingface.co/{base['name']}) at commit "
                  f"`{base['revision']}`.", ""]
    if labels:
        lines += ["## Labels", ""]
        if hf.get("problem_type") in PROBLEMS:
            lines += [f"Problem type: {PROBLEMS[hf['problem_type']]}.", ""]
        lines += ["| id | label |", "|---|---|"] + [f"| {i} | {_cell(x)} |" for i, x in enumerate(labels)] + [""]
    elif hf.get("problem_type") == "regression":
        lines += ["## Outputs", "", f"Problem type: {PROBLEMS['regression']}.", ""]
    if reading:
        lines += ["## Reading settings", "", "How the model was trained to read text:", "",
                  "| setting | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in reading.items()] + [""]
    if data:
        lines += ["## Data", ""] + [f"- {name}: `{_cell(shared_file_name(v))}`" for name, v in data.items()] + [""]
    rows = _metric_rows(metrics or {})
    if rows:
        lines += ["## Metrics", "", "| split | metric | value |", "|---|---|---|"] + rows + [""]
    lines += ["## Use it", "", "In bertkit:", "", "```bash"] + _bertkit_commands(task) + ["```", "", "```python",
              "from bertkit import load_model", "", f'loaded = load_model("{DIR}")  # .model, .tokenizer, .labels, '
              ".reading", "```", "", "In transformers:", "", "```python",
              f"from transformers import AutoTokenizer, {HEADS[task].transformers_class}", "",
              f'model = {HEADS[task].transformers_class}.from_pretrained("{DIR}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{DIR}")', "```", ""]
    return "\n".join(lines)


def shared_file_name(value: object) -> str:
    """A data file as a card that travels with the model names it: the file's name, with the size and hash of a
    run's fingerprint ("PATH (N bytes, sha1 H)", runs.file_fingerprint), never the folder it had on one machine."""
    text = str(value)
    m = _FINGERPRINT.fullmatch(text)
    if m:
        return f"{PureWindowsPath(m[1]).name} {m[2]}"
    return PureWindowsPath(text).name or text  # splits at / and \\ alike


_FINGERPRINT = re.compile(r"(.*) (\(\d+ bytes, sha1 [0-9a-f]+\))", re.S)


def _size(hf: dict) -> str:
    try:
        return (f"Size: {hf['num_hidden_layers']} layers, hidden size {hf['hidden_size']}, {hf['num_attention_heads']} "
                f"heads, a vocabulary of {hf['vocab_size']:,}, up to {hf['max_position_embeddings']} tokens. ")
    except (KeyError, TypeError, ValueError):
        return ""


def _bertkit_commands(task: str) -> list[str]:
    if task in ("sequence_classification", "token_classification"):
        return [f'bertkit predict {DIR} --text "a text to label"', f"bertkit evaluate {DIR} --input test.csv"]
    if task == "encoder":
        return [f"bertkit embed {DIR} --input texts.csv --out vectors/"]
    return [f"bertkit info {DIR}"]


def _metric_rows(metrics: dict) -> list[str]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += [f"| {_cell(key)} | {_cell(k)} | {_number(v)} |" for k, v in value.items() if _is_number(v)]
        elif _is_number(value):
            rows.append(f"|  | {_cell(key)} | {_number(value)} |")
    return rows


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:.4f}"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")
