"""Experiment logs (`--report-to`): the TensorBoard event files and the wandb offline run hold exactly the numbers of
the run's own metrics.jsonl, at the same steps; a resumed run shows no step twice; a missing package or an unknown
backend is one line before anything is written; tokens never reach the run's files."""

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from test_reliability import one_line_error, run, world  # noqa: F401 (world is a fixture)

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard package (bertkit[tensorboard])")


def finetune_args(w: dict, out: Path, *extra) -> list:
    return ["finetune", w["encoder"], "--train", w["train"], "--dev", w["dev"], "--out", out, "--batch-size", "16",
            "-q", *extra]


def expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as dashboard tags, written out here (not with bertkit's own mapping): a training line's numbers
    as train/<key>, an evaluation's eval_<metric> as eval/<metric>, each at the line's step."""
    tags: dict[str, list] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        evaluation = any(k.startswith("eval_") for k in record)
        for key, value in record.items():
            if key == "step" or not isinstance(value, (int, float)) or (evaluation and not key.startswith("eval_")):
                continue
            tag = "eval/" + key[len("eval_"):] if evaluation else "train/" + key
            tags.setdefault(tag, []).append((record["step"], value))
    return tags


def events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard reads from run_dir/runs: every scalar of every tag (no sampling), in step order."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    acc = EventAccumulator(str(run_dir / "runs"), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same(run_dir: Path) -> dict:
    """The event files hold metrics.jsonl's numbers (as float32, TensorBoard's scalar type), step for step."""
    want, got = expected(run_dir), events(run_dir)
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag  # no step missing, none twice
        for (_, v), (_, e) in zip(points, got[tag]):
            assert e == float(np.float32(v)) or (math.isnan(e) and math.isnan(v)), (tag, v, e)
    return got


@needs_tensorboard
def test_finetune_tensorboard_events_equal_metrics_jsonl_and_a_resume_shows_no_step_twice(world, tmp_path, capsys):
    out = tmp_path / "run"
    args = finetune_args(world, out, "--epochs", "3", "--report-to", "tensorboard")
    assert run(args, capsys)[0] == 0
    got = assert_same(out)
    assert {"train/loss", "train/lr", "train/tokens_per_s", "eval/accuracy", "eval/macro_f1"} <= set(got)
    assert [s for s, _ in got["eval/accuracy"]] == [5, 10, 15]  # every epoch of 5 steps
    assert json.loads((out / "train_config.json").read_text())["report_to"] == "tensorboard"

    # Resumed from its checkpoint at step 10, the run logs steps 11.. again; the events the first start logged
    # after step 10 are purged, as metrics.jsonl forgets them.
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step_00000010", "step_00000015"]
    shutil.rmtree(checkpoints[-1])  # as if killed after the checkpoint at step 10
    assert run(args + ["--resume"], capsys)[0] == 0
    assert len(list((out / "runs").glob("events.out.tfevents.*"))) == 2  # both starts wrote events
    got = assert_same(out)
    assert [s for s, _ in got["eval/accuracy"]] == [5, 10, 15]
    assert [s for s, _ in got["train/loss"]] == [10, 15]


@needs_tensorboard
def test_pretrain_reports_each_objective(world, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--data", world["prepared"], "--out", out, "--steps", "4", "--batch-size", "4", "--max-len",
            "16", "--preset", "tiny", "--log-every", "1", "--eval-every", "2", "-q", "--report-to", "tensorboard"]
    assert run(args, capsys)[0] == 0
    got = assert_same(out)
    assert {"train/loss", "train/mlm_loss", "train/nsp_loss", "train/lr", "train/tokens_per_s"} <= set(got)
    assert [s for s, _ in got["train/mlm_loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in got["eval/mlm_loss"]] == [2, 4]
    assert {"eval/mlm_accuracy", "eval/perplexity", "eval/nsp_accuracy"} <= set(got)


@needs_tensorboard
def test_distill_reports_its_loss_parts(world, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["distill", world["classifier"], "--train", world["train"], "--dev", world["dev"], "--out", out,
            "--epochs", "2", "--batch-size", "16", "-q", "--report-to", "tensorboard"]
    assert run(args, capsys)[0] == 0
    got = assert_same(out)
    assert {"train/loss", "train/soft", "train/hard", "eval/accuracy"} <= set(got)


def wandb_records(path: Path):
    """The records of a wandb run file (what `wandb sync` uploads): a 7-byte header (":W&B", magic, version), then
    a LevelDB log: 32 KiB blocks of chunks, each with a 7-byte header (CRC, length, type: 1 full, 2 first, 3 middle,
    4 last), each whole record a protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, record = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        record += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            parsed = wandb_internal_pb2.Record()
            parsed.ParseFromString(record)
            yield parsed
            record = b""


@needs_tensorboard
def test_wandb_offline_run_holds_the_config_and_losses(world, tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-" + "0" * 28)  # 40 characters, as a real key
    monkeypatch.setenv("HF_TOKEN", "hf_secretsecretsecret")
    out = tmp_path / "run"
    assert run(finetune_args(world, out, "--epochs", "1", "--report-to", "tensorboard,wandb"), capsys)[0] == 0
    assert_same(out)  # both backends at once
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (out / "wandb" / "bertkit_run_id").read_text().strip()
    history, config = [], {}
    for record in wandb_records(runs[0] / f"run-{run_id}.wandb"):
        if record.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif record.WhichOneof("record_type") == "run":  # the run's id, project, name and config
            assert (record.run.run_id, record.run.project, record.run.display_name) == (run_id, "bertkit", "run")
            config |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
    assert config["train_config"]["report_to"] == "tensorboard,wandb"
    assert config["finetune_config"]["finetune"]["batch_size"] == 16
    want = expected(out)
    logged = {(h["_step"], tag): value for h in history for tag, value in h.items() if "/" in tag}
    for tag, points in want.items():
        for step, value in points:
            assert logged[(step, tag)] == value, (tag, step)  # wandb keeps the float64
    for path in out.rglob("*"):  # neither token is written anywhere in the run folder
        if path.is_file():
            data = path.read_bytes()
            assert b"wandb-secret" not in data and b"hf_secretsecret" not in data, path


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_missing_package_is_one_line_before_anything_is_written(world, tmp_path, capsys, monkeypatch, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # as if not installed: import fails, find_spec finds nothing
    out = tmp_path / "run"
    err = one_line_error(finetune_args(world, out, "--report-to", backend), capsys,
                         f"--report-to {backend} needs the {backend} package: pip install 'bertkit[{backend}]'")
    assert err and not out.exists()


@pytest.mark.parametrize("value, says", [("tensorbored", "unknown backend 'tensorbored'"),
                                         ("none,wandb", "none may not be combined"), ("", "unknown backend ''")])
def test_bad_backend_names_are_one_line(world, tmp_path, capsys, value, says):
    out = tmp_path / "run"
    one_line_error(finetune_args(world, out, "--report-to", value), capsys, says)
    assert not out.exists()


@needs_tensorboard
def test_only_the_main_process_reports(tmp_path):
    """Under torchrun every process runs the loop; ranks other than 0 get a reporter that writes nothing."""
    from bertkit.reporting import open_reporter
    reporter = open_reporter("tensorboard", tmp_path, main=False)
    reporter.log({"step": 1, "loss": 0.5})
    reporter.close()
    assert list(tmp_path.iterdir()) == []
    reporter = open_reporter("tensorboard", tmp_path)
    reporter.log({"step": 1, "loss": 0.5, "skipped": "non-finite loss"})
    reporter.close()
    assert events(tmp_path) == {"train/loss": [(1, 0.5)]}


def test_resume_may_change_where_a_run_reports(tmp_path):
    """How a run is watched is not part of its recipe: resuming with another --report-to is no change of options."""
    from bertkit.errors import BertkitError
    from bertkit.runs import check_recipe
    check_recipe(tmp_path, "finetune_config.json", {"train": {"lr": 1e-4, "report_to": "tensorboard"}}, resume=False)
    assert json.loads((tmp_path / "finetune_config.json").read_text()) == {"train": {"lr": 1e-4}}
    check_recipe(tmp_path, "finetune_config.json", {"train": {"lr": 1e-4, "report_to": "wandb"}}, resume=True)
    with pytest.raises(BertkitError, match="train.lr"):
        check_recipe(tmp_path, "finetune_config.json", {"train": {"lr": 2e-4, "report_to": "wandb"}}, resume=True)
