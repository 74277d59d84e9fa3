"""Sentence embeddings from any encoder, nearest-neighbour search over them, and word vectors of the input
embedding table.

Shapes: N texts, Q queries, B batch, T tokens, C hidden, V vocab.

    vectors = Embedder.load("runs/model").encode(texts)   # (N, C), rows L2-normalised (bertkit.inference)
    index = VectorIndex(vectors)                          # exact; ivf=True when N is large
    scores, ids = index.search(Embedder.load("runs/model").encode(["a query"]), k=10)
    embed_file("runs/model", "train.csv", "runs/emb")     # vectors.npy + index.jsonl + meta.json (+ tsne.png)
    similar("runs/emb", ["a witty film"], k=5)            # nearest texts, with timings
    nearest_words(loaded, "king - man + woman")           # word arithmetic over the input embeddings

An index knows the model that made it: meta.json records the model's fingerprint (a hash of its weights, config
and tokenizer files and of the pooling, layer and length it was read with), and `similar` (or the server's
/similar) refuses a query model whose fingerprint differs: its vectors would live in another space, of the same
width or not. An index written before fingerprints were recorded still loads, with a note.

`embed_file` streams: the input is read, embedded and written CHUNK_ROWS rows at a time into a folder of chunks
beside the output, `.OUT.partial/` (000000000000-000000004096.jsonl + .npy, ...: named by their rows; a chunk is
complete when its .npy is there, renamed into place after its records), so memory is bounded by a chunk, not the
file, and the first results are on disk after the first chunk. Under torchrun (or `--workers N`) the chunks are
dealt to the processes (bertkit.inference.shards). A run killed part-way, run again, continues from its complete
chunks; manifest.json in that folder records the model's fingerprint, the input's hash and the options: a run
that reads otherwise starts again, or with resume=True (`--resume`) is refused. When every chunk is there, the
index is assembled in a temporary folder (vectors.npy through a memory map of its final shape, filled a chunk at a
time) that replaces `out` by a rename (bertkit.folders.write_atomically): an earlier index in `out` stays whole
and queryable until the new one is complete, whatever fails on the way (a full disk included).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bertkit.errors import BertkitError
from bertkit.folders import atomic_file, disk_error, file_digest, write_atomically
from bertkit.hub import resolve_model
from bertkit.inference.embed import Embedder
from bertkit.inference.shards import Job, Parts, join_parts, write_part
from bertkit.tokenizer import Tokenizer

_KEPT = "; the previous index, if any, is unchanged; free space, then run again with --resume"

IVF_FROM = 100_000  # rows from which `build_index` clusters (IVF) instead of scanning every row
CHUNK_ROWS = 4096
"""Rows `embed_file` reads, embeds and writes at once: a few seconds of a small model on a CPU, so the first
results come early, and a few MB held (texts, tokens, vectors) whatever the file's size."""


def knn_classify(train_vecs: torch.Tensor, train_labels: Sequence[str], query_vecs: torch.Tensor,
                 k: int = 10, batch_size: int = 1024) -> list[str]:
    """Majority label of the k most cosine-similar training vectors (rows assumed L2-normalised);
    ties go to the label whose neighbours are more similar in sum."""
    preds = []
    scores, ids = VectorIndex(train_vecs, batch_size=batch_size).search(query_vecs, k)
    for vals, idx in zip(scores.tolist(), ids.tolist()):
        votes: Counter = Counter()
        weight: Counter = Counter()
        for v, i in zip(vals, idx):
            votes[train_labels[i]] += 1
            weight[train_labels[i]] += v
        preds.append(max(votes, key=lambda lab: (votes[lab], weight[lab])))
    return preds


class VectorIndex:
    """Cosine nearest neighbours over L2-normalised rows (N, C).

    Exact by default: queries in batches, one matmul against every row and a top-k (10k rows of 384 answer a
    query in about a millisecond on 2 cores). With `ivf` the rows are first clustered by k-means into ~sqrt(N) lists and a
    query scans only the `nprobe` lists whose centroids are nearest: approximate, for sets too large to scan
    (nprobe = the number of lists is exact again)."""

    def __init__(self, vectors, *, ivf: bool = False, nlist: int | None = None, nprobe: int = 8,
                 batch_size: int = 256, seed: int = 0):
        self.vectors = F.normalize(torch.as_tensor(np.asarray(vectors), dtype=torch.float32), dim=-1)  # (N, C)
        self.batch_size, self.nprobe = batch_size, nprobe
        self.centroids, self.lists = None, None
        if ivf and len(self.vectors) > 1:
            from sklearn.cluster import KMeans
            nlist = min(nlist or int(np.sqrt(len(self.vectors))), len(self.vectors))
            km = KMeans(nlist, n_init=1, random_state=seed, max_iter=20).fit(self.vectors.numpy())
            self.centroids = F.normalize(torch.from_numpy(km.cluster_centers_).float(), dim=-1)  # (nlist, C)
            assign = torch.from_numpy(km.labels_.astype(np.int64))
            self.lists = [torch.nonzero(assign == c).flatten() for c in range(nlist)]

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, ids), each (Q, k'), k' = min(k, N): cosine similarity and row, most similar first. queries:
        (Q, C), or one (C,); vectors of another width are an error, never reshaped into the index's."""
        q = torch.as_tensor(np.asarray(queries), dtype=torch.float32)
        q = q.reshape(0, self.vectors.shape[1]) if q.numel() == 0 else q.unsqueeze(0) if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise BertkitError(f"queries of shape {tuple(q.shape)} do not match the index's vectors of "
                               f"{self.vectors.shape[1]}: they were made by another model")
        q = F.normalize(q, dim=-1)  # (Q, C)
        k = min(k, len(self.vectors))
        if self.centroids is not None:
            return self._search_ivf(q, k)
        scores, ids = [], []
        for start in range(0, len(q), self.batch_size):
            top = (q[start:start + self.batch_size] @ self.vectors.T).topk(k, dim=1)  # over (b, N) similarities
            scores.append(top.values)
            ids.append(top.indices)
        if not scores:
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        return torch.cat(scores), torch.cat(ids)

    def _search_ivf(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        probes = (q @ self.centroids.T).topk(min(self.nprobe, len(self.centroids)), dim=1).indices  # (Q, nprobe)
        scores = torch.full((len(q), k), -float("inf"))
        ids = torch.full((len(q), k), -1, dtype=torch.long)
        for i, lists in enumerate(probes.tolist()):
            rows = torch.cat([self.lists[c] for c in lists])
            top = (self.vectors[rows] @ q[i]).topk(min(k, len(rows)))
            scores[i, :len(rows)], ids[i, :len(rows)] = top.values, rows[top.indices]
        return scores, ids


def build_index(vectors, **kwargs) -> VectorIndex:
    """Exact below IVF_FROM rows, clustered (IVF) from there."""
    return VectorIndex(vectors, ivf=len(vectors) >= IVF_FROM, **kwargs)


# ---- files: embed a data set, search it ------------------------------------------------------------------------

def iter_texts(path: str | Path, text_column: str = "text", label_column: str = "label"
               ) -> Iterator[tuple[str, object]]:
    """(text, label or None) of each row of a CSV/TSV/JSON-lines file, or of each non-blank line of a .txt file,
    streamed: a mistake is raised when its line is reached."""
    path = Path(path)
    if path.suffix.lower() != ".txt":
        from bertkit.data.tasks import iter_examples
        for e in iter_examples(path, text_column=text_column, label_column=label_column, require_labels=False):
            yield e.text, e.label
        return
    from bertkit.data.text import read_lines
    seen = False
    for _, line, _ in read_lines(path):
        if line.strip():
            seen = True
            yield line.rstrip("\r\n"), None
    if not seen:
        raise BertkitError(f"{path}: no texts in this file")


def read_texts(path: str | Path, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list]:
    """(texts, labels) of a file iter_texts reads, in memory."""
    rows = list(iter_texts(path, text_column, label_column))
    return [t for t, _ in rows], [y for _, y in rows]


def model_fingerprint(model_dir: str | Path, settings: dict) -> str:
    """sha256 of what makes a model's vectors: the bytes of its weights file, config and tokenizer files (and a
    sentence-transformers folder's module folders), and the reading settings (pooling, layer, max_length). A copy
    of the folder elsewhere has the same fingerprint; other weights of the same width do not."""
    from bertkit.checkpoint import weights_file
    folder = Path(model_dir)
    if not folder.is_dir():
        raise BertkitError(f"{folder}: no such model directory")
    # The files the loaders read; not README.md (a model card may be rewritten) nor the ONNX or other-framework
    # copies some hub folders carry (large, and never read here).
    files = [weights_file(folder)] + sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in
                                            (".json", ".txt", ".model") and not p.name.startswith("."))
    files += sorted(p for d in folder.iterdir() if d.is_dir() and re.match(r"\d+_", d.name)
                    for p in d.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(folder).as_posix()}\0{file_digest(path)}\n".encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _settings(meta: dict) -> dict:
    """The reading settings an index was embedded with (a part of its model's fingerprint)."""
    return {k: meta.get(k) for k in ("pooling", "layer", "max_length", "normalized")}


def embed_file(model_dir: str | Path, input_file: str | Path, out: str | Path, *, pooling: str | None = None,
               layer: int | None = None, max_length: int | None = None, batch_size: int = 64, text_column: str = "text",
               label_column: str = "label", tsne: bool = True, tsne_limit: int = 2000, seed: int = 0,
               progress: bool = True, resume: bool = False, chunk_rows: int | None = None) -> Path:
    """Embed every text of a file into `out` (see the module's doc): vectors.npy (N, C) float32 L2-normalised,
    index.jsonl (row, text, label per line, in row order), meta.json (model, its fingerprint, pooling, layer, ...)
    and, when the file has labels, tsne.png (a 2-D t-SNE of up to tsne_limit rows, coloured by label). pooling and
    max_length: None reads as the model was saved to (see bertkit.inference.Reading). An unfinished run into `out`
    that read the same way continues from its complete chunks; one that read otherwise is replaced, or with
    resume=True refused. chunk_rows: default CHUNK_ROWS (a continued run keeps its own)."""
    out, chunk_rows = Path(out), chunk_rows or CHUNK_ROWS
    model_dir = resolve_model(model_dir)  # a Hugging Face Hub name: its snapshot, recorded in meta.json
    embedder = Embedder.load(model_dir, pooling=pooling, max_length=max_length, normalize=True)
    meta = {"model": str(Path(model_dir).resolve()), "input": str(input_file), "pooling": embedder.reading.pooling,
            "layer": layer, "max_length": embedder.reading.max_length, "normalized": True}
    meta["fingerprint"] = model_fingerprint(model_dir, _settings(meta))
    run = {"model": meta["fingerprint"], "input": str(Path(input_file).resolve()),
           "input_sha256": file_digest(Path(input_file)) if Path(input_file).is_file() else None,
           "text_column": text_column, "label_column": label_column}
    work = out.parent / f".{out.name}.partial"
    job = Job()
    try:
        parts = Parts(work, run, job, size=chunk_rows, marker=".npy", restart=not resume, names=RUN_NAMES,
                      refusal="give the same model, input and options, or run without --resume to start again")
        start, wall = time.perf_counter(), time.time()
        bar = None  # made after the first chunk: input refused at its first rows gets one line, no bar
        for first, part in parts.deal(iter_texts(input_file, text_column, label_column)):
            texts = [t for t, _ in part]
            _write_chunk(parts, first // parts.size, embedder.encode(texts, batch_size=batch_size, layer=layer), part,
                         first)
            if bar is None:
                bar = tqdm(initial=parts.rows_done, unit="text", desc="embed", file=sys.stderr,
                           disable=not (progress and job.main), dynamic_ncols=True)
                bar.start_t = wall  # texts/s counts the first chunk's time too
            bar.update(len(part))
        if bar is not None:
            bar.close()
        spans = parts.complete()
        if spans is None:  # another process of the job: process 0 assembles
            return out
        meta["embed_seconds"] = round(time.perf_counter() - start, 3)
        if parts.rows_done:
            meta["resumed_at_row"] = parts.rows_done
        try:
            write_atomically(out, lambda tmp: _assemble(parts, spans, tmp, meta, tsne=tsne, tsne_limit=tsne_limit,
                                                        seed=seed))
        except BertkitError as e:  # write_atomically's one line for a full or read-only disk; the chunks are kept
            raise BertkitError(f"{e}{_KEPT}") from None
    except BertkitError:
        if job.main and not any(work.glob("*.npy")):  # refused before a chunk was done: nothing to resume
            shutil.rmtree(work, ignore_errors=True)
        raise
    except OSError as e:  # a full or read-only disk: nothing of the old index is touched until the rename
        error = disk_error(e, out) or BertkitError(f"{out}: cannot write the index ({e.strerror or e})")
        raise BertkitError(f"{error}{_KEPT if work.is_dir() else '; the previous index, if any, is unchanged'}"
                           ) from None
    parts.remove()
    return out


RUN_NAMES = {"model": "model (or pooling, layer, max length)", "input_sha256": "input content"}


def _write_chunk(parts: Parts, k: int, vectors: np.ndarray, rows: list[tuple[str, object]], first: int) -> None:
    """Chunk k (its rows from first): its records, then its vectors, each whole or not at all; the .npy appearing
    marks the chunk done (a run that continues skips it)."""
    end = first + len(rows)
    lines = "".join(json.dumps({"row": first + i, "text": t, **({"label": y} if y is not None else {})},
                               ensure_ascii=False) + "\n" for i, (t, y) in enumerate(rows))
    write_part(parts.path(first, end, ".jsonl"), lines)
    with atomic_file(parts.path(first, end, ".npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, vectors.astype(np.float32, copy=False))


def _assemble(parts: Parts, spans: list[tuple[int, int]], out: Path, meta: dict, *, tsne: bool, tsne_limit: int,
              seed: int) -> None:
    """The chunks as one index in `out`: vectors.npy filled a chunk at a time through a memory map of its final
    shape, index.jsonl their records in order, meta.json, and the t-SNE plot."""
    n, dim = spans[-1][1], np.load(parts.path(*spans[0], ".npy"), mmap_mode="r").shape[1]
    vectors = np.lib.format.open_memmap(out / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    for first, end in spans:
        vectors[first:end] = np.load(parts.path(first, end, ".npy"))
    vectors.flush()
    del vectors
    join_parts(parts, spans, ".jsonl", out / "index.jsonl")
    meta = {**meta, "rows": n, "dim": int(dim)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if tsne and n >= 5:
        plot_tsne(np.load(out / "vectors.npy", mmap_mode="r"), out / "index.jsonl", out / "tsne.png",
                  limit=tsne_limit, seed=seed,
                  title=f"{Path(meta['input']).name}: t-SNE of {meta['pooling']} embeddings")


def plot_tsne(vectors: np.ndarray, index: Path, png: Path, *, limit: int = 2000, seed: int = 0,
              title: str = "") -> Path | None:
    """t-SNE (scikit-learn) of at most `limit` rows (a seeded sample), a colour per label (read from the index
    records of the rows drawn only); None, and no plot, when none of them has a label."""
    rows = np.arange(len(vectors))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    wanted, names = set(rows.tolist()), []
    with open(index, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i in wanted:
                label = json.loads(line).get("label")
                names.append(str(label) if label is not None else "(none)")
    if all(name == "(none)" for name in names):
        return None
    from sklearn.manifold import TSNE  # seconds to import: only when a plot is drawn

    from bertkit.plots import plot_points
    xy = TSNE(2, perplexity=min(30.0, (len(rows) - 1) / 3), init="pca",
              random_state=seed).fit_transform(np.asarray(vectors[rows]))
    return plot_points(xy, names, png, title=f"{title} ({len(rows)} of {len(vectors)} texts)")


def load_embeddings(folder: str | Path, model: str | Path | None = None) -> tuple[np.ndarray, list[dict], dict]:
    """(vectors, records, meta) of a directory written by embed_file, for queries embedded by `model` (default: the
    model it records). That model must be the one that built the index (the same fingerprint), else its queries
    would be compared with vectors of another space: refused. An index written before fingerprints were
    recorded loads, with a note in meta["notes"] that this cannot be checked."""
    folder = Path(folder)
    if not (folder / "meta.json").is_file() or not (folder / "vectors.npy").is_file():
        raise BertkitError(f"{folder}: not an embeddings directory (no meta.json / vectors.npy); "
                           f"make one with `bertkit embed`")
    from bertkit.config import read_json
    meta = read_json(folder / "meta.json")
    source = model if model is not None else meta["model"]
    meta["notes"] = []
    if "fingerprint" not in meta:
        meta["notes"].append(f"{folder} was written by an earlier bertkit, without the fingerprint of its model: "
                             f"that {source} built it cannot be checked; run `bertkit embed` again to record it")
    elif model_fingerprint(source, _settings(meta)) != meta["fingerprint"]:
        raise BertkitError(f"{folder}: was built by another model than {source} (other weights, tokenizer or "
                           "settings), so its vectors and this model's queries are not comparable; query it with the "
                           "model that built it, or embed the file again with this one")
    vectors = np.load(folder / "vectors.npy")
    records = [json.loads(line) for line in (folder / "index.jsonl").read_text(encoding="utf-8").splitlines()]
    if len(records) != len(vectors):
        raise BertkitError(f"{folder}: {len(vectors)} vectors but {len(records)} index records")
    return vectors, records, meta


def similar(folder: str | Path, queries: Sequence[str], k: int = 10, *, ivf: bool | None = None,
            model: str | Path | None = None) -> dict:
    """Nearest texts of an embeddings directory for each query, embedded the same way by the model that built it
    (`model`: that model elsewhere; another one is refused). Returns {"results": [[{row, score, text, label?},
    ...] per query], "timings": seconds of each stage, "notes": what the user should hear}."""
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise BertkitError("a query is empty")
    t0 = time.perf_counter()
    vectors, records, meta = load_embeddings(folder, model)
    embedder = Embedder.load(model if model is not None else meta["model"], pooling=meta["pooling"],
                             max_length=meta["max_length"], normalize=True)
    t1 = time.perf_counter()
    index = build_index(vectors) if ivf is None else VectorIndex(vectors, ivf=ivf)
    t2 = time.perf_counter()
    q = torch.from_numpy(embedder.encode(queries, layer=meta["layer"]))
    t3 = time.perf_counter()
    scores, ids = index.search(q, k)
    t4 = time.perf_counter()
    timings = {"load_s": t1 - t0, "index_s": t2 - t1, "embed_queries_s": t3 - t2, "search_s": t4 - t3,
               "rows": len(index), "index": "ivf" if index.centroids is not None else "exact"}
    results = [[{"row": int(i), "score": float(s), **{k2: v for k2, v in records[i].items() if k2 != "row"}}
                for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores.tolist(), ids.tolist())]
    return {"results": results, "timings": timings, "notes": meta["notes"]}


# ---- words: the input embedding table -------------------------------------------------------------------------

def word_vector(table: torch.Tensor, tokenizer: Tokenizer, word: str) -> torch.Tensor:
    """A word's static vector (C,): the mean of its WordPiece rows in the input embedding table (V, C)."""
    ids = tokenizer.encode(word, add_special_tokens=False).ids
    if not ids or ids == [tokenizer.unk_id]:
        raise BertkitError(f"{word!r} is not in the vocabulary")
    return table[ids].float().mean(0)


def nearest_words(model: nn.Module, tokenizer: Tokenizer, expression: str, k: int = 10) -> list[tuple[str, float]]:
    """The k whole-word vocabulary entries nearest (cosine) to a word or to word arithmetic such as
    "king - man + woman" (3CosAdd: the analogy man : king :: woman : ?), over the input embedding table. The
    words of the expression are left out of the answer."""
    terms = re.findall(r"([+-]?)\s*([^\s+-]+)", expression.strip())
    if not terms:
        raise BertkitError("give a word, or words joined by + and -")
    bert = model.bert if hasattr(model, "bert") else model
    table = bert.embeddings.word.weight.detach()  # (V, C)
    target = sum((-1 if sign == "-" else 1) * F.normalize(word_vector(table, tokenizer, w), dim=0)
                 for sign, w in terms)
    vocab = tokenizer.vocab()
    used = {tokenizer.tokenize(w)[0] if tokenizer.tokenize(w) else w for _, w in terms}
    candidates = [(t, i) for t, i in vocab.items()
                  if not t.startswith("##") and i not in tokenizer.special_ids and t not in used and any(
                      c.isalnum() for c in t) and i < len(table)]
    ids = torch.tensor([i for _, i in candidates])
    sims = F.normalize(table[ids].float(), dim=-1) @ F.normalize(target, dim=0)  # (V',)
    top = sims.topk(min(k, len(candidates)))
    return [(candidates[i][0], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
