"""`--workers N`: the same command run by N processes on this machine, each given the environment torchrun gives
its processes (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so that they take the path a torchrun job
takes (bertkit.inference.shards). Each process gets the CPUs divided among them as its threads (unless --threads
says otherwise), or under auto its own GPU. The first process to fail stops the others."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from bertkit.errors import BertkitError

PARENT_ENV = "BERTKIT_WORKERS_PARENT"
"""The launcher's process id, in each worker's environment (follow_parent)."""


def launch(argv: list[str], n: int, threads: int | None) -> int:
    """Run `bertkit *argv` as n processes and wait for them; returns the exit status (the first failure's)."""
    from bertkit.hardware import usable_cpus, world
    if world() > 1:
        raise BertkitError("--workers starts processes on this machine; under torchrun, give --nproc-per-node "
                           "instead")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(n),
           "LOCAL_WORLD_SIZE": str(n), PARENT_ENV: str(os.getpid())}
    if threads is None:
        env["OMP_NUM_THREADS"] = str(max(1, usable_cpus() // n))
    command = [sys.executable, "-m", "bertkit.cli", *argv, "--workers", "1"]
    procs = [subprocess.Popen(command, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(n)]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = next((c for c in codes if c not in (None, 0)), None)
            if failed is not None:
                _stop(procs)
                return failed if failed > 0 else 128 - failed  # killed by signal s: 128 + s, as a shell says
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs)
        raise


def follow_parent() -> None:
    """In a worker started by --workers: end when the launcher ends, even by SIGKILL, which it cannot pass on (Linux:
    the kernel sends SIGTERM at the parent's death; elsewhere the launcher's own stop() is all there is)."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != parent:  # it died before the line above took effect
        os._exit(128 + signal.SIGTERM)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for the processes' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
