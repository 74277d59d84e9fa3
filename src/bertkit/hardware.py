"""The machine a run is on: how many threads torch uses, which CPU it is, and how fast it multiplies matrices.

The device a model runs on is decided here and nowhere else (`resolve_device`, which every verb that runs a model
reaches through `--device`, and `pipeline(device=...)` in Python): "auto" is the GPU when there is one (CUDA, then
Apple's MPS), else the CPU. The thread count is decided here and nowhere else (`use_threads`, which every verb that runs a model calls through
`--threads`). Its default is the CPUs this process may use, so a container or `taskset` limit is honoured rather
than the machine's count. Benchmarks print `summary(describe())` first, so every number they print carries the
CPU model, its instruction sets and a matmul peak measured in the same run; `busy_neighbour` takes a core away
from a measurement on purpose, to see how a run degrades when it shares the machine.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bertkit.errors import BertkitError
from bertkit.options import POSITIVE_INT

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
"""The /proc/cpuinfo flags that decide which kernels run: avx512_bf16 / amx_bf16 make bf16 faster than fp32,
avx512_vnni / amx_int8 make int8 fast."""


# ---- threads -------------------------------------------------------------------------------------------------------

def available_cpus() -> int:
    """Logical CPUs this process may run on (a container's or taskset's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def usable_cpus() -> int:
    """The CPUs a run can keep busy: `available_cpus()`, lowered to a cgroup quota (rounded down, at least 1; a
    thread more than the quota is throttled every period)."""
    quota = cgroup_cpus()
    n = available_cpus()
    return max(1, min(n, int(quota))) if quota is not None else n


def omp_num_threads() -> int | None:
    """OMP_NUM_THREADS when it holds a positive integer (its first entry), else None (unset, 0, garbage)."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def default_threads() -> int:
    """Torch threads when none are asked for: OMP_NUM_THREADS when it holds a positive integer (torch's own rule,
    and torchrun sets it to 1 when it starts several processes on one machine, so they do not oversubscribe the
    cores), else every CPU this process may use (`usable_cpus`)."""
    return omp_num_threads() or usable_cpus()


def use_threads(n: int | None = None, *, adapt: bool = False) -> int:
    """Set torch's intra-op threads to n (None: `default_threads()`) and return the count set.

    adapt: with n None and OMP_NUM_THREADS not set, the count then follows what the machine is doing (`Adaptive`):
    `adjust()`, called between steps or batches, lowers it while other processes use the CPUs and raises it back
    when they stop. A pinned count (n or OMP_NUM_THREADS) is kept as given, lowered to the usable CPUs."""
    global _adaptive
    if n is not None:
        POSITIVE_INT.check("threads", n)
    usable = usable_cpus()
    pinned = n or omp_num_threads()
    if _adaptive is not None:
        _adaptive.stop()
        _adaptive = None
    if pinned is not None and pinned > usable:
        source = f"--threads {n}" if n else f"OMP_NUM_THREADS={pinned}"
        note(f"{source} is more than the {usable} CPU{'s' if usable != 1 else ''} this process may use: "
             f"using {usable} (more threads than CPUs wait for each other at every operation)")
        pinned = usable
    if pinned is not None or not adapt:
        count = pinned or usable
        torch.set_num_threads(count)
        return count
    _adaptive = Adaptive(usable)
    count = _adaptive.start()
    torch.set_num_threads(count)
    return count


def adjust() -> int:
    """Apply the adaptive thread count to the calling thread (torch's thread count is per calling thread under
    OpenMP, so the thread that runs the model calls this: the training loop each step, inference each batch, the
    server's model thread each batch); returns the count now in use. Cheap: no system call unless the count
    changes. A count other than the last one said is said here, in a one-line note, when work uses it (a verb that
    stops at a bad option never speaks of threads). Without `use_threads(adapt=True)` it changes nothing."""
    if _adaptive is not None:
        count = _adaptive.choice
        if count != torch.get_num_threads():
            torch.set_num_threads(count)
        if count != _adaptive.said:
            _adaptive.said = count
            note(_adaptive.describe())
    return torch.get_num_threads()


def note(text: str) -> None:
    """A one-line note on stderr that leaves progress bars intact."""
    from tqdm import tqdm
    tqdm.write(f"bertkit: note: {text}", file=sys.stderr)


_adaptive: Adaptive | None = None


def busy_seconds(cpus: set[int] | None, stat: Path = Path("/proc/stat")) -> float | None:
    """Seconds the given CPUs (None: all) have been busy since boot, from /proc/stat: user, nice, system, irq,
    softirq and steal (another virtual machine on the host is a neighbour too); None where it cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        if cpus is not None and _int(name[3:]) not in cpus:
            continue
        f = [int(x) for x in fields[:8]] + [0] * (8 - len(fields[:8]))
        ticks += f[0] + f[1] + f[2] + f[5] + f[6] + f[7]  # user nice system (idle iowait) irq softirq steal
    return ticks / os.sysconf("SC_CLK_TCK")


class Adaptive:
    """Torch's thread count chosen from the CPUs other processes leave free, re-decided as they come and go.

    OpenMP's threads meet at a barrier after every operation. When another process takes one of the cores, one of
    our threads waits its turn there at each barrier, and a step with thousands of small operations runs at a
    fraction of one thread's speed (measured on 2 cores: pre-training 6x slower beside one busy loop, while a single
    thread would have run at half speed). So the count is the CPUs not used by others: a sampler thread reads how
    busy this process's CPUs were (/proc/stat) minus this process's own CPU time, every `interval_s`, over the last
    `window` samples (the sampler only decides; `adjust()` applies and says); `choice` is the usable CPUs less the others' use, rounded so that a neighbour using more
    than half a CPU costs a thread, at least 1; it changes only when two samples in a row agree.
    """

    interval_s = 0.25
    window = 4
    margin = 0.5

    def __init__(self, usable: int):
        self.usable = usable
        self.choice = usable
        self.said = usable
        """The count the last note gave (all the usable CPUs go without saying)."""
        self.others = 0.0
        try:
            self.cpus: set[int] | None = os.sched_getaffinity(0)
        except AttributeError:
            self.cpus = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def decide(usable: int, others: float, margin: float = 0.5) -> int:
        """Threads for `usable` CPUs of which others use `others` CPUs' worth."""
        return max(1, min(usable, int(usable - others + margin)))

    def _sample(self) -> tuple[float, float] | None:
        busy = busy_seconds(self.cpus)
        return None if busy is None else (time.monotonic(), busy - time.process_time())

    def start(self) -> int:
        """Measure for a short moment, then keep measuring in a daemon thread; returns the first choice."""
        first = self._sample()
        if first is None or self.usable == 1:
            return self.choice
        time.sleep(0.1)
        second = self._sample()
        self.others = max(0.0, (second[1] - first[1]) / (second[0] - first[0]))
        self.choice = self.decide(self.usable, self.others, self.margin)
        self._thread = threading.Thread(target=self._run, args=([first, second],), daemon=True,
                                        name="bertkit-threads")
        self._thread.start()
        return self.choice

    def describe(self) -> str:
        return (f"torch threads: {self.choice} of {self.usable} CPUs (other processes are using "
                f"{self.others:.1f} of them); re-decided as that changes (--threads N to fix it)")

    def _run(self, samples: list[tuple[float, float]]) -> None:
        pending = self.choice
        while not self._stop.wait(self.interval_s):
            sample = self._sample()
            if sample is None:
                return
            samples = (samples + [sample])[-(self.window + 1):]
            (t0, b0), (t1, b1) = samples[0], samples[-1]
            self.others = max(0.0, (b1 - b0) / (t1 - t0))
            proposed = self.decide(self.usable, self.others, self.margin)
            if proposed != self.choice and proposed == pending:
                self.choice = proposed  # applied, and said, by the next adjust() of the thread that runs the model
            pending = proposed

    def stop(self) -> None:
        self._stop.set()


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a container's cgroup quota allows (cgroup v2 cpu.max, else v1 cpu.cfs_quota_us / cfs_period_us),
    None where there is no quota or it cannot be read. Unlike the affinity, torch does not see this limit: more
    threads than the quota makes every thread wait its turn."""
    for quota_file, period_file in ((root / "cpu.max", None),
                                    (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us")):
        try:
            text = quota_file.read_text().split()
            quota, period = (text[0], text[1]) if period_file is None else (text[0], period_file.read_text().strip())
            if quota not in ("max", "-1") and int(period) > 0:
                return int(quota) / int(period)
        except (OSError, ValueError, IndexError):
            continue
    return None


# ---- the device ----------------------------------------------------------------------------------------------------

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""What --device accepts."""
DEFAULT_DEVICE = "auto"
"""The device when none is asked for: the GPU when there is one, as sentence-transformers' encode() picks it."""
_chosen = DEFAULT_DEVICE  # the process's device spec, set once by `use_device` (the CLI's --device)


def resolve_device(spec: str | torch.device | None = None, *, precision: str | None = None) -> torch.device:
    """The torch.device that `spec` names: auto, cpu, cuda, cuda:N or mps (None: the process's, see `use_device`).

    auto is CUDA when torch sees a GPU, else MPS when there is one, else the CPU; under torchrun, auto and a bare
    cuda mean this process's GPU, cuda:LOCAL_RANK. int8 inference (`precision="int8"`, dynamic quantisation) runs
    on the CPU only: auto then means the CPU, and an explicit GPU is refused. A device this machine lacks, or a
    spelling torch does not know, is one line (BertkitError), never a CUDA traceback at the first forward pass."""
    spec = _chosen if spec is None else spec
    text = str(spec).strip().lower()
    if text == "auto":
        if precision == "int8":
            return torch.device("cpu")
        text = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    kind, _, index = text.partition(":")
    if kind == "cpu" and index in ("", "0"):
        device = torch.device("cpu")
    elif kind == "cuda" and (index == "" or index.isdigit()):
        device = _cuda(spec, int(index) if index else None)
    elif kind == "mps" and index in ("", "0"):
        if not _mps_available():
            raise BertkitError(f"device {spec!r}: no Apple MPS device here (macOS on Apple silicon only); use cpu")
        device = torch.device("mps")
    else:
        raise BertkitError(f"device {spec!r}: give one of {', '.join(DEVICES)}")
    if precision == "int8" and device.type != "cpu":
        raise BertkitError(f"device {spec!r}: int8 inference runs on the CPU only; use --precision bf16 on a GPU, "
                           "or --device cpu")
    return device


def rank() -> int:
    """This process's rank in a torchrun job (0 alone): rank 0 alone writes a run's shared files."""
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    """The processes of this torchrun job, all machines together (1 alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join(backend: str = "gloo", timeout: datetime.timedelta | None = None) -> None:
    """Join the job's process group (torchrun's rendezvous: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE) once,
    when there is more than one process. timeout: how long a collective waits for the slowest process."""
    import torch.distributed as dist
    if world() > 1 and not dist.is_initialized():
        dist.init_process_group(backend, **({"timeout": timeout} if timeout else {}))
        atexit.register(_leave)


def _leave() -> None:
    """Leave the process group before the interpreter ends. Left to exit's destructors, gloo's threads can be torn
    down in the wrong order and abort a process that had finished its work ("terminate called without an active
    exception", seen once in a two-process predict), and torchrun then stops the other."""
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def _cuda(spec, index: int | None) -> torch.device:
    """cuda:index, checked against the GPUs torch sees; a bare cuda is cuda:LOCAL_RANK under torchrun, else 0."""
    if not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is a CPU build" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees none; check the driver and "
               "CUDA_VISIBLE_DEVICES")
        raise BertkitError(f"device {spec!r}: no CUDA device ({why})")
    count = torch.cuda.device_count()
    if index is None:
        index = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if index >= count:
        raise BertkitError(f"device {spec!r}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
                           f"(cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def use_device(spec: str | torch.device | None = None, *, precision: str | None = None) -> torch.device:
    """Make `spec` (None: DEFAULT_DEVICE) the device of everything this process loads without naming one, and
    return it resolved: a device this machine lacks is refused here, before a verb reads or writes anything."""
    global _chosen
    spec = DEFAULT_DEVICE if spec is None else spec
    device = resolve_device(spec, precision=precision)
    _chosen = spec
    return device


# ---- the CPU -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cpu:
    """What a benchmark needs to say about the CPU it ran on."""

    model: str
    """The model name, e.g. "AMD EPYC 9654 96-Core Processor"."""
    isa: tuple[str, ...]
    """Those of ISA_FLAGS the CPU has, in ISA_FLAGS' order."""
    cpus: int
    """Logical CPUs of the machine."""
    available: int
    """Logical CPUs this process may use (affinity)."""
    cores: int | None
    """Physical cores under the available CPUs (fewer than `available` with SMT); None where unknown."""


def parse_cpuinfo(text: str, allowed: set[int] | None = None) -> dict:
    """{model, isa, cpus, cores} from the text of /proc/cpuinfo. allowed: the processor numbers this process may
    use (None: all); `cores` counts the distinct (physical id, core id) pairs among them, None when the file has
    no such fields (ARM, some VMs)."""
    blocks = []
    for chunk in text.strip().split("\n\n"):
        block = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                block[key.strip()] = value.strip()
        if "processor" in block:
            blocks.append(block)
    first = blocks[0] if blocks else {}
    model = next((first[k] for k in ("model name", "Hardware", "Processor", "cpu model") if first.get(k)), "")
    flags = set((first.get("flags") or first.get("Features") or "").split())
    used = [b for b in blocks if allowed is None or _int(b["processor"]) in allowed]
    pairs = {(b["physical id"], b["core id"]) for b in used if "physical id" in b and "core id" in b}
    return {"model": model, "isa": tuple(f for f in ISA_FLAGS if f in flags), "cpus": len(blocks),
            "cores": len(pairs) or None}


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """The CPU this process runs on; outside Linux the model is what `platform` knows and the ISA list is empty."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        allowed = None
    try:
        info = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"), allowed)
    except OSError:
        info = {"model": "", "isa": (), "cpus": 0, "cores": None}
    return Cpu(model=info["model"] or platform.processor() or platform.machine() or "unknown",
               isa=info["isa"], cpus=info["cpus"] or os.cpu_count() or 1, available=available_cpus(),
               cores=info["cores"])


# ---- measuring -----------------------------------------------------------------------------------------------------

def matmul_peak(dtype: torch.dtype = torch.float32, seconds: float = 1.0, n: int | None = None,
                device: torch.device | str = "cpu") -> float:
    """GFLOP/s of (n, n) @ (n, n) in dtype on device with torch's current threads: the median over repeats for
    about `seconds` (at least one) after a warm-up product. n defaults to 2048 on a CPU (large enough for the
    kernels' peak, ~0.1-0.3 s a product on two cores) and 8192 on a GPU. On a CPU the faster of torch's matmul
    (MKL in fp32) and oneDNN's linear, which bertkit's inference uses (twice MKL's fp32 speed on AMD EPYC)."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    products = [lambda: a @ b]
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    best = 0.0
    with torch.no_grad():
        for product in products:
            product()
            times, end = [], time.perf_counter() + seconds / len(products)
            while not times or time.perf_counter() < end:
                sync()
                t = time.perf_counter()
                product()
                sync()
                times.append(time.perf_counter() - t)
            best = max(best, 2 * n ** 3 / statistics.median(times) / 1e9)
    return best


def describe(device: torch.device | str = "cpu", seconds: float = 1.0) -> dict:
    """The machine as a benchmark reports it: the CPU, torch's threads and version, the GPU when device is one, and
    the matmul peak in fp32 and bf16 on device, measured now (`seconds` each)."""
    device = torch.device(device)
    machine = {**asdict(cpu()), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    machine["peak_gflops"] = {name: matmul_peak(dtype, seconds, device=device)
                              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    return machine


def summary(machine: dict) -> str:
    """Two lines for the top of a benchmark's output, from `describe()`."""
    missing = [f for f in ISA_FLAGS if f not in machine["isa"]]
    cores = f", {machine['cores']} physical cores" if machine["cores"] else ""
    where = f"GPU {machine['gpu']}; " if machine["gpu"] else ""
    peak = ", ".join(f"{k} {v:,.0f}" for k, v in machine["peak_gflops"].items())
    return (f"machine: {machine['model']}; {' '.join(machine['isa']) or 'no listed ISA extensions'}"
            f"{' (no ' + ', '.join(missing) + ')' if missing and machine['isa'] else ''}; "
            f"{machine['available']} of {machine['cpus']} CPUs available{cores}; torch {machine['torch']} with "
            f"{machine['threads']} thread{'s' if machine['threads'] != 1 else ''}\n"
            f"matmul peak measured now ({where}GFLOP/s): {peak}")


BUSY_LOOP = """import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:  # a neighbour that outlives a SIGKILLed benchmark would skew every later run
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def busy_neighbour() -> Iterator[subprocess.Popen]:
    """A pure-Python busy loop in another process, at this process's priority, for the duration of the block: one
    core taken away as a neighbour's job would take it. Killed when the block ends (Ctrl-C included); it also ends
    by itself within a fraction of a second when this process dies without cleaning up."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())], stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
