"""Experiment logs: the training loop's records (the lines of metrics.jsonl) sent on to TensorBoard or Weights &
Biases as well, as transformers' Trainer does with `report_to`.

One interface, `Reporter.log(record)` and `close()`, fed by the trainer wherever it writes a line of metrics.jsonl,
so the scalars a dashboard shows are exactly the file's numbers: train/<name> for a training line (loss, the task's
loss parts, lr, tokens_per_s, grad_norm, tokens, elapsed) and eval/<name> for an evaluation (dev metrics), at the
optimiser step the line names. Only rank 0 of a distributed run reports.

- tensorboard: event files in <run>/runs/ (`tensorboard --logdir <run>/runs`); a resumed run purges the events
  logged after its checkpoint, as it truncates metrics.jsonl.
- wandb: `wandb.init(project=$WANDB_PROJECT or "bertkit", dir=<run>)`, the run's options as its config; WANDB_MODE
  (offline, disabled) and WANDB_API_KEY are wandb's own. A resumed run continues the same wandb run.

The packages are optional extras; naming a backend whose package is missing fails before anything is written."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from pathlib import Path
from typing import Protocol

from bertkit.errors import BertkitError

BACKENDS = {"tensorboard": "tensorboard", "wandb": "wandb"}
"""Backend name -> the package it needs (and the bertkit extra that installs it, of the same name)."""
TENSORBOARD_DIR = "runs"  # transformers' Trainer writes output_dir/runs too
X_AXES = ("step",)  # a record's x-axis, not a scalar


def parse_report_to(value: str) -> tuple[str, ...]:
    """The backends named by `value` ("none", a name, or a comma list such as "tensorboard,wandb"), each checked to
    be known and installed; () for none."""
    names = [n.strip().lower() for n in str(value).split(",")]
    if names == ["none"]:
        return ()
    known = ", ".join(BACKENDS)
    for name in names:
        if name not in BACKENDS:
            why = "none may not be combined with a backend" if name == "none" else f"unknown backend {name!r}"
            raise BertkitError(f"--report-to {value!r}: {why}; give {known}, a comma list of them, or none")
        package = BACKENDS[name]
        if importlib.util.find_spec(package) is None:
            raise BertkitError(f"--report-to {name} needs the {package} package: pip install 'bertkit[{package}]'")
    return tuple(dict.fromkeys(names))


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl record as dashboard tags: eval/<metric> for an evaluation, train/<name> for
    a training line. Text (a skipped step, an early stop) and the x-axis are left out."""
    evaluation = any(k.startswith("eval_") for k in record)
    out = {}
    for key, value in record.items():
        if key in X_AXES or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if evaluation and key.startswith("eval_"):
            out[f"eval/{key[len('eval_'):]}"] = value
        elif not evaluation:
            out[f"train/{key}"] = value
    return out


class Reporter(Protocol):
    def log(self, record: dict) -> None:
        """Send the numbers of one metrics.jsonl record (it has a "step")."""

    def close(self) -> None:
        """Flush and finish."""


class _TensorBoard:
    def __init__(self, run_dir: Path, step: int, resume: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter
        # Resuming from the checkpoint at `step` forgets what was logged after it (purge_step: events at steps >=
        # it are dropped by TensorBoard's readers), so a step is never shown twice.
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=step + 1 if resume else None)

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a line per log_every steps: cheap, and a killed run keeps what it logged

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict, resume: bool) -> None:
        import wandb
        id_file = run_dir / "wandb" / "bertkit_run_id"  # so that --resume continues the same wandb run
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else secrets.token_hex(6)
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "bertkit"), dir=str(run_dir),
                                  name=run_dir.resolve().name, id=run_id, resume="allow", config=config)
        except Exception as e:  # noqa: BLE001 - not logged in, no network, ...: wandb's own words, in one line
            message = " ".join(str(e).split()) or type(e).__name__
            raise BertkitError(f"--report-to wandb: {message} (run `wandb login`, or set WANDB_MODE=offline)") from None

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class _Reporters:
    """Every backend asked for, as one Reporter (none: does nothing)."""

    def __init__(self, backends: list) -> None:
        self.backends = backends

    def log(self, record: dict) -> None:
        values = scalars(record)
        if values:  # not for a line of text alone (a skipped step)
            for b in self.backends:
                b.log(record["step"], values)

    def close(self) -> None:
        for b in self.backends:
            b.close()
        self.backends = []


def open_reporter(report_to: str, run_dir: str | Path, *, step: int = 0, resume: bool = False,
                  main: bool = True) -> Reporter:
    """The reporters a run asked for (TrainConfig.report_to), starting after optimiser step `step` (a resumed run's
    checkpoint). The config sent to wandb is the run's recorded options (run_dir/*_config.json). Only the main
    process (rank 0) reports; the others get a reporter that does nothing."""
    names = parse_report_to(report_to)
    if not main or not names:
        return _Reporters([])
    run_dir = Path(run_dir)
    backends = []
    for name in names:
        if name == "tensorboard":
            backends.append(_TensorBoard(run_dir, step, resume))
        else:
            config = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(run_dir.glob("*_config.json"))}
            backends.append(_WandB(run_dir, config, resume))
    return _Reporters(backends)
