"""Per-token predictions: named entities (token classification) and fill-mask (a masked language model)."""

from __future__ import annotations

import torch

from bertkit.encoding.bio import bio_decode, bio_entities
from bertkit.encoding.collate import collate_inputs
from bertkit.encoding.inputs import Encoded, words_of
from bertkit.errors import BertkitError
from bertkit.inference.base import Predictor, check_texts
from bertkit.inference.batches import forward


def word_tags(word_ids: list[int | None], logits: torch.Tensor, tags: list[str], n_words: int):
    """One (tag, probability) per word, read from its first sub-token's logits and decoded as well-formed BIO
    (bio_decode: never an I-X without its B-X); words cut off by truncation get ("O", 0.0)."""
    first: dict[int, int] = {}  # word -> position of its first sub-token
    for pos, w in enumerate(word_ids):
        if w is not None and w < n_words:
            first.setdefault(w, pos)
    out = [("O", 0.0)] * n_words
    if not first:
        return out
    words = sorted(first)
    log_probs = logits[[first[w] for w in words]].float().log_softmax(-1)
    path = bio_decode(log_probs.numpy(), tags)
    for w, k, row in zip(words, path, log_probs.exp()):
        out[w] = (tags[k], float(row[k]))
    return out


class TokenTagger(Predictor):
    """    TokenTagger.load("runs/ner/model")(["Alice moved to Paris"])
    # [{"words": [...], "tags": [...], "entities": [{"entity": "PER", "score": 0.98, "start": 0, "end": 5,
    #   "word": "Alice"}, ...]}]
    """

    tasks = ("token_classification",)
    what = "token classifier (tagger)"

    def tag_words(self, words: list[list[str]], batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """(tag, probability) per word of each pre-split sentence (CoNLL-style input)."""
        encs = self.tokenizer.encode_all(words, max_length=self.reading.max_length, pretokenized=True)
        items = [Encoded(e.ids, e.type_ids, word_ids=e.word_ids) for e in encs]
        logits = forward(self.model, items, self.tokenizer.pad_id, batch_size)
        return [word_tags(e.word_ids, lg, self.labels, len(ws)) for e, lg, ws in zip(encs, logits, words)]

    def __call__(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """For each text: its words (as the tokenizer splits them; one per character for Chinese), a tag per word,
        and entities {entity, score (mean tag probability), start, end (character offsets, end exclusive),
        word (the text of the span)}. A text longer than max_length is tagged as far as the model reads it, and
        says so: {"truncated": {"words_not_read": N}} (its words and tags stop there)."""
        texts = check_texts(texts)
        encs = self.tokenizer.encode_all(texts, max_length=self.reading.max_length)
        items = [Encoded(e.ids, e.type_ids, word_ids=e.word_ids) for e in encs]
        logits = forward(self.model, items, self.tokenizer.pad_id, batch_size)
        out = []
        for text, e, lg in zip(texts, encs, logits):
            words = words_of(e, text)
            tagged = word_tags(e.word_ids, lg, self.labels, len(words))
            tags = [t for t, _ in tagged]
            entities = []
            for kind, a, b in bio_entities(tags):
                start, end = words[a].start, words[b - 1].end
                entities.append({"entity": kind, "score": round(sum(p for _, p in tagged[a:b]) / (b - a), 6),
                                 "start": start, "end": end, "word": text[start:end]})
            out.append({"words": [w.text for w in words], "tags": tags, "entities": entities})
            if e.truncated:
                out[-1]["truncated"] = {"words_not_read": e.unread_words}
        return out

    predict = __call__


class FillMask(Predictor):
    """    FillMask.load("runs/mini/model")(["the capital of france is [MASK] ."])
    # [[{"token": "paris", "score": 0.41, "sequence": "the capital of france is paris ."}, ...]]
    """

    tasks = ("masked_lm", "pretraining")
    what = "masked language model"

    @torch.no_grad()
    def __call__(self, texts: list[str], top_k: int = 5) -> list[list]:
        """For each text, the top_k fillers of its [MASK]: a list of {token, score, sequence}; a text with
        several [MASK]s gets one such list per mask."""
        texts = check_texts(texts)
        if top_k < 1:
            raise BertkitError(f"top_k must be a positive integer, got {top_k}")
        mask_id = self.tokenizer.mask_id
        encs = self.tokenizer.encode_all(texts, max_length=self.reading.max_length)
        device = next(self.model.parameters()).device
        out = []
        for text, e in zip(texts, encs):
            where = [i for i, t in enumerate(e.ids) if t == mask_id]
            if not where:
                raise BertkitError(f"no [MASK] in {text!r} (within its first {self.reading.max_length} tokens)")
            batch = collate_inputs([Encoded(e.ids, e.type_ids)], self.tokenizer.pad_id)
            selected = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            selected[0, where] = True
            logits = self.model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                batch["token_type_ids"].to(device), mlm_mask=selected.to(device))
            if isinstance(logits, tuple):  # pre-training heads: (mlm, nsp)
                logits = logits[0]
            probs = logits.float().softmax(-1).cpu()  # (masks, V)
            per_mask = []
            for row, pos in zip(probs, where):
                top = row.topk(min(top_k, row.numel()))
                fills = []
                for p, i in zip(top.values.tolist(), top.indices.tolist()):
                    ids = list(e.ids)
                    ids[pos] = i
                    fills.append({"token": self.tokenizer.id_to_token(i), "score": round(p, 6),
                                  "sequence": self.tokenizer.decode(ids)})
                per_mask.append(fills)
            out.append(per_mask[0] if len(per_mask) == 1 else per_mask)
        return out

    predict = __call__
