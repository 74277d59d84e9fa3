"""Past one machine: predict, embed and evaluate on several processes (torchrun, --workers) give what one process
gives, byte for byte; a job killed with SIGKILL, run again on another number of processes, writes every row once;
pre-training, fine-tuning and predict across two "nodes" (two torchrun launchers on loopback) equal one process."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, save_model
from bertkit.cli import main
from bertkit.inference import TextClassifier
from bertkit.inference.shards import parts_folder
from bertkit.inference.stream import CHUNK_ENV

WORDS = ["good", "bad", "film", "plot", "great", "dull", "story", "actor", "fine", "poor", "the", "a", "was"]
ROWS = 300
CHUNK = "16"  # rows a chunk: 19 chunks, dealt to the processes in turn


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("scale")
    rng = random.Random(0)
    rows = [(" ".join(rng.choices(WORDS, k=rng.randint(2, 20))), "pos" if i % 3 else "neg") for i in range(ROWS)]
    (d / "in.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    tok = Tokenizer.train([t for t, _ in rows], vocab_size=60, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
    return {"dir": d, "data": d / "in.csv",
            "clf": save_model(d / "clf", build_model(config, "sequence_classification", 2), tok,
                              labels=["neg", "pos"], reading={"max_length": 16}),
            "encoder": save_model(d / "encoder", build_model(config, "encoder"), tok)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", CHUNK_ENV: CHUNK}


def torchrun(nproc: int, *launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
            "127.0.0.1", "--master-port", str(free_port()), *launcher]


def bertkit(*args, procs: int = 1) -> subprocess.CompletedProcess:
    """`bertkit ARGS` as one process, or as `procs` processes of a torchrun job."""
    start = torchrun(procs) if procs > 1 else [sys.executable]
    proc = subprocess.run([*start, "-m", "bertkit.cli", *map(str, args)], env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


LOGGED = textwrap.dedent("""
    import os, sys, time
    from bertkit.inference import TextClassifier
    original = TextClassifier.__call__
    def logged(self, texts, *a, **k):  # the rows each process predicts are logged; DELAY seconds a chunk
        with open(os.environ["ROWS_LOG"], "a") as f:
            f.write(f"{os.environ.get('RANK', '0')} {len(texts)}\\n")
        time.sleep(float(os.environ["DELAY"]))
        return original(self, texts, *a, **k)
    TextClassifier.__call__ = logged
    if "PIDS" in os.environ:
        with open(os.path.join(os.environ["PIDS"], os.environ.get("RANK", "0")), "w") as f:
            f.write(str(os.getpid()))
    from bertkit.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def predict_args(w, out) -> list:
    return ["predict", w["clf"], "--input", w["data"], "--output", out, "-q"]


@pytest.fixture(scope="module")
def reference(w) -> bytes:
    """The output of one process."""
    bertkit(*predict_args(w, w["dir"] / "one.jsonl"))
    return (w["dir"] / "one.jsonl").read_bytes()


def test_predict_on_two_processes_is_byte_identical(w, reference, tmp_path):
    out, log = tmp_path / "two.jsonl", tmp_path / "rows.log"
    (tmp_path / "logged.py").write_text(LOGGED)
    proc = subprocess.run([*torchrun(2, str(tmp_path / "logged.py")), *map(str, predict_args(w, out))],
                          env={**env(), "ROWS_LOG": str(log), "DELAY": "0"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == reference
    assert len(reference.splitlines()) == ROWS
    assert not parts_folder(out).exists()
    rows = [line.split() for line in log.read_text().splitlines()]  # each process predicts its share, once
    assert sum(int(n) for _, n in rows) == ROWS and {r for r, _ in rows} == {"0", "1"}


def test_embed_on_two_processes_is_byte_identical(w, tmp_path):
    common = ["embed", w["encoder"], "--input", w["data"], "--no-tsne", "-q"]
    bertkit(*common, "--out", tmp_path / "one")
    bertkit(*common, "--out", tmp_path / "two", procs=2)
    for name in ("vectors.npy", "index.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["rows"] == ROWS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no parts left


def evaluate_args(w, out) -> list:
    return ["evaluate", w["clf"], "--input", w["data"], "-q", "--out", out]


@pytest.fixture(scope="module")
def evaluated(w) -> tuple[str, str]:
    """metrics.json and what one process prints."""
    out = w["dir"] / "metrics"
    printed = bertkit(*evaluate_args(w, out)).stdout.replace(str(out), "OUT")
    return (out / "metrics.json").read_text(), printed


def test_evaluate_on_two_processes_gives_the_same_metrics(w, evaluated, tmp_path):
    two = bertkit(*evaluate_args(w, tmp_path), procs=2)
    assert (tmp_path / "metrics.json").read_text() == evaluated[0]
    metrics = json.loads(evaluated[0])
    assert sum(metrics["confusion_matrix"][0]) + sum(metrics["confusion_matrix"][1]) == ROWS
    assert two.stdout.replace(str(tmp_path), "OUT") == evaluated[1]  # said once, by process 0




def test_a_job_killed_with_sigkill_resumes_on_another_number_of_processes(w, reference, tmp_path):
    out, pids, log = tmp_path / "out.jsonl", tmp_path / "pids", tmp_path / "rows.log"
    pids.mkdir()
    (tmp_path / "slow.py").write_text(LOGGED)
    job = subprocess.Popen([*torchrun(2, str(tmp_path / "slow.py")), *map(str, predict_args(w, out))],
                           env={**env(), "ROWS_LOG": str(log), "PIDS": str(pids), "DELAY": "0.3"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (parts_folder(out).is_dir() and any(parts_folder(out).glob("0*.jsonl"))):  # the first part is done
        assert job.poll() is None and time.time() < deadline, job.stderr.read()[-3000:] if job.poll() else "slow"
        time.sleep(0.05)
    os.kill(int((pids / "0").read_text()), signal.SIGKILL)  # process 0, which joins the parts at the end
    assert job.wait(timeout=120) != 0
    job.stderr.close()
    assert not out.exists()
    written = sum(len(p.read_text().splitlines()) for p in parts_folder(out).glob("0*.jsonl"))
    assert 0 < written < ROWS
    log.unlink()
    proc = subprocess.run([sys.executable, str(tmp_path / "slow.py"), *map(str, predict_args(w, out))],
                          env={**env(), "ROWS_LOG": str(log), "DELAY": "0"}, capture_output=True, text=True,
                          timeout=300)  # the same command, on one process
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == reference
    assert sum(int(line.split()[1]) for line in log.read_text().splitlines()) == ROWS - written  # each row once
    assert not parts_folder(out).exists()


def test_workers_equal_one_process(w, reference, evaluated, tmp_path):
    bertkit(*predict_args(w, tmp_path / "w.jsonl"), "--workers", "2")
    assert (tmp_path / "w.jsonl").read_bytes() == reference
    bertkit(*evaluate_args(w, tmp_path / "metrics"), "--workers", "2")
    assert (tmp_path / "metrics" / "metrics.json").read_text() == evaluated[0]


def children(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is pid, from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if d.name.isdigit() and int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_end_when_their_launcher_is_killed(w, tmp_path):
    """SIGKILL of the --workers launcher, which cannot pass it on: its workers (blocked reading their input, a pipe
    nobody writes) end with it instead of waiting forever."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    launcher = subprocess.Popen([sys.executable, "-m", "bertkit.cli", "predict", str(w["clf"]), "--input", str(fifo),
                                 "--output", str(tmp_path / "out.jsonl"), "--workers", "2", "-q"], env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(workers := children(launcher.pid)) < 2:
        assert time.time() < deadline and launcher.poll() is None, "the workers did not start"
        time.sleep(0.1)
    time.sleep(3)  # past their start: blocked on the pipe or on each other
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 20
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, "workers outlived their launcher"


def test_a_rerun_that_reads_otherwise_is_refused_in_one_line(w, reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv(CHUNK_ENV, CHUNK)
    original, calls = TextClassifier.__call__, []

    def dies_at_chunk_3(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)
    parts_folder(out).mkdir()  # as a job of several processes leaves it: its parts continue, whatever the processes
    monkeypatch.setattr(TextClassifier, "__call__", dies_at_chunk_3)
    args = [str(a) for a in predict_args(w, out)]
    assert main(args) == 130
    monkeypatch.setattr(TextClassifier, "__call__", original)
    kept = sorted(p.name for p in parts_folder(out).iterdir())
    assert kept == ["000000000000-000000000016.jsonl", "000000000016-000000000032.jsonl", "manifest.json"]
    capsys.readouterr()
    assert main([*args, "--max-length", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("bertkit: error:") == 1 and "\n" not in err.split("bertkit: error:")[1].strip(), err
    assert "unfinished run that differs in: options (max_length); give the same" in err and "--overwrite" in err
    assert sorted(p.name for p in parts_folder(out).iterdir()) == kept  # refused: nothing touched
    assert main(args) == 0
    assert out.read_bytes() == reference and not parts_folder(out).exists()


# ---- two "nodes" on loopback: two torchrun launchers of one process each ---------------------------------------

def two_nodes(*args, logs: Path) -> None:
    """Both launchers write to files, not pipes: a launcher that waits for its peer prints a line a second, and a
    pipe nobody reads fills and stops it, and its peer with it."""
    port = str(free_port())
    launchers = []
    for node in (0, 1):
        log = open(logs / f"node{node}.log", "w")
        launchers.append((subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
             str(node), "--master-addr", "127.0.0.1", "--master-port", port, "-m", "bertkit.cli", *map(str, args)],
            env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
    deadline = time.time() + 240
    for node, _ in launchers:
        try:
            node.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            break
    for node, log in launchers:
        if node.poll() is None:  # past the deadline: the launcher and its worker are stopped, their logs shown
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        log.close()
    for k, (node, _) in enumerate(launchers):
        assert node.returncode == 0, f"node {k}: {node.returncode}\n" + (logs / f"node{k}.log").read_text()[-3000:]


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def test_two_nodes_pretrain_finetune_and_predict_equal_one_process(w, reference, tmp_path):
    from bertkit.data.corpus import prepare
    from test_pretrain import tiny, write_corpus
    corpus = write_corpus(tmp_path / "corpus.txt")
    tok = Tokenizer.train(files=[corpus], vocab_size=300, min_frequency=1, show_progress=False)
    prepared = prepare([corpus], tok, tmp_path / "prepared", heldout_percent=10, progress=False)
    (tmp_path / "model.json").write_text(json.dumps(tiny(tok.vocab_size).to_dict()))
    pre = ["pretrain", "--data", prepared, "--model-config", tmp_path / "model.json", "--max-len", "32",
           "--batch-size", "8", "--accum", "2", "--steps", "4", "--log-every", "1", "--eval-every", "4",
           "--save-every", "4", "--eval-instances", "8", "--lr", "2e-3", "-q"]
    fine = ["finetune", w["encoder"], "--train", w["data"], "--epochs", "1", "--batch-size", "16", "--lr", "3e-3",
            "-q"]  # 14 steps (a tenth of the rows held out as dev), the loss logged at steps 10 and 14
    for name, args, steps in (("pretrain", pre, [1, 2, 3, 4]), ("finetune", fine, [10, 14])):
        bertkit(*args, "--out", tmp_path / f"{name}-one")
        two_nodes(*args, "--out", tmp_path / f"{name}-two", logs=tmp_path)
        a, b = losses(tmp_path / f"{name}-one"), losses(tmp_path / f"{name}-two")
        assert sorted(a) == sorted(b) == steps, name
        for step in a:
            assert a[step] == pytest.approx(b[step], abs=1e-5), (name, step, a[step], b[step])
    two_nodes(*predict_args(w, tmp_path / "two.jsonl"), logs=tmp_path)
    assert (tmp_path / "two.jsonl").read_bytes() == reference
