"""bertkit.hardware: the one decision of torch's thread count (and `--threads`, which routes through it), the
/proc/cpuinfo parser, the matmul peak's arithmetic and the busy neighbour that benchmarks start and must clean up."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertkit import hardware
from bertkit.cli import _verbs, build_parser, main
from bertkit.errors import BertkitError


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def three_cpus(monkeypatch):
    """This process may use CPUs 0, 3 and 5 only (a taskset or container limit); OMP_NUM_THREADS unset."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


# ---- the thread decision -------------------------------------------------------------------------------------------

def test_default_threads_follow_affinity_not_the_machine(three_cpus, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert hardware.available_cpus() == 3
    assert hardware.default_threads() == 3


@pytest.mark.parametrize("value, expected", [("1", 1), ("4", 4), ("4,2", 4), (" 2 ", 2), ("0", 3), ("-1", 3),
                                             ("many", 3), ("", 3)])
def test_default_threads_take_a_valid_omp_num_threads(three_cpus, monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert hardware.default_threads() == expected


def test_available_cpus_without_affinity_uses_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert hardware.available_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert hardware.available_cpus() == 1


def test_use_threads_sets_torch_and_returns_the_count(three_cpus):
    assert hardware.use_threads(1) == 1 and torch.get_num_threads() == 1
    assert hardware.use_threads(None) == 3 and torch.get_num_threads() == 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_use_threads_refuses_a_non_positive_count(bad):
    before = torch.get_num_threads()
    with pytest.raises(BertkitError, match=r"^threads must be a positive integer, got "):
        hardware.use_threads(bad)
    assert torch.get_num_threads() == before


# ---- --threads on the command line ---------------------------------------------------------------------------------

MODEL_VERBS = {"pretrain", "finetune", "distill", "predict", "evaluate", "explain", "embed", "attack", "bias", "demo",
               "serve"}


def test_every_verb_that_runs_a_model_takes_threads():
    with_threads = {name for name, sub in _verbs(build_parser()).items()
                    if any("--threads" in a.option_strings for a in sub._actions)}
    assert with_threads == MODEL_VERBS


def test_threads_option_parses_to_an_int():
    args = build_parser().parse_args(["predict", "m", "--text", "x", "--threads", "3"])
    assert args.threads == 3
    assert build_parser().parse_args(["predict", "m", "--text", "x"]).threads is None


@pytest.mark.parametrize("bad, shown", [("0", "0"), ("-1", "-1"), ("1.5", "'1.5'"), ("two", "'two'")])
def test_threads_below_one_is_a_one_line_error(bad, shown, capsys):
    assert main(["finetune", "m", "--train", "t.csv", "--out", "o", "--threads", bad]) == 2
    err = capsys.readouterr().err
    assert err == f"bertkit: error: finetune: argument --threads: must be a positive integer, got {shown}\n"


def test_main_applies_threads_before_the_verb_runs(tmp_path, capsys):
    # the verb fails (no such model), but torch's threads were set before it ran
    assert main(["predict", str(tmp_path / "missing"), "--text", "x", "--threads", "1"]) == 2
    assert torch.get_num_threads() == 1


def test_main_applies_the_affinity_default(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert main(["predict", str(tmp_path / "missing"), "--text", "x"]) == 2
    assert torch.get_num_threads() == 1


def test_threads_from_a_config_file_is_checked(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"threads": 0}))
    assert main(["evaluate", "m", "--input", "t.csv", "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"bertkit: error: {config}: threads must be a positive integer, got 0\n"


# ---- sharing the machine: the adaptive count ---------------------------------------------------------------------

@pytest.fixture(autouse=True)
def no_adaptive():
    yield
    if hardware._adaptive is not None:
        hardware._adaptive.stop()
        hardware._adaptive = None


@pytest.mark.parametrize("usable, others, expected", [(2, 0.0, 2), (2, 0.3, 2), (2, 0.45, 2), (2, 0.55, 1), (2, 1.0, 1),
                                                      (2, 2.0, 1), (8, 3.0, 5), (8, 2.5, 6), (1, 0.9, 1)])
def test_decide_leaves_the_cpus_others_use(usable, others, expected):
    assert hardware.Adaptive.decide(usable, others) == expected


def test_a_quota_below_the_cpus_lowers_the_count(three_cpus, monkeypatch):
    monkeypatch.setattr(hardware, "cgroup_cpus", lambda: 1.5)
    assert hardware.usable_cpus() == 1 and hardware.default_threads() == 1
    monkeypatch.setattr(hardware, "cgroup_cpus", lambda: 0.2)
    assert hardware.usable_cpus() == 1
    monkeypatch.setattr(hardware, "cgroup_cpus", lambda: 64.0)
    assert hardware.usable_cpus() == 3


def test_busy_seconds_sums_busy_fields_of_the_given_cpus(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 20 30 40 50 60 70 80 0 0\n"
                    "cpu0 1 2 3 1000 1000 4 5 6 0 0\n"
                    "cpu1 100 0 0 0 0 0 0 0 0 0\n"
                    "intr 1 2 3\nprocs_running 2\n")
    tick = os.sysconf("SC_CLK_TCK")
    assert hardware.busy_seconds({0}, stat) == pytest.approx((1 + 2 + 3 + 4 + 5 + 6) / tick)  # idle, iowait left out
    assert hardware.busy_seconds(None, stat) == pytest.approx((21 + 100) / tick)
    assert hardware.busy_seconds({0}, tmp_path / "missing") is None


def test_pinned_threads_above_the_cpus_are_lowered_with_a_note(three_cpus, capsys):
    assert hardware.use_threads(8, adapt=True) == 3 and torch.get_num_threads() == 3
    assert capsys.readouterr().err == ("bertkit: note: --threads 8 is more than the 3 CPUs this process may use: "
                                       "using 3 (more threads than CPUs wait for each other at every operation)\n")
    assert hardware._adaptive is None  # pinned: never changed behind the user's back


@pytest.mark.parametrize("value, adaptive", [("2", False), ("0", True), ("many", True), ("", True)])
def test_omp_num_threads_pins_unless_it_is_garbage(three_cpus, monkeypatch, value, adaptive):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(hardware.Adaptive, "start", lambda self: self.choice)
    hardware.use_threads(None, adapt=True)
    assert (hardware._adaptive is not None) == adaptive


class FakeLoad:
    """Samples of (time, busy seconds of others) as the sampler thread reads them: `others` CPUs busy from now."""

    def __init__(self):
        self.t, self.busy, self.others = 0.0, 0.0, 0.0

    def __call__(self):
        self.t += 0.25
        self.busy += 0.25 * self.others
        return self.t, self.busy


def test_the_count_follows_a_neighbour_that_comes_and_goes(three_cpus, monkeypatch, capsys):
    load = FakeLoad()
    monkeypatch.setattr(hardware.Adaptive, "_sample", lambda self: load())
    monkeypatch.setattr(hardware.Adaptive, "interval_s", 0.01)
    assert hardware.use_threads(None, adapt=True) == 3
    assert capsys.readouterr().err == ""  # nobody else busy: every CPU, nothing to say

    def settles(expected):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if hardware.adjust() == expected:
                return True
            time.sleep(0.01)
        return False

    load.others = 1.0  # a neighbour takes a core
    assert settles(2) and torch.get_num_threads() == 2
    load.others = 2.2
    assert settles(1)
    load.others = 0.0  # it ends
    assert settles(3)
    notes = capsys.readouterr().err.splitlines()
    # each change said once, when two samples agree (the others' use read over a window that may straddle a change)
    counts = [int(n.split("torch threads: ")[1].split()[0]) for n in notes]
    assert counts[:2] == [2, 1] and counts[-1] == 3 and all(n.startswith("bertkit: note: torch threads: ") for n in notes)


def test_a_busy_machine_at_the_start_starts_with_fewer_threads(three_cpus, monkeypatch, capsys):
    load = FakeLoad()
    load.others = 2.0
    monkeypatch.setattr(hardware.Adaptive, "_sample", lambda self: load())
    assert hardware.use_threads(None, adapt=True) == 1
    assert capsys.readouterr().err == ""  # said when work uses it, not before a verb has checked its options
    assert hardware.adjust() == 1
    assert "torch threads: 1 of 3 CPUs (other processes are using 2.0 of them)" in capsys.readouterr().err
    hardware.adjust()
    assert capsys.readouterr().err == ""  # said once


def test_own_cpu_time_is_not_the_others(monkeypatch):
    monkeypatch.setattr(hardware, "busy_seconds", lambda cpus: 10.0)
    monkeypatch.setattr(hardware.time, "process_time", lambda: 3.0)
    assert hardware.Adaptive(2)._sample()[1] == 7.0


def test_a_real_neighbour_is_counted(monkeypatch):
    """The real /proc/stat and a real busy loop: the others' busy time over a second holds the loop's CPU time
    (whatever else the machine runs)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(os.cpu_count())), raising=False)
    if hardware.busy_seconds(None) is None:
        pytest.skip("no /proc/stat")
    a = hardware.Adaptive(os.cpu_count())
    with hardware.busy_neighbour() as proc:
        time.sleep(0.2)
        t0, others0 = a._sample()
        loop0 = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        t1, others1 = a._sample()
        loop = _cpu_seconds(proc.pid) - loop0
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert loop > 0.2
    assert others1 - others0 >= loop - 4 * tick * os.cpu_count()


# ---- the CPU ---------------------------------------------------------------------------------------------------------

def _x86_cpuinfo() -> str:
    """Two cores with two hyperthreads each: processors 0 and 2 share core 0, 1 and 3 share core 1."""
    flags = "fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16"
    blocks = []
    for processor, core in ((0, 0), (1, 1), (2, 0), (3, 1)):
        blocks.append(f"processor\t: {processor}\nvendor_id\t: GenuineIntel\n"
                      "model name\t: Intel(R) Xeon(R) Platinum 8480+\nphysical id\t: 0\nsiblings\t: 4\n"
                      f"core id\t\t: {core}\ncpu cores\t: 2\nflags\t\t: {flags}\n")
    return "\n".join(blocks) + "\n"


def test_parse_cpuinfo_reads_model_flags_and_cores():
    info = hardware.parse_cpuinfo(_x86_cpuinfo())
    assert info == {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": hardware.ISA_FLAGS, "cpus": 4, "cores": 2}


def test_parse_cpuinfo_counts_cores_under_the_affinity():
    assert hardware.parse_cpuinfo(_x86_cpuinfo(), allowed={0, 2})["cores"] == 1  # two hyperthreads of one core
    assert hardware.parse_cpuinfo(_x86_cpuinfo(), allowed={0, 1})["cores"] == 2


def test_parse_cpuinfo_keeps_isa_order_and_only_the_listed_flags():
    text = "processor : 0\nmodel name : AMD EPYC 7B13\nflags : avx512_bf16 sse4_2 avx2 avx512f\n"
    assert hardware.parse_cpuinfo(text) == {"model": "AMD EPYC 7B13", "isa": ("avx2", "avx512f", "avx512_bf16"),
                                            "cpus": 1, "cores": None}


def test_parse_cpuinfo_arm_and_empty():
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\n\nprocessor\t: 1\nFeatures\t: fp asimd sve\n"
    assert hardware.parse_cpuinfo(arm) == {"model": "", "isa": (), "cpus": 2, "cores": None}
    assert hardware.parse_cpuinfo("") == {"model": "", "isa": (), "cpus": 0, "cores": None}


def test_cpu_without_proc_cpuinfo_is_graceful(tmp_path, three_cpus, monkeypatch):
    monkeypatch.setattr(hardware.platform, "processor", lambda: "arm")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert hardware.cpu(tmp_path / "no-cpuinfo") == hardware.Cpu("arm", (), cpus=8, available=3, cores=None)


def test_cpu_from_a_file(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(_x86_cpuinfo())
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 3}, raising=False)
    assert hardware.cpu(path) == hardware.Cpu("Intel(R) Xeon(R) Platinum 8480+", hardware.ISA_FLAGS, cpus=4,
                                              available=2, cores=1)


# ---- measuring -------------------------------------------------------------------------------------------------------

def test_matmul_peak_is_flops_over_the_median_time(monkeypatch):
    clock = iter(range(100))  # each reading 1 s after the last: the one timed product takes 1 s
    monkeypatch.setattr(hardware.time, "perf_counter", lambda: float(next(clock)))
    assert hardware.matmul_peak(torch.float32, seconds=0.0, n=100) == pytest.approx(2 * 100 ** 3 / 1e9)


def test_matmul_peak_measures_a_plausible_rate():
    gflops = hardware.matmul_peak(torch.float32, seconds=0.05, n=128)
    assert 0.05 < gflops < 1e5


def test_summary_names_cpu_isa_cores_threads_and_peaks():
    machine = {"model": "AMD EPYC", "isa": ("avx2", "avx512f", "avx512_bf16", "avx512_vnni"), "cpus": 4,
               "available": 2, "cores": 2, "threads": 2, "torch": "2.13.0", "gpu": None,
               "peak_gflops": {"fp32": 310.4, "bf16": 1234.5}}
    assert hardware.summary(machine) == (
        "machine: AMD EPYC; avx2 avx512f avx512_bf16 avx512_vnni (no amx_bf16, amx_int8, amx_tile); 2 of 4 CPUs "
        "available, 2 physical cores; torch 2.13.0 with 2 threads\n"
        "matmul peak measured now (GFLOP/s): fp32 310, bf16 1,234")


# ---- the busy neighbour ----------------------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, waiting for a reaper that may never come (a container's PID 1)


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


@needs_proc
def test_busy_neighbour_burns_cpu_at_our_priority_and_is_killed_at_the_end():
    with hardware.busy_neighbour() as proc:
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == os.getpriority(os.PRIO_PROCESS, 0)
        deadline = time.monotonic() + 30
        while _cpu_seconds(proc.pid) < 0.05 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cpu_seconds(proc.pid) >= 0.05  # spinning, not sleeping
        assert proc.poll() is None
    assert proc.returncode == -signal.SIGKILL
    assert not Path(f"/proc/{proc.pid}").exists()  # killed and reaped


def test_busy_neighbour_is_killed_on_ctrl_c():
    with pytest.raises(KeyboardInterrupt):
        with hardware.busy_neighbour() as proc:
            raise KeyboardInterrupt
    assert proc.returncode == -signal.SIGKILL


@needs_proc
def test_busy_neighbour_ends_when_its_benchmark_is_sigkilled():
    script = ("import os, signal, sys\nfrom bertkit.hardware import busy_neighbour\n"
              "with busy_neighbour() as p:\n    print(p.pid, flush=True)\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(hardware.__file__).parents[1])})
    assert parent.returncode == -signal.SIGKILL
    pid = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 30
    while not _ended(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ended(pid)
