"""Sentence embeddings from any encoder, nearest-neighbour search over them, and word vectors of the input
embedding table.

Shapes: N texts, Q queries, B batch, T tokens, C hidden, V vocab.

    vectors = Embedder.load("runs/model").encode(texts)   # (N, C), rows L2-normalised (bertkit.inference)
    index = VectorIndex(vectors)                          # exact; ivf=True when N is large
    scores, ids = index.search(Embedder.load("runs/model").encode(["a query"]), k=10)
    embed_file("runs/model", "train.csv", "runs/emb")     # vectors.npy + index.jsonl + meta.json (+ tsne.png)
    similar("runs/emb", ["a witty film"], k=5)            # nearest texts, with timings
    nearest_words(loaded, "king - man + woman")           # word arithmetic over the input embeddings
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import BertkitError
from bertkit.inference.embed import Embedder
from bertkit.tokenizer import Tokenizer
IVF_FROM = 100_000  # rows from which `build_index` clusters (IVF) instead of scanning every row



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
        """(scores, ids), each (Q, k'), k' = min(k, N): cosine similarity and row, most similar first."""
        q = F.normalize(torch.as_tensor(np.asarray(queries), dtype=torch.float32).reshape(-1, self.vectors.shape[1]),
                        dim=-1)  # (Q, C)
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

def read_texts(path: str | Path, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list]:
    """(texts, labels) of a CSV/TSV/JSON-lines file (labels None where absent) or of a .txt file (a text a line)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        from bertkit.data.text import read_lines
        texts = [line.rstrip("\r\n") for _, line, _ in read_lines(path) if line.strip()]
        if not texts:
            raise BertkitError(f"{path}: no texts in this file")
        return texts, [None] * len(texts)
    from bertkit.data.tasks import read_examples
    examples = read_examples(path, text_column=text_column, label_column=label_column, require_labels=False)
    return [e.text for e in examples], [e.label for e in examples]


def embed_file(model_dir: str | Path, input_file: str | Path, out: str | Path, *, pooling: str | None = None,
               layer: int | None = None, max_length: int | None = None, batch_size: int = 64, text_column: str = "text",
               label_column: str = "label", tsne: bool = True, tsne_limit: int = 2000, seed: int = 0,
               progress: bool = True) -> Path:
    """Embed every text of a file into `out`: vectors.npy (N, C) float32 L2-normalised, index.jsonl (row, text,
    label per line, in row order), meta.json (model, pooling, layer, ...) and, when the file has labels, tsne.png
    (a 2-D t-SNE of up to tsne_limit rows, coloured by label). pooling and max_length: None reads as the model
    was saved to (see bertkit.inference.Reading)."""
    texts, labels = read_texts(input_file, text_column, label_column)
    embedder = Embedder.load(model_dir, pooling=pooling, max_length=max_length, normalize=True)
    pooling, max_length = embedder.reading.pooling, embedder.reading.max_length
    start = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=batch_size, layer=layer, progress=progress)
    seconds = time.perf_counter() - start
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # meta.json marks a complete directory (load_embeddings requires it): gone while the data files are rewritten,
    # written last, so an interrupted run never leaves new vectors beside an old run's meta
    (out / "meta.json").unlink(missing_ok=True)
    (out / "tsne.png").unlink(missing_ok=True)  # a plot of an earlier run's vectors is not this run's
    np.save(out / "vectors.npy", vectors)
    with open(out / "index.jsonl", "w", encoding="utf-8") as f:
        for i, (t, y) in enumerate(zip(texts, labels)):
            f.write(json.dumps({"row": i, "text": t, **({"label": y} if y is not None else {})},
                               ensure_ascii=False) + "\n")
    meta = {"model": str(Path(model_dir).resolve()), "input": str(input_file), "rows": len(texts),
            "dim": int(vectors.shape[1]), "pooling": pooling, "layer": layer, "max_length": max_length,
            "normalized": True, "embed_seconds": round(seconds, 3)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if tsne and any(y is not None for y in labels) and len(texts) >= 5:
        plot_tsne(vectors, labels, out / "tsne.png", limit=tsne_limit, seed=seed,
                  title=f"{Path(input_file).name}: t-SNE of {pooling} embeddings")
    return out


def plot_tsne(vectors: np.ndarray, labels: list, png: Path, *, limit: int = 2000, seed: int = 0,
              title: str = "") -> Path:
    """t-SNE (scikit-learn) of at most `limit` rows (a seeded sample), a colour per label."""
    from sklearn.manifold import TSNE

    from bertkit.plots import plot_points
    rows = np.arange(len(vectors))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    xy = TSNE(2, perplexity=min(30.0, (len(rows) - 1) / 3), init="pca", random_state=seed).fit_transform(vectors[rows])
    names = [str(labels[i]) if labels[i] is not None else "(none)" for i in rows]
    return plot_points(xy, names, png, title=f"{title} ({len(rows)} of {len(vectors)} texts)")


def load_embeddings(folder: str | Path) -> tuple[np.ndarray, list[dict], dict]:
    """(vectors, records, meta) of a directory written by embed_file."""
    folder = Path(folder)
    if not (folder / "meta.json").is_file() or not (folder / "vectors.npy").is_file():
        raise BertkitError(f"{folder}: not an embeddings directory (no meta.json / vectors.npy); "
                           f"make one with `bertkit embed`")
    from bertkit.config import read_json
    meta = read_json(folder / "meta.json")
    vectors = np.load(folder / "vectors.npy")
    records = [json.loads(line) for line in (folder / "index.jsonl").read_text(encoding="utf-8").splitlines()]
    if len(records) != len(vectors):
        raise BertkitError(f"{folder}: {len(vectors)} vectors but {len(records)} index records")
    return vectors, records, meta


def similar(folder: str | Path, queries: Sequence[str], k: int = 10, *, ivf: bool | None = None) -> dict:
    """Nearest texts of an embeddings directory for each query, embedded by the same model the same way.
    Returns {"results": [[{row, score, text, label?}, ...] per query], "timings": seconds of each stage}."""
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise BertkitError("a query is empty")
    timings = {}
    t0 = time.perf_counter()
    vectors, records, meta = load_embeddings(folder)
    embedder = Embedder.load(meta["model"], pooling=meta["pooling"], max_length=meta["max_length"], normalize=True)
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
    return {"results": results, "timings": timings}


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
