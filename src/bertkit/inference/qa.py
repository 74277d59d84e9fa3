"""Extractive question answering (SQuAD v1.1 / v2.0): doc-stride windows in, best valid span out.

A context longer than the model's window is cut into overlapping windows ([CLS] question [SEP] part of the
context [SEP]), `doc_stride` tokens of overlap apart. A training window whose context part holds the whole
answer points at it; any other window points at [CLS] (position 0), which also stands for "no answer".
At prediction time every window proposes its n best start and end tokens; a span is valid when both ends lie in
the context part, end >= start, and it is at most max_answer_length tokens long; its score is the sum of the two
logits. The best span over all windows wins, unless (SQuAD v2) the best "no answer" score, start[0] + end[0] of
some window, beats it by more than `null_threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bertkit.encoding.inputs import Encoded, QAExample
from bertkit.errors import BertkitError
from bertkit.inference.base import Predictor, check_texts
from bertkit.inference.batches import forward
from bertkit.tokenizer import Tokenizer


@dataclass
class Window:
    example: int  # index of the QAExample this window came from
    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]  # character span in the context, for context tokens
    in_context: list[bool]  # True for tokens of the context part
    start: int = 0  # answer start token (0 = [CLS]: no answer in this window)
    end: int = 0


def make_windows(tokenizer: Tokenizer, examples, max_length: int = 384, doc_stride: int = 128,
                 max_query_length: int = 64) -> list[Window]:
    """Every window of every example, with answer token positions (the first answer) for training."""
    windows = []
    for i, ex in enumerate(examples):
        question = tokenizer.tokenize(ex.question)
        if len(question) > max_query_length:  # keep the question's first tokens, as the BERT recipe does
            cut = tokenizer.encode(ex.question, max_length=max_query_length + 2).offsets[-2][1]
            q_text = ex.question[:cut]
        else:
            q_text = ex.question
        for enc in tokenizer.encode_windows(q_text, ex.context, max_length=max_length, stride=doc_stride):
            in_ctx = [s == 1 for s in enc.sequence_ids]
            w = Window(i, enc.ids, enc.type_ids, enc.offsets, in_ctx)
            if ex.answers:
                text, char_start = ex.answers[0]
                char_end = char_start + len(text)
                ctx = [k for k, c in enumerate(in_ctx) if c]
                if ctx and enc.offsets[ctx[0]][0] <= char_start and enc.offsets[ctx[-1]][1] >= char_end:
                    w.start = next(k for k in ctx if enc.offsets[k][1] > char_start)
                    w.end = next(k for k in reversed(ctx) if enc.offsets[k][0] < char_end)
            windows.append(w)
    return windows


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, in_context: list[bool], n_best: int = 20,
              max_answer_length: int = 30) -> tuple[float, int, int] | None:
    """(score, start, end) of the best valid span of one window, or None if it has none."""
    best = None
    starts = start_logits.topk(min(n_best, len(start_logits))).indices.tolist()
    ends = end_logits.topk(min(n_best, len(end_logits))).indices.tolist()
    for s in starts:
        for e in ends:
            if not (in_context[s] and in_context[e]) or e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[0]:
                best = (score, s, e)
    return best


def decode_answers(examples, windows: list[Window], logits: list[tuple[torch.Tensor, torch.Tensor]], *,
                   n_best: int = 20, max_answer_length: int = 30, allow_no_answer: bool = False,
                   null_threshold: float = 0.0) -> dict[str, dict]:
    """{example id: {"text", "start", "end", "score"}} — the best span over an example's windows, or the empty
    answer when no answer is allowed and scores higher by more than null_threshold."""
    best: dict[int, tuple[float, int, int, int] | None] = {}
    null: dict[int, float] = {}
    for wi, (w, (start, end)) in enumerate(zip(windows, logits)):
        span = best_span(start, end, w.in_context, n_best, max_answer_length)
        if span is not None and (best.get(w.example) is None or span[0] > best[w.example][0]):
            best[w.example] = (span[0], span[1], span[2], wi)
        best.setdefault(w.example, None)
        null_score = float(start[0] + end[0])
        null[w.example] = min(null.get(w.example, null_score), null_score)
    out = {}
    for i, ex in enumerate(examples):
        b = best.get(i)
        if b is None or (allow_no_answer and null.get(i, float("-inf")) - b[0] > null_threshold):
            out[ex.id] = {"text": "", "start": -1, "end": -1, "score": null.get(i, 0.0)}
            continue
        score, s, e, wi = b
        w = windows[wi]
        c0, c1 = w.offsets[s][0], w.offsets[e][1]
        out[ex.id] = {"text": ex.context[c0:c1], "start": c0, "end": c1, "score": score}
    return out


class QuestionAnswerer(Predictor):
    """    QuestionAnswerer.load("runs/qa/model")(["where does Alice live?"], ["Alice lives in Paris."])
    # [{"answer": "Paris", "score": 11.2, "start": 15, "end": 20}]
    """

    tasks = ("question_answering",)
    what = "question-answering model"

    def answers(self, examples: list[QAExample], batch_size: int = 64, allow_no_answer: bool = True) -> dict:
        """{example id: {"text", "start", "end", "score"}} for SQuAD-style examples (see decode_answers)."""
        r = self.reading
        windows = make_windows(self.tokenizer, examples, r.max_length, r.doc_stride)
        logits = forward(self.model, [Encoded(w.ids, w.type_ids) for w in windows], self.tokenizer.pad_id,
                         batch_size)
        return decode_answers(examples, windows, logits, max_answer_length=r.max_answer_length,
                              allow_no_answer=allow_no_answer)

    def __call__(self, questions: list[str], contexts: list[str], batch_size: int = 64) -> list[dict]:
        """For each question and its context: {"answer", "score", "start", "end"} (character offsets in the
        context, end exclusive); the empty answer with start -1 when the model finds none."""
        questions, contexts = check_texts(questions, "question"), check_texts(contexts, "context")
        if len(questions) != len(contexts):
            raise BertkitError(f"{len(questions)} questions but {len(contexts)} contexts")
        examples = [QAExample(str(i), q, c, []) for i, (q, c) in enumerate(zip(questions, contexts))]
        found = self.answers(examples, batch_size)
        return [{"answer": a["text"], "score": round(a["score"], 6), "start": a["start"], "end": a["end"]}
                for a in (found[ex.id] for ex in examples)]

    predict = __call__
