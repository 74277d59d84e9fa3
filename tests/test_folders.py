"""Output folders under contention and on bad disks: one writer per folder (a lock beside it), the old output kept
until the new one is complete, and a full or read-only disk is one line with nothing lost."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertkit.checkpoint import load_model, weights_bytes
from bertkit.errors import BertkitError
from bertkit.folders import MARKER, claim, release, write_atomically
from test_reliability import one_line_error, run, world  # noqa: F401 (world is a fixture)

CLI = [sys.executable, "-c", "import sys; from bertkit.cli import main; sys.exit(main(sys.argv[1:]))"]


def lock_of(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


# ---- one writer per folder ----------------------------------------------------------------------------------------


# a real run in a second process: about 10 s on 2 cores, mostly importing torch
def test_a_second_finetune_into_a_running_one_is_refused_and_the_first_stays_whole(world, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["finetune", world["classifier"], "--train", world["train"], "--dev", world["dev"], "--out", out,
            "--batch-size", "8", "--quiet"]
    first = subprocess.Popen(CLI + [str(a) for a in base + ["--epochs", "3", "--lr", "1e-3"]],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        wait_for(lock_of(out), first)
        err = one_line_error(base + ["--epochs", "1", "--lr", "5e-4"], capsys, f"pid {first.pid}")
        assert "is writing here" in err and "bertkit finetune" in err and socket.gethostname() in err
        one_line_error(base + ["--epochs", "3", "--lr", "1e-3", "--resume"], capsys, "is writing here")  # resume too
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    # the folder is the first run's alone: its options, its epochs, its marker; the lock is gone with it
    recorded = json.loads((out / "finetune_config.json").read_text())
    assert recorded["train"]["lr"] == 1e-3 and recorded["finetune"]["epochs"] == 3
    assert json.loads((out / "metrics.json").read_text())["dev_examples"] == 20
    assert (out / MARKER).is_file() and load_model(out / "model").labels == ["neg", "pos"]
    assert not lock_of(out).exists()


def test_a_live_lock_is_refused_and_a_killed_writers_lock_is_taken_over(world, tmp_path, capsys):
    out = tmp_path / "m"
    holder = subprocess.Popen([sys.executable, "-c", f"import time; from bertkit.folders import claim; "
                               f"claim({str(out)!r}, 'convert'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline() == "held\n"
        held = json.loads(lock_of(out).read_text())
        assert held["pid"] == holder.pid and held["verb"] == "convert" and held["host"] == socket.gethostname()
        one_line_error(["convert", world["classifier"], out, "--to", "hf"], capsys, f"pid {holder.pid}")
        assert not out.exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up ran, the lock file stays, its OS lock died with the process
        holder.wait()
    assert lock_of(out).exists()
    code, _, err = run(["convert", world["classifier"], out, "--to", "hf"], capsys)
    assert code == 0 and f"taking over the lock of `bertkit convert` (pid {holder.pid}" in err, err
    assert (out / "config.json").is_file() and not lock_of(out).exists()


def test_a_stale_lock_file_is_taken_over_and_another_hosts_is_refused(world, tmp_path, capsys):
    out = tmp_path / "m"
    lock = lock_of(out)
    lock.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": "yesterday",
                                "verb": "export"}))
    code, _, err = run(["convert", world["classifier"], out, "--to", "hf"], capsys)
    assert code == 0 and "taking over the lock of `bertkit export`" in err and "started yesterday" in err
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "today", "verb": "convert"}))
    one_line_error(["convert", world["classifier"], out, "--to", "hf"], capsys, f"if no run writes there, delete {lock}")
    assert lock.exists()  # not ours to remove


def test_the_lock_stays_out_of_the_folder_and_is_reentrant(tmp_path):
    out = tmp_path / "o"
    assert claim(out, "convert") == out and claim(out, "convert") == out  # the same process claims again
    assert lock_of(out).is_file() and not out.exists()
    write_atomically(out, lambda tmp: (tmp / "a").write_text("a"))  # replacing the folder keeps the lock
    assert lock_of(out).is_file() and sorted(p.name for p in out.iterdir()) == ["a"]
    release(out)
    assert not lock_of(out).exists()


def test_a_symlink_loop_as_output_is_one_line(world, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for args in (["convert", world["classifier"], loop, "--to", "hf"],
                 ["finetune", world["classifier"], "--train", world["train"], "--out", loop]):
        one_line_error(args, capsys, "loop")


# ---- full and read-only disks -----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        release()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Leave about `leave` bytes free on disk."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free + (filler.stat().st_size if filler.exists() else 0)
    filler.write_bytes(b"\0" * max(0, free - leave))


def test_a_full_disk_is_one_line_and_keeps_the_earlier_output(world, small_disk, capsys):
    out = small_disk / "model"
    assert run(["convert", world["classifier"], out, "--to", "hf"], capsys)[0] == 0
    before = files(out)
    weights = weights_bytes(world["classifier"])
    # room for the weights (the check before work passes) but not for the whole new folder: fails while writing
    fill(small_disk, weights + 8192)
    one_line_error(["convert", world["classifier"], out, "--to", "hf"], capsys, f"{out}: no space left on device")
    assert files(out) == before and load_model(out).labels == ["neg", "pos"]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "model"]  # no temp folder, no lock left
    # less room than the model's weights: refused before any work
    fill(small_disk, weights // 2)
    one_line_error(["convert", world["classifier"], out, "--to", "hf"], capsys, "needs about")
    run_dir = small_disk / "run"
    one_line_error(["finetune", world["classifier"], "--train", world["train"], "--out", run_dir], capsys,
                   "needs about")
    assert files(out) == before and not run_dir.exists()
    with pytest.raises(BertkitError, match="no space left on device"):  # the mechanism itself, whoever calls it
        write_atomically(out, lambda tmp: (tmp / "big").write_bytes(b"\0" * 10**6))
    assert files(out) == before and sorted(p.name for p in small_disk.iterdir()) == ["filler", "model"]


def test_a_read_only_disk_is_one_line_and_loses_nothing(world, small_disk, capsys):
    out = small_disk / "model"
    assert run(["convert", world["classifier"], out, "--to", "hf"], capsys)[0] == 0
    before = files(out)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for args in (["convert", world["classifier"], out, "--to", "hf"],
                 ["convert", world["classifier"], small_disk / "new", "--to", "hf"],
                 ["finetune", world["classifier"], "--train", world["train"], "--out", small_disk / "run"]):
        one_line_error(args, capsys, "read-only file system")
    assert files(out) == before
    with pytest.raises(BertkitError, match=f"{out}: read-only file system"):
        write_atomically(out, lambda tmp: None)


def test_an_unwritable_folder_is_refused_before_work(world, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        one_line_error(["convert", world["classifier"], out, "--to", "hf", "--overwrite"], capsys, "permission denied")
    finally:
        out.chmod(0o700)


def test_a_disk_error_anywhere_in_a_verb_is_one_line_naming_the_file(world, tmp_path, capsys, monkeypatch):
    import errno

    import bertkit.checkpoint

    def quota(src, dst, task=None):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(Path(dst) / "config.json"))
    monkeypatch.setattr(bertkit.checkpoint, "convert_model", quota)
    out = tmp_path / "m"
    one_line_error(["convert", world["classifier"], out, "--to", "hf"], capsys, f"{out / 'config.json'}: disk quota")
    assert not lock_of(out).exists()  # released on the way out

    def bug(src, dst, task=None):
        raise RuntimeError("a bug")
    monkeypatch.setattr(bertkit.checkpoint, "convert_model", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # anything else keeps its traceback
        run(["convert", world["classifier"], out, "--to", "hf"], capsys)
    assert not lock_of(out).exists()
