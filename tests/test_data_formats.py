"""Parquet, Arrow, `datasets` folders and `datasets` names read wherever CSV is: the same rows read the same examples,
and a run on them gives the same numbers. A dataset "by name" comes from a real datasets cache built in tmp_path (the
layout `load_dataset` leaves after an online load) and is read with the Hub offline."""

import json
import random
from pathlib import Path

import pytest
import torch

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
import pyarrow.feather as feather  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bertkit import BertConfig, Tokenizer, build_model, save_model  # noqa: E402
from bertkit.cli import main  # noqa: E402
from bertkit.data.tasks import read_examples  # noqa: E402
from bertkit.errors import BertkitError  # noqa: E402

WORDS = ["good", "bad", "film", "plot", "great", "dull", "story", "actor", "fine", "poor", "the", "a", "was"]
NAMES = ["neg", "pos"]
FEATURES = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})


def rows(n: int, seed: int = 0) -> dict:
    """{"text": [...], "label": [0/1 ...]}: the label id, as datasets stores a ClassLabel."""
    rng = random.Random(seed)
    return {"text": [" ".join(rng.choices(WORDS, k=6)) + f" {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}


def write_csv(path: Path, data: dict) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{NAMES[y]}\n" for t, y in zip(data["text"], data["label"])))
    return path


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict:
    """The same train/dev/test rows as CSV, Parquet (written by datasets, so with its ClassLabel), and a DatasetDict
    folder; a tiny encoder and classifier."""
    d = tmp_path_factory.mktemp("formats")
    parts = {"train": rows(80), "dev": rows(20, 1), "test": rows(20, 2)}
    w = {"dir": d, "parts": parts}
    for name, data in parts.items():
        w[f"{name}.csv"] = write_csv(d / f"{name}.csv", data)
        w[f"{name}.parquet"] = d / f"{name}.parquet"
        datasets.Dataset.from_dict(data, features=FEATURES).to_parquet(w[f"{name}.parquet"])
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=FEATURES)
                          for k, v in parts.items()}).save_to_disk(d / "dd")
    w["dd"] = d / "dd"
    tok = Tokenizer.train(parts["train"]["text"], vocab_size=120, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    w["encoder"] = save_model(d / "encoder", build_model(config, "encoder"), tok)
    w["classifier"] = save_model(d / "classifier", build_model(config, "sequence_classification", 2), tok,
                                 labels=NAMES)
    return w


def as_tuples(examples, line: bool = False) -> list[tuple]:
    """What an example holds; its line only when asked (a CSV counts its header line, a table counts rows)."""
    return [(e.text, e.pair, e.label) + ((e.line,) if line else ()) for e in examples]


def cli(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(args, capsys, contains: str) -> str:
    code, _, err = cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("bertkit: error: "), err
    assert contains in err, err
    return err


def test_every_columnar_form_reads_the_examples_the_csv_reads(w, tmp_path):
    """Parquet, Feather (Arrow IPC file), an Arrow stream, a Dataset folder and a DatasetDict split: the examples
    of the CSV, ClassLabel ids read as their names; a Parquet file written without datasets keeps integer labels
    as text, as a JSON-lines file does."""
    data = w["parts"]["test"]
    expected = as_tuples(read_examples(w["test.csv"]))
    ds = datasets.Dataset.from_dict(data, features=FEATURES)
    table = ds.data.table  # carries datasets' features in its schema metadata
    feather.write_feather(table, tmp_path / "t.feather")
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    ds.save_to_disk(tmp_path / "one")
    for source in [w["test.parquet"], tmp_path / "t.feather", tmp_path / "t.arrow", tmp_path / "one",
                   f"{w['dd']}:test"]:
        assert as_tuples(read_examples(source)) == expected, source
    pq.write_table(pa.table(data), tmp_path / "plain.parquet")
    assert [e.label for e in read_examples(tmp_path / "plain.parquet")] == [str(y) for y in data["label"]]
    categorical = pa.table({"text": pa.array(data["text"]).dictionary_encode(),
                            "label": [NAMES[y] for y in data["label"]]})
    pq.write_table(categorical, tmp_path / "categorical.parquet")  # pandas' category dtype: a dictionary of strings
    assert as_tuples(read_examples(tmp_path / "categorical.parquet")) == expected


def test_pairs_multi_label_and_missing_labels(tmp_path):
    """A pair column; a sequence of ClassLabel as multi-label names; -1 (datasets' "no label") is a missing label,
    refused for training and None for prediction."""
    features = datasets.Features({"a": datasets.Value("string"), "b": datasets.Value("string"),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=["x", "y", "z"])),
                                  "label": datasets.ClassLabel(names=NAMES)})
    ds = datasets.Dataset.from_dict({"a": ["one", "two"], "b": ["uno", "dos"], "tags": [[0, 2], [1]],
                                     "label": [1, -1]}, features=features)
    ds.to_parquet(tmp_path / "p.parquet")
    got = read_examples(tmp_path / "p.parquet", text_column="a", pair_column="b", label_column="tags",
                        problem_type="multi_label")
    assert as_tuples(got, line=True) == [("one", "uno", ["x", "z"], 1), ("two", "dos", ["y"], 2)]
    assert [e.label for e in read_examples(tmp_path / "p.parquet", text_column="a", require_labels=False)] == \
        ["pos", None]
    with pytest.raises(BertkitError, match=r"p\.parquet:2: the label \('label'\) is empty"):
        read_examples(tmp_path / "p.parquet", text_column="a")


def test_finetune_and_evaluate_on_parquet_equal_csv(w, tmp_path, capsys):
    """The same rows as CSV and as Parquet: the same fine-tuning metrics, and the same evaluation of a model."""
    results = {}
    for kind in ("csv", "parquet"):
        out = tmp_path / kind
        code, _, err = cli(["finetune", w["encoder"], "--train", w[f"train.{kind}"], "--dev", w[f"dev.{kind}"],
                            "--test", w[f"test.{kind}"], "--out", out, "--epochs", "1", "--batch-size", "16", "-q"],
                           capsys)
        assert code == 0, err
        metrics = json.loads((out / "metrics.json").read_text())
        code, printed, err = cli(["evaluate", w["classifier"], "--input", w[f"test.{kind}"]], capsys)
        assert code == 0, err
        results[kind] = ({k: metrics[k] for k in ("dev", "test")}, json.loads(printed))
    assert results["parquet"] == results["csv"]


def add_to_cache(cache: Path, name: str, config: str, files: dict[str, Path]) -> None:
    """Put a dataset into a datasets cache as an online `load_dataset(name, config)` leaves it, with datasets' own
    Parquet builder."""
    from datasets.packaged_modules.parquet.parquet import Parquet
    Parquet(cache_dir=str(cache), dataset_name=name, config_name=config, config_id=config, hash="0123abcd",
            data_files={split: str(f) for split, f in files.items()}).download_and_prepare()


@pytest.fixture
def cached(w, tmp_path, monkeypatch) -> str:
    """A dataset named "tinyreviews" in a datasets cache under tmp_path, written by datasets' own Parquet builder as
    `load_dataset("tinyreviews")` writes it online (tinyreviews/default/0.0.0/<hash>/tinyreviews-<split>.arrow and
    dataset_info.json), then the Hub switched off."""
    cache = tmp_path / "datasets-cache"
    add_to_cache(cache, "tinyreviews", "default", {split: w[f"{split}.parquet"] for split in ("train", "test")})
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return "tinyreviews"


def test_dataset_by_name_read_offline_from_the_cache(w, cached, capsys):
    """`NAME:SPLIT` reads the cached split (ClassLabel names as labels); evaluate and predict on it equal the CSV."""
    assert as_tuples(read_examples(f"{cached}:test")) == as_tuples(read_examples(w["test.csv"]))
    for verb in ("evaluate", "predict"):
        by_name = cli([verb, w["classifier"], "--input", f"{cached}:test"], capsys)
        from_csv = cli([verb, w["classifier"], "--input", w["test.csv"]], capsys)
        assert by_name[0] == 0 and by_name[1] == from_csv[1], by_name[2]  # stdout: metrics, predictions


def test_finetune_by_name_records_the_dataset(w, cached, tmp_path, capsys):
    """--train NAME:SPLIT fine-tunes (dev and test split off by bertkit's split rule, as from a file), and the run's
    recipe names the split with its datasets fingerprint, so that --resume notices other data."""
    out = tmp_path / "run"
    code, _, err = cli(["finetune", w["encoder"], "--train", f"{cached}:train", "--out", out, "--epochs", "0.2",
                        "--batch-size", "16", "-q"], capsys)
    assert code == 0, err
    recipe = json.loads((out / "finetune_config.json").read_text())
    assert recipe["data"]["train"].startswith("tinyreviews:train (80 rows, datasets fingerprint ")
    assert json.loads((out / "model" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}


@pytest.mark.parametrize("case", ["list column", "struct column", "corrupt", "no column", "no split", "split needed",
                                  "not cached", "not a dataset folder"])
def test_bad_columnar_input_is_one_line_and_writes_nothing(w, cached, tmp_path, capsys, case):
    d = tmp_path
    pq.write_table(pa.table({"text": [["a", "b"], ["c"]], "label": ["x", "y"]}), d / "lists.parquet")
    pq.write_table(pa.table({"text": [{"a": 1}], "label": ["x"]}), d / "struct.parquet")
    (d / "corrupt.parquet").write_bytes(b"PAR1" + bytes(range(200)) + b"PAR1")
    (d / "plain").mkdir()
    source, blamed = {
        "list column": (d / "lists.parquet", "column 'text' holds list<element: string> (Arrow type), not text"),
        "struct column": (d / "struct.parquet", "column 'text' holds struct<a: int64> (Arrow type), not text"),
        "corrupt": (d / "corrupt.parquet", "corrupt.parquet: not a readable Parquet file"),
        "no column": (f"{w['dd']}:train", "no column 'sentence' (columns: text, label)"),
        "no split": (f"{cached}:validation", "no split 'validation' (splits: train, test)"),
        "split needed": (w["dd"], "name a split, as"),
        "not cached": ("nosuchdataset:train", "no dataset of that name in the local datasets cache"),
        "not a dataset folder": (d / "plain", "not one `datasets` save_to_disk wrote"),
    }[case]
    extra = ["--text-column", "sentence"] if case == "no column" else []
    out = d / "run"
    one_line_error(["finetune", w["encoder"], "--train", source, "--out", out, *extra, "-q"], capsys, blamed)
    assert not out.exists()
    one_line_error(["evaluate", w["classifier"], "--input", source, "--out", d / "ev", *extra], capsys, blamed)
    assert not (d / "ev").exists()


def test_without_pyarrow_a_one_line_hint(w, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(BertkitError, match=r"needs pyarrow: pip install 'bertkit\[data\]'"):
        read_examples(w["test.parquet"])


def test_tagged_sentences_from_a_dataset_as_from_json_lines(tmp_path):
    """Token classification: a tokens column and `ner_tags` as a sequence of ClassLabel (conll2003's layout) read as
    the JSON-lines file with the same sentences reads."""
    names = ["O", "B-PER", "I-PER", "B-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    data = {"tokens": [["Ann", "Lee", "went"], ["to", "Paris"]], "ner_tags": [[1, 2, 0], [0, 3]]}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(tmp_path / "ner")
    (tmp_path / "ner.jsonl").write_text("".join(json.dumps({"tokens": t, "tags": [names[i] for i in g]}) + "\n"
                                                for t, g in zip(data["tokens"], data["ner_tags"])))
    from bertkit.data.tasks import read_tagged
    got = read_tagged(tmp_path / "ner")
    assert [(s.tokens, s.tags) for s in got] == [(s.tokens, s.tags) for s in read_tagged(tmp_path / "ner.jsonl")]
    assert got[1].tags == ["O", "B-LOC"]


def test_squad_from_a_dataset_as_from_its_json(tmp_path):
    """Question answering: the Hub's SQuAD layout (answers as {text, answer_start} lists; none: unanswerable) reads
    the questions the SQuAD JSON file holds; an answer not at its answer_start is refused naming the row."""
    from bertkit.data.tasks import read_squad
    context = "Ann Lee went to Paris in May."
    qas = [{"id": "q1", "question": "Who went?", "answers": [{"text": "Ann Lee", "answer_start": 0}]},
           {"id": "q2", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 16}]},
           {"id": "q3", "question": "Why?", "answers": [], "is_impossible": True}]
    (tmp_path / "squad.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    table = {"id": [q["id"] for q in qas], "question": [q["question"] for q in qas], "context": [context] * 3,
             "answers": [{"text": [a["text"] for a in q["answers"]],
                          "answer_start": [a["answer_start"] for a in q["answers"]]} for q in qas]}
    datasets.Dataset.from_dict(table).to_parquet(tmp_path / "squad.parquet")
    assert read_squad(tmp_path / "squad.parquet") == read_squad(tmp_path / "squad.json")
    table["answers"][1]["answer_start"] = [15]
    datasets.Dataset.from_dict(table).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(BertkitError, match=r"bad\.parquet: question 'q2': answer 'Paris' is not at character 15"):
        read_squad(tmp_path / "bad.parquet")


def test_pretraining_documents_from_parquet_as_from_json_lines(tmp_path):
    """A corpus row is a document, as a JSON line is: the same sentences; the byte counts add up to the file's size
    (the progress bar's total)."""
    from bertkit.data.text import input_files, iter_documents, total_bytes
    docs = ["Ann went home. She slept.\nNew day here.", "", "One more document. The end."]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    pq.write_table(pa.table({"body": docs}), tmp_path / "c.parquet")
    got = list(iter_documents([tmp_path / "c.parquet"], text_field="body"))
    assert [d for d, _ in got] == [d for d, _ in iter_documents([tmp_path / "c.jsonl"], text_field="body")]
    assert sum(n for _, n in got) == total_bytes(input_files([tmp_path / "c.parquet"]))
    assert tmp_path / "c.parquet" in input_files([tmp_path])  # a folder's Parquet files are part of the corpus


def test_a_configuration_is_named_between_name_and_split(w, cached, capsys):
    """NAME:CONFIG:SPLIT for a dataset cached in two configurations; without the configuration, one line that says
    how to name it."""
    cache = datasets.config.HF_DATASETS_CACHE
    add_to_cache(cache, "twocfg", "first", {"test": w["dev.parquet"]})
    add_to_cache(cache, "twocfg", "second", {"test": w["test.parquet"]})
    assert as_tuples(read_examples("twocfg:second:test")) == as_tuples(read_examples(w["test.csv"]))
    assert as_tuples(read_examples("twocfg:first:test")) == as_tuples(read_examples(w["dev.csv"]))
    one_line_error(["evaluate", w["classifier"], "--input", "twocfg:test"], capsys, "name one as NAME:CONFIG:SPLIT")


def test_offline_environment_variables_as_a_user_sets_them(w, tmp_path):
    """In a fresh process with HF_DATASETS_CACHE and HF_HUB_OFFLINE=1 in its environment (datasets reads
    HF_DATASETS_OFFLINE=1 into the same setting), a cached name reads and an uncached one is the one-line refusal."""
    import os
    import subprocess
    import sys
    cache = tmp_path / "cache"
    add_to_cache(cache, "tinyreviews", "default", {"test": w["test.parquet"]})
    code = ("from bertkit.data.tasks import read_examples\n"
            "print(len(read_examples('tinyreviews:test')), read_examples('tinyreviews')[0].label)\n"
            "read_examples('othername:test')\n")
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout == "20 neg\n", done.stderr
    assert "othername: no such file, and no dataset of that name in the local datasets cache" in done.stderr
