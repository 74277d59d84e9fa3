"""Reading fine-tuning data: labelled texts (classification, regression, sentence pairs), tagged
sentences (token classification) and SQuAD questions (extractive QA).

Formats, chosen by the file's extension:

- `.csv`: a header row, then one record per row (csv module rules, so a quoted field may hold commas and
  newlines). An `Example` remembers the line its record starts on.
- `.tsv`: a header row, then one tab-separated record per line. Quotes are ordinary characters, as in
  google-research/bert's GLUE reader: TSV texts often start with a quote that does not wrap the field.
- `.jsonl` / `.json`: one JSON object per line (for SQuAD: the single SQuAD JSON document).
- `.parquet`, `.arrow` / `.feather`, a `datasets` save_to_disk folder or a `datasets` name (`NAME[:SPLIT]`):
  columns by name as in CSV, read by `tables` (the `data` extra); ClassLabel columns give their names.
- anything else, for tagged sentences: CoNLL, `token ... tag` per line, a blank line between sentences.

Files are read line by line in binary (`text.read_lines`), so a byte that is not UTF-8 is reported with its
line, and every mistake in a file becomes a one-line `BertkitError` that starts with `path:line:`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bertkit.data import tables
from bertkit.data.catalog import split_labelled
from bertkit.data.text import JSON_SUFFIXES, json_kind, json_object, read_lines
from bertkit.encoding.inputs import QAExample
from bertkit.errors import BertkitError
from bertkit.model.heads import PROBLEM_TYPES

DIALECTS = {".csv": dict(delimiter=",", strict=True),  # strict: a stray quote is an error, not data
            ".tsv": dict(delimiter="\t", quoting=csv.QUOTE_NONE)}


@dataclass
class Example:
    """One classification / regression / sentence-pair example."""
    text: str
    pair: str | None = None
    label: str | float | list[str] | None = None
    """str for single_label, float for regression, list[str] for multi_label; None when unlabelled."""
    line: int = 0
    """1-based line in the file (CSV/TSV: the line the record starts on), for error messages."""


def read_examples(path: str | Path, *, text_column: str = "text", pair_column: str | None = None,
                  label_column: str = "label", problem_type: str = "single_label", label_separator: str = "|",
                  require_labels: bool = True) -> list[Example]:
    """Examples from a .csv, .tsv or .jsonl/.json file, or a Parquet/Arrow file or `datasets` folder or name
    (bertkit.data.tables), in file order.

    Texts are kept as written (only checked to be non-blank); labels are stripped. With
    require_labels=False (input for prediction) the label column may be absent and a label may be empty:
    the example's label is then None.
    """
    return list(iter_examples(path, text_column=text_column, pair_column=pair_column, label_column=label_column,
                              problem_type=problem_type, label_separator=label_separator,
                              require_labels=require_labels))


def iter_examples(path: str | Path, *, text_column: str = "text", pair_column: str | None = None,
                  label_column: str = "label", problem_type: str = "single_label", label_separator: str = "|",
                  require_labels: bool = True) -> Iterator[Example]:
    """read_examples, one example at a time (prediction and evaluation stream a file of any size in bounded
    memory); a mistake is raised when its line is reached, with the same message."""
    if problem_type not in PROBLEM_TYPES:
        raise BertkitError(f"unknown problem type {problem_type!r} (choose from {', '.join(PROBLEM_TYPES)})")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DIALECTS:
        records = _csv_records(path, DIALECTS[suffix], text_column, pair_column, label_column, require_labels)
    elif suffix in JSON_SUFFIXES:
        records = _json_records(path, text_column, pair_column, label_column, require_labels)
    elif tables.is_table(path):
        path = str(path)  # a dataset name keeps its spelling ("org/name:split")
        rows = tables.table_rows(path, {"text": text_column, "pair": pair_column, "label": label_column},
                                 optional=() if require_labels else ("label",))
        records = ((row, r["text"] or "", r["pair"] or "" if pair_column else None, r["label"]) for row, r in rows)
    else:
        raise BertkitError(f"{path}: cannot tell the format from the extension {path.suffix!r} (use .csv, .tsv, "
                           f".jsonl, .json, .parquet, .arrow, a `datasets` folder or a dataset name)")
    seen = False
    for lineno, text, pair, label in records:
        where = f"{path}:{lineno}"
        if not text.strip():
            raise BertkitError(f"{where}: the text ({text_column!r}) is empty")
        if pair_column is not None and not pair.strip():
            raise BertkitError(f"{where}: the second text ({pair_column!r}) is empty")
        parsed = _parse_label(label, problem_type, label_separator, where, label_column)
        if parsed is None and require_labels:
            raise BertkitError(f"{where}: the label ({label_column!r}) is empty or a missing-value marker "
                               f"({label!r}); give the label or drop the row")
        seen = True
        yield Example(text, pair, parsed, lineno)
    if not seen:
        raise BertkitError(f"{path}: no examples in this file")


# A record before its label is parsed: (line, text, pair or None, label as a CSV string or JSON value or None).
Record = tuple[int, str, str | None, object]

# What spreadsheet and pandas exports write for an empty cell (pandas' default `na_values`): a label spelled so is
# a lost value, not a class.
MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def _csv_records(path: Path, dialect: dict, text_column: str, pair_column: str | None, label_column: str,
                 require_labels: bool) -> Iterator[Record]:
    lines = (line for _, line, _ in read_lines(path))  # with their line endings, as csv wants (newline="")
    csv.field_size_limit(2**31 - 1)  # the csv module's default (131,072 characters) is shorter than a long document
    reader = csv.reader(lines, **dialect)
    header: list[str] | None = None
    wanted: dict[str, int] = {}
    end = 0  # the last line the reader has consumed
    while True:
        start = end + 1
        try:
            row = next(reader, None)
        except csv.Error as e:
            hint = " (a quote opened in this record is never closed)" if "unexpected end" in str(e) else ""
            raise BertkitError(f"{path}:{start}: malformed record: {e}{hint}") from None
        if row is None:
            break
        end = reader.line_num
        if not row or row == [""]:
            continue  # a blank line
        if header is None:
            header = [name.strip() for name in row]
            columns = ", ".join(header)
            names = [("text", text_column), ("pair", pair_column), ("label", label_column)]
            for role, name in names:
                if name is None:
                    continue
                if name not in header:
                    if role == "label" and not require_labels:
                        continue
                    raise BertkitError(f"{path}:{start}: no column {name!r} (columns: {columns})")
                if header.count(name) > 1:
                    raise BertkitError(f"{path}:{start}: the column {name!r} appears twice in the header")
                wanted[role] = header.index(name)
            continue
        if len(row) != len(header):
            raise BertkitError(f"{path}:{start}: {len(row)} fields, but the header has {len(header)} "
                               f"({', '.join(header)})")
        yield (start, row[wanted["text"]], row[wanted["pair"]] if "pair" in wanted else None,
               row[wanted["label"]] if "label" in wanted else None)
    if header is None:
        raise BertkitError(f"{path}: empty file (expected a header row naming the columns)")


def _json_records(path: Path, text_column: str, pair_column: str | None, label_column: str,
                  require_labels: bool) -> Iterator[Record]:
    for lineno, record in _json_lines(path):
        where = f"{path}:{lineno}"
        text = _json_string(record, text_column, where)
        pair = _json_string(record, pair_column, where) if pair_column is not None else None
        if label_column not in record and require_labels:
            raise BertkitError(f"{where}: no field {label_column!r} (fields: {', '.join(record)})")
        yield lineno, text, pair, record.get(label_column)


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, object) for each non-blank line of a JSON-lines file."""
    for lineno, line, _ in read_lines(path):
        if not line.strip():
            continue
        yield lineno, json_object(line, f"{path}:{lineno}")


def _json_string(record: dict, field: str, where: str) -> str:
    if field not in record:
        raise BertkitError(f"{where}: no field {field!r} (fields: {', '.join(record)})")
    value = record[field]
    if not isinstance(value, str):
        raise BertkitError(f"{where}: field {field!r} is {json_kind(value)}, not a string")
    return value


def _parse_label(raw: object, problem_type: str, separator: str, where: str,
                 column: str) -> str | float | list[str] | None:
    """A label from a CSV field (str) or a JSON value; None when missing or empty."""
    if raw is None or (isinstance(raw, str) and raw.strip() in MISSING) or (isinstance(raw, float) and math.isnan(raw)):
        # An empty multi-label field would mean "none of the labels"; it is refused like the others so that a
        # forgotten label is never read as a negative example.
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, list)):
        raise BertkitError(f"{where}: label ({column!r}) is {json_kind(raw)}; expected a string or a number")
    if problem_type == "regression":
        if isinstance(raw, list):
            raise BertkitError(f"{where}: regression label ({column!r}) is an array, not a number")
        try:
            value = float(raw)
        except ValueError:
            raise BertkitError(f"{where}: regression label {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise BertkitError(f"{where}: regression label {raw!r} is not a finite number")
        return value
    if problem_type == "multi_label":
        parts = raw if isinstance(raw, list) else str(raw).split(separator)
        labels = []
        for part in parts:
            if isinstance(part, bool) or not isinstance(part, (str, int)):
                raise BertkitError(f"{where}: a label in {column!r} is {json_kind(part)}; expected strings")
            label = str(part).strip()
            if label in MISSING:
                raise BertkitError(f"{where}: empty or missing-value label in {raw!r} (labels are separated by "
                                   f"{separator!r})")
            if label not in labels:
                labels.append(label)
        return labels or None
    if isinstance(raw, list):
        raise BertkitError(f"{where}: label ({column!r}) is an array; use problem_type='multi_label'")
    return str(raw).strip()


def label_list(train: Sequence[Example], problem_type: str = "single_label") -> list[str]:
    """The label vocabulary: sorted unique labels of the training set (multi_label: their union); [] for
    regression. Its order fixes the label ids, so the same training file always gives the same ids."""
    if problem_type == "regression":
        return []
    labels: set[str] = set()
    for e in train:
        if isinstance(e.label, list):
            labels.update(e.label)
        elif e.label is not None:
            labels.add(e.label)
    if problem_type == "single_label" and len(labels) < 2:
        found = ", ".join(sorted(labels)) or "none"
        raise BertkitError(f"the training data has {len(labels)} distinct label(s) ({found}); "
                           f"classification needs at least 2")
    if not labels:
        raise BertkitError("the training data has no labels")
    return sorted(labels)


def check_labels(examples: Sequence[Example], labels: Sequence[str], path: str | Path) -> None:
    """BertkitError at the first example (of a dev/test file at `path`) with a label the model cannot predict."""
    known = set(labels)
    for e in examples:
        for label in e.label if isinstance(e.label, list) else [e.label]:
            if isinstance(label, str) and label not in known:
                shown = ", ".join(list(labels)[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")
                raise BertkitError(f"{path}:{e.line}: label {label!r} never appears in the training data "
                                   f"(labels: {shown})")


def split_examples(examples: Sequence[Example]) -> dict[str, list[Example]]:
    """train/dev/test by bertkit's split rule (catalog.split_labelled), order kept.

    The text hashed is the text, or `text + "\\t" + pair` for pairs. An exact duplicate (text, pair) is
    kept once (its first occurrence); one seen with two different labels is dropped.
    """
    first: dict[str, Example] = {}
    keyed = []
    for e in examples:
        key = e.text if e.pair is None else f"{e.text}\t{e.pair}"
        first.setdefault(key, e)
        label = tuple(sorted(e.label)) if isinstance(e.label, list) else e.label  # hashable, order-free
        keyed.append((key, label))
    return {name: [first[key] for key, _ in kept] for name, kept in split_labelled(keyed).items()}


# ---- token classification -------------------------------------------------------------------------

@dataclass
class TaggedSentence:
    """One sentence for token classification: a BIO tag per token."""
    tokens: list[str]
    tags: list[str]
    line: int = 0
    """1-based line of the first token (JSON lines: of the object)."""


_BIO = re.compile(r"O|[BI]-\S+")
_COLUMNS = re.compile(r"[ \t]+")  # not str.split(): U+3000 and other Unicode spaces can be tokens


def read_tagged(path: str | Path, *, tokens_field: str = "tokens", tags_field: str = "tags") -> list[TaggedSentence]:
    """Tagged sentences from CoNLL (any extension but .jsonl/.json), JSON lines ({"tokens", "tags"}) or a
    Parquet/Arrow/`datasets` source with those columns (see _tagged_table).

    CoNLL: one token per line, the token in the first column and its tag in the last (so 3- and 4-column
    CoNLL-2003 files read as they are), a blank line between sentences, "-DOCSTART-" lines skipped.
    Tags must be BIO: "O", "B-TYPE" or "I-TYPE".
    """
    return list(iter_tagged(path, tokens_field=tokens_field, tags_field=tags_field))


def iter_tagged(path: str | Path, *, tokens_field: str = "tokens", tags_field: str = "tags"
                ) -> Iterator[TaggedSentence]:
    """read_tagged, one sentence at a time (bounded memory for a file of any size)."""
    path = Path(path)
    if path.suffix.lower() in JSON_SUFFIXES:
        read = _tagged_jsonl
    elif tables.is_table(path):
        read, path = _tagged_table, str(path)
    else:
        read = _tagged_conll
    seen = False
    for sentence in read(path, tokens_field, tags_field):
        seen = True
        yield sentence
    if not seen:
        raise BertkitError(f"{path}: no sentences in this file")


def _tagged_conll(path: Path, tokens_field: str, tags_field: str) -> Iterator[TaggedSentence]:
    current = TaggedSentence([], [])
    for lineno, line, _ in read_lines(path):
        line = line.strip(" \t\r\n")
        if line.startswith("-DOCSTART-"):
            continue
        if not line:
            if current.tokens:
                yield current
            current = TaggedSentence([], [])
            continue
        columns = _COLUMNS.split(line)
        if len(columns) < 2:
            raise BertkitError(f"{path}:{lineno}: one column ({line!r}); expected a token and its tag "
                               f"separated by a space or tab")
        _check_tag(columns[-1], f"{path}:{lineno}")
        if not current.tokens:
            current.line = lineno
        current.tokens.append(columns[0])
        current.tags.append(columns[-1])
    if current.tokens:
        yield current


def _tagged_jsonl(path: Path, tokens_field: str, tags_field: str) -> Iterator[TaggedSentence]:
    for lineno, record in _json_lines(path):
        yield _tagged_record(record, tokens_field, tags_field, f"{path}:{lineno}", lineno)


def _tagged_table(source: str, tokens_field: str, tags_field: str) -> Iterator[TaggedSentence]:
    """Tagged sentences from a Parquet/Arrow file or `datasets` source: a list-of-strings tokens column and a tags
    column (strings, or a sequence of ClassLabel read as its names). Without a `tags` column, `ner_tags` is read:
    the column's name in the Hub's token-classification datasets (conll2003, wnut_17, wikiann)."""
    if tags_field == "tags" and "tags" not in tables.column_names(source):
        tags_field = "ner_tags" if "ner_tags" in tables.column_names(source) else tags_field
    for row, r in tables.table_rows(source, {"tokens": tokens_field, "tags": tags_field}):
        record = {tokens_field: r["tokens"], tags_field: r["tags"]}
        yield _tagged_record(record, tokens_field, tags_field, f"{source}:{row}", row)


def _tagged_record(record: dict, tokens_field: str, tags_field: str, where: str, position: int) -> TaggedSentence:
    """One tagged sentence from a JSON line or a table row, checked: as many BIO tags as tokens, at least one."""
    tokens, tags = (_string_list(record, field, where) for field in (tokens_field, tags_field))
    if len(tokens) != len(tags):
        raise BertkitError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
    if not tokens:
        raise BertkitError(f"{where}: the sentence has no tokens")
    for tag in tags:
        _check_tag(tag, where)
    return TaggedSentence(tokens, tags, position)


def _check_tag(tag: str, where: str) -> None:
    if not _BIO.fullmatch(tag):
        raise BertkitError(f"{where}: tag {tag!r} is not BIO; expected 'O', 'B-TYPE' or 'I-TYPE'")


def _string_list(record: dict, field: str, where: str) -> list[str]:
    if field not in record:
        raise BertkitError(f"{where}: no field {field!r} (fields: {', '.join(record)})")
    value = record[field]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BertkitError(f"{where}: field {field!r} must be an array of strings")
    return value


def tag_list(train: Sequence[TaggedSentence]) -> list[str]:
    """"O", then B-X, I-X for every type X in the training data, types sorted. I-X is included even when
    only B-X was seen (a one-token entity type can still be predicted inside a longer span)."""
    types = sorted({tag[2:] for s in train for tag in s.tags if tag != "O"})
    return ["O"] + [f"{prefix}-{t}" for t in types for prefix in "BI"]


# ---- extractive question answering -----------------------------------------------------------------

def read_squad(path: str | Path) -> list[QAExample]:
    """Questions from a SQuAD v1.1 / v2.0 JSON file, in file order. Every answer is checked to sit at its
    answer_start in the context; v2's impossible questions get no answers. A Parquet/Arrow/`datasets` source in the
    Hub's SQuAD layout (id, question, context, answers {text: [...], answer_start: [...]}) reads the same way."""
    path = Path(path)
    if path.suffix.lower() not in JSON_SUFFIXES and tables.is_table(path):
        return _squad_table(str(path))
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BertkitError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        raise BertkitError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x})") from None
    if not text.strip():
        raise BertkitError(f"{path}: empty file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BertkitError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None

    examples: list[QAExample] = []
    seen: set[str] = set()
    for i, article in enumerate(_field(doc, "data", list, path, "the file")):
        for j, para in enumerate(_field(article, "paragraphs", list, path, f"data[{i}]")):
            where = f"data[{i}].paragraphs[{j}]"
            context = _field(para, "context", str, path, where)
            for k, qa in enumerate(_field(para, "qas", list, path, where)):
                at = f"{where}.qas[{k}]"
                qid = _field(qa, "id", (str, int), path, at)
                qid = str(qid)
                if qid in seen:
                    raise BertkitError(f"{path}: question id {qid!r} appears twice ({at})")
                seen.add(qid)
                question = _field(qa, "question", str, path, at)
                answers = []
                if not qa.get("is_impossible", False):
                    for a, answer in enumerate(_field(qa, "answers", list, path, at)):
                        answers.append(_answer(answer, context, qid, path, f"{at}.answers[{a}]"))
                examples.append(QAExample(qid, question, context, answers))
    if not examples:
        raise BertkitError(f"{path}: no questions in this file")
    return examples


def _squad_table(source: str) -> list[QAExample]:
    """read_squad for a table: a row per question; an empty answers list is an unanswerable (v2) question."""
    examples, seen = [], set()
    roles = {name: name for name in ("id", "question", "context", "answers")}
    for row, r in tables.table_rows(source, roles):
        where = f"row {row}"
        qid = str(_field(r, "id", (str, int), source, where))
        if qid in seen:
            raise BertkitError(f"{source}: question id {qid!r} appears twice ({where})")
        seen.add(qid)
        context = _field(r, "context", str, source, where)
        answers = _field(r, "answers", dict, source, where)
        texts = _field(answers, "text", list, source, f"{where}.answers")
        starts = _field(answers, "answer_start", list, source, f"{where}.answers")
        if len(texts) != len(starts):
            raise BertkitError(f"{source}: {where}: {len(texts)} answer texts but {len(starts)} answer_start values")
        found = [_answer({"text": t, "answer_start": a}, context, qid, source, f"{where}.answers[{i}]")
                 for i, (t, a) in enumerate(zip(texts, starts))]
        examples.append(QAExample(qid, _field(r, "question", str, source, where), context, found))
    if not examples:
        raise BertkitError(f"{source}: no questions in this data")
    return examples


def _field(obj: object, key: str, kind: type | tuple[type, ...], path: Path, where: str):
    """obj[key], checked to be of `kind`; the error names where in the SQuAD structure it went wrong."""
    if not isinstance(obj, dict):
        raise BertkitError(f"{path}: {where} is {json_kind(obj)}, expected an object; not SQuAD-shaped JSON")
    if key not in obj:
        raise BertkitError(f"{path}: {where} has no key {key!r}; not SQuAD-shaped JSON")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = {list: "an array", str: "a string", int: "an integer", dict: "an object"}.get(kind,
                                                                                              "a string or a number")
        raise BertkitError(f"{path}: {where}.{key} is {json_kind(value)}, expected {expected}")
    return value


def _answer(answer: object, context: str, qid: str, path: Path, where: str) -> tuple[str, int]:
    text = _field(answer, "text", str, path, where)
    start = _field(answer, "answer_start", int, path, where)
    if not text:
        raise BertkitError(f"{path}: question {qid!r} has an empty answer ({where})")
    found = context[start:start + len(text)] if start >= 0 else ""
    if found != text:
        raise BertkitError(f"{path}: question {qid!r}: answer {text!r} is not at character {start} of its "
                           f"context (found {found!r})")
    return text, start


def load_task_data(task: str, train_file, dev_file=None, test_file=None, columns: dict | None = None,
                   problem_type: str = "single_label"):
    """(splits {train, dev, test} of examples or tagged sentences, labels). Without dev/test files, dev and test
    come out of the train file by bertkit's deterministic split rule. task: classification, ner or qa."""
    columns = columns or {}
    if task == "ner":
        read = read_tagged
    elif task == "qa":
        read = read_squad
    else:
        def read(path):
            return read_examples(path, problem_type=problem_type, **columns)
    if dev_file is None and test_file is None:
        if task in ("ner", "qa"):
            raise BertkitError(f"{task} needs --dev (and --test) files; they are not split automatically")
        splits = split_examples(read(train_file))
        n = sum(map(len, splits.values()))
        if n >= 100 and not splits["dev"] and not splits["test"]:  # ~1e-9 by chance: the file came from this rule
            raise BertkitError(f"{train_file}: all {n} distinct examples fall in the train part of the split rule, "
                               "so this file is itself a train split made by it (as `bertkit data get` writes "
                               "them); give its --dev (and --test) file")
        if not splits["dev"] or not splits["train"]:
            empty = "dev" if not splits["dev"] else "train"
            raise BertkitError(f"{train_file}: the automatic split left the {empty} set empty ({n} distinct "
                               "examples; about 10% go to dev, 10% to test); give a --dev file, or more data")
    else:
        splits = {"train": read(train_file), "dev": read(dev_file) if dev_file else [],
                  "test": read(test_file) if test_file else []}
        if not splits["dev"]:
            raise BertkitError("give a --dev file to evaluate on during training (or neither --dev nor --test)")
    if task == "qa":
        labels = []
    elif task == "ner":
        labels = tag_list(splits["train"])
        known = set(labels)
        for name, path in (("dev", dev_file), ("test", test_file)):
            for sent in splits[name]:
                unseen = [t for t in sent.tags if t not in known]
                if unseen:
                    raise BertkitError(f"{path}:{sent.line}: tag {unseen[0]!r} never appears in the training data")
    else:
        labels = label_list(splits["train"], problem_type)
        for name, path in (("dev", dev_file or train_file), ("test", test_file or train_file)):
            if problem_type != "regression":
                check_labels(splits[name], labels, path)
    return splits, labels
