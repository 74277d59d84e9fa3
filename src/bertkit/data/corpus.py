"""A prepared pre-training corpus: token ids in sharded on-disk arrays, with sentence and document boundaries.

Layout of a prepared directory (written atomically: a crash leaves no directory that looks valid):

    meta.json                    format, dtype, vocab size, counts per split, shard names
    tokenizer/                   the tokenizer that made the ids
    train/00000.tokens           raw little-endian uint16 (vocab <= 65,536) or uint32 ids, sentences back to back
    train/00000.sentences.npy    (S + 1,) int64: token offset where each sentence starts, then the total
    train/00000.documents.npy    (D + 1,) int64: sentence index where each document starts, then S
    heldout/...                  the same for the held-out documents

Documents never straddle shards; shards are memory-mapped, so a corpus far larger than RAM streams from disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bertkit.folders import write_atomically
from bertkit.config import read_json
from bertkit.data.text import input_files, iter_documents, total_bytes
from bertkit.errors import BertkitError
from bertkit.options import POSITIVE_INT
from bertkit.tokenizer import Tokenizer

FORMAT = "bertkit-corpus/1"
SPLITS = ("train", "heldout")


@dataclass
class Shard:
    tokens: np.ndarray  # (N,) uint16/uint32, memory-mapped
    sentences: np.ndarray  # (S + 1,) int64 token offsets
    documents: np.ndarray  # (D + 1,) int64 sentence offsets

    @property
    def num_documents(self) -> int:
        return len(self.documents) - 1

    def document(self, d: int) -> list[np.ndarray]:
        """The sentences of document d, each a view (no copy) of its token ids."""
        s0, s1 = self.documents[d], self.documents[d + 1]
        starts = self.sentences[s0:s1 + 1]
        return [self.tokens[a:b] for a, b in zip(starts[:-1], starts[1:])]


class Corpus:
    """A prepared directory, opened read-only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise BertkitError(f"{self.path}: not a prepared corpus (no meta.json); run `bertkit prepare` first")
        self.meta = read_json(meta_file)
        if self.meta.get("format") != FORMAT:
            raise BertkitError(f"{meta_file}: not a {FORMAT} corpus")
        self.tokenizer = Tokenizer.load(self.path / "tokenizer")
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")

    def shards(self, split: str) -> list[Shard]:
        info = self.meta["splits"].get(split)
        if info is None:
            raise BertkitError(f"{self.path}: no split {split!r}")
        out = []
        for name in info["shards"]:
            base = self.path / split / name
            try:
                tokens = np.memmap(f"{base}.tokens", dtype=self.dtype, mode="r")
                sentences = np.load(f"{base}.sentences.npy", allow_pickle=False)
                documents = np.load(f"{base}.documents.npy", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise BertkitError(f"{base}: unreadable shard ({e})") from None
            if sentences[-1] != len(tokens) or documents[-1] != len(sentences) - 1:
                raise BertkitError(f"{base}: shard files disagree about their sizes; prepare the corpus again")
            out.append(Shard(tokens, sentences, documents))
        return out


class _ShardWriter:
    """Accumulates documents and writes a shard when it holds at least shard_tokens tokens."""

    def __init__(self, folder: Path, dtype: np.dtype, shard_tokens: int):
        self.folder, self.dtype, self.shard_tokens = folder, dtype, shard_tokens
        folder.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        self.counts = {"documents": 0, "sentences": 0, "tokens": 0}
        self._reset()

    def _reset(self) -> None:
        self.pieces: list[np.ndarray] = []
        self.sentence_lengths: list[int] = []
        self.doc_sizes: list[int] = []
        self.n_tokens = 0

    def add(self, sentences: list[list[int]]) -> None:
        for ids in sentences:
            self.pieces.append(np.asarray(ids, dtype=self.dtype))
            self.sentence_lengths.append(len(ids))
            self.n_tokens += len(ids)
        self.doc_sizes.append(len(sentences))
        self.counts["documents"] += 1
        self.counts["sentences"] += len(sentences)
        self.counts["tokens"] += sum(len(s) for s in sentences)
        if self.n_tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.doc_sizes:
            return
        name = f"{len(self.names):05d}"
        base = self.folder / name
        np.concatenate(self.pieces).astype(self.dtype.newbyteorder("<"), copy=False).tofile(f"{base}.tokens")
        np.save(f"{base}.sentences.npy", np.concatenate([[0], np.cumsum(self.sentence_lengths)]).astype(np.int64))
        np.save(f"{base}.documents.npy", np.concatenate([[0], np.cumsum(self.doc_sizes)]).astype(np.int64))
        self.names.append(name)
        self._reset()


def is_heldout(sentences: list[str], percent: float, seed: int) -> bool:
    """A document goes to the held-out split by a hash of its text and the seed: stable across runs and
    machines, independent of the order of the input."""
    h = hashlib.sha1(f"{seed}\n".encode() + "\n".join(sentences).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") % 100_000 < percent * 1000


def prepare(inputs: Sequence[str | Path], tokenizer: Tokenizer, out: str | Path, *, heldout_percent: float = 1.0,
            seed: int = 0, text_field: str = "text", shard_tokens: int = 1 << 24, batch_sentences: int = 4096,
            repeat: dict[str | Path, int] | None = None, progress: bool = True) -> Path:
    """Tokenise a corpus (plain text in google-research/bert's format, or JSON lines) into a prepared directory.

    Sentences are tokenised in parallel batches; ids carry no [CLS]/[SEP] (instances add them). Same inputs,
    tokenizer and seed give byte-identical output.

    repeat: input file -> how many times its training documents go into the train split (the data mix: in-domain
    text weighted up); its held-out documents are held out once, so none of them is ever trained on.
    """
    if not 0.0 <= heldout_percent < 100.0:
        raise BertkitError(f"heldout_percent must be in [0, 100), got {heldout_percent}")
    files = input_files(inputs)
    copies = repeat_runs(files, repeat or {})
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)

    def write(tmp: Path) -> None:
        writers = {split: _ShardWriter(tmp / split, dtype, shard_tokens) for split in SPLITS}
        pending: list[tuple[str, list[str]]] = []
        n_pending = 0

        def tokenise_pending() -> None:
            flat = [s for _, doc in pending for s in doc]
            ids = tokenizer.ids_batch(flat)
            i = 0
            for split, doc in pending:
                sentences = [x for x in ids[i:i + len(doc)] if x]  # a sentence of only control characters vanishes
                i += len(doc)
                if sentences:
                    writers[split].add(sentences)
            pending.clear()

        with tqdm(total=total_bytes(files), unit="B", unit_scale=True, unit_divisor=1024, desc="prepare",
                  disable=not progress) as bar:
            for group, n in copies:
                for sentences, consumed in iter_documents(group, text_field=text_field):
                    held_out = is_heldout(sentences, heldout_percent, seed)
                    pending += [("heldout", sentences)] if held_out else [("train", sentences)] * n
                    n_pending += len(sentences)
                    if n_pending >= batch_sentences:
                        tokenise_pending()
                        n_pending = 0
                    bar.update(consumed)
        tokenise_pending()
        for w in writers.values():
            w.flush()
        if writers["train"].counts["tokens"] == 0:
            raise BertkitError(f"no text to pre-train on in {', '.join(str(f) for f in files[:3])}"
                               f"{' ...' if len(files) > 3 else ''} (every training document is empty)")
        tokenizer.save(tmp / "tokenizer")
        meta = {
            "format": FORMAT, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "seed": seed,
            "heldout_percent": heldout_percent, "text_field": text_field,
            "inputs": [f.name for f in files],
            **({"repeat": {f.name: n for group, n in copies for f in group if n != 1}} if repeat else {}),
            "splits": {split: {"shards": w.names, **w.counts} for split, w in writers.items()},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    return write_atomically(Path(out), write)


def repeat_runs(files: list[Path], repeat: dict[str | Path, int]) -> list[tuple[list[Path], int]]:
    """The input files in order, in runs of equal repeat counts: [(files, copies), ...]; BertkitError for a count
    that is not a positive integer or a file that is not among the inputs."""
    for f, n in repeat.items():
        POSITIVE_INT.check(f"repeat {f}:", n)
    wanted = {Path(f).resolve(): n for f, n in repeat.items()}
    unknown = set(wanted) - {f.resolve() for f in files}
    if unknown:
        raise BertkitError(f"repeat names {', '.join(sorted(str(u) for u in unknown))}, which is not among the inputs")
    runs: list[tuple[list[Path], int]] = []
    for f in files:
        n = wanted.get(f.resolve(), 1)
        if runs and runs[-1][1] == n:
            runs[-1][0].append(f)
        else:
            runs.append(([f], n))
    return runs
