"""The reliability audit: every fault found by trying bertkit as a new user would, each a regression test
(docs/reliability.md lists them), and a fuzz test over the whole command line: for every verb, bad values of every
numeric option and bad files, each must exit 2 with one line on stderr, within a time limit."""

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, save_model
from bertkit.cli import _verbs, build_parser, main
from bertkit.data.corpus import prepare
from bertkit.folders import MARKER, write_atomically
from bertkit.options import Range

WORDS = ["good", "bad", "film", "plot", "great", "dull", "story", "actor", "fine", "poor", "the", "a", "was"]


def texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS, k=6)) + f" {i}", "pos" if i % 2 else "neg") for i in range(n)]


def write_csv(path: Path, rows) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny, valid inputs for every verb: a tokenizer, an encoder, a classifier, labelled files, a corpus."""
    d = tmp_path_factory.mktemp("world")
    rows = texts(120)
    w = {"dir": d, "train": write_csv(d / "train.csv", rows[:80]), "dev": write_csv(d / "dev.csv", rows[80:100]),
         "test": write_csv(d / "test.csv", rows[100:])}
    corpus = d / "corpus.txt"
    corpus.write_text("\n\n".join(f"{a}.\n{b}." for (a, _), (b, _) in zip(rows[::2], rows[1::2])) + "\n")
    w["corpus"] = corpus
    tok = Tokenizer.train([t for t, _ in rows], vocab_size=120, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    w["encoder"] = save_model(d / "encoder", build_model(config, "encoder"), tok)
    w["classifier"] = save_model(d / "classifier", build_model(config, "sequence_classification", 2), tok,
                                 labels=["neg", "pos"])
    w["mlm"] = save_model(d / "mlm", build_model(config, "masked_lm"), tok)
    w["prepared"] = prepare([corpus], tok, d / "prepared", heldout_percent=20, progress=False)
    return w


def run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(args, capsys, contains: str = "") -> str:
    code, _, err = run(args, capsys)
    assert code == 2, f"{args}: exit {code}, stderr {err!r}"
    assert err.count("\n") == 1 and err.startswith("bertkit: error: "), err
    assert contains in err, err
    return err


# 1. Data loss: verbs never replace what they did not write


def test_export_never_deletes_a_run_or_an_unrelated_folder(world, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step_00000001").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("{}\n")
    model = run_dir / "model"
    import shutil
    shutil.copytree(world["classifier"], model)
    for to in (["export", model, run_dir, "--onnx"], ["convert", model, run_dir, "--to", "hf"]):
        one_line_error(to, capsys, "holds this command's input")
        one_line_error(to + ["--overwrite"], capsys, "holds this command's input")
    assert (run_dir / "metrics.jsonl").is_file() and (model / "model.safetensors").is_file()
    one_line_error(["convert", world["classifier"], run_dir, "--to", "hf", "--overwrite"], capsys, "training run")
    assert (run_dir / "checkpoints").is_dir()

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    one_line_error(["convert", world["classifier"], other, "--to", "hf"], capsys, "--overwrite")
    assert (other / "notes.txt").read_text() == "mine"
    assert run(["convert", world["classifier"], other, "--to", "hf", "--overwrite"], capsys)[0] == 0
    # its own earlier output may be written again without --overwrite
    assert run(["convert", world["classifier"], other, "--to", "hf"], capsys)[0] == 0
    assert (other / MARKER).is_file() and (other / "config.json").is_file()


def test_the_current_directory_is_never_an_output(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    for args in (["export", world["classifier"], ".", "--onnx", "--overwrite"],
                 ["convert", world["classifier"], ".", "--to", "hf", "--overwrite"],
                 ["convert", world["classifier"], "..", "--to", "hf", "--overwrite"]):
        one_line_error(args, capsys, "current directory")
    assert (tmp_path / "keep.txt").is_file()
    with pytest.raises(Exception, match="current directory"):  # the mechanism refuses too, whoever calls it
        write_atomically(Path("."), lambda tmp: None)


def test_orphan_temporary_folders_are_cleaned_or_restored(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".out.tmp-{dead}").mkdir()
    (tmp_path / f".gone.old-{dead}").mkdir()  # killed between moving the old folder aside and the rename
    (tmp_path / f".gone.old-{dead}" / "weights").write_text("precious")
    write_atomically(tmp_path / "out", lambda tmp: (tmp / "a").write_text("a"))
    assert not (tmp_path / f".out.tmp-{dead}").exists() and (tmp_path / "out" / "a").is_file()
    write_atomically(tmp_path / "gone2", lambda tmp: None)  # other names are left alone
    assert (tmp_path / f".gone.old-{dead}").exists()
    write_atomically(tmp_path / "gone", lambda tmp: (tmp / "new").write_text("n"))
    assert not (tmp_path / f".gone.old-{dead}").exists()  # restored as gone/, then replaced atomically
    assert (tmp_path / "gone" / "new").is_file()


# 2, 3. Hangs


def test_fewer_examples_than_a_batch_is_an_error_not_a_hang(world, tmp_path, capsys):
    small = write_csv(tmp_path / "small.csv", texts(20))
    one_line_error(["finetune", world["encoder"], "--train", small, "--dev", world["dev"], "--out", tmp_path / "r",
                    "-q"], capsys, "lower --batch-size to 20")
    assert not (tmp_path / "r").exists()
    squad = {"data": [{"paragraphs": [{"context": "the film was good", "qas": [
        {"id": f"q{i}", "question": "what was the film ?", "answers": [{"text": "good", "answer_start": 13}]}]}]}
        for i in range(2)]}
    (tmp_path / "q.json").write_text(json.dumps(squad))
    one_line_error(["finetune", world["encoder"], "--task", "qa", "--train", tmp_path / "q.json", "--dev",
                    tmp_path / "q.json", "--out", tmp_path / "qa", "-q"], capsys, "question windows")


@pytest.mark.parametrize("flag", ["--budget=-1", "--steps=-5", "--steps=0", "--tokens=0", "--budget=nan"])
def test_pretrain_stop_conditions_must_be_positive(world, tmp_path, capsys, flag):
    one_line_error(["pretrain", "--data", world["prepared"], "--out", tmp_path / "p", flag], capsys, "must be")
    assert not (tmp_path / "p").exists()


# 4. Silently wrong outputs


def test_damaged_weights_or_config_are_errors_naming_the_file(world, tmp_path, capsys):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(world["classifier"], bad)
    weights = bad / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    raw[header:] = b"\xff" * (len(raw) - header)  # every float becomes NaN
    weights.write_bytes(bytes(raw))
    one_line_error(["predict", bad, "--text", "good film"], capsys, "NaN or infinite values")
    one_line_error(["evaluate", bad, "--input", world["test"]], capsys, str(weights))

    shutil.copy(world["classifier"] / "model.safetensors", weights)
    config = json.loads((bad / "config.json").read_text())
    for field, value in (("layer_norm_eps", -1), ("layer_norm_eps", "abc"), ("initializer_range", "x"),
                         ("hidden_dropout_prob", "0.1")):
        broken = json.loads(json.dumps(config))
        broken[field] = value
        (bad / "config.json").write_text(json.dumps(broken))
        one_line_error(["predict", bad, "--text", "good film"], capsys, field)


def test_a_model_computing_infinity_is_an_error_not_a_prediction(world, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    import shutil
    bad = tmp_path / "huge"
    shutil.copytree(world["classifier"], bad)
    state = load_file(bad / "model.safetensors")
    pooler = [k for k in state if "pooler" in k]
    for k in pooler:  # the pooled vector becomes tanh(10) ~ 1 everywhere ...
        state[k] = torch.full_like(state[k], 10.0 if k.endswith("bias") else 0.0)
    state["classifier.weight"] = torch.full_like(state["classifier.weight"], 3e38)  # ... so 16 x 3e38 overflows
    save_file(state, bad / "model.safetensors")
    err = one_line_error(["predict", bad, "--text", "good film"], capsys, "NaN or infinite outputs")
    assert str(bad) in err
    one_line_error(["evaluate", bad, "--input", world["test"]], capsys, "NaN or infinite outputs")


# 5. finetune --resume with other data or options


def test_finetune_resume_refuses_changed_data_or_options(world, tmp_path, capsys):
    out = tmp_path / "ft"
    base = ["finetune", world["encoder"], "--train", world["train"], "--dev", world["dev"], "--out", out,
            "--batch-size", "16", "--epochs", "1", "-q"]
    assert run(base, capsys)[0] == 0
    other = write_csv(tmp_path / "other.csv", texts(80, seed=1))
    swapped = [other if a == world["train"] else a for a in base]
    one_line_error(swapped + ["--resume"], capsys, "data.train")
    for flag, value, key in (("--lr", "1e-3", "train.lr"), ("--batch-size", "8", "finetune.batch_size"),
                             ("--max-length", "32", "finetune.reading.max_length"), ("--epochs", "2", "finetune.epochs")):
        one_line_error(base + [flag, value, "--resume"], capsys, key)
    assert run(base + ["--lr", "1e-3", "--resume", "--force"], capsys)[0] == 0
    assert json.loads((out / "train_config.json").read_text())["lr"] == 1e-3
    assert json.loads((out / "finetune_config.json").read_text())["train"]["lr"] == 1e-3


# 7. Labels, stale plots, options


def test_embed_without_tsne_removes_an_earlier_plot(world, tmp_path, capsys):
    out = tmp_path / "emb"
    assert run(["embed", world["classifier"], "--input", world["train"], "--out", out, "-q"], capsys)[0] == 0
    assert (out / "tsne.png").is_file()
    code, stdout, _ = run(["embed", world["classifier"], "--input", world["train"], "--out", out, "--no-tsne", "-q"],
                          capsys)
    assert code == 0 and not (out / "tsne.png").exists() and "tsne.png" not in stdout


def test_a_nan_label_is_not_a_class(world, tmp_path, capsys):
    rows = texts(80)
    rows[3] = (rows[3][0], "NaN")
    one_line_error(["finetune", world["encoder"], "--train", write_csv(tmp_path / "t.csv", rows), "--dev",
                    world["dev"], "--out", tmp_path / "r", "-q"], capsys, "missing-value marker ('NaN')")


# 9. One-line errors where tracebacks were


def test_max_length_the_model_cannot_read(world, tmp_path, capsys):
    one_line_error(["finetune", world["encoder"], "--train", world["train"], "--dev", world["dev"], "--out",
                    tmp_path / "r", "--max-length", "100", "-q"], capsys, "reads 64 positions")
    assert not (tmp_path / "r").exists()
    one_line_error(["embed", world["encoder"], "--input", world["train"], "--out", tmp_path / "e", "--max-length",
                    "100", "-q"], capsys, "reads 64 positions")
    one_line_error(["finetune", world["encoder"], "--train", world["train"], "--out", tmp_path / "r",
                    "--max-length", "0"], capsys, "--max-length")


def test_an_empty_automatic_dev_split_fails_before_training(world, tmp_path, capsys):
    from bertkit.data.catalog import split_of
    rows = [r for r in texts(400) if split_of(r[0]) == "train"][:40]
    one_line_error(["finetune", world["encoder"], "--train", write_csv(tmp_path / "t.csv", rows), "--out",
                    tmp_path / "r", "--batch-size", "8", "-q"], capsys, "left the dev set empty")
    assert not (tmp_path / "r").exists()
    # a file of 100+ examples that all hash to train is a train split the rule already made (`data get`'s)
    rows = [r for r in texts(400) if split_of(r[0]) == "train"][:120]
    one_line_error(["finetune", world["encoder"], "--train", write_csv(tmp_path / "t.csv", rows), "--out",
                    tmp_path / "r", "-q"], capsys, "all 120 distinct examples fall in the train part")
    assert not (tmp_path / "r").exists()


def test_long_csv_fields_are_read(world, tmp_path, capsys):
    long = " ".join(["good film"] * 40_000)  # 360,000 characters in one field
    path = write_csv(tmp_path / "long.csv", [(long, "pos"), ("bad film", "neg")])
    code, out, err = run(["predict", world["classifier"], "--input", path], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 2


# The fuzz test: every verb, every numeric option, bad files


def _bases(w: dict, out: Path) -> dict[str, tuple[list, list[int]]]:
    """A valid command line for every verb, and the indices of its input-file arguments."""
    m, enc = w["classifier"], w["encoder"]
    return {
        "tokenizer train": (["tokenizer", "train", w["corpus"], "-o", out, "-q", "--vocab-size", "50"], [2]),
        "tokenizer encode": (["tokenizer", "encode", m, "good film"], [2]),
        "convert": (["convert", m, out, "--to", "hf"], [1]),
        "info": (["info", m], [1]),
        "prepare": (["prepare", w["corpus"], "-o", out, "--tokenizer", m, "-q"], [1, 5]),
        "pretrain": (["pretrain", "--data", w["prepared"], "--out", out, "--steps", "2", "--batch-size", "4",
                      "--max-len", "16", "--preset", "tiny", "-q"], [2]),
        "finetune": (["finetune", enc, "--train", w["train"], "--dev", w["dev"], "--out", out, "--epochs", "0.2",
                      "--batch-size", "16", "-q"], [1, 3, 5]),
        "distill": (["distill", m, "--train", w["train"], "--dev", w["dev"], "--out", out, "--epochs", "0.2",
                     "--batch-size", "16", "-q"], [1, 3, 5]),
        "evaluate": (["evaluate", m, "--input", w["test"]], [1, 3]),
        "predict": (["predict", m, "--input", w["test"]], [1, 3]),
        "explain": (["explain", m, "--text", "good film", "--method", "occlusion", "--out", out, "-q"], [1]),
        "embed": (["embed", m, "--input", w["test"], "--out", out, "--no-tsne", "-q"], [1, 3]),
        "similar": (["similar", m, "--words", "good"], [1]),
        "export": (["export", m, out, "--onnx", "--no-optimize"], [1]),
        "baseline": (["baseline", "--train", w["train"], "--dev", w["dev"], "--out", out], [2, 4]),
        "data list": (["data", "list"], []),
        "data get": (["data", "get", "nonexistent-dataset"], []),
        "demo": (["demo", "--smoke", "--out", out], []),
        "serve": (["serve", m, "--port", "0", "--threads", "1"], [1]),  # valid, so it would serve: not in the bases test
        "attack": (["attack", m, "--input", w["test"], "--out", out, "--mlm", w["mlm"], "--limit", "6", "-q"], [1, 3, 7]),
        "bias": (["bias", m, "--input", w["test"], "--out", out, "-q"], [1, 3]),
        "env": (["env"], []),
    }


def _bad_files(d: Path) -> dict[str, Path]:
    d.mkdir(exist_ok=True)
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "latin1.csv").write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    (d / "folder").mkdir(exist_ok=True)
    (d / "corrupt.parquet").write_bytes(b"PAR1" + bytes(range(200)) + b"PAR1")
    bad = {"missing": d / "missing.csv", "empty": d / "empty.csv", "binary": d / "binary.csv",
           "latin1": d / "latin1.csv", "folder": d / "folder", "corrupt parquet": d / "corrupt.parquet"}
    try:  # a list column as the text (the data extra)
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"text": [["a", "b"]], "label": ["x"]}), d / "lists.parquet")
        bad["list column"] = d / "lists.parquet"
    except ImportError:
        pass
    return bad


def _bad_devices() -> list[str]:
    """--device values this machine must refuse: names torch does not know, and the devices it lacks."""
    from bertkit.hardware import _mps_available
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return (["tpu", "cuda:x", "gpu", f"cuda:{count + 6}"] + ([] if count else ["cuda"])
            + ([] if _mps_available() else ["mps"]))


class _Hang(Exception):
    pass


def test_cli_fuzz_bad_values_and_files_fail_cleanly_and_fast(world, tmp_path, capsys, monkeypatch):
    """Every case must exit 2 with one line on stderr that names the bad option or file, in under 20 s (a hang or
    a traceback fails the test). The base command lines themselves succeed (test_fuzz_bases_are_valid)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # Hub names below: read from an empty cache, never the network
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    from huggingface_hub import constants  # read from the environment once, at import: an earlier test imported it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    try:
        import datasets.config
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-home" / "datasets")
    except ImportError:
        pass
    parser = build_parser()
    verbs = _verbs(parser)
    bases = _bases(world, tmp_path / "out")
    assert set(verbs) == set(bases), "a verb without a base command line: add it to _bases"
    cases = []
    for verb, sub in verbs.items():
        argv, file_slots = bases[verb]
        for action in sub._actions:
            if isinstance(action.type, Range) and action.option_strings:
                for value in action.type.bad_values():
                    cases.append((argv + [f"{action.option_strings[-1]}={value}"], action.option_strings[-1]))
        for slot in file_slots:
            for bad in _bad_files(tmp_path / "bad").values():
                cases.append((argv[:slot] + [bad] + argv[slot + 1:], bad.name))
        if any("--device" in a.option_strings for a in sub._actions):  # a device this machine lacks, or no device
            for value in _bad_devices():
                cases.append((argv + [f"--device={value}"], f"device {value!r}"))
        for slot in file_slots:  # a Hub model, tokenizer or dataset name that is not in the cache
            cases.append((argv[:slot] + ["nobody/not-cached"] + argv[slot + 1:], "nobody/not-cached"))
    for verb in ("pretrain", "finetune", "distill"):  # experiment logs: a backend that does not exist
        cases += [(bases[verb][0] + ["--report-to", bad], "--report-to") for bad in ("tensorbored", "none,wandb", "")]
    assert len(cases) > 200

    def alarm(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    failures = []
    try:
        for args, blamed in cases:
            signal.alarm(20)
            try:
                code = main([str(a) for a in args])
            except _Hang:
                code = "hang"
            except SystemExit as e:  # --help and friends only
                code = f"exit {e.code}"
            except Exception as e:  # noqa: BLE001 - a traceback for a user's mistake is what this test looks for
                code = f"{type(e).__name__}: {e}"
            finally:
                signal.alarm(0)
            _, err = capsys.readouterr()
            one_line = err.count("\n") == 1 and err.startswith("bertkit: error: ")
            if code != 2 or not one_line or blamed not in err:  # refused, in one line, for the right reason
                failures.append(f"{' '.join(map(str, args))} -> {code}; stderr {err[-300:]!r}")
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("verb", ["tokenizer train", "tokenizer encode", "convert", "info", "prepare", "pretrain",
                                  "finetune", "distill", "evaluate", "predict", "explain", "embed", "similar",
                                  "baseline", "data list", "attack", "bias", "env"])
def test_fuzz_bases_are_valid(world, tmp_path, capsys, verb):
    """The fuzz test's command lines work as given, so each of its cases fails for the one thing it changed.
    (export needs onnx, tested in test_export.py; data get and demo need the package index.)"""
    args, _ = _bases(world, tmp_path / "out")[verb]
    code, _, err = run(args, capsys)
    assert code == 0, err


# 25. Tracebacks that became one-line errors; a killed distillation resumes


def test_pipeline_refuses_what_is_not_a_model_folder(world, tmp_path):
    from bertkit.errors import BertkitError
    from bertkit.inference import pipeline
    (tmp_path / "file.txt").write_text("x")
    for given, says in ((3, "is a path (str or Path), got int 3"), (None, "got NoneType None"),
                        (tmp_path / "missing", "no such model directory"),
                        (tmp_path / "file.txt", "is a file; give the model directory"),
                        (tmp_path, "no config.json")):
        with pytest.raises(BertkitError, match=r"^[^\n]+$") as e:
            pipeline(given)
        assert says in str(e.value)


def test_no_texts_or_none_is_an_error_as_in_transformers(world):
    """transformers' pipelines refuse [] too ("At least one input is required." for token classification, an
    IndexError for the others); bertkit says it in one line for every predictor, and for None or a number."""
    from bertkit.errors import BertkitError
    from bertkit.inference import pipeline
    clf, mlm = pipeline(world["classifier"]), pipeline(world["mlm"])
    for call in (lambda x: clf(x), lambda x: mlm(x), lambda x: pipeline(world["encoder"]).encode(x)):
        for bad, says in (([], "no text given"), (None, "got NoneType None"), (5, "got int 5")):
            with pytest.raises(BertkitError, match=says):
                call(bad)
    with pytest.raises(BertkitError, match="no second text given"):
        clf(["good film"], [])
    assert [r["label"] for r in clf(("good film", "bad film"))] == [r["label"] for r in clf(["good film", "bad film"])]
    assert len(mlm(["a [MASK] film"])) == 1


def test_a_model_of_one_token_type_refuses_pairs(world, tmp_path, capsys):
    """type_vocab_size 1 (one segment): a pair's second segment indexed past the token-type table, an IndexError
    in bertkit as in transformers. Single texts still work; pairs and question answering are refused by name."""
    from bertkit.checkpoint import load_model
    from bertkit.errors import BertkitError
    from bertkit.inference import pipeline
    tok = load_model(world["classifier"]).tokenizer
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=64, type_vocab_size=1)
    one = save_model(tmp_path / "one", build_model(config, "sequence_classification", 2), tok, labels=["neg", "pos"])
    qa = save_model(tmp_path / "qa", build_model(config, "question_answering"), tok)
    clf = pipeline(one)
    assert clf(["good film"])[0]["label"] in ("neg", "pos")
    for call in (lambda: clf(["good film"], ["bad plot"]), lambda: pipeline(qa)(["what film"], ["a good film"])):
        with pytest.raises(BertkitError, match="type_vocab_size is 1 in its config.json") as e:
            call()
        assert "\n" not in str(e.value)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("text,pair,label\n" + "".join(f"{t},{u},{y}\n" for (t, y), (u, _) in zip(texts(40), texts(40, 1))))
    for args in (["predict", one, "--input", pairs, "--pair-column", "pair"],
                 ["evaluate", one, "--input", pairs, "--pair-column", "pair"],
                 ["finetune", one, "--train", pairs, "--dev", pairs, "--pair-column", "pair", "--out", tmp_path / "r",
                  "--batch-size", "8", "-q"]):
        one_line_error(args, capsys, "type_vocab_size is 1")
    assert not (tmp_path / "r").exists()  # refused before training: nothing left behind, not even the marker


DISTILL_KILLER = """
import os, signal, sys
import bertkit.trainer as trainer
from bertkit.cli import main
original = trainer._save_checkpoint
def save(run_dir, model, tok, labels, reading, opt, prog, state, keep):
    original(run_dir, model, tok, labels, reading, opt, prog, state, keep)
    if prog.step == {step}:  # the first checkpoint is complete: a kill -9 now
        os.kill(os.getpid(), signal.SIGKILL)
trainer._save_checkpoint = save
sys.exit(main({args!r}))
"""


@pytest.mark.slow  # three distillations and a subprocess: about 50 s on 2 busy cores
def test_distill_resume_after_sigkill_needs_no_overwrite(world, tmp_path, capsys):
    """`distill --resume` after a kill -9 was refused ("not written by bertkit distill": the folder's marker came
    at the end) unless --overwrite was given too. The marker is now written first: --resume alone continues, and
    ends with the numbers of the run that was never killed."""
    def args(out):
        return [str(a) for a in ["distill", world["classifier"], "--train", world["train"], "--dev", world["dev"],
                                 "--test", world["test"], "--out", out, "--epochs", "2", "--batch-size", "16",
                                 "--student-layers", "1", "-q"]]  # 5 steps an epoch, a checkpoint each
    assert run(args(tmp_path / "straight"), capsys)[0] == 0
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", DISTILL_KILLER.format(step=5, args=args(killed))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step_00000005"]
    assert not (killed / "metrics.json").exists()
    # without --resume: the trainer's own refusal, not the folder's; the killed run's lock is taken over first,
    # which the run says in a note of its own
    code, _, err = run(args(killed), capsys)
    note, error = err.splitlines()
    assert code == 2 and note.startswith(f"note: {killed}: taking over the lock of "), err
    assert error.startswith("bertkit: error: ") and "--resume" in error, err
    code, _, err = run(args(killed) + ["--resume"], capsys)
    assert code == 0, err
    straight, resumed = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("straight", "killed"))
    for split in ("dev", "test"):
        assert resumed[split] == straight[split]
    assert resumed["teacher"] == straight["teacher"]
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(x)["step"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]


def test_an_interrupted_run_is_resumed_without_overwrite(world, tmp_path, capsys, monkeypatch):
    """The fast variant of the kill -9 test above, for every training verb (they claim their folder alike): a run
    stopped after its first checkpoint, before its end, is continued by --resume alone."""
    import bertkit.trainer as trainer
    original = trainer._save_checkpoint

    def stopped(run_dir, model, *rest):
        original(run_dir, model, *rest)
        raise KeyboardInterrupt  # nothing after the first checkpoint runs, as after a kill

    out = tmp_path / "r"
    base = ["pretrain", "--data", world["prepared"], "--out", out, "--steps", "2", "--save-every", "1", "--log-every", "1",
            "--batch-size", "4", "--max-len", "16", "--preset", "tiny", "--eval-instances", "4", "-q"]
    monkeypatch.setattr(trainer, "_save_checkpoint", stopped)
    assert run(base, capsys)[0] == 130  # Ctrl-C's exit status
    monkeypatch.setattr(trainer, "_save_checkpoint", original)
    assert (out / MARKER).is_file() and not (out / "model").exists()
    code, _, err = run(base + ["--resume"], capsys)
    assert code == 0, err
    from bertkit.plots import read_metrics
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")[0]] == [1, 2]  # step 2 trained after the resume
