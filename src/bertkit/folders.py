"""Output folders: what a verb may write into or replace, and how it replaces one without losing anything.

Every verb that writes calls `claim(out, verb)` before it does any work. A folder is the verb's to write when it
is absent, empty, or a previous output of the same verb (it holds the marker file `.bertkit-output` naming the
verb); any other non-empty folder needs `--overwrite`. Some folders are never replaced, even then: the current
directory and its parents, the home directory, a folder that holds the verb's own input model, and a training
run (it holds `checkpoints/`). `write_atomically` refuses those last ones too, whoever calls it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from bertkit.errors import BertkitError

MARKER = ".bertkit-output"


def claim(out: str | Path, verb: str, *, overwrite: bool = False, inputs: Iterable[str | Path] = (),
          run: bool = False) -> Path:
    """Check that `bertkit verb` may write `out` before any work is done; returns out as a Path.

    inputs: paths the verb reads (a source model, data files); out may not be one of them or hold one.
    run: out is a training run folder, where `--resume` continues (checkpoints are then expected).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BertkitError(f"{out}: exists and is not a folder; give a folder for the output")
    _refuse_protected(out)
    here = out.resolve()
    for path in inputs:
        src = Path(path).resolve()
        if src == here or here in src.parents:
            raise BertkitError(f"{out}: holds this command's input {path}; write the output to another folder")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if not run and (out / "checkpoints").is_dir():
        raise BertkitError(f"{out}: holds a training run (checkpoints/); write the output to another folder")
    if written_by(out) == verb or overwrite:
        return out
    raise BertkitError(f"{out}: exists, is not empty and was not written by `bertkit {verb}`; choose a new folder "
                       "or pass --overwrite to write into it")


def mark(folder: str | Path, verb: str) -> None:
    """Record that `bertkit verb` wrote this folder, so the same verb may write it again."""
    (Path(folder) / MARKER).write_text(json.dumps({"verb": verb}) + "\n", encoding="utf-8")


def written_by(folder: Path) -> str | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("verb")
    except (OSError, ValueError, AttributeError):
        return None


def _refuse_protected(folder: Path) -> None:
    """The current directory, its parents and the home directory are never written over as a whole."""
    here = folder.resolve()
    cwd = Path.cwd().resolve()
    if here == cwd or here in cwd.parents or here == Path.home().resolve():
        raise BertkitError(f"{folder}: is the current directory, one of its parents or the home directory; "
                           "give a folder of its own for the output")


def write_atomically(folder: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(tmp_dir) and move tmp_dir to folder; a crash leaves the old folder (or nothing) in place.

    Never replaces the current directory (or a parent) or a training run's folder. Temporary siblings that a
    killed process left behind are removed on the way.
    """
    folder = Path(folder)
    if folder.exists():
        _refuse_protected(folder)
        if (folder / "checkpoints").is_dir():
            raise BertkitError(f"{folder}: holds a training run (checkpoints/); it is never replaced")
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _remove_orphans(folder: Path) -> None:
    """Siblings a killed process left: `.NAME.tmp-PID` (an unfinished write) is removed; `.NAME.old-PID` (the
    previous folder, moved aside just before the new one took its place) is put back if the folder is missing."""
    for path in sorted(folder.parent.glob(f".{folder.name}.*-*")):
        kind, _, pid = path.name[len(folder.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if kind == "old" and not folder.exists():
            path.rename(folder)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
