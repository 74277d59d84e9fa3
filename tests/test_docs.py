"""The shell commands of README.md and docs/*.md, checked two ways, so that a renamed flag or a missing file fails.

Parsed: every `bertkit ...` command parses with the real parser: the verb exists and every option is one that verb
takes, with a valid value (cheap, and it covers the commands that are not run).

Run: every fenced shell block (bash, sh, shell, console; Python and the rest are not run) runs as written, a line at
a time through bash, in a folder of its own and in page order, so a later line reads what an earlier one wrote. Names
resolve to tiny stand-ins: Hub names to tiny BERTs in an offline Hugging Face cache, catalog names to small files in a
pre-filled BERTKIT_CACHE, and what a block reads but does not write (my.csv, MODEL, runs/sentiment/model, ...) is put
into its folder before the first line that names it. An HTML comment just above a block (GitHub does not show it)
says how it runs:
    <!-- docs-test: slow -->                 run only with `-m slow` (the default run of this file stays near a minute)
    <!-- docs-test: skip (why) -->           not run (parsed only)
    <!-- docs-test: skip WORDS (why) -->     the lines holding WORDS are not run
Other programs: installs and venvs are not rerun (the test environment is installed); `bertkit serve` starts in the
background and must answer /health before the next line, and stops at the next serve line or the block's end; `curl`
must get an answer that is not an error; `tensorboard --logdir DIR` is not started, but DIR must hold its logs; any
other line (cat, python benchmarks/...) must exit 0."""

from __future__ import annotations

import bz2
import contextlib
import csv
import io
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from bertkit import BertConfig, Tokenizer, build_model, save_model
from bertkit.cli import build_parser, main
from bertkit.errors import BertkitError

from test_checkpoint import _write_old_format
from test_data_formats import add_to_cache as add_dataset_to_cache
from test_distill import tagged_sentence
from test_finetune import review, squad_file
from test_hub import COMMIT, add_to_cache

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
ENV = re.compile(r"^(\w+=\S*\s+)*")
"""`NAME=value ` before a command."""


class Block(NamedTuple):
    page: Path
    line: int
    """The opening fence's line."""
    lang: str
    lines: list[tuple[int, str]]
    """(line number, a line as written, continuations joined); comment lines dropped."""
    marks: list[str]
    """The docs-test comments just above the block."""


def doc_blocks(path: Path) -> list[Block]:
    """The page's fenced blocks, in page order (shell ones have a lang in SHELL)."""
    blocks, marks, block = [], [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        fence = re.fullmatch(r"```(\w*)", text)
        if fence and block is None:
            block = Block(path, number, fence.group(1).lower(), [], marks)
        elif fence:
            blocks.append(block)
            block, marks = None, []
        elif block is None:
            mark = re.fullmatch(r"<!-- docs-test: (.+?) -->", text)
            marks = [*marks, mark.group(1)] if mark else []
        elif block.lines and block.lines[-1][1].endswith("\\"):
            start, head = block.lines[-1]
            block.lines[-1] = (start, f"{head[:-1].rstrip()} {text}")
        elif text and not text.startswith("#"):
            block.lines.append((number, text.removeprefix("$ ")))
    return blocks


def doc_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of each `bertkit ...` command in the page's shell blocks: `a && b`, `a | b` and
    `a; b` split, a leading `NAME=value` dropped."""
    out = []
    for block in doc_blocks(path):
        for number, line in block.lines if block.lang in SHELL else []:
            for part in re.split(r"&&| \| |; ", line):
                part = ENV.sub("", part.strip())
                if re.match(r"(bertkit|python -m bertkit\.cli) ", part):
                    out.append((number, part))
    return out


COMMANDS = [(path, number, command) for path in PAGES for number, command in doc_commands(path)]
BLOCKS = [block for path in PAGES for block in doc_blocks(path) if block.lang in SHELL]


def test_the_docs_hold_commands():
    assert len(COMMANDS) >= 80  # the collector finds them (a broken collector would pass every case below)
    assert {p.name for p, _, _ in COMMANDS} >= {"README.md", "ecosystem.md"}
    assert len(BLOCKS) >= 25 and sum(len(b.lines) for b in BLOCKS) >= 100
    # a command in a block of another language (or none) would escape both checks
    assert not [f"{b.page.name}:{n}" for path in PAGES for b in doc_blocks(path) if b.lang not in SHELL
                for n, line in b.lines if re.match(r"(bertkit|python -m bertkit\.cli|torchrun) ", line)]


@pytest.mark.parametrize("path,number,command", COMMANDS,
                         ids=[f"{p.name}:{n}" for p, n, _ in COMMANDS])
def test_doc_command_parses(path, number, command):
    words = shlex.split(command, comments=True)
    words = words[1:] if words[0] == "bertkit" else words[3:]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(words)
    except BertkitError as e:  # bertkit's parser reports a bad option as a one-line error
        pytest.fail(f"{path.name}:{number}: {command}\n{e}")
    except SystemExit as e:
        if e.code:  # --help and --version exit 0
            pytest.fail(f"{path.name}:{number}: {command}\n{errors.getvalue().strip()}")


def test_a_wrong_flag_fails_the_check(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\nbertkit predict MODEL --text hi --no-such-flag\n```\n", encoding="utf-8")
    (number, command), = doc_commands(page)
    assert number == 4
    with pytest.raises((SystemExit, BertkitError)), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(shlex.split(command)[1:])


# ---- running the blocks ------------------------------------------------------------------------------------------


class Plan(NamedTuple):
    slow: bool
    skip: str
    """Why the whole block is not run; empty: it runs."""
    skip_lines: list[tuple[str, str]]
    """(words, why): a line holding the words is not run."""


def plan(block: Block) -> Plan:
    slow, skip, skip_lines = False, "", []
    for mark in block.marks:
        m = re.fullmatch(r"(slow|skip)(?: ([^(]+?))?(?: \((.+)\))?", mark)
        if m is None or (m[1] == "skip") != bool(m[3]) or (m[1] == "slow" and m[2]):
            raise ValueError(f"{block.page.name}:{block.line}: docs-test mark {mark!r} is neither `slow`, "
                             "`skip (why)` nor `skip WORDS (why)`")
        slow = slow or m[1] == "slow"
        if m[1] == "skip" and m[2]:
            skip_lines.append((m[2], m[3]))
        elif m[1] == "skip":
            skip = m[3]
    return Plan(slow, skip, skip_lines)


def _param(block: Block):
    p = plan(block)
    marks = [pytest.mark.slow] if p.slow else []
    marks += [pytest.mark.skip(reason=p.skip)] if p.skip else []
    return pytest.param(block, marks=marks, id=f"{block.page.name}:{block.line}")


INSTALL = re.compile(r"(pip install|python -m venv|\. |source ) ?")
"""Lines (or parts of an `a && b` line) that set up an environment: the tests run in one already installed."""


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_doc_block_runs(block, world, tmp_path):
    run_block(block, world, tmp_path)


def test_a_failing_line_fails_its_block(world, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- docs-test: skip never (not run) -->\n```bash\necho one > one.txt\ncat one.txt && never\n"
                    "cat one.txt   # and then\ncat two.txt\n```\n", encoding="utf-8")
    block, = doc_blocks(page)
    with pytest.raises(AssertionError, match=r"page.md:6: cat two.txt\s+exit status 1\s+cat: two.txt: No such file"):
        run_block(block, world, tmp_path / "run")


def run_block(block: Block, world: World, folder: Path) -> None:
    """Run the block's lines in order in folder (see the module's docstring); a failing line fails the test."""
    folder.mkdir(exist_ok=True)
    skip_lines = plan(block).skip_lines
    server = None
    try:
        for number, line in block.lines:
            where = f"{block.page.name}:{number}: {line}"
            line = " && ".join(part for part in line.split(" && ") if not INSTALL.match(part))
            if not line or any(words in line for words, _ in skip_lines):
                continue
            world.provide(line, folder)
            command = ENV.sub("", line)
            words = shlex.split(command, comments=True)
            if re.match(r"(bertkit|python -m bertkit\.cli) serve ", command):
                stop(server)
                server = start_server(line, where, world.env, folder)
            elif words[0] == "tensorboard":
                logdir = folder / words[words.index("--logdir") + 1]
                assert list(logdir.rglob("events.out.tfevents.*")), f"{where}\nno TensorBoard logs in {logdir}"
            else:
                r = subprocess.run(["bash", "-c", line], cwd=folder, env=world.env, capture_output=True, text=True,
                                   timeout=600)
                assert r.returncode == 0, f"{where}\nexit status {r.returncode}\n{tail(r.stderr or r.stdout)}"
                if words[0] == "curl":
                    answer = json.loads(r.stdout or "null")
                    assert answer and not (isinstance(answer, dict) and "error" in answer), f"{where}\n{r.stdout}"
    finally:
        stop(server)


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def start_server(line: str, where: str, env: dict, folder: Path) -> subprocess.Popen:
    """`bertkit serve ...` in the background, in a process group of its own (stop() ends bash and the server
    alike); returns once it answers /health."""
    words = shlex.split(line, comments=True)
    port = int(words[words.index("--port") + 1]) if "--port" in words else 8000
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip(f"port {port} is taken on this machine; {where} serves there")
    log = folder / f".serve-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", line], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    pytest.fail(f"{where}\nno answer on /health (exit status {proc.returncode})\n{tail(log.read_text())}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---- the stand-ins -----------------------------------------------------------------------------------------------

DOC_WORDS = ("what a great film gorgeous witty film though the ending drags moving how are you fine carol smith "
             "flew to oslo where does live lives in capital of norway is king man woman queen tokenization works")


class World:
    """What the docs' commands find: tiny models and files under the names the docs use, an offline Hugging Face
    cache (models and a dataset), a catalog cache, and the environment the commands run in."""

    def __init__(self, root: Path):
        self.stock, self.home = root / "stock", root / "hf"
        home, cache = self.home, root / "bertkit-cache"
        self.env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "BERTKIT_CACHE": str(cache), "WANDB_MODE": "offline",
                    "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "OMP_NUM_THREADS": "1", "KEY": "secret-key",
                    "PYTHONPATH": os.pathsep.join(sys.path),
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        self.env.pop("HF_HUB_CACHE", None)
        rng = random.Random(0)
        self.texts = [review(rng, i % 2 == 0) for i in range(200)]
        self.sentences = [tagged_sentence(rng) for _ in range(96)]
        self.tok = Tokenizer.train([*self.texts, *(" ".join(s[0]) for s in self.sentences), DOC_WORDS],
                                   vocab_size=300, min_frequency=1, show_progress=False)
        self.config = BertConfig(vocab_size=self.tok.vocab_size, hidden_size=32, num_layers=6, num_heads=2,
                                 intermediate_size=64, max_position_embeddings=512)
        self._catalog(cache / "extracted")

    def _catalog(self, extracted: Path) -> None:
        """The files the catalog reads out of its packages, small, as extracted (so nothing is fetched)."""
        (extracted / "rt-polarity").mkdir(parents=True)
        with bz2.open(extracted / "rt-polarity" / "rotten_tomatoes_corpus_full.csv.bz2", "wt", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
            for i, text in enumerate(self.texts):
                rows.writerow(["fresh" if i % 2 == 0 else "rotten", text, f"film {i % 7}", "True"])
            rows.writerows(["plot", f"{text} .", f"film {i}", "True"] for i, text in enumerate(self.texts[:7]))
        (extracted / "wiki").mkdir()
        leads = {str(i): {"extract": " ".join(s[0]) + " .", "topic": ["People", "Places"][i % 2]}
                 for i, s in enumerate(self.sentences)}
        (extracted / "wiki" / "summaries_en-us.json").write_text(json.dumps(leads))
        shutil.copytree(self.model("encoder"), extracted / "all-MiniLM-L6-v2")
        for folder in extracted.iterdir():
            (folder / ".complete").write_text("ok\n")

    @cache
    def model(self, task: str) -> Path:
        """A freshly initialised tiny BERT with this head (pretraining: MLM + NSP), as a folder."""
        torch.manual_seed(0)
        return save_model(self.stock / task, build_model(self.config, task), self.tok)

    @cache
    def run(self, task: str) -> Path:
        """A model fine-tuned by `bertkit finetune` (classification or ner), its run folder."""
        out = self.stock / f"run-{task}"
        data = {"classification": "train.csv", "ner": "train.conll"}[task]
        dev = [] if task == "classification" else ["--dev", str(self.file("dev.conll"))]
        assert main(["finetune", str(self.model("encoder")), "--task", task, "--train", str(self.file(data)), *dev,
                     "--out", str(out), "--epochs", "1", "-q"]) == 0
        return out

    @cache
    def file(self, name: str) -> Path:
        """A small data file or folder of the kind its name says."""
        path = self.stock / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [(text, "positive" if i % 2 == 0 else "negative") for i, text in enumerate(self.texts[:96])]
        if name.endswith(".csv") and name not in ("tags.csv", "train.csv", "dev.csv", "test.csv"):
            write_rows(path, rows)
        elif name in ("train.csv", "dev.csv", "test.csv"):
            write_rows(path, rows[{"train": slice(0, 64), "dev": slice(64, 80), "test": slice(80, 96)}[path.stem]])
        elif name == "tags.csv":
            write_rows(path, [(t, "|".join(["film"] + (["good"] if y == "positive" else []))) for t, y in rows])
        elif name == "nli.tsv":
            path.write_text("text\thypothesis\tlabel\n" + "".join(f"{t}\t{self.texts[i + 1]}\t{y}\n"
                                                                   for i, (t, y) in enumerate(rows)))
        elif name == "scores.jsonl":
            path.write_text("".join(json.dumps({"text": t, "label": len(t) / 10}) + "\n" for t, _ in rows))
        elif name.endswith(".conll"):
            part = {"train": self.sentences[:64], "dev": self.sentences[64:80], "test": self.sentences[80:]}
            path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(*s)) + "\n" for s in part[path.stem]))
        elif name.endswith("-v2.0.json"):
            squad_file(path, random.Random(name), 64 if name.startswith("train") else 16, impossible=0.2)
        elif name.endswith(".txt"):
            docs = self.texts if name != "zh.txt" else ["北京是中华人民共和国的首都。这部电影非常好看。"] * 40
            path.write_text("".join(f"{a}.\n{b}.\n\n" for a, b in zip(docs[::2], docs[1::2])), encoding="utf-8")
        elif name in ("train.parquet", "test.parquet", "dev.parquet", "texts.feather", "corpus.parquet"):
            import pyarrow as pa
            import pyarrow.feather
            import pyarrow.parquet
            column = "body" if name in ("texts.feather", "corpus.parquet") else "text"
            table = pa.table({column: [t for t, _ in rows], "label": [y for _, y in rows]})
            (pyarrow.feather.write_feather if name.endswith(".feather") else pyarrow.parquet.write_table)(table, path)
        elif name == "saved":
            import datasets
            datasets.DatasetDict({s: datasets.Dataset.from_csv(str(self.file(f"{s}.csv")))
                                  for s in ("train", "test")}).save_to_disk(path)
        elif name in ("data/rt-polarity", "data/peoples-daily-ner"):
            for split in ("train", "dev", "test"):
                f = self.file(f"{split}.csv" if name == "data/rt-polarity" else f"{split}.conll")
                path.mkdir(exist_ok=True)
                shutil.copy(f, path / f.name)
        else:
            raise KeyError(name)
        return path

    @cache
    def hub(self, repo: str, task: str) -> None:
        """A Hub model in the offline Hugging Face cache (nothing to put into the block's folder)."""
        add_to_cache(self.home / "hub", repo, self.model(task), COMMIT)

    @cache
    def imdb(self) -> None:
        """A dataset by name in the offline datasets cache, as `load_dataset("imdb")` leaves it."""
        add_dataset_to_cache(self.home / "datasets", "imdb", "plain_text",
                             {s: self.file(f"{s}.parquet") for s in ("train", "test")})

    @cache
    def emb(self) -> Path:
        out = self.stock / "emb"
        assert main(["embed", str(self.run("classification") / "model"), "--input", str(self.file("train.csv")),
                     "--out", str(out), "-q"]) == 0
        return out

    @cache
    def corpus(self) -> Path:
        out = self.stock / "corpus"
        assert main(["prepare", str(self.file("corpus.txt")), "--tokenizer", str(self.model("encoder")), "-o",
                     str(out), "-q"]) == 0
        return out

    @cache
    def old_format(self) -> Path:
        torch.manual_seed(0)
        out = self.stock / "old-format"
        _write_old_format(out, build_model(self.config, "sequence_classification", 2), self.tok, ["neg", "pos"])
        return out

    def stand_ins(self) -> dict:
        """Doc name -> a function that makes it: the inputs the docs take to exist. It returns what to copy into the
        block's folder, or None for a name in a shared cache (a Hub model, a dataset)."""
        files = ["my.csv", "new.csv", "train.csv", "dev.csv", "test.csv", "reviews.csv", "big.csv", "long_docs.csv",
                 "tags.csv", "nli.tsv", "scores.jsonl", "train.conll", "dev.conll", "test.conll", "train-v2.0.json",
                 "dev-v2.0.json", "corpus.txt", "more.txt", "your-text.txt", "zh.txt", "texts.feather",
                 "train.parquet", "dev.parquet", "corpus.parquet", "saved", "data/rt-polarity",
                 "data/peoples-daily-ner"]
        return {**{name: lambda name=name: self.file(name) for name in files},
                **dict.fromkeys(["MODEL", "path/to/hf-bert", "MINILM_DIR", "data/minilm-l6"],
                                lambda: self.model("encoder")),
                "runs/mini/model": lambda: self.model("pretraining"),
                "runs/mlm/model": lambda: self.model("masked_lm"),
                "runs/old-format": self.old_format,
                **dict.fromkeys(["runs/sentiment/model", "runs/teacher/model",
                                 "runs/demo-en/minilm-rt-polarity/model"],
                                lambda: self.run("classification") / "model"),
                "runs/ner/model": lambda: self.run("ner") / "model",
                "runs/emb": self.emb,
                **dict.fromkeys(["runs/corpus", "prepared"], self.corpus),
                "benchmarks": lambda: ROOT / "benchmarks",
                **{repo: lambda repo=repo: self.hub(repo, "pretraining")
                   for repo in ("bert-base-uncased", "dmis-lab/biobert-base-cased-v1.2",
                                "nlpaueb/legal-bert-base-uncased")},
                "sentence-transformers/all-MiniLM-L6-v2": lambda: self.hub("sentence-transformers/all-MiniLM-L6-v2",
                                                                           "encoder"),
                "imdb": self.imdb}

    def provide(self, line: str, folder: Path) -> None:
        """Put into folder each stand-in the line names (a path, or a path's start) that is not there yet. Outputs
        (after -o, --out, --output) are left to the line itself."""
        words = shlex.split(line, comments=True)
        named = [part for i, w in enumerate(words) if not (i and words[i - 1] in ("-o", "--out", "--output"))
                 for part in w.split("=")]
        for name, make in self.stand_ins().items():
            dest = folder / name
            if dest.exists() or not any(w == name or w[len(name):len(name) + 1] in ("/", "@", ":")
                                        for w in named if w.startswith(name)):
                continue
            src = make()
            if src is None:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name == "benchmarks":
                dest.symlink_to(src)
            elif src.is_dir():
                shutil.copytree(src, dest)
            else:
                shutil.copy(src, dest)


def write_rows(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("docs-world"))
