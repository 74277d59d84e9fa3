"""A training run's start and finish, the same for every recipe (pretrain, finetune, distill); what happens in
between is trainer.train's.

Start: the options given are checked before any work (`train_options`), and the run folder records what the run was
started with, the data files by fingerprint and the Hub models by name and commit (`start_run`): a resumed run must
have the same, or the user says --force. Finish (`finish_run`): beside the model trainer.train kept in out/model
(the best on dev when a metric picks it), metrics.json, the model's card with its data and dev/test scores, and
curves.png from metrics.jsonl. Only the main process writes.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from bertkit.checkpoint import load_model, write_model_card
from bertkit.config import read_json
from bertkit.errors import BertkitError
from bertkit.folders import file_digest, write_json
from bertkit.hardware import rank, resolve_device
from bertkit.trainer import TrainConfig, checkpoints


def train_options(given: dict, best_metric: str | None) -> dict:
    """The TrainConfig options given (None: not given), checked now: a bad one fails before data or a model is read."""
    options = {k: v for k, v in given.items() if v is not None}
    TrainConfig(**{"best_metric": best_metric, **options, "max_steps": 1})
    return options


def fingerprints(files: dict[str, str | Path | None]) -> dict[str, str | None]:
    """{role: file_fingerprint} of a run's data files (None for a file not given)."""
    return {role: file_fingerprint(path) for role, path in files.items()}


def start_run(out: Path, name: str, recipe: dict, *, hub: dict | None = None, resume: bool, force: bool) -> None:
    """Record `recipe` (data, options) in out/name, with hub: {role: hub.hub_origin or None}, the Hub models the run
    starts from; a resume must match it (check_recipe). A new run over checkpoints records nothing: train refuses it."""
    if rank() != 0 or (not resume and checkpoints(out)):
        return
    origins = {role: origin for role, origin in (hub or {}).items() if origin}
    if origins:  # Hub models: their names and commits, so that the run can be reproduced
        recipe = {**recipe, "hub": origins}
    check_recipe(out, name, recipe, resume=resume, force=force)


def kept_model(out: Path) -> nn.Module:
    """out/model, the model the run kept, on the process's device: what the run's metrics score."""
    return load_model(out / "model").model.to(resolve_device())


def finish_run(out: Path, *, task: str, results: dict | None = None, labels: list[str] | None = None,
               reading: dict | None = None, data: dict | None = None, base: dict | None = None) -> None:
    """Write out/metrics.json (results, when given), out/model's card (its data files, dev and test metrics and the
    Hub model it started from, base) and out/curves.png."""
    if rank() != 0:
        return
    from bertkit.plots import plot_training
    if results is not None:
        write_json(out / "metrics.json", results)
    write_model_card(out / "model", task=task, labels=labels, reading=reading,
                     data={k: v for k, v in (data or {}).items() if v},
                     metrics={k: results[k] for k in ("dev", "test") if k in results} if results else None, base=base)
    plot_training(out / "metrics.jsonl", out / "curves.png")


def check_recipe(run_dir: Path, name: str, recipe: dict, *, resume: bool, force: bool = False) -> None:
    """Keep what a run was started with (data, options) in run_dir/name. Resuming with anything else is refused,
    naming what differs, unless force (then the file records the new recipe). Call before any training."""
    path = Path(run_dir) / name
    recipe = _without(recipe, "report_to")  # how a run is watched is not part of it: a resume may change it
    if resume and path.is_file():
        old, new = _flatten(read_json(path)), _flatten(json.loads(json.dumps(recipe)))
        changed = [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in sorted(set(old) | set(new))
                   if old.get(k) != new.get(k)]
        if changed and not force:
            shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
            raise BertkitError(f"{run_dir} was started with other data or options ({shown}); resume with the same "
                               "ones, or add --force to go on with the new ones")
        if not changed:
            return
    elif resume:
        return  # a run from before recipes were kept
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, recipe)


def _without(d: dict, key: str) -> dict:
    return {k: _without(v, key) if isinstance(v, dict) else v for k, v in d.items() if k != key}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def file_fingerprint(path: str | Path | None) -> str | None:
    """A data file as a run records it: its path, size and content hash (None for no file); a `datasets` folder or
    name: its split, rows and `datasets` fingerprint (bertkit.data.tables.dataset_fingerprint)."""
    if path is None:
        return None
    from bertkit.data import tables
    if not Path(path).is_file() and tables.is_table(path):
        return tables.dataset_fingerprint(path)
    path = Path(path)
    digest = file_digest(path, "sha1")
    return f"{path.resolve()} ({path.stat().st_size} bytes, sha1 {digest[:12]})"
