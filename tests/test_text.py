import json
import tracemalloc

import pytest

from bertkit.data import text
from bertkit.data.text import input_files, iter_documents, split_sentences, total_bytes
from bertkit.errors import BertkitError

SPLITS = [
    # English: terminal punctuation, then whitespace, then a capital, digit or opening quote/bracket
    ("Hello world. This is a test.", ["Hello world.", "This is a test."]),
    ("Really? Yes! Good.", ["Really?", "Yes!", "Good."]),
    ("What?! No way.", ["What?!", "No way."]),
    ("It ended in 1999. 2000 was better.", ["It ended in 1999.", "2000 was better."]),
    ("One.\n\nTwo.", ["One.", "Two."]),
    ('"Why?" she asked. "Because." He shrugged.', ['"Why?" she asked.', '"Because."', "He shrugged."]),
    ('He stopped. "Why?" she asked.', ["He stopped.", '"Why?" she asked.']),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("She wrote “Yes.” Nobody replied.", ["She wrote “Yes.”", "Nobody replied."]),
    ("(This is an aside.) The text goes on.", ["(This is an aside.)", "The text goes on."]),
    ("He left at 5 p.m. and came back.", ["He left at 5 p.m. and came back."]),
    ("Wait... What happened?", ["Wait...", "What happened?"]),
    ("Wait... then go.", ["Wait... then go."]),
    # abbreviations
    ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
    ("Prof. Lee lives on St. Mark's Place. Mrs. Lee does too.",
     ["Prof. Lee lives on St. Mark's Place.", "Mrs. Lee does too."]),
    ("It was Smith vs. Jones. Smith won.", ["It was Smith vs. Jones.", "Smith won."]),
    ("Pick one, e.g. The red one. Then pay.", ["Pick one, e.g. The red one.", "Then pay."]),
    ("It opened on Jan. 5, 2001. It closed on Dec. 31.", ["It opened on Jan. 5, 2001.", "It closed on Dec. 31."]),
    ("See Fig. 3 and No. 5 on the list. Both are red.", ["See Fig. 3 and No. 5 on the list.", "Both are red."]),
    ("It was built c. 1500. It fell (Mr. Fox says) in 1600.", ["It was built c. 1500.", "It fell (Mr. Fox says) in 1600."]),
    # initials and numbers
    ("J. K. Rowling wrote it. She lives in Scotland.", ["J. K. Rowling wrote it.", "She lives in Scotland."]),
    ("He joined the U.S. Army in 1942. He served.", ["He joined the U.S. Army in 1942.", "He served."]),
    ("It ended after World War I. Peace came.", ["It ended after World War I.", "Peace came."]),
    ("Pi is about 3.14 and v1.2 is out. Version 2.0 is next.", ["Pi is about 3.14 and v1.2 is out.", "Version 2.0 is next."]),
    # Chinese and Japanese: no whitespace needed; closing quotes stay with their sentence
    ("今天天气很好。我们去公园吧！你去吗？", ["今天天气很好。", "我们去公园吧！", "你去吗？"]),
    ("他说：“你好。”然后走了。", ["他说：“你好。”", "然后走了。"]),
    ("真的吗！？太好了。", ["真的吗！？", "太好了。"]),
    ("他想了想……最后同意了。", ["他想了想……最后同意了。"]),
    ("“我不知道……”她说。", ["“我不知道……”", "她说。"]),
    ("第一条；第二条。", ["第一条；第二条。"]),
    ("会议结束。（新华社记者摄）", ["会议结束。", "（新华社记者摄）"]),
    ("（附图片一张。）下一句。", ["（附图片一张。）", "下一句。"]),
    ("「行こう。」と彼は言った。", ["「行こう。」", "と彼は言った。"]),
    ("花城今更艳。’９８广州风情", ["花城今更艳。", "’９８广州风情"]),
    ("BERT came out in 2018. 它很有名。It is still used!", ["BERT came out in 2018.", "它很有名。", "It is still used!"]),
    # nothing to split
    ("", []),
    ("  \n\t \u3000", []),
    ("no punctuation at all", ["no punctuation at all"]),
    ("  padded text  ", ["padded text"]),
    ("Trailing space after the end.   ", ["Trailing space after the end."]),
]


@pytest.mark.parametrize("text, expected", SPLITS)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def documents(inputs, **kw) -> list[list[str]]:
    return [doc for doc, _ in iter_documents(inputs, **kw)]


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    f = write(tmp_path / "c.txt", "\n\nFirst doc. It has two lines\r\nin it.\n\n \t\nOnly sentence.\n\n\nThird doc.\nLast line")
    assert documents([f]) == [["First doc.", "It has two lines", "in it."], ["Only sentence."],
                              ["Third doc.", "Last line"]]


def test_jsonl_documents(tmp_path):
    f = write(tmp_path / "c.jsonl", "\ufeff" + jsonl({"text": "Para one. Still one.\nPara two", "id": 1}) + "\n"
              + jsonl({"text": "  "}, {"text": "北京。上海。"}))
    assert documents([f]) == [["Para one.", "Still one.", "Para two"], ["北京。", "上海。"]]
    g = write(tmp_path / "d.json", jsonl({"body": "A. B c."}))
    assert documents([g], text_field="body") == [["A. B c."]]


def test_directory_mixes_formats_in_path_order_and_documents_never_span_files(tmp_path):
    write(tmp_path / "b.txt", "From b.")
    write(tmp_path / "a.jsonl", jsonl({"text": "From a."}))
    write(tmp_path / "sub" / "c.TXT", "From c.\n")
    write(tmp_path / "notes.csv", "Not read.")
    assert input_files([tmp_path]) == [tmp_path / "a.jsonl", tmp_path / "b.txt", tmp_path / "sub" / "c.TXT"]
    assert documents([tmp_path]) == [["From a."], ["From b."], ["From c."]]


def test_glob_and_deduplication(tmp_path):
    a = write(tmp_path / "a.txt", "A.")
    b = write(tmp_path / "b.txt", "B.")
    write(tmp_path / "c.jsonl", jsonl({"text": "C."}))
    assert input_files([str(tmp_path / "*.txt")]) == [a, b]
    (tmp_path / "x").mkdir()
    assert input_files([b, a, tmp_path / "x" / ".." / "a.txt", str(tmp_path / "*.txt")]) == [a, b]
    assert documents([str(tmp_path / "[ab].txt")]) == [["A."], ["B."]]


def test_byte_counts_sum_to_total_bytes(tmp_path):
    write(tmp_path / "a.txt", "\ufeff\n\nOne. Two.\n\n\nThree.\n\n\n")
    write(tmp_path / "b.txt", "")
    write(tmp_path / "c.jsonl", jsonl({"text": "四。"}, {"text": ""}) + "\n\n")
    write(tmp_path / "d.txt", " \n\n")
    files = input_files([tmp_path])
    got = list(iter_documents(files))
    assert [doc for doc, _ in got] == [["One.", "Two."], ["Three."], ["四。"]]
    assert all(n > 0 for _, n in got)
    assert sum(n for _, n in got) == total_bytes(files) == sum(f.stat().st_size for f in files)


def test_a_file_without_blank_lines_is_cut_into_blocks_read_lazily(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text, "MAX_DOCUMENT_LINES", 100)
    lines = [f"Sentence number {i} is here." for i in range(3_000)]
    flat = write(tmp_path / "flat.txt", "\n".join(lines) + "\n")
    got = list(iter_documents([flat]))
    assert [doc for doc, _ in got] == [lines[i:i + 100] for i in range(0, 3_000, 100)]
    assert sum(n for _, n in got) == flat.stat().st_size
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one warning for the file, not one per block
    assert (f"{flat} has no blank lines between documents for 100+ lines: cutting it into blocks of 100 lines "
            "(put a blank line between documents)") in err

    # A document of exactly the cap is whole, and says nothing.
    exact = write(tmp_path / "exact.txt", "\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:150]))
    assert documents([exact]) == [lines[:100], lines[100:150]]
    assert capsys.readouterr().err == ""

    # Memory: a file 10x larger streams in the space of about two blocks (the reader holds one back).
    big = write(tmp_path / "big.txt", "\n".join(lines * 10) + "\n")  # 30,000 lines, 0.9 MB
    tracemalloc.start()
    try:
        sizes = {len(doc) for doc, _ in iter_documents([big], warn=False)}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sizes == {100}
    assert peak < 200_000, peak  # read whole, it peaks at 2.6 MB
    assert capsys.readouterr().err == ""


def test_input_files_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "x.csv", "nope")
    cases = [([tmp_path / "missing.txt"], "missing.txt: no such file"),
             ([str(tmp_path / "*.nothing")], "no files match"),
             ([tmp_path / "empty"], "empty: no .txt"),
             ([], "no input files")]
    for inputs, message in cases:
        with pytest.raises(BertkitError, match=message):
            input_files(inputs)


@pytest.mark.parametrize("name, content, line, message", [
    ("bad.txt", b"Fine.\n\nStill fine.\nBad \xff byte.\n", 4, "not UTF-8"),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n', 2, "invalid JSON"),
    ("bad.jsonl", b'\n["a list"]\n', 2, "got an array"),
    ("bad.json", b'{"text": "ok"}\n{"body": "x"}\n', 2, "no 'text' field"),
    ("bad.jsonl", b'{"text": 3}\n', 1, "is a number, not a string"),
    ("bad.jsonl", b'{"text": null}\n', 1, "is null, not a string"),
])
def test_errors_name_file_and_line(tmp_path, name, content, line, message):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(BertkitError) as e:
        list(iter_documents([f]))
    text = str(e.value)
    assert f"{name}:{line}:" in text and message in text and "\n" not in text
