"""Reading a pre-training corpus into documents of sentences.

Next-sentence prediction pairs a sentence with the one that follows it or with a random sentence from
another document, so the corpus reader keeps both levels: a document is a list of sentences.

Three input formats:

- `.txt` (and any extension other than .jsonl/.json): google-research/bert's format. Documents are separated
  by blank lines; each other line is a sentence or a paragraph and goes through `split_sentences`. A document
  of more than MAX_DOCUMENT_LINES lines is cut into blocks of that many, with a warning.
- `.jsonl` / `.json`: one JSON object per line, one document each; its text field is split into paragraphs
  on newlines, then into sentences.
- `.parquet`, `.arrow` / `.feather`: one document per row, its text column read as a JSON line's text field
  (bertkit.data.tables; the `data` extra).

Files are streamed line by line in binary and decoded per line, so a corpus larger than RAM reads fine and
a bad byte is reported with its line number.
"""

from __future__ import annotations

import codecs
import glob
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from bertkit.data.tables import TABLE_SUFFIXES, table_rows
from bertkit.errors import BertkitError

JSON_SUFFIXES = (".jsonl", ".json")
SUFFIXES = (".txt",) + JSON_SUFFIXES + TABLE_SUFFIXES

MAX_DOCUMENT_LINES = 5_000
"""Lines of a .txt document beyond which it is cut into blocks of this many. Real documents stay far below (a
chapter of a Jane Austen novel has at most 112 paragraph lines, a People's Daily document 20), so only
a file without blank lines is cut: whole, it would be one document held in memory (a 50 MB file of one
sentence a line peaked at 2 GB), with nothing to hold out and NSP's "random" sentences drawn from itself.
A block is ~0.5 MB of one-sentence lines."""

# Words that end in a period without ending the sentence, as written (case matters: "No." but not "no.").
ABBREVIATIONS = frozenset("""
    Mr Mrs Ms Dr Prof Sr Jr St Messrs Mme Mlle Hon Rev Capt Col Gen Lt Maj Sgt Cpl Adm Gov Sen Rep Pres
    Inc Ltd Co Corp Bros No Nos Fig Figs Vol vol pp Mt Ft Ave
    Jan Feb Apr Jun Jul Aug Sep Sept Oct Nov Dec
    vs etc e.g i.e approx ca c fl cf al
""".split())

# A boundary candidate. Full-width marks end a sentence on their own; Latin ones only before whitespace,
# and `_latin_break` then looks at the words on both sides.
_BOUNDARY = re.compile(
    r"[。！？]+(?:[”」』）】]|’(?![0-9０-９]))*"  # "’９８" after a full stop is the year 1998, not a quote
    r"|(?<!…)…+[”’」』]+"  # an ellipsis ends a sentence only when a quote closes after it
    r"|(?<![.!?])(?P<latin>[.!?]+)[\"'”’)\]]*(?=\s)"
)  # the look-behinds start a match only at a run's first mark: linear time on "......" leaders
_NEXT_CHAR = re.compile(r"\s*(\S)")
_LAST_WORD = re.compile(r"[\w.]+$")
_OPENERS = "\"'“‘([{「『（【《"
# "U.S", "e.g", "a.m": letters joined by periods. The word before the final period is what gets tested.
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences; English and Chinese. Stripped, no empty strings."""
    sentences = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        if m.group("latin") is not None and not _latin_break(text, m):
            continue
        sentence = text[start:m.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = m.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def _latin_break(text: str, m: re.Match) -> bool:
    """Whether `.`/`!`/`?` (+ closing quotes) at m, followed by whitespace, ends a sentence."""
    nxt = _NEXT_CHAR.match(text, m.end())
    if nxt is None:
        return True  # only whitespace follows
    c = nxt.group(1)
    if not (c.isupper() or c.isdigit() or c in _OPENERS or _is_cjk(c)):
        return False
    if m.group("latin") != ".":
        return True  # "!", "?", "...", "?!": no abbreviation ends in these
    # Only the last 24 characters are looked at; a word that fills them is too long to be an abbreviation.
    lo = max(0, m.start() - 24)
    w = _LAST_WORD.search(text, lo, m.start())
    if w is None or (w.start() == lo and lo > 0):
        return True
    word = w.group().lstrip(".")
    if word in ABBREVIATIONS or _DOTTED.fullmatch(word):
        return False
    # A single capital is an initial ("J. K. Rowling"), except "I": in real text "World War I." and
    # "as well as I." end sentences far more often than "I." is an initial.
    return not (len(word) == 1 and word.isupper() and word != "I")


def _is_cjk(c: str) -> bool:
    """Kana, CJK ideographs or Hangul: scripts without capitals, so after ". " they start a new sentence."""
    return "\u3040" <= c <= "\u30ff" or "\u3400" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af"


def input_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand inputs: a file, a directory (recursively, files ending .txt, .jsonl, .json sorted by path), or a
    glob pattern. Sorted, deduplicated. BertkitError if a path does not exist / a glob matches nothing /
    nothing found."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: dict[Path, Path] = {}  # resolved -> as given, so "a.txt" and "./x/../a.txt" count once
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = _text_files(path)
            if not files:
                raise BertkitError(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
        elif any(c in str(item) for c in "*?["):
            files = []
            for match in sorted(glob.glob(str(item), recursive=True)):
                p = Path(match)
                files += _text_files(p) if p.is_dir() else [p] if p.is_file() else []
            if not files:
                raise BertkitError(f"{item}: no files match this pattern")
        else:
            raise BertkitError(f"{path}: no such file or directory")
        for f in files:
            found.setdefault(f.resolve(), f)
    if not found:
        raise BertkitError("no input files given")
    return sorted(found.values())


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def total_bytes(files: list[Path]) -> int:
    """The sum of the files' sizes: what the byte counts from `iter_documents` add up to."""
    return sum(Path(f).stat().st_size for f in files)


def iter_documents(inputs: Sequence[str | Path], text_field: str = "text",
                   warn: bool = True) -> Iterator[tuple[list[str], int]]:
    """Yield (sentences of one document, number of input bytes consumed since the previous yield) — the byte
    count feeds a MB/s progress bar. warn: say on stderr, once per file, that a file is cut into blocks of
    MAX_DOCUMENT_LINES lines (off for a second pass over the same files).

    Every byte is counted exactly once: blank lines, empty documents and files with no text are added to
    a neighbouring document, so the counts sum to `total_bytes(input_files(inputs))` (when any document
    is found). To make that possible the last document is held back until the next one is complete.
    """
    held: tuple[list[str], int] | None = None
    consumed = 0
    for path in input_files(inputs):
        if path.suffix.lower() in JSON_SUFFIXES:
            documents = _read_jsonl(path, text_field)
        elif path.suffix.lower() in TABLE_SUFFIXES:
            documents = _read_table(path, text_field)
        else:
            documents = _read_txt(path, warn)
        for sentences, n in documents:
            consumed += n
            if sentences:
                if held is not None:
                    yield held
                held, consumed = (sentences, consumed), 0
    if held is not None:
        yield held[0], held[1] + consumed


def _read_txt(path: Path, warn: bool) -> Iterator[tuple[list[str], int]]:
    """(document, bytes) in google-research/bert's format; the last document may be empty, to carry bytes.
    A document never holds more than MAX_DOCUMENT_LINES lines: a longer run is cut into blocks."""
    doc: list[str] = []
    lines = n = 0
    for _, line, size in read_lines(path):
        if not line.strip():
            n += size
            if doc:
                yield doc, n
                doc, lines, n = [], 0, 0
            continue
        if lines == MAX_DOCUMENT_LINES:
            if warn:
                tqdm.write(f"bertkit: warning: {path} has no blank lines between documents for "
                           f"{MAX_DOCUMENT_LINES:,}+ lines: cutting it into blocks of {MAX_DOCUMENT_LINES:,} lines "
                           f"(put a blank line between documents)", file=sys.stderr)
                warn = False
            yield doc, n
            doc, lines, n = [], 0, 0
        doc += split_sentences(line)
        lines += 1
        n += size
    yield doc, n  # a file's end ends its document


def _read_jsonl(path: Path, text_field: str) -> Iterator[tuple[list[str], int]]:
    n = 0
    for lineno, line, size in read_lines(path):
        n += size
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        record = json_object(line, where)
        if text_field not in record:
            fields = ", ".join(repr(k) for k in list(record)[:5]) or "none"
            raise BertkitError(f"{where}: the record has no {text_field!r} field (its fields: {fields}); "
                               f"choose the field with text_field")
        text = record[text_field]
        if not isinstance(text, str):
            raise BertkitError(f"{where}: field {text_field!r} is {json_kind(text)}, not a string")
        yield _document(text), n
        n = 0
    yield [], n


def _read_table(path: Path, text_field: str) -> Iterator[tuple[list[str], int]]:
    """A document per row of a Parquet/Arrow file; the file's bytes are counted at its end (a table is not read in
    byte order)."""
    for _, record in table_rows(path, {"text": text_field}):
        yield _document(record["text"] or ""), 0
    yield [], path.stat().st_size


def _document(text: str) -> list[str]:
    """A document's sentences: its lines are paragraphs, each split into sentences."""
    return [s for paragraph in text.splitlines() for s in split_sentences(paragraph)]


def json_object(line: str, where: str) -> dict:
    """One line of a JSON-lines file as an object, or a one-line error naming `where` (path:line)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise BertkitError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); "
                           f"expected one JSON object per line") from None
    if not isinstance(record, dict):
        raise BertkitError(f"{where}: expected a JSON object, got {json_kind(record)}")
    return record


def json_kind(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
             bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(1-based line number, decoded line, its size in bytes in the file), streamed."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BertkitError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            size = len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BertkitError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte "
                                   f"{e.start + 1} of the line)") from None
            yield lineno, line, size
