"""A run's start (the recipe recorded, a resume checked against it) and finish (metrics.json, card, curves)."""

import json

import pytest

from bertkit import BertkitError, build_model, save_model
from bertkit.runs import finish_run, start_run

RECIPE = {"data": {"train": "/data/train.csv (12 bytes, sha1 0123456789ab)", "dev": None}, "train": {"lr": 1e-4}}
ORIGIN = {"name": "org/tiny-bert", "revision": "0" * 40}


def test_a_resume_must_have_the_options_the_run_started_with(tmp_path):
    out, name = tmp_path / "run", "finetune_config.json"
    start_run(out, name, RECIPE, hub={"model": None}, resume=False, force=False)
    assert json.loads((out / name).read_text()) == RECIPE  # a local model: no "hub"
    other = {**RECIPE, "train": {"lr": 2e-4}}
    (out / "checkpoints" / "step_00000001").mkdir(parents=True)
    start_run(out, name, other, resume=False, force=False)  # train refuses this new run: the record stays
    assert json.loads((out / name).read_text()) == RECIPE
    with pytest.raises(BertkitError, match=r"^\S+ was started with other data or options \(train.lr: 0.0001 -> "
                                           r"0.0002\); resume with the same ones, or add --force"):
        start_run(out, name, other, resume=True, force=False)
    start_run(out, name, RECIPE, resume=True, force=False)
    start_run(out, name, other, resume=True, force=True)
    assert json.loads((out / name).read_text()) == other


def test_a_run_killed_before_its_first_checkpoint_is_recorded_when_started_again(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)  # no step_*: train starts the run anew
    start_run(out, "pretrain_config.json", RECIPE, hub={"init": ORIGIN}, resume=False, force=False)
    assert json.loads((out / "pretrain_config.json").read_text()) == {**RECIPE, "hub": {"init": ORIGIN}}


def test_finish_writes_metrics_card_and_curves_from_the_main_process_only(tmp_path, tiny_config, monkeypatch):
    out = tmp_path / "run"
    save_model(out / "model", build_model(tiny_config, "sequence_classification", 2), labels=["neg", "pos"])
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.7}) + "\n" +
                                       json.dumps({"step": 1, "eval_macro_f1": 0.5}) + "\n")
    results = {"task": "classification", "dev": {"macro_f1": 0.5}, "test": {"macro_f1": 0.75, "support": 4}}
    finish = dict(task="sequence_classification", results=results, data=RECIPE["data"], base=ORIGIN)
    monkeypatch.setenv("RANK", "1")
    finish_run(out, **finish)
    assert not (out / "metrics.json").exists() and not (out / "curves.png").exists()
    monkeypatch.setenv("RANK", "0")
    finish_run(out, **finish)
    assert json.loads((out / "metrics.json").read_text()) == results
    card = (out / "model" / "README.md").read_text()
    assert "| dev | macro_f1 | 0.5000 |" in card and "| test | support | 4 |" in card and "| 1 | pos |" in card
    assert "- train: `train.csv (12 bytes, sha1 0123456789ab)`" in card and "- dev:" not in card
    assert f"base_model: {ORIGIN['name']}" in card
    assert (out / "curves.png").stat().st_size > 0
