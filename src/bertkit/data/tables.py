"""Reading rows from columnar data: Parquet and Arrow files, `datasets` folders and `datasets` datasets by name.

A source is one of, in this order (a local path that exists wins over a name):

- a `.parquet` file, or a `.arrow` / `.feather` file (Arrow IPC, file or stream format: `datasets` writes streams);
- a folder written by `datasets`' `save_to_disk` (a Dataset, or a DatasetDict: then `FOLDER:SPLIT` names a split);
- a `datasets` dataset name, `NAME` or `NAME:SPLIT` (`imdb:train`), `NAME:CONFIG:SPLIT` for a dataset with several
  configurations (`nyu-mll/glue:sst2:train`), read with `datasets.load_dataset`, which reads the local datasets
  cache when `HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1`.

Without `:SPLIT`, a source with one split reads it; one with several must name it (each of --train, --dev and
--test names its own). `pyarrow` (and `datasets` for folders and names) is the `data` extra, imported only here.

Rows are read a batch at a time, so a large file reads in bounded memory. A `ClassLabel` column gives its names
(`datasets` keeps features in the Arrow schema's "huggingface" metadata, so Parquet files it wrote carry them too);
a label of -1 there is `datasets`' "no label". Numbers in messages are 1-based row numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from bertkit.errors import BertkitError

TABLE_SUFFIXES = (".parquet", ".arrow", ".feather")
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt", ".conll") + TABLE_SUFFIXES
"""Suffixes of files: a missing path ending in one of these is a missing file, never a dataset name."""
BATCH_ROWS = 1024
# A Hub dataset id ("imdb", "stanfordnlp/sst2"), then the configuration of a dataset with several ("nyu-mll/glue:sst2")
_NAME = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?::(?P<config>[\w.-]+))?")
_TEXT_TYPES = ("string", "large_string", "string_view")
HINT = "pip install 'bertkit[data]'"


def is_table(source: str | Path) -> bool:
    """Whether `source` is read here: a Parquet/Arrow file, a folder, or (not being a local path) a dataset name."""
    path = Path(source)
    if path.suffix.lower() in TABLE_SUFFIXES or path.is_dir():
        return True
    if path.exists():
        return False
    base, _ = _split_spec(str(source))
    name = _NAME.fullmatch(base)
    return Path(base).is_dir() or (name is not None and Path(name["name"]).suffix.lower() not in FILE_SUFFIXES)


def table_rows(source: str | Path, columns: dict[str, str | None],
               optional: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, object]]]:
    """(1-based row, {role: value}) for each row of `source`; columns: {role: column name or None}. A role whose
    column is missing is an error naming the columns there are, unless the role is `optional` (then its values are
    None). A text role ("text", "pair") must be a string column; a ClassLabel column ("label") gives names."""
    schema, names, batches = _open(source)
    present = schema.names
    wanted = {}
    for role, column in columns.items():
        if column is None:
            continue
        if column not in present:
            if role in optional:
                continue
            raise BertkitError(f"{source}: no column {column!r} (columns: {', '.join(present)})")
        kind = schema.field(column).type
        value_kind = getattr(kind, "value_type", kind) if str(kind).startswith("dictionary<") else kind  # categorical
        if role in ("text", "pair") and str(value_kind) not in _TEXT_TYPES:
            raise BertkitError(f"{source}: column {column!r} holds {kind} (Arrow type), not text; choose a column "
                               "of strings")
        wanted[role] = column
    row = 0
    for batch in batches(sorted(set(wanted.values()))):
        values = {role: batch.column(column).to_pylist() for role, column in wanted.items()}
        for i in range(batch.num_rows):
            row += 1
            record = {role: None for role in columns}
            for role, column in wanted.items():
                value = values[role][i]
                if column in names:
                    value = _class_name(value, names[column], f"{source}:{row}", column)
                record[role] = value
            yield row, record


def column_names(source: str | Path) -> list[str]:
    """The columns of `source`, in order."""
    return list(_open(source)[0].names)


def dataset_fingerprint(source: str | Path) -> str:
    """A `datasets` folder or name as a run records it (runs.file_fingerprint records files), so that --resume
    can tell the data changed: its name or folder, split, rows and `datasets` fingerprint."""
    dataset, where = _dataset(str(source))
    return f"{where} ({dataset.num_rows} rows, datasets fingerprint {dataset._fingerprint})"


# ---- opening a source ---------------------------------------------------------------------------------------

def _open(source: str | Path):
    """(Arrow schema, {column: class names}, batches(columns) -> iterator of record batches or tables)."""
    pa = _need("pyarrow", source)
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            f = pq.ParquetFile(path)
            schema = f.schema_arrow
        except (pa.ArrowException, OSError) as e:
            raise BertkitError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
        return schema, _class_names(schema), lambda cols: _guarded(f.iter_batches(BATCH_ROWS, columns=cols), path)
    if path.is_file() and suffix in (".arrow", ".feather"):
        try:
            reader = _ipc_reader(pa, path)
        except (pa.ArrowException, OSError) as e:
            raise BertkitError(f"{path}: not a readable Arrow IPC file ({_first_line(e)})") from None
        return reader.schema, _class_names(reader.schema), lambda cols: _guarded(_select(reader, cols), path)
    if path.suffix.lower() in TABLE_SUFFIXES and not path.exists():
        raise BertkitError(f"{path}: no such file")
    dataset, _ = _dataset(str(source))
    schema = dataset.features.arrow_schema

    def batches(cols):
        return (t for t in dataset.select_columns(cols).with_format("arrow").iter(batch_size=BATCH_ROWS))
    return schema, _class_names(schema), batches


def _ipc_reader(pa, path: Path):
    """An Arrow IPC reader over a memory map: the file format (Feather v2), else the stream format."""
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(pa.memory_map(str(path)))


def _select(reader, cols: list[str]) -> Iterator:
    if hasattr(reader, "num_record_batches"):  # file format
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    for batch in batches:
        yield batch.select(cols)


def _guarded(batches: Iterator, path: Path) -> Iterator:
    """Batches, with a file damaged past its header reported in one line when the bad part is reached."""
    import pyarrow as pa
    try:
        yield from batches
    except (pa.ArrowException, OSError) as e:
        raise BertkitError(f"{path}: cannot read ({_first_line(e)}); the file is damaged") from None


def _dataset(spec: str):
    """(the `datasets` Dataset a folder or name (with its optional :SPLIT) names, how messages name it)."""
    base, split = (spec, None) if Path(spec).is_dir() else _split_spec(spec)
    if Path(base).is_dir() and not any((Path(base) / f).is_file() for f in ("dataset_dict.json", "state.json")):
        raise BertkitError(f"{base}: a folder, but not one `datasets` save_to_disk wrote (no dataset_dict.json "
                           "or state.json); give a data file or a dataset folder")
    datasets = _need("datasets", spec)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()  # "Using the latest cached version..." on every offline load
    if Path(base).is_dir():
        try:
            loaded = datasets.load_from_disk(base)
        except Exception as e:  # noqa: BLE001 - whatever a damaged folder raises, one line
            raise BertkitError(f"{base}: cannot load this dataset folder ({_first_line(e)})") from None
    else:
        loaded = _by_name(datasets, base)
    if isinstance(loaded, datasets.Dataset):
        if split is not None:
            raise BertkitError(f"{spec}: {base} holds one dataset, without splits; drop ':{split}'")
        return loaded, base
    splits = list(loaded)
    if split is None:
        if len(splits) != 1:
            raise BertkitError(f"{spec}: name a split, as {base}:{splits[0]} (splits: {', '.join(splits)})")
        split = splits[0]
    if split not in loaded:
        raise BertkitError(f"{spec}: no split {split!r} (splits: {', '.join(splits)})")
    return loaded[split], f"{base}:{split}"


def _by_name(datasets, spec: str):
    """A DatasetDict by Hub name (NAME or NAME:CONFIG), from the datasets cache when offline; every failure one
    line."""
    m = _NAME.fullmatch(spec)
    if m is None:
        raise BertkitError(f"{spec}: no such file or folder")
    offline = datasets.config.HF_HUB_OFFLINE or getattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    from huggingface_hub.utils import logging as hub_logging
    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # its retry warnings would make the error more than one line
    try:
        return datasets.load_dataset(m["name"], m["config"])
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds (ConnectionError, DatasetNotFoundError, ...)
        why = " ".join(line.strip() for line in str(e).splitlines()[:2])  # the choices, if any, are on line 2
        if isinstance(e, ConnectionError) or "Couldn't reach" in why:
            if offline:
                raise BertkitError(f"{spec}: no such file, and no dataset of that name in the local datasets cache "
                                   f"({datasets.config.HF_DATASETS_CACHE}) while offline (HF_HUB_OFFLINE): load it "
                                   "once online, or give a file") from None
            raise BertkitError(f"{spec}: no such file, and the Hugging Face Hub cannot be reached ({why})") from None
        if type(e).__name__ in ("DatasetNotFoundError", "FileNotFoundError"):
            raise BertkitError(f"{spec}: no such file, and no dataset of that name on the Hugging Face Hub") from None
        hint = "; name one as NAME:CONFIG:SPLIT" if "config" in why.lower() else ""
        raise BertkitError(f"{spec}: no such file, and the dataset of that name cannot be loaded "
                           f"({type(e).__name__}: {why}){hint}") from None
    finally:
        hub_logging.set_verbosity(level)


def _split_spec(spec: str) -> tuple[str, str | None]:
    """"NAME:SPLIT" -> (NAME, SPLIT), "NAME:CONFIG:SPLIT" -> ("NAME:CONFIG", SPLIT); a spec without a split (or a
    Windows drive "C:\\...") -> (spec, None)."""
    base, sep, split = spec.rpartition(":")
    if sep and base and split and re.fullmatch(r"[\w.-]+", split):
        return base, split
    return spec, None


# ---- labels -------------------------------------------------------------------------------------------------

def _class_names(schema) -> dict[str, list[str]]:
    """{column: names} of the ClassLabel columns (or sequences of ClassLabel, for multi-label) that `datasets`
    recorded in the schema's metadata; {} for a file written without `datasets`."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    names = {}
    for column, feature in features.items() if isinstance(features, dict) else ():
        while isinstance(feature, dict) and feature.get("_type") in ("Sequence", "List", "LargeList"):
            feature = feature.get("feature")
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
            names[column] = [str(n) for n in feature["names"]]
    return names


def _class_name(value, names: list[str], where: str, column: str):
    """A ClassLabel id as its name (a list of ids: their names); -1 is None, `datasets`' missing label."""
    if isinstance(value, list):
        return [_class_name(v, names, where, column) for v in value]
    if value is None or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
        raise BertkitError(f"{where}: label {value!r} in {column!r} is not a class id of its ClassLabel "
                           f"(0..{len(names) - 1})")
    return names[value]


def _need(module: str, source):
    try:
        return __import__(module)
    except ImportError:
        raise BertkitError(f"{source}: reading Parquet, Arrow and `datasets` data needs {module}: {HINT}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
