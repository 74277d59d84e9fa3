import hashlib
import json

import pytest

from bertkit.data.tasks import (Example, TaggedSentence, check_labels, label_list, read_examples, read_squad,
                                read_tagged, split_examples, tag_list)
from bertkit.encoding.inputs import QAExample
from bertkit.errors import BertkitError


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def error(fn, *args, **kw) -> str:
    """The BertkitError message; it must be one line."""
    with pytest.raises(BertkitError) as info:
        fn(*args, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- read_examples ---------------------------------------------------------------------------------

CSV = ('text,label\n'
       'plain,pos\n'
       '"with, a comma",neg\n'
       '"two\n'
       'lines",pos\n'
       '"she said ""hi""", neg \n'
       '\n'
       'after the blank,neg\n')


def test_csv_quoted_commas_newlines_and_line_numbers(tmp_path):
    got = read_examples(write(tmp_path / "train.csv", CSV))
    assert got == [Example("plain", None, "pos", 2), Example("with, a comma", None, "neg", 3),
                   Example("two\nlines", None, "pos", 4), Example('she said "hi"', None, "neg", 6),
                   Example("after the blank", None, "neg", 8)]


def test_csv_line_numbers_after_an_embedded_newline_in_errors(tmp_path):
    f = write(tmp_path / "train.csv", CSV + "   ,pos\n")
    assert "train.csv:9: the text ('text') is empty" in error(read_examples, f)


def test_csv_bom_and_crlf(tmp_path):
    f = write(tmp_path / "d.csv", "\ufefftext,label\r\n\"a\r\nb\",x\r\nc,y\r\n")
    assert read_examples(f) == [Example("a\r\nb", None, "x", 2), Example("c", None, "y", 4)]


def test_tsv_quotes_are_text(tmp_path):
    f = write(tmp_path / "d.tsv", 'label\ttext\n1\t"Hi," he said, "go".\n0\tplain\n')
    assert read_examples(f) == [Example('"Hi," he said, "go".', None, "1", 2), Example("plain", None, "0", 3)]


def test_jsonl_int_labels_and_other_fields(tmp_path):
    f = write(tmp_path / "d.jsonl", jsonl({"text": "good", "label": 3, "id": 7}) + "\n" +
              jsonl({"label": " neg ", "text": "bad"}))
    assert read_examples(f) == [Example("good", None, "3", 1), Example("bad", None, "neg", 3)]


def test_pairs_csv_and_jsonl(tmp_path):
    f = write(tmp_path / "p.csv", "premise,hypothesis,gold\nA man sleeps.,A person rests.,entailment\n")
    assert read_examples(f, text_column="premise", pair_column="hypothesis", label_column="gold") == [
        Example("A man sleeps.", "A person rests.", "entailment", 2)]
    g = write(tmp_path / "p.jsonl", jsonl({"s1": "a", "s2": "b", "label": "x"}))
    assert read_examples(g, text_column="s1", pair_column="s2") == [Example("a", "b", "x", 1)]


def test_multi_label_separator_and_json_list(tmp_path):
    f = write(tmp_path / "m.csv", "text,label\nt1, sports | news|sports\nt2,arts\n")
    assert [e.label for e in read_examples(f, problem_type="multi_label")] == [["sports", "news"], ["arts"]]
    f = write(tmp_path / "m2.csv", "text,tags\nt1,a;b\n")
    assert read_examples(f, label_column="tags", problem_type="multi_label", label_separator=";")[0].label == ["a", "b"]
    g = write(tmp_path / "m.jsonl", jsonl({"text": "t", "label": ["x", "y", 3]}, {"text": "u", "label": "z|w"}))
    assert [e.label for e in read_examples(g, problem_type="multi_label")] == [["x", "y", "3"], ["z", "w"]]


def test_regression(tmp_path):
    f = write(tmp_path / "r.csv", "text,score\na,3.5\nb, -1e-2 \nc,4\n")
    assert [e.label for e in read_examples(f, label_column="score", problem_type="regression")] == [3.5, -0.01, 4.0]
    g = write(tmp_path / "r.jsonl", jsonl({"text": "a", "label": 2}, {"text": "b", "label": "0.25"}))
    got = read_examples(g, problem_type="regression")
    assert [e.label for e in got] == [2.0, 0.25] and all(isinstance(e.label, float) for e in got)


def test_unlabelled_input_for_prediction(tmp_path):
    f = write(tmp_path / "in.csv", "id,text\n1,hello\n2,world\n")
    assert read_examples(f, require_labels=False) == [Example("hello", None, None, 2), Example("world", None, None, 3)]
    g = write(tmp_path / "in.jsonl", jsonl({"text": "a"}, {"text": "b", "label": ""}, {"text": "c", "label": "x"}))
    assert [e.label for e in read_examples(g, require_labels=False)] == [None, None, "x"]


@pytest.mark.parametrize("name, content, kw, expected", [
    ("cols.csv", "text,sentiment\na,pos\n", {}, "cols.csv:1: no column 'label' (columns: text, sentiment)"),
    ("cols.tsv", "\n\nlabel\tsentence\n", {}, "cols.tsv:3: no column 'text' (columns: label, sentence)"),
    ("pair.csv", "text,label\na,b\n", {"pair_column": "text2"}, "pair.csv:1: no column 'text2'"),
    ("blank.csv", 'text,label\n"a\nb",x\n \t,y\n', {}, "blank.csv:4: the text ('text') is empty"),
    ("nolabel.csv", "text,label\na,x\nb,\n", {}, "nolabel.csv:3: the label ('label') is empty"),
    ("fields.csv", "text,label\na,x\nb,c,d\n", {}, "fields.csv:3: 3 fields, but the header has 2"),
    ("quote.csv", 'text,label\na,x\n"b,y\nc,z\n', {}, "quote.csv:3: malformed record"),
    ("stray.csv", 'text,label\n"a" b,x\n', {}, "stray.csv:2: malformed record"),
    ("reg.csv", "text,label\na,1\nb,high\n", {"problem_type": "regression"},
     "reg.csv:3: regression label 'high' is not a number"),
    ("nan.csv", "text,label\na,nan\n", {"problem_type": "regression"},
     "nan.csv:2: the label ('label') is empty or a missing-value marker ('nan')"),
    ("inf.csv", "text,label\na,inf\n", {"problem_type": "regression"},
     "inf.csv:2: regression label 'inf' is not a finite"),
    ("nanlabel.csv", "text,label\na,pos\nb,NaN\n", {}, "nanlabel.csv:3: the label ('label') is empty or a missing"),
    ("nanmulti.csv", "text,label\na,x|NaN\n", {"problem_type": "multi_label"}, "nanmulti.csv:2: empty or missing"),
    ("multi.csv", "text,label\na,x||y\n", {"problem_type": "multi_label"}, "multi.csv:2: empty or missing-value label in 'x||y'"),
    ("bad.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": }\n', {}, "bad.jsonl:3: invalid JSON"),
    ("list.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n', {},
     "list.jsonl:2: expected a JSON object, got an array"),
    ("nofield.jsonl", jsonl({"text": "a", "label": "x"}, {"text": "b", "sentiment": "y"}), {},
     "nofield.jsonl:2: no field 'label' (fields: text, sentiment)"),
    ("null.jsonl", jsonl({"text": "a", "label": None}), {}, "null.jsonl:1: the label ('label') is empty"),
    ("notext.jsonl", jsonl({"text": 5, "label": "x"}), {}, "notext.jsonl:1: field 'text' is a number, not a string"),
    ("empty.jsonl", jsonl({"text": "a", "label": "x"}, {"text": "", "label": "x"}), {}, "empty.jsonl:2: the text"),
    ("arr.jsonl", jsonl({"text": "a", "label": ["x"]}), {}, "arr.jsonl:1: label ('label') is an array"),
    ("emptylist.jsonl", jsonl({"text": "a", "label": []}), {"problem_type": "multi_label"},
     "emptylist.jsonl:1: the label ('label') is empty"),
])
def test_read_examples_errors(tmp_path, name, content, kw, expected):
    assert expected in error(read_examples, write(tmp_path / name, content), **kw)


def test_not_utf8_names_the_line(tmp_path):
    f = write(tmp_path / "latin.csv", b"text,label\nok,x\n\"caf\xe9\nau lait\",y\n")
    assert "latin.csv:3: not UTF-8" in error(read_examples, f)
    g = write(tmp_path / "latin.jsonl", b'{"text": "a", "label": "x"}\n{"text": "\xff", "label": "x"}\n')
    assert "latin.jsonl:2: not UTF-8" in error(read_examples, g)


def test_missing_and_empty_files(tmp_path):
    assert "nothere.csv" in error(read_examples, tmp_path / "nothere.csv")
    assert "e.csv: empty file" in error(read_examples, write(tmp_path / "e.csv", "\n\n"))
    assert "h.csv: no examples" in error(read_examples, write(tmp_path / "h.csv", "text,label\n\n"))
    assert "e.jsonl: no examples" in error(read_examples, write(tmp_path / "e.jsonl", "\n"))
    assert "extension '.txt'" in error(read_examples, write(tmp_path / "d.txt", "a\n"))


# ---- labels ----------------------------------------------------------------------------------------

def test_label_list():
    train = [Example("a", label="pos"), Example("b", label="neg"), Example("c", label="pos")]
    assert label_list(train) == ["neg", "pos"]
    assert label_list([Example("a", label=["y", "x"]), Example("b", label=["z"])], "multi_label") == ["x", "y", "z"]
    assert label_list([Example("a", label=1.5)], "regression") == []
    assert "at least 2" in error(label_list, [Example("a", label="pos"), Example("b", label="pos")])


def test_check_labels():
    dev = [Example("a", label="pos", line=2), Example("b", label="neutral", line=5), Example("c", label="odd", line=6)]
    check_labels(dev[:1], ["neg", "pos"], "dev.csv")
    assert error(check_labels, dev, ["neg", "pos"], "dev.csv") == (
        "dev.csv:5: label 'neutral' never appears in the training data (labels: neg, pos)")
    multi = [Example("a", label=["x"], line=2), Example("b", label=["x", "w"], line=3)]
    assert "dev.jsonl:3: label 'w'" in error(check_labels, multi, ["x", "y"], "dev.jsonl")
    check_labels([Example("a", label=0.5), Example("b")], [], "test.csv")  # regression and unlabelled pass


# ---- split_examples --------------------------------------------------------------------------------

def rule(text: str) -> str:
    h = int(hashlib.sha1(text.strip().encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


def test_split_examples_follows_the_rule():
    examples = [Example(f"review number {i}", label="pos" if i % 3 else "neg", line=i + 2) for i in range(40)]
    examples.append(Example("review number 5", label=examples[5].label, line=90))  # exact duplicate: kept once
    examples.append(Example("review number 7", label="other", line=91))  # conflicting duplicate: both dropped
    got = split_examples(examples)
    expected = {"train": [], "dev": [], "test": []}
    for e in examples[:40]:
        if e.text != "review number 7":
            expected[rule(e.text)].append(e)
    assert got == expected
    assert all(got.values())  # the hand-made list reaches every split
    assert [e.line for e in got[rule("review number 5")] if e.text == "review number 5"] == [7]


def test_split_examples_pairs_hash_text_tab_pair():
    examples = [Example(f"premise {i}", f"hypothesis {i % 4}", "yes", i + 2) for i in range(30)]
    examples.append(Example("premise 1", "another hypothesis", "no", 40))  # a different pair: its own example
    examples.append(Example("premise 2", "hypothesis 2", "no", 41))  # conflicting label: dropped
    got = split_examples(examples)
    kept = [e for e in examples if e.text != "premise 2"]
    assert got == {s: [e for e in kept if rule(f"{e.text}\t{e.pair}") == s] for s in ("train", "dev", "test")}


def test_split_examples_multi_label_order_does_not_conflict():
    got = split_examples([Example("t", label=["a", "b"]), Example("t", label=["b", "a"])])
    assert sum(len(v) for v in got.values()) == 1


# ---- read_tagged -----------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

\u3000\tO
中 B-LOC
"""


def test_read_tagged_conll_2003(tmp_path):
    got = read_tagged(write(tmp_path / "train.txt", CONLL))
    assert got == [
        TaggedSentence(["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"], 3),
        TaggedSentence(["Peter", "Blackburn"], ["B-PER", "I-PER"], 9),
        TaggedSentence(["\u3000", "中"], ["O", "B-LOC"], 13),  # an ideographic space is a token, not a separator
    ]
    assert tag_list(got) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_read_tagged_jsonl(tmp_path):
    f = write(tmp_path / "t.jsonl", jsonl({"tokens": ["a", "b"], "tags": ["B-X", "I-X"]},
                                          {"tokens": ["c"], "tags": ["O"]}))
    assert read_tagged(f) == [TaggedSentence(["a", "b"], ["B-X", "I-X"], 1), TaggedSentence(["c"], ["O"], 2)]
    g = write(tmp_path / "u.jsonl", "\n" + jsonl({"words": ["c"], "ner": ["O"]}))
    assert read_tagged(g, tokens_field="words", tags_field="ner") == [TaggedSentence(["c"], ["O"], 2)]


def test_tag_list_order():
    train = [TaggedSentence(["a"], ["I-PER"]), TaggedSentence(["b", "c"], ["B-LOC", "O"]),
             TaggedSentence(["d"], ["B-ORG"])]
    assert tag_list(train) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


@pytest.mark.parametrize("name, content, expected", [
    ("one.conll", "a O\nb\n", "one.conll:2: one column ('b')"),
    ("bio.conll", "a O\n\nb B-PER\nc PER\n", "bio.conll:4: tag 'PER' is not BIO"),
    ("bio2.conll", "a X-PER\n", "bio2.conll:1: tag 'X-PER' is not BIO"),
    ("empty.conll", "-DOCSTART- O\n\n\n", "empty.conll: no sentences"),
    ("len.jsonl", jsonl({"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O"]}),
     "len.jsonl:2: 2 tokens but 1 tags"),
    ("bio.jsonl", jsonl({"tokens": ["a"], "tags": ["B-"]}), "bio.jsonl:1: tag 'B-' is not BIO"),
    ("field.jsonl", jsonl({"tokens": ["a"], "labels": ["O"]}), "field.jsonl:1: no field 'tags'"),
    ("bytes.conll", b"a O\n\xc3 O\n", "bytes.conll:2: not UTF-8"),
])
def test_read_tagged_errors(tmp_path, name, content, expected):
    assert expected in error(read_tagged, write(tmp_path / name, content))


# ---- read_squad ------------------------------------------------------------------------------------

CONTEXT = "Normandy is a region in France. It was named after the Normans."


def squad(qas, context=CONTEXT) -> dict:
    return {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{"context": context, "qas": qas}]}]}


QAS = [
    {"id": "q1", "question": "Where is Normandy?", "is_impossible": False,
     "answers": [{"text": "France", "answer_start": 24}, {"text": "in France", "answer_start": 21}]},
    {"id": "q2", "question": "Who named France?", "is_impossible": True, "answers": [],
     "plausible_answers": [{"text": "Normans", "answer_start": 55}]},
    {"id": "q3", "question": "Named after whom?", "answers": [{"text": "the Normans", "answer_start": 51}]},  # v1.1
]


def test_read_squad_v2(tmp_path):
    f = write(tmp_path / "dev.json", json.dumps(squad(QAS), indent=1))
    assert read_squad(f) == [
        QAExample("q1", "Where is Normandy?", CONTEXT, [("France", 24), ("in France", 21)]),
        QAExample("q2", "Who named France?", CONTEXT, []),
        QAExample("q3", "Named after whom?", CONTEXT, [("the Normans", 51)]),
    ]


def test_read_squad_errors(tmp_path):
    def msg(doc, name="s.json"):
        return error(read_squad, write(tmp_path / name, doc if isinstance(doc, (str, bytes)) else json.dumps(doc)))
    assert "s.json: the file has no key 'data'" in msg({"version": "1.1"})
    assert "data[0].paragraphs[0] has no key 'qas'" in msg({"data": [{"paragraphs": [{"context": "c"}]}]})
    assert "data[0].paragraphs[0].qas[1] has no key 'question'" in msg(squad([QAS[0], {"id": "q9", "answers": []}]))
    assert "data[0].paragraphs[0].qas[0].answers[0].answer_start is a string" in msg(
        squad([{"id": "q1", "question": "?", "answers": [{"text": "France", "answer_start": "24"}]}]))
    moved = {**QAS[0], "id": "q-moved", "answers": [{"text": "France", "answer_start": 20}]}
    assert "question 'q-moved': answer 'France' is not at character 20" in msg(squad([moved]))
    assert "question id 'q1' appears twice" in msg(squad([QAS[0], QAS[0]]))
    assert "s.json: no questions" in msg(squad([]))
    assert "bad.json:3: invalid JSON" in msg('{"data": [\n\n  oops]}', "bad.json")
    assert "bytes.json:2: not UTF-8" in msg(b'{"data":\n"\xff"}', "bytes.json")
    assert "missing.json" in error(read_squad, tmp_path / "missing.json")
