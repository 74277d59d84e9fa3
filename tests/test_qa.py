"""Question answering: windows over long contexts and span decoding, exact on hand-made cases."""

import torch

from bertkit import Tokenizer
from bertkit.encoding.inputs import QAExample
from bertkit.inference.qa import best_span, decode_answers, make_windows

CONTEXT = ("The Eiffel Tower was built by Gustave Eiffel for the 1889 World's Fair. It stands in Paris. "
           "Many visitors climb it every year, and some of them take the stairs.")
TOKENS = CONTEXT.replace(".", " .").replace(",", " ,").split() + ["who", "built", "the", "tower", "where", "?"]


def tokenizer():
    return Tokenizer.train([CONTEXT, "who built the tower ? where is it ?"] * 20, vocab_size=200, min_frequency=1,
                           show_progress=False)


def test_windows_cover_the_context_and_locate_the_answer():
    tok = tokenizer()
    ex = QAExample("q1", "Who built the tower?", CONTEXT, [("Gustave Eiffel", CONTEXT.index("Gustave"))])
    windows = make_windows(tok, [ex], max_length=24, doc_stride=8)
    assert len(windows) > 2
    covered = set()
    found = 0
    for w in windows:
        assert len(w.ids) <= 24 and w.ids[0] == tok.cls_id
        ctx = [k for k, c in enumerate(w.in_context) if c]
        covered.update(range(w.offsets[ctx[0]][0], w.offsets[ctx[-1]][1]))
        if w.start:
            found += 1
            assert CONTEXT[w.offsets[w.start][0]:w.offsets[w.end][1]] == "Gustave Eiffel"
        else:
            assert w.end == 0  # no answer in this window: both point at [CLS]
    assert found >= 1
    assert covered >= set(i for i, c in enumerate(CONTEXT) if not c.isspace())  # every character in some window


def test_best_span_rules_exact():
    start = torch.tensor([9.0, 1.0, 5.0, 0.0, 4.0])
    end = torch.tensor([9.0, 0.0, 1.0, 6.0, 3.0])
    in_context = [False, True, True, True, True]
    assert best_span(start, end, in_context) == (11.0, 2, 3)  # [CLS] (0) excluded; 5 + 6
    assert best_span(start, end, in_context, max_answer_length=1) == (7.0, 4, 4)  # one token: 4 + 3 beats 5 + 1, 0 + 6
    end_before = torch.tensor([9.0, 7.0, 0.0, 0.0, 0.0])
    assert best_span(start, end_before, in_context) == (8.0, 1, 1)  # end must not precede start


def test_decode_answers_picks_the_best_window_and_no_answer():
    tok = tokenizer()
    ex = QAExample("q1", "Who built the tower?", CONTEXT, [])
    windows = make_windows(tok, [ex], max_length=24, doc_stride=8)
    target = CONTEXT.index("Paris")
    logits = []
    for w in windows:
        s, e = torch.zeros(len(w.ids)), torch.zeros(len(w.ids))
        for k, c in enumerate(w.in_context):
            if c and w.offsets[k][0] == target:
                s[k] = e[k] = 4.0
        s[0] = e[0] = 1.0
        logits.append((s, e))
    got = decode_answers([ex], windows, logits)
    assert got["q1"]["text"] == "Paris" and got["q1"]["start"] == target and got["q1"]["score"] == 8.0
    for s, e in logits:  # now "no answer" scores 20 against 8
        s[0] = e[0] = 10.0
    assert decode_answers([ex], windows, logits, allow_no_answer=True)["q1"]["text"] == ""
    assert decode_answers([ex], windows, logits, allow_no_answer=False)["q1"]["text"] == "Paris"
    assert decode_answers([ex], windows, logits, allow_no_answer=True, null_threshold=15)["q1"]["text"] == "Paris"


def test_a_question_longer_than_the_last_is_answered(tmp_path):
    """The tokenizer kept the last call's truncation (only_second, from the QA windows): a longer question next
    raised "Truncation error: Second sequence not provided". Each call now sets what it needs."""
    from bertkit import BertConfig, build_model, pipeline, save_model
    tok = tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        max_position_embeddings=128)
    save_model(tmp_path / "qa", build_model(config, "question_answering"), tok, reading={"max_length": 128})
    qa = pipeline(tmp_path / "qa")
    long_question = "who built the tower " * 20  # 80 tokens: cut to the first 64, as the BERT recipe does
    first = qa(["who built it ?"], [CONTEXT])[0]
    second = qa([long_question], [CONTEXT])[0]
    assert second == pipeline(tmp_path / "qa")([long_question], [CONTEXT])[0]  # as a fresh pipeline answers it
    assert qa(["who built it ?"], [CONTEXT])[0] == first
    assert len(qa.tokenizer.tokenize(long_question * 2)) == 160  # never cut to the last call's max_length
