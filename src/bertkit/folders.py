"""Output folders: what a verb may write into or replace, and how it replaces one without losing anything.

Every verb that writes calls `claim(out, verb)` before it does any work. A folder is the verb's to write when it
is absent, empty, or a previous output of the same verb (it holds the marker file `.bertkit-output` naming the
verb); any other non-empty folder needs `--overwrite`. Some folders are never replaced, even then: the current
directory and its parents, the home directory, a folder that holds the verb's own input model, and a training
run (it holds `checkpoints/`). `write_atomically` refuses those last ones too, whoever calls it.

One writer per folder: `claim` also takes a lock, the file `.NAME.lock` beside the folder (beside, not inside, so
that replacing the folder by a rename keeps it, and no saved model ever carries one). The lock is an OS lock
(`flock`) on that file, which the kernel drops when its process dies, however it dies; the file's JSON (pid, host,
start, verb) is only there to name the writer. A second writer is refused; the file of a writer that died is
taken over with a note. `release()` (called by the command line when a verb ends, and at exit) removes it.
Disk full, quota and read-only: `disk_error` turns them into one line naming the folder; `write_atomically` keeps
the old folder and removes its temporary one. `atomic_file` is the same whole-or-nothing write for one file.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bertkit.errors import BertkitError

try:
    import fcntl
except ImportError:  # Windows: no flock; a lock whose pid is alive on this host counts as held
    fcntl = None

MARKER = ".bertkit-output"
LOCK_INSIDE = ".bertkit-lock"
"""The lock's name inside the folder, used only where the folder's parent cannot be written."""
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
"""OSErrors that mean "this disk will not take the output": the user's to fix, one line, never a traceback."""
LOW_SPACE = 1 << 20
"""Free bytes under which a write that failed without saying why (torch.save) is taken to have filled the disk."""

_held: dict[Path, tuple[Path, int, int]] = {}
"""This process's locks: the folder (resolved) -> (its lock file, the open descriptor holding the flock, our pid). A
process-wide table, as the locks are the process's: the command line releases them when a verb ends."""


def claim(out: str | Path, verb: str, *, overwrite: bool = False, inputs: Iterable[str | Path] = (),
          run: bool = False, needs: int = 0) -> Path:
    """Check that `bertkit verb` may write `out` and lock it for this process before any work is done; returns
    out as a Path.

    inputs: paths the verb reads (a source model, data files); out may not be one of them or hold one.
    run: out is a training run folder, where `--resume` continues (checkpoints are then expected).
    needs: bytes the verb knows it will write at least (a model's weights); refused now if the disk lacks them.
    """
    out = Path(out)
    here = _resolve(out)
    if out.exists() and not out.is_dir():
        raise BertkitError(f"{out}: exists and is not a folder; give a folder for the output")
    _refuse_protected(out)
    for path in inputs:
        src = Path(path).resolve()
        if src == here or here in src.parents:
            raise BertkitError(f"{out}: holds this command's input {path}; write the output to another folder")
    if here in _held:  # claimed already by this process (a library call inside a verb): the lock is one
        return out
    _lock(out, here, verb)
    try:
        _check_contents(out, verb, overwrite=overwrite, run=run)
        _check_writable(out, needs)
    except BaseException:
        release(out)
        raise
    return out


def _check_contents(out: Path, verb: str, *, overwrite: bool, run: bool) -> None:
    if not out.is_dir() or not any(p.name != LOCK_INSIDE for p in out.iterdir()):
        return
    if not run and (out / "checkpoints").is_dir():
        raise BertkitError(f"{out}: holds a training run (checkpoints/); write the output to another folder")
    if written_by(out) == verb or overwrite:
        return
    raise BertkitError(f"{out}: exists, is not empty and was not written by `bertkit {verb}`; choose a new folder "
                       "or pass --overwrite to write into it")


def _resolve(out: Path) -> Path:
    try:
        return out.resolve()
    except (RuntimeError, OSError) as e:  # RuntimeError: Python < 3.13's symlink loop
        if out.is_symlink():
            raise BertkitError(f"{out}: a symbolic link that leads back to itself (a loop); give a real folder"
                               ) from None
        raise BertkitError(f"{out}: {e}") from None


def _check_writable(out: Path, needs: int) -> None:
    """Create and delete a file where the output goes, and compare `needs` with the free space: a read-only or
    full disk fails now, in one line, not after minutes of work."""
    where = out if out.is_dir() else _resolve(out).parent  # the lock beside it proved the parent writable
    probe = where / f".bertkit-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BertkitError(f"{out}: cannot write there: {_reason(e)}") from None
    free = shutil.disk_usage(where).free
    if needs > free:
        raise BertkitError(f"{out}: needs about {_mb(needs)} and its disk has {_mb(free)} free; free some space "
                           "or write elsewhere")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


# ---- the lock ----------------------------------------------------------------------------------------------------


def _lock(out: Path, here: Path, verb: str) -> None:
    """Take the lock of folder `out` (resolved: `here`) for this process, or refuse naming who holds it."""
    try:
        here.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BertkitError(f"{out}: cannot write there: {_reason(e)}") from None
    path = here.parent / f".{here.name}.lock"
    for _ in range(5):  # another process may remove the file between our open and our flock: open it again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno not in DISK_ERRNOS or not here.is_dir() or path.name == LOCK_INSIDE:
                raise BertkitError(f"{out}: cannot write there: {_reason(e)}") from None
            path = here / LOCK_INSIDE  # a folder of one's own in a parent one cannot write: the lock goes inside
            continue
        locked = _flock(fd)
        if locked is False:
            held = _read(fd)
            os.close(fd)
            raise BertkitError(f"{out}: {_who(held)} is writing here; wait for it to end or choose another folder")
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:
            os.close(fd)
            continue
        held = _read(fd)
        if held is not None:
            if held.get("host") != socket.gethostname():
                os.close(fd)
                raise BertkitError(f"{out}: locked by {_who(held)}, which this machine cannot check; if no run "
                                   f"writes there, delete {path}")
            if locked is None and held.get("pid") != os.getpid() and _alive(held.get("pid", 0)):
                os.close(fd)
                raise BertkitError(f"{out}: {_who(held)} is writing here; wait for it to end or choose another "
                                   "folder")
            print(f"note: {out}: taking over the lock of {_who(held)}, which ended without releasing it",
                  file=sys.stderr)
        mine = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "verb": verb}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
        except OSError as e:
            os.close(fd)
            raise BertkitError(f"{out}: cannot write there: {_reason(e)}") from None
        _held[here] = (path, fd, os.getpid())
        return
    raise BertkitError(f"{out}: its lock {path} keeps changing; is another bertkit starting there?")


def release(out: str | Path | None = None) -> None:
    """Give up this process's lock on `out` (all its locks when None): the file is removed, then the flock."""
    folders = list(_held) if out is None else [_resolve(Path(out))]
    for here in folders:
        if here in _held:
            path, fd, pid = _held.pop(here)
            if pid != os.getpid():  # a forked child (a data loader's worker) leaves its parent's locks alone
                continue
            try:
                path.unlink()  # before the close: a writer waiting on this file then opens a new one
            except OSError:
                pass
            os.close(fd)


atexit.register(release)


def _flock(fd: int) -> bool | None:
    """Whether this process now holds the OS lock on fd (never waits); None where there are no OS locks (Windows,
    a file system without them): then the pid in the file decides."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _read(fd: int) -> dict | None:
    try:
        held = json.loads(os.pread(fd, 4096, 0).decode())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def _who(held: dict | None) -> str:
    if not held:
        return "another bertkit"
    return (f"`bertkit {held.get('verb', '?')}` (pid {held.get('pid', '?')} on {held.get('host', '?')}, started "
            f"{held.get('started', '?')})")


# ---- disk errors -------------------------------------------------------------------------------------------------


def _reason(e: OSError) -> str:
    return os.strerror(e.errno).lower() if e.errno else str(e)


def disk_error(e: BaseException, path: str | Path) -> BertkitError | None:
    """The one-line error, naming `path`, for a write that failed because the disk is full, over quota,
    read-only or not ours; None for any other failure. safetensors and torch.save do not raise OSError: their
    message, or a nearly full disk after the failure, tells."""
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        return BertkitError(f"{path}: {_reason(e)}")
    text = str(e)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        if f"os error {code})" in text or os.strerror(code) in text:
            return BertkitError(f"{path}: {os.strerror(code).lower()}")
    if isinstance(e, RuntimeError):
        try:
            low = shutil.disk_usage(_existing(Path(path))).free < LOW_SPACE
        except OSError:
            low = False
        if low:
            return BertkitError(f"{path}: {os.strerror(errno.ENOSPC).lower()}")
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


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
    killed process left behind are removed on the way. A full, read-only or foreign disk is one line naming the
    folder (`disk_error`); the old folder stays as it was and the temporary one is removed.
    """
    folder = Path(folder)
    if folder.exists():
        _refuse_protected(folder)
        if (folder / "checkpoints").is_dir():
            raise BertkitError(f"{folder}: holds a training run (checkpoints/); it is never replaced")
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(folder)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except Exception as e:
        error = disk_error(e, folder)
        if error is None:
            raise
        raise error from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_json(path: str | Path, data) -> None:
    """data as indented JSON (UTF-8, non-ASCII kept), written whole or not at all (atomic_file): a killed run
    leaves the last complete version."""
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in blocks (never whole); an unreadable file is one line."""
    h = hashlib.new(algorithm)
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise BertkitError(f"{path}: cannot read ({e.strerror})") from None
    return h.hexdigest()


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` (`.NAME.tmp-PID`: same folder, so the rename never crosses a disk; the pid
    so two processes never share it) for the block to write; when the block ends, the file replaces `path` in one
    rename, so a reader (or a run killed mid-write) sees the old file or the new one, never part of one. A block
    that raises leaves `path` as it was and the temporary file removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
