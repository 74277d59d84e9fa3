"""Data augmentation for distillation (TinyBERT, Jiao et al., 2020): variants of each training text with some of
its words replaced by what a masked language model proposes in their place. The teacher labels the variants
softly; they carry no human label.

A word is what the MLM's tokenizer splits a text into (a run of letters or digits, a CJK character, a punctuation
mark); only words with a letter or digit are replaced. A variant replaces round(rate x words) of them (at least
one), chosen at random: each becomes a single [MASK], and one forward pass for all the variants of a batch gives
the MLM's distribution at every mask, from which the replacement is drawn among the top_k whole-word tokens (no
## pieces, special tokens or the word itself), in proportion to their probabilities. Seeded: the same texts,
model and seed give the same variants.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bertkit.encoding.collate import collate_inputs, sorted_batches
from bertkit.encoding.inputs import Encoded, words_of
from bertkit.errors import BertkitError
from bertkit.folders import atomic_file
from bertkit.tokenizer import Tokenizer


@dataclass
class Variant:
    """One augmented text."""

    source: int
    """Index of the text it was made from."""
    text: str
    replaced: list[tuple[str, str]]
    """(word, replacement) for each replaced word, in text order."""


@torch.no_grad()
def augment_texts(texts: list[str], mlm: nn.Module, tokenizer: Tokenizer, n: int, rate: float = 0.2,
                  seed: int = 0, max_length: int = 128, top_k: int = 8, batch_size: int = 64) -> list[Variant]:
    """n variants of each text (its words within max_length tokens replaced as the module docstring says), in
    text order; a text without a word to replace gets none."""
    if not 0 < rate <= 1:
        raise BertkitError(f"the augmentation rate must be in (0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    mlm.eval()
    device = next(mlm.parameters()).device
    vocab_size = mlm.config.vocab_size
    # tokens never proposed: specials, word pieces, anything without a letter or digit, ids the tokenizer lacks
    banned = torch.ones(vocab_size, dtype=torch.bool)
    for token, i in tokenizer.vocab().items():
        if i < vocab_size and not token.startswith("##") and any(c.isalnum() for c in token):
            banned[i] = False
    banned[tokenizer.special_ids] = True

    plans = []  # (source, ids with [MASK]s, character spans of the masked words)
    for d, (text, enc) in enumerate(zip(texts, tokenizer.encode_all(texts, max_length=max_length))):
        words = words_of(enc, text)
        candidates = [i for i, w in enumerate(words) if any(c.isalnum() for c in w.text)]
        if not candidates or tokenizer.mask_id in enc.ids:  # a literal [MASK] would take a proposal of its own
            continue
        k = max(1, round(rate * len(candidates)))
        for _ in range(n):
            chosen = sorted(int(i) for i in rng.choice(candidates, size=k, replace=False))
            first = {words[i].tokens[0] for i in chosen}  # a masked word is one [MASK], whatever its pieces
            rest = {p for i in chosen for p in words[i].tokens[1:]}
            ids = [tokenizer.mask_id if p in first else t for p, t in enumerate(enc.ids) if p not in rest]
            plans.append((d, ids, [(words[i].start, words[i].end) for i in chosen]))

    variants: list[Variant | None] = [None] * len(plans)
    for idx in sorted_batches([len(ids) for _, ids, _ in plans], batch_size):
        batch = collate_inputs([Encoded(plans[i][1], [0] * len(plans[i][1])) for i in idx], tokenizer.pad_id)
        masks = batch["input_ids"] == tokenizer.mask_id  # (B, T), the masks in row order
        logits = mlm(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")),
                     mlm_mask=masks.to(device))
        logits = (logits[0] if isinstance(logits, tuple) else logits).float().cpu()  # (masks, V)
        logits[:, banned] = float("-inf")
        row = 0
        for i in idx:
            source, _, spans = plans[i]
            text = texts[source]
            replaced = []
            for a, b in spans:
                scores = logits[row]
                row += 1
                for form in {text[a:b], text[a:b].lower()}:  # never the word itself
                    own = tokenizer.token_to_id(form)
                    if own is not None and own < vocab_size:
                        scores[own] = float("-inf")
                top = scores.topk(top_k)
                keep = torch.isfinite(top.values)
                p = top.values[keep].softmax(-1).double().numpy()
                pick = int(top.indices[keep][rng.choice(len(p), p=p / p.sum())])
                replaced.append((text[a:b], tokenizer.id_to_token(pick)))
            new = text
            for (a, b), (_, word) in sorted(zip(spans, replaced), reverse=True):  # from the end: offsets stay valid
                new = new[:a] + word + new[b:]
            variants[i] = Variant(source, new, replaced)
    return variants


def write_variants(path: Path, variants: list[Variant], pairs: list[str | None] | None = None) -> None:
    """augmented.jsonl: one variant per line, {"source", "text", "replaced"} (and "pair": the source's second
    text, unchanged), for a user to read."""
    lines = []
    for v in variants:
        record = asdict(v) | ({"pair": pairs[v.source]} if pairs and pairs[v.source] is not None else {})
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    with atomic_file(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")


def read_variants(path: Path) -> list[Variant]:
    """The variants an earlier run wrote (write_variants)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out.append(Variant(record["source"], record["text"], [tuple(r) for r in record["replaced"]]))
    return out
